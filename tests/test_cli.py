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


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"lucid {lucid.__version__}"


def test_export_takes_example_shape_when_input_is_left_out(tmp_path, capsys):
    source = tmp_path / "small.py"
    source.write_text(
        "import lucid.nn as nn\n"
        "class Small(nn.Sequential):\n"
        "    def __init__(self):\n"
        "        super().__init__(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU())\n"
        "    @classmethod\n"
        "    def example_shape(cls):\n"
        "        return (1, 1, 4, 4, 4)\n")
    assert main(["export", f"{source}:Small", "-o", str(tmp_path / "small.so")]) == 0
    assert f"wrote {tmp_path / 'small.so'}" in capsys.readouterr().out
    assert lucid.runtime.load(tmp_path / "small.so").input_shapes == [(1, 1, 4, 4, 4)]


def test_export_without_input_or_example_shape_says_what_is_missing(tmp_path, capsys):
    source = tmp_path / "bare.py"
    source.write_text("import lucid.nn as nn\nmodel = nn.ReLU()\n")
    assert main(["export", f"{source}:model", "-o", str(tmp_path / "bare.so")]) == 1
    assert "--input: " in capsys.readouterr().err and not (tmp_path / "bare.so").exists()


def test_export_to_a_missing_folder_names_the_folder(tmp_path, capsys):
    missing = tmp_path / "no" / "such"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "models.py:UNet3D", "-o", str(missing / "unet.so")])
    assert exit_info.value.code == 2
    assert f"the folder '{missing}' does not exist" in capsys.readouterr().err


def test_python_file_without_attr_asks_for_attr():
    with pytest.raises(SourceError, match=r"'examples/models.py' is Python source without :ATTR.*models.py:MyModel"):
        load_source("examples/models.py")
