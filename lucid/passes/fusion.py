"""Fusion: groups of nodes that codegen computes in one kernel, made visible as `fused` nodes.

Guarantees of the returned graph:
- a tree of elementwise nodes (operators of kind `OpKind.ELEMENTWISE`), where each member's value
  but the last's has exactly one reader, a later member of the same shape, and is not an output or
  state update, is one `fused` node (one loop, no intermediate buffers): chains, and chains meeting
  at a node reading the ends of several (a norm's input gradient, `normalize(x...) * a + g * b`);
- a fusion anchor (an operator declaring `fusion_anchor`: conv, conv_transpose) followed by such a
  tree (bias is part of the conv; activation, scaling, a residual add and the chain computing the
  residual, a ReLU's gradient `where(y <= 0, 0, g)` of the input gradient g...; never two anchors)
  is one `fused` node whose body starts with the anchor: codegen applies the tree in the
  convolution's epilogue;
- such a tree (no anchor, no sum), or a concatenation along the channels (`joins_channels`),
  whose value is an anchor's first operand (the convolution's input) and has no other reader, and
  is not an output or state update, goes in front of that anchor in its `fused` node when the
  anchor's definition takes it (`takes_prologue`): codegen computes the input as it packs it (a
  norm's normalize and activation feeding a 3 x 3 x 3 conv, a UNet decoder's concatenation of the
  upsampled and the skip features, are never stored);
- such a tree without an anchor, whose value has one reader, a `sum` over axes that include the
  innermost one of size above 1, ends with that sum when each operand the tree reads from outside
  has the tree's shape, or is a one-element constant, or has size 1 along every summed axis and the
  tree's size along the others (a norm's per-channel statistics): codegen computes the tree where
  the sum would load its input (a norm's gradient sums `g * (x - mean)` without storing it).
  Nothing joins a group after its sum;
- a fused node's `body` attribute is the group as a `Graph` (inputs `in0...`, the group's nodes with
  their scopes, one-element constants copied in); its inputs are the group's other operands;
- a fused node stands as early as its operands allow, but not before its first member (an anchor
  keeps its place among the other nodes);
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
    groups = [group for group in _with_prologues(result, _groups(result)) if len(group) > 1]
    fused = {group[-1]: _fused_node(result, group) for group in groups}
    absorbed = {node for group in groups for node in group}
    placed = _placements(result.nodes, groups, fused)
    nodes = []
    for node in result.nodes:
        nodes += ([] if node in absorbed else [node]) + placed.get(node, [])
    result.rebuild(nodes, {last.output: node.output for last, node in fused.items()})
    return result


def _placements(nodes: list, groups: list, fused: dict) -> dict:
    """{node: the fused nodes going right after it}: each as early as its operands allow but not
    before its first member, so an anchor keeps its place among the other nodes (a weight gradient
    that reads the copy its input-gradient conv left packed still follows that conv, though the
    conv's epilogue applies nodes that came after the weight gradient)."""
    position = {node: k for k, node in enumerate(nodes)}
    producer = {node.output: node for node in nodes}
    placed = {}
    for group in sorted(groups, key=lambda group: position[group[-1]]):     # two after one node keep their order
        node = fused[group[-1]]
        after = max([group[0]] + [producer[v] for v in node.inputs if v in producer], key=position.__getitem__)
        placed.setdefault(after, []).append(node)
    return placed


def _groups(graph: Graph) -> list:
    users = graph.users()
    protected = set(graph.outputs) | set(graph.state_updates.values())
    group_of: dict = {}
    groups = []
    position = {node: k for k, node in enumerate(graph.nodes)}

    def open_group_ending_with(v):
        """The group whose last node computes `v`, if `v` has no other reader and no sum ended it."""
        group = group_of.get(v.node)
        if group is None or group[-1] is not v.node or len(users.get(v, [])) != 1 or v in protected:
            return None
        return None if group[-1].op in _SUMS else group

    for node in graph.nodes:
        elementwise = _elementwise(node)
        if elementwise:
            joined = _merged([group for v in node.inputs if (group := open_group_ending_with(v)) is not None
                              and symbolic.same(v.shape, node.output.shape)], group_of, position)
        elif node.op in _SUMS and not node.is_constant:
            joined = open_group_ending_with(node.inputs[0])
            joined = joined if joined is not None and _sums_chain(joined, node) else None
        else:
            joined = None
        if joined is not None:
            joined.append(node)
            group_of[node] = joined
        elif elementwise or _anchor(node):
            group_of[node] = [node]
            groups.append(group_of[node])
    return groups


def _with_prologues(graph: Graph, groups: list) -> list:
    """`groups` with each anchor group taking in front the elementwise group that computes its
    anchor's input, when nothing else reads that value (see the module docstring)."""
    users = graph.users()
    protected = set(graph.outputs) | set(graph.state_updates.values())
    ending = {group[-1].output: group for group in groups
              if group and not _anchor(group[0]) and group[-1].op not in _SUMS}
    ending.update({node.output: [node] for node in graph.nodes
                   if not node.is_constant and node.opdef.joins_channels(node.attrs)})
    for group in groups:
        if not group or not _anchor(group[0]):
            continue
        anchor = group[0]
        x = anchor.inputs[0]
        prologue = ending.get(x)
        if prologue and len(users.get(x, [])) == 1 and x not in protected and \
                anchor.opdef.takes_prologue(anchor.attrs, tuple(v.type for v in anchor.inputs)):
            group[:0] = prologue
            prologue.clear()
    return [group for group in groups if group]


def _merged(groups: list, group_of: dict, position: dict) -> list | None:
    """The group a node reading the values that end `groups` joins, the others merged into it (each
    emptied): the one starting with an anchor, its anchor first and every other node in graph order
    (no other node reads the anchor's chain); else the first, its nodes in graph order. Two anchors
    do not merge: the node joins the first group."""
    distinct = list({id(group): group for group in groups}.values())
    anchored = [group for group in distinct if group[0].opdef.fusion_anchor]
    if len(distinct) <= 1 or len(anchored) > 1:
        return distinct[0] if distinct else None
    first = anchored[0] if anchored else distinct[0]
    head = first[:1] if anchored else []
    first[:] = head + sorted((node for group in distinct for node in group if node not in head),
                             key=position.__getitem__)
    for group in distinct:
        if group is not first:
            group.clear()
    for node in first:
        group_of[node] = first
    return first


#: The reductions that may end a tree (reduction.py computes the tree where it loads its input).
_SUMS = ("sum",)


def _sums_chain(group: list, reduction: Node) -> bool:
    """Whether `reduction` may end the elementwise tree `group` (see the module docstring)."""
    shape, axes = reduction.inputs[0].shape, set(reduction.attrs["axes"])
    if group[0].opdef.fusion_anchor:
        return False
    innermost = next((d for d in reversed(range(len(shape))) if not symbolic.same(shape[d], 1)), None)
    if innermost is None or innermost not in axes:
        return False
    inside = {node.output for node in group}
    return all(v in inside or _one_element_constant(v) or symbolic.same(v.shape, shape)
               or _per_output(v.shape, shape, axes) for node in group for v in node.inputs)


def _one_element_constant(v) -> bool:
    return v.node is not None and v.node.is_constant and v.type.size == 1


def _per_output(operand: tuple, shape: tuple, axes: set) -> bool:
    """An operand of one value per output of the sum: size 1 on the summed axes, the input's elsewhere."""
    return len(operand) == len(shape) and all(
        symbolic.same(n, 1) if d in axes else symbolic.same(n, shape[d]) for d, n in enumerate(operand))


def _fused_node(graph: Graph, group: list) -> Node:
    members = set(group)
    body = Graph("body")
    mapping, outer = {}, []
    for node in group:
        for v in node.inputs:
            if v in mapping or (v.node in members):
                continue
            if _one_element_constant(v):
                mapping[v] = body.add_constant(v.node.value, v.node.scope)
            else:
                mapping[v] = body.add_input(f"in{len(outer)}", v.type)
                outer.append(v)
        mapping[node.output] = body.add_node(node.op, [mapping[v] for v in node.inputs], node.attrs, node.scope)
    body.set_outputs([mapping[group[-1].output]], as_tuple=False)
    anchor = next((node for node in group if _anchor(node)), group[0])          # a conv's errors name the conv
    return graph.new_node("fused", outer, {"body": body}, anchor.scope)


def _elementwise(node: Node) -> bool:
    return not node.is_constant and node.opdef.kind is OpKind.ELEMENTWISE


def _anchor(node: Node) -> bool:
    return not node.is_constant and node.opdef.fusion_anchor
