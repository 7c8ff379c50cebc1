"""`lucid.onnx`: ONNX models in lucid.

    graph = lucid.onnx.load("unet.onnx", input_shapes={"input": (1, 1, 64, 64, 64)})
    fast = lucid.compile(graph)          # or lucid.export(graph, path="unet.so"), lucid.viz.render(graph, ...)

`load(path_or_bytes, input_shapes=None)` reads an ONNX model (opset 13 and newer) into a
`lucid.ir.Graph` (`importer.py`): the file is checked without trust (`reader.py`), each operator is
converted by its entry in `converters.CONVERTERS` (Resize in `resize.py`), and shape arithmetic is
folded at import. `save(fn_or_module_or_graph, *inputs, path)` writes a lucid model or graph as
ONNX (`exporter.py`, opset 18), so ONNX Runtime and other runtimes can run it. The `onnx` package is an optional dependency (`pip install 'lucid[onnx]'`); without
it importing this package raises an ImportError saying so. Nothing else in lucid imports `onnx`.
"""
from .importer import load
from .exporter import save

__all__ = ["load", "save"]
