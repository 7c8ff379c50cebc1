"""Fusion: groups of nodes that codegen computes in one kernel, made visible as `fused` nodes.

Guarantees of the returned graph:
- a chain of elementwise nodes (operators of kind `OpKind.ELEMENTWISE`), where each link's value has
  exactly one reader, has the shape of its reader, and is not an output or state update, is one
  `fused` node (one loop, no intermediate buffers);
- a fusion anchor (an operator declaring `fusion_anchor`: conv, conv_transpose) followed by such a
  chain (bias is part of the conv; activation, scaling, residual add...) is one `fused` node whose
  body starts with the anchor: codegen applies the chain in the convolution's epilogue;
- a fused node's `body` attribute is the group as a `Graph` (inputs `in0...`, the group's nodes with
  their scopes, one-element constants copied in); its inputs are the group's other operands;
- results are unchanged (the fused operator's reference kernel runs the body); groups of one node
  are left alone. The input graph is not modified.
"""
from __future__ import annotations

from ..ir import symbolic
from ..ir.graph import Graph, Node
from ..ir.ops import OpKind

NAME = "fusion"


def run(graph: Graph) -> Graph:
    result = graph.copy()
    groups = [group for group in _groups(result) if len(group) > 1]
    fused_at = {group[-1]: _fused_node(result, group) for group in groups}
    absorbed = {node for group in groups for node in group[:-1]}
    nodes = [fused_at.get(node, node) for node in result.nodes if node not in absorbed]
    result.rebuild(nodes, {last.output: fused.output for last, fused in fused_at.items()})
    return result


def _groups(graph: Graph) -> list:
    users = graph.users()
    protected = set(graph.outputs) | set(graph.state_updates.values())
    group_of: dict = {}
    groups = []
    for node in graph.nodes:
        elementwise = _elementwise(node)
        if elementwise:
            joined = next((group_of[v.node] for v in node.inputs
                           if v.node in group_of and group_of[v.node][-1] is v.node and len(users.get(v, [])) == 1
                           and v not in protected and symbolic.same(v.shape, node.output.shape)), None)
            if joined is not None:
                joined.append(node)
                group_of[node] = joined
                continue
        if elementwise or _anchor(node):
            group_of[node] = [node]
            groups.append(group_of[node])
    return groups


def _fused_node(graph: Graph, group: list) -> Node:
    members = set(group)
    body = Graph("body")
    mapping, outer = {}, []
    for node in group:
        for v in node.inputs:
            if v in mapping or (v.node in members):
                continue
            if v.node is not None and v.node.is_constant and v.type.size == 1:
                mapping[v] = body.add_constant(v.node.value, v.node.scope)
            else:
                mapping[v] = body.add_input(f"in{len(outer)}", v.type)
                outer.append(v)
        mapping[node.output] = body.add_node(node.op, [mapping[v] for v in node.inputs], node.attrs, node.scope)
    body.set_outputs([mapping[group[-1].output]], as_tuple=False)
    return graph.new_node("fused", outer, {"body": body}, group[0].scope)


def _elementwise(node: Node) -> bool:
    return not node.is_constant and node.opdef.kind is OpKind.ELEMENTWISE


def _anchor(node: Node) -> bool:
    return not node.is_constant and node.opdef.fusion_anchor
