"""Lowering of `fused` nodes: an elementwise chain becomes one map kernel; a chain behind a fusion
anchor (a convolution) becomes that anchor's epilogue (applied as each output element is stored),
and a chain in front of it, computing its input, its prologue (applied as the input is packed);
a chain ending with a sum becomes the sum, computing the chain where it would load its input."""
from __future__ import annotations

from ...ir.graph import Node
from ...ir.ops import OpKind
from ..lowering import Lowering, lowers
from .conv import Epilogue, Prologue, lower_conv, lower_conv_transpose
from .elementwise import emit_map
from .reduction import lower_reduction_of_chain

#: The lowering of each fusion anchor (operators declaring `fusion_anchor`) that takes an epilogue.
EPILOGUE_LOWERINGS = {"conv": lower_conv, "conv_transpose": lower_conv_transpose}


@lowers("fused", run_time_extents=True)   # a map; an anchor must take them too
def lower_fused(lowering: Lowering, node: Node) -> None:
    body = node.attrs["body"]
    outer = dict(zip(body.inputs, node.inputs))
    nodes = [_rebound(n, outer) for n in body.nodes if not n.is_constant]
    anchor = next((k for k, n in enumerate(nodes) if n.opdef.fusion_anchor), None)
    if anchor is not None:
        prologue = Prologue(tuple(nodes[:anchor])) if anchor else None
        if anchor == len(nodes) - 1:                     # no epilogue: the anchor writes the output
            nodes[anchor].output, epilogue = node.output, None
        else:
            epilogue = Epilogue(tuple(nodes[anchor + 1:]), nodes[anchor].output, node.output)
        EPILOGUE_LOWERINGS[nodes[anchor].op](lowering, nodes[anchor], epilogue, prologue)
    elif nodes[-1].opdef.kind is OpKind.REDUCTION:
        lower_reduction_of_chain(lowering, nodes[-1], nodes[:-1], node.output)
    else:
        emit_map(lowering, "fused", nodes, node.output)


def _rebound(node: Node, outer: dict) -> Node:
    """A copy of a body node reading the fused node's operands in place of the body's inputs (body
    constants stay: the kernels make them immediates)."""
    copy = Node(node.op, [outer.get(v, v) for v in node.inputs], node.attrs, node.scope)
    copy.output = node.output
    return copy
