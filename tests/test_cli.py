"""The command line's shared helpers: SOURCE and --input parsing."""
import argparse
import subprocess
import sys

import pytest

import lucid
from lucid.cli import SourceError, load_source, main, parse_shape


def test_parse_shape():
    assert parse_shape("1,1,32,32,32") == (1, 1, 32, 32, 32)
    assert parse_shape(" 2, 3 ") == (2, 3)
    for bad in ["", "a,b", "1,-2", ","]:
        with pytest.raises(argparse.ArgumentTypeError, match="--input"):
            parse_shape(bad)


def test_load_source_instantiates_classes_and_factories(tmp_path):
    source = tmp_path / "model_file.py"
    source.write_text(
        "import lucid.nn as nn\n"
        "class Net(nn.Sequential):\n"
        "    def __init__(self):\n"
        "        super().__init__(nn.Conv3d(1, 2, 3))\n"
        "def make():\n"
        "    return Net()\n"
        "instance = Net()\n")
    for attr in ["Net", "make", "instance"]:
        model = load_source(f"{source}:{attr}")
        assert isinstance(model, lucid.nn.Sequential), attr
        assert model[0].weight.shape == (2, 1, 3, 3, 3)


def test_load_source_errors(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("x = 1\n")
    for text, message in [("m.py", "path/file.py:ATTR"), (f"{tmp_path}/nope.py:x", "no such file"),
                          (f"{source}:y", "no attribute 'y'")]:
        with pytest.raises(SourceError, match=message):
            load_source(text)


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: lucid" in capsys.readouterr().out


def test_python_dash_m_lucid_runs():
    done = subprocess.run([sys.executable, "-m", "lucid", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "usage: lucid" in done.stdout
