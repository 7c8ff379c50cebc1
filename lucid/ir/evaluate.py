"""Run a graph's nodes with the operators' NumPy reference kernels, given the arrays of its inputs.

`evaluate(graph, env)` is the loop that `lucid.ir.run` (after checking the inputs) and the `fused`
operator's reference kernel (on its body) share. It imports no other module of the IR: the nodes
bring their operator definitions (`node.opdef`), so operators may call it.
"""
from __future__ import annotations

import numpy as np


def evaluate(graph, env: dict) -> dict:
    """Fill `env` (value -> array, holding the graph's inputs and parameters) with every node's result."""
    for node in graph.nodes:
        env[node.output] = node.value if node.is_constant else execute(node, [env[v] for v in node.inputs])
    return env


def execute(node, arrays: list) -> np.ndarray:
    """One node's reference kernel on `arrays`, in the node's output dtype."""
    out_type = node.output.type
    with np.errstate(all="ignore"):
        result = np.asarray(node.opdef.compute(node.attrs, *arrays))
    if result.shape != out_type.shape:
        raise RuntimeError(f"{node.op}: kernel returned shape {result.shape}, shape rule says {out_type.shape}")
    return result.astype(out_type.dtype.numpy, copy=False)
