"""Constant folding.

Guarantees: a node whose inputs are all constants is replaced by a constant holding the result of the
operator's reference kernel (so folding computes exactly what the interpreter would), provided the
result is no larger than max(FOLD_LIMIT, the total size of its inputs) elements; a larger result
(e.g. a scalar broadcast to a big volume) stays a node, so graphs do not swell. A node whose
attributes hold symbolic sizes stays a node too (its result depends on the sizes of the call). Folding proceeds in
order, so chains of constant operations fold completely. Constants left unread are removed by dead
code elimination, not here. The input graph is not modified.
"""
from __future__ import annotations

import numpy as np

from ..ir import symbolic
from ..ir.graph import Graph, Node
from .rewrite import rewrite

NAME = "constant_folding"
FOLD_LIMIT = 4096


def run(graph: Graph) -> Graph:
    return rewrite(graph, _fold)


def _fold(node: Node) -> Node | None:
    if node.is_constant or not all(v.node is not None and v.node.is_constant for v in node.inputs):
        return None
    if any(symbolic.is_symbolic(value) for value in node.attrs.values()):
        return None
    out = node.output.type
    if out.size > max(FOLD_LIMIT, sum(v.type.size for v in node.inputs)):
        return None
    with np.errstate(all="ignore"):
        data = np.asarray(node.opdef.compute(node.attrs, *(v.node.value for v in node.inputs)))
    return node.output.graph.new_constant(data.astype(out.dtype.numpy), node.scope)
