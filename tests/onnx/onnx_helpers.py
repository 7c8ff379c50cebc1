"""Building small ONNX models with onnx.helper and checking lucid's import of them.

`single(op, args, **attrs)` is a one-node model: each arg is a shape (a float32 graph input), an
array (an initialiser) or None (an omitted optional input). `check(model, *arrays)` imports it and
compares `lucid.ir.run` and the compiled graph with the reference (ONNX Runtime unless given).
"""
from __future__ import annotations

import numpy as np
import pytest

helper = pytest.importorskip("onnx.helper")     # the submodule: tests/onnx/ is not mistaken for the package
from onnx import TensorProto, numpy_helper  # noqa: E402

import lucid  # noqa: E402
import lucid.onnx  # noqa: E402


def model(nodes, inputs: dict, outputs: list, initialisers: dict | None = None, opset: int = 17) -> bytes:
    """The bytes of a model; `inputs` maps names to float32 shapes, `initialisers` names to arrays."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in (initialisers or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def single(op: str, args: list, outputs: int = 1, opset: int = 17, **attrs) -> tuple:
    """(model bytes, the arrays of its graph inputs) of one `op` node; inputs are seeded normal floats."""
    rng = np.random.default_rng(0)
    names, inputs, initialisers, arrays = [], {}, {}, []
    for k, arg in enumerate(args):
        if arg is None:
            names.append("")
        elif isinstance(arg, np.ndarray):
            names.append(f"c{k}")
            initialisers[f"c{k}"] = arg
        else:
            names.append(f"x{k}")
            inputs[f"x{k}"] = arg
            arrays.append(rng.standard_normal(arg).astype(np.float32))
    out = [f"y{k}" for k in range(outputs)]
    node = helper.make_node(op, names, out, name=f"/block/{op}", **attrs)
    return model([node], inputs, out, initialisers, opset), arrays


def reference(model_bytes: bytes, arrays) -> list:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: a for i, a in zip(session.get_inputs(), arrays)})


def check(model_bytes: bytes, arrays, expected=None, compiled: bool = True, rtol=1e-4, atol=1e-5):
    """Import, run eagerly (and compiled) and compare every output with `expected` (default: ORT)."""
    expected = reference(model_bytes, arrays) if expected is None else expected
    graph = lucid.onnx.load(model_bytes)
    runs = {"lucid.ir.run": lucid.ir.run(graph, *arrays)}
    if compiled:
        outputs = lucid.compile(graph)(*(lucid.tensor(a) for a in arrays))
        runs["lucid.compile"] = tuple(o.numpy() for o in outputs) if isinstance(outputs, tuple) else outputs.numpy()
    for how, got in runs.items():
        got = got if isinstance(got, tuple) else (got,)
        assert len(got) == len(expected), how
        for g, e in zip(got, expected):
            assert g.shape == e.shape, (how, g.shape, e.shape)
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=how)
    return graph
