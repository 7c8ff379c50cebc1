"""An imported graph everywhere a graph goes: lucid.compile, lucid.export (and `lucid export
model.onnx`), lucid.viz.render (and `lucid viz model.onnx`); and onnx as an optional dependency."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from onnx_helpers import helper, model, reference

import lucid
import lucid.onnx
from lucid.cli import main
from lucid.errors import ShapeError


def small_unet_block(batch="N") -> bytes:
    """Conv -> Relu -> MaxPool -> ConvTranspose, concatenated with the Conv's output; batch symbolic."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="/down/conv/Conv", pads=[1, 1, 1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="/down/act/Relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="/pool/MaxPool", kernel_shape=[2, 2, 2], strides=[2, 2, 2]),
             helper.make_node("ConvTranspose", ["p", "w2"], ["u"], name="/up/ConvTranspose", strides=[2, 2, 2]),
             helper.make_node("Concat", ["u", "r"], ["y"], name="/Concat", axis=1)]
    weights = {"w1": rng.standard_normal((2, 1, 3, 3, 3)).astype(np.float32),
               "b1": rng.standard_normal(2).astype(np.float32),
               "w2": rng.standard_normal((2, 2, 2, 2, 2)).astype(np.float32)}
    return model(nodes, {"x": (batch, 1, 4, 4, 4)}, ["y"], weights)


def saved(tmp_path, data: bytes):
    path = tmp_path / "block.onnx"
    path.write_bytes(data)
    return path


def test_compile_runs_an_imported_graph_for_its_own_shapes_only():
    data = small_unet_block()
    graph = lucid.onnx.load(data, input_shapes={"x": (2, 1, 4, 4, 4)})
    x = np.random.default_rng(1).standard_normal((2, 1, 4, 4, 4)).astype(np.float32)
    compiled = lucid.compile(graph)
    np.testing.assert_allclose(compiled(lucid.tensor(x)).numpy(), reference(data, [x])[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ShapeError, match="fixed"):
        compiled(lucid.tensor(x[:1]))


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) on this machine")
def test_export_of_an_imported_graph_and_the_export_command(tmp_path, capsys):
    data = small_unet_block()
    path = saved(tmp_path, data)
    x = np.random.default_rng(2).standard_normal((1, 1, 4, 4, 4)).astype(np.float32)
    expected = reference(data, [x])[0]
    graph = lucid.onnx.load(str(path), input_shapes=[(1, 1, 4, 4, 4)])
    files = lucid.export(graph, path=tmp_path / "api.so")
    np.testing.assert_allclose(lucid.runtime.load(files.library)(x), expected, rtol=1e-4, atol=1e-5)
    assert main(["export", str(path), "--input", "1,1,4,4,4", "-o", str(tmp_path / "cli.so")]) == 0
    assert "cli.so" in capsys.readouterr().out
    np.testing.assert_allclose(lucid.runtime.load(tmp_path / "cli.so")(x), expected, rtol=1e-4, atol=1e-5)


def test_viz_render_and_the_viz_command(tmp_path, capsys):
    path = saved(tmp_path, small_unet_block(batch=1))
    graph = lucid.onnx.load(str(path))
    svg = lucid.viz.render(graph, path=tmp_path / "api.svg", depth=None).path.read_text()
    assert svg.count("conv_transpose") >= 1 and "max_pool" in svg
    assert main(["viz", str(path), "-o", str(tmp_path / "cli.html")]) == 0
    page = (tmp_path / "cli.html").read_text()
    assert "conv_transpose" in page and "down" in page          # the ONNX node names' module paths


def test_scopes_follow_pytorch_node_names():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="/down.0/block/block.0/Relu"),
             helper.make_node("Neg", ["a"], ["y"])]
    graph = lucid.onnx.load(model(nodes, {"x": (2,)}, ["y"]))
    assert [(n.scope.path, n.scope.cls) for n in graph.nodes] == [("down.0.block.0", "Relu"), ("", "Neg")]


def test_commands_report_an_unreadable_onnx_file_in_one_line(tmp_path, capsys):
    path = saved(tmp_path, small_unet_block())
    assert main(["viz", str(path), "-o", str(tmp_path / "m.html")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("lucid viz: ") and "symbolic" in error and error.count("\n") == 1
    path.write_bytes(b"not a model")
    assert main(["export", str(path), "--input", "1,1,4,4,4", "-o", str(tmp_path / "m.so")]) == 1
    assert "block.onnx" in capsys.readouterr().err


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_onnx_is_optional():
    blocked = "import sys; sys.modules['onnx'] = None\n"
    result = run_python(blocked + "import lucid, lucid.viz, lucid.cli\nimport lucid.onnx")
    assert "ImportError" in result.stderr and "pip install 'lucid[onnx]'" in result.stderr
    result = run_python("import sys, lucid, lucid.viz, lucid.cli, lucid.aot.command\n"
                        "assert 'onnx' not in sys.modules and 'lucid.onnx' not in sys.modules, 'onnx imported'")
    assert result.returncode == 0, result.stderr
    result = run_python("import lucid\nprint(lucid.onnx.load.__module__)")      # loaded on first use
    assert result.stdout.strip() == "lucid.onnx.importer", result.stderr
