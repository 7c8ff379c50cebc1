"""`lucid viz SOURCE -o OUT`: from a model file, a graph file, through `python -m lucid` and the
installed console script; a failing model writes its partial picture and exits 1; bad arguments
get one clear line."""
import pathlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

import lucid
from lucid.cli import main
from models import UNet3D

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
SVG = "{http://www.w3.org/2000/svg}"


def node_titles(svg_path) -> list:
    root = ET.parse(svg_path).getroot()
    return [g.find(f"{SVG}text").text for g in root.iter(f"{SVG}g") if g.find(f"{SVG}rect") is not None
            and "node" in g.find(f"{SVG}rect").get("class").split()]


def test_model_file_to_svg_with_input_and_depth(tmp_path, capsys):
    out = tmp_path / "unet.svg"
    assert main(["viz", f"{EXAMPLES}/models.py:UNet3D", "-o", str(out), "--input", "1,1,32,32,32", "--depth", "1"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    titles = node_titles(out)
    assert titles[0] == "input x" and "output 0" in titles
    assert sum(t.endswith("DoubleConv3d") for t in titles) == 5
    label_texts = [t.text for t in ET.parse(out).getroot().iter(f"{SVG}text") if t.get("class") == "shape-label"]
    assert "f32[1, 1, 32, 32, 32]" in label_texts and "f32[1, 2, 32, 32, 32]" in label_texts   # UNet3D(): 2 classes


def test_example_shape_is_the_default_input_and_stage_is_chosen(tmp_path):
    out = tmp_path / "vc.dot"
    assert main(["viz", f"{EXAMPLES}/models.py:VideoClassifier", "-o", str(out), "--stage", "fused"]) == 0
    text = out.read_text()
    assert "f32[1, 3, 4, 32, 32]" in text and '"fused' in text


def test_graph_file_source(tmp_path):
    graph = lucid.trace(UNet3D(base=4).eval(), lucid.spec(1, 1, 16, 16, 16))
    graph.save(tmp_path / "unet.graph")
    out = tmp_path / "unet.svg"
    assert main(["viz", str(tmp_path / "unet.graph"), "-o", str(out), "--depth", "all"]) == 0
    assert node_titles(out).count("conv") == sum(n.op == "conv" for n in graph.nodes)


@pytest.mark.parametrize("damage, problem", [
    (lambda raw: raw[:raw.rindex(b"PK\x01\x02") + 10] + bytes([99]) + raw[raw.rindex(b"PK\x01\x02") + 11:],
     "uses compression method 99"),                  # once NotImplementedError and a traceback
    (lambda raw: raw[:raw.rindex(b"PK\x01\x02") + 8] + bytes([raw[raw.rindex(b"PK\x01\x02") + 8] | 1])
     + raw[raw.rindex(b"PK\x01\x02") + 9:], "is marked encrypted"),       # once RuntimeError
    (lambda raw: raw[: len(raw) // 2], "not a readable zip archive"),
])
def test_a_damaged_graph_file_is_one_line_naming_the_file_and_exit_1(damage, problem, tmp_path):
    graph = lucid.trace(lambda x: x * 2.0, lucid.spec(2, 3))
    graph.save(tmp_path / "g.lucid")
    damaged = tmp_path / "damaged.lucid"
    damaged.write_bytes(damage((tmp_path / "g.lucid").read_bytes()))
    done = subprocess.run([sys.executable, "-m", "lucid", "viz", str(damaged), "-o", str(tmp_path / "g.html")],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"lucid viz: lucid.ir.load: {damaged} is not a lucid graph file")
    assert problem in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_failing_model_writes_the_partial_graph_and_exits_1(tmp_path, capsys):
    out = tmp_path / "fail.html"
    assert main(["viz", f"{EXAMPLES}/seeds.py:Conv3dModel", "-o", str(out), "--input", "1,1,3,3,3"]) == 1
    err = capsys.readouterr().err
    assert "tracing failed" in err and "MaxPool3d 'pool'" in err and str(out) in err
    assert "too small for kernel (2, 2, 2)" in out.read_text()


@pytest.mark.parametrize("args, message", [
    (["models.py:UNet3D", "-o", "x.png"], "cannot tell the format of 'x.png'"),
    (["models.py:nothing", "-o", "x.svg"], "has no attribute 'nothing'"),
    (["models.py:DoubleConv3d", "-o", "x.svg"], "DoubleConv3d"),
    (["models.py:UNet3D", "-o", "x.svg", "--depth", "0"], "depth must be a positive integer"),
    (["no_such.graph", "-o", "x.svg"], "no_such.graph"),
    (["saved.graph", "-o", "x.svg", "--input", "1,2"], "--input: 'saved.graph' is a graph file"),
    (["models.py", "-o", "a.html"], "'models.py' is Python source without :ATTR, add the name of the model"),
])
def test_bad_arguments_give_one_clear_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLES / "models.py", tmp_path / "models.py")
    assert main(["viz"] + args) == 1
    err = capsys.readouterr().err
    assert err.startswith("lucid viz: ") and message in err and "Traceback" not in err


def test_missing_output_folder_is_named(tmp_path, capsys):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(SystemExit) as exit_info:
        main(["viz", f"{EXAMPLES}/models.py:UNet3D", "-o", str(missing / "unet.html")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument -o/--output: the folder '{missing}' does not exist" in err and "Errno" not in err


def test_python_dash_m_and_console_script(tmp_path):
    out = tmp_path / "unet.html"
    source = f"{EXAMPLES}/models.py:ConvAutoencoder3D"
    done = subprocess.run([sys.executable, "-m", "lucid", "viz", source, "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.read_text().startswith("<!DOCTYPE html>")
    script = pathlib.Path(sys.executable).parent / "lucid"      # installed by pip from pyproject.toml
    done = subprocess.run([str(script), "viz", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--depth N" in done.stdout


def test_depth_all_shows_every_node_and_a_bad_depth_is_refused(tmp_path, capsys):
    out = tmp_path / "unet.svg"
    assert main(["viz", f"{EXAMPLES}/models.py:UNet3D", "-o", str(out), "--depth", "all"]) == 0
    assert 'class="node group' not in out.read_text() and out.read_text().count('class="node') > 60
    assert main(["viz", f"{EXAMPLES}/models.py:UNet3D", "-o", str(out)]) == 0         # auto: folded
    assert 'class="node group' in out.read_text()
    with pytest.raises(SystemExit):
        main(["viz", f"{EXAMPLES}/models.py:UNet3D", "-o", str(out), "--depth", "deep"])
    assert "--depth: expected a positive integer, 'auto' or 'all', got 'deep'" in capsys.readouterr().err
