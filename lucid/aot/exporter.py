"""`lucid.export`: a module or function compiled ahead of time into a shared library with a C ABI.

`export(fn_or_module, *inputs, path, name=None, weights_in_file=False)` traces the model (a module in
eval mode: BatchNorm uses its running statistics, Dropout is off; lazy layers are resolved by the
trace; a `lucid.ir.Graph`, such as an imported ONNX model, is taken as it is and its inputs may be
left out), runs the inference pipeline `lucid.compile` runs (`passes.pipeline.for_inference`), runs
the traced graph with the interpreter on seeded random golden inputs, and hands everything to the
AOT emitter (`emitter.py`), which writes the library, its header and, if asked, its weights file.
The library's `N_selftest()` checks that its code reproduces those golden outputs.

Symbolic dimensions. Inputs given as `lucid.spec(lucid.dim("N"), 1, lucid.dim("D", min=16), 32, 32)`
export one library for every size meeting the dimensions' ranges and the constraints the trace
records: it takes the inputs' shapes per call (`N_run_dims`, see the emitter and the generated
header). Each symbolic dimension must be some input's axis on its own (so a call's shapes give its
size), and codegen must take every operator symbolically (else a CompileError naming the operator).
The golden data then holds two sizes (`selftest_sizes`): each dimension at its smallest valid size,
and at the smallest valid size at least 3 above that (the first again when its range has none).
`lucid.runtime.load(path)` runs the result from Python with numpy and ctypes only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..ir import symbolic
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
    golden = []
    for sizes in selftest_sizes(traced):
        golden_inputs = [rng.standard_normal(symbolic.evaluate(v.shape, sizes)).astype(v.dtype.numpy)
                         for v in traced.inputs]
        golden_outputs = run(traced, *golden_inputs)
        golden.append((golden_inputs, list(golden_outputs) if traced.returns_tuple else [golden_outputs]))
    path = Path(path)
    return write_library(for_inference(traced), path, name if name is not None else c_name(path.stem),
                         golden, weights_in_file=weights_in_file)


def selftest_sizes(graph: Graph) -> list[dict]:
    """The sizes the self-test runs (see the module docstring): `[{}]` for a concrete graph."""
    symbols = sorted(graph.symbols(), key=lambda s: s.name)
    if not symbols:
        return [{}]
    first = {s.name: _valid_size(graph, s, s.min) for s in symbols}
    second = {s.name: _valid_size(graph, s, first[s.name] + 3, fallback=first[s.name]) for s in symbols}
    return [first, second] if second != first else [first]


def _valid_size(graph: Graph, symbol, start: int, fallback: int | None = None) -> int:
    """The smallest size from `start` (64 tried) within the symbol's range that meets the graph's
    constraints on it; `fallback` when there is none."""
    top = start + 64 if symbol.max is None else min(symbol.max + 1, start + 64)
    for value in range(start, top):
        if all(c.holds({symbol.name: value}) for c, _ in graph.constraints if symbol in c.symbols):
            return value
    if fallback is None:
        raise ExportError(f"lucid.export: no size of dimension {symbol.name} from {start} to {top - 1} meets "
                          f"the constraints {', '.join(str(c) for c, _ in graph.constraints if symbol in c.symbols)}")
    return fallback


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
