"""`lucid.export`: a module or function compiled ahead of time into a shared library with a C ABI.

`export(fn_or_module, *inputs, path, name=None, weights_in_file=False)` traces the model (a module in
eval mode: BatchNorm uses its running statistics, Dropout is off; lazy layers are resolved by the
trace; a `lucid.ir.Graph`, such as an imported ONNX model, is taken as it is and its inputs may be
left out), runs the inference pipeline `lucid.compile` runs (`passes.pipeline.for_inference`), runs
the traced graph once with the interpreter on seeded random golden inputs, and hands everything to the
AOT emitter (`emitter.py`), which writes the library, its header and, if asked, its weights file.
The library's `N_selftest()` checks that its code reproduces those golden outputs.
`lucid.runtime.load(path)` runs the result from Python with numpy and ctypes only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..ir.graph import Graph
from ..ir.types import TensorType
from ..tensor import Tensor
from ..tracing import Spec, spec, trace_in_eval_mode

#: Seed of the self-test's golden inputs (standard normal).
GOLDEN_SEED = 0


def export(fn_or_module, *inputs, path, name: str | None = None, weights_in_file: bool = False):
    """Write `path` (the shared library), `path` with `.h` (its C header) and, with `weights_in_file`,
    `path` with `.weights`; inputs are `lucid.spec`s, Tensors or arrays (only their shapes and dtypes
    are used). The C functions are prefixed `name` (default: the file's stem made a C identifier).
    Returns the paths written (`.library`, `.header`, `.weights`) and the name."""
    from ..ir.interpreter import run
    from ..passes.pipeline import for_inference
    from ..runtime.abi import c_name
    from .emitter import write_library

    if not inputs and isinstance(fn_or_module, Graph):
        inputs = [spec(*v.shape, dtype=v.dtype) for v in fn_or_module.inputs]
    if not inputs:
        raise ExportError("lucid.export: give the model's example inputs (lucid.spec(...) or Tensors)")
    specs = [_as_spec(x, k) for k, x in enumerate(inputs)]
    traced = _trace_for_inference(fn_or_module, specs)
    rng = np.random.default_rng(GOLDEN_SEED)
    golden_inputs = [rng.standard_normal(s.shape).astype(s.dtype.numpy) for s in specs]
    golden_outputs = run(traced, *golden_inputs)
    golden_outputs = list(golden_outputs) if traced.returns_tuple else [golden_outputs]
    path = Path(path)
    return write_library(for_inference(traced), path, name if name is not None else c_name(path.stem),
                         golden_inputs, golden_outputs, weights_in_file=weights_in_file)


def _as_spec(x, position: int) -> Spec:
    if isinstance(x, Spec):
        return x
    if isinstance(x, (Tensor, np.ndarray)):
        return spec(*x.shape, dtype=x.dtype)
    raise ExportError(f"lucid.export: input {position} must be a lucid.spec, a Tensor or a NumPy array, "
                      f"got {type(x).__name__}")


def _trace_for_inference(fn_or_module, specs: list):
    """The traced graph (a module in eval mode); a graph (an imported ONNX model, a loaded graph
    file) is exported as it is, for its own input types."""
    if isinstance(fn_or_module, Graph):
        fixed = [v.type for v in fn_or_module.inputs]
        if [TensorType(s.shape, s.dtype) for s in specs] != fixed:
            raise ExportError(f"lucid.export: graph {fn_or_module.name} takes inputs {', '.join(map(str, fixed))}; "
                              f"got {', '.join(map(str, specs))}")
        return fn_or_module
    return trace_in_eval_mode(fn_or_module, *specs)
