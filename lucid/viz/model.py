"""The drawing model: what a picture of a graph shows, independent of the output format.

`build(graph, ...)` reads a `lucid.ir.Graph` (it never changes it) and returns a `Drawing`:
- items: the boxes. One per graph input, per operator node, per output and per state update.
  Parameters and constants are not boxes: they are listed as operands of the nodes that read them,
  and a node's parameter count is the number of elements of the parameters it reads;
- a `fused` node is one item whose `members` are the nodes of its body (op, module, attributes,
  FLOPs): the fused group drawn as one cluster;
- edges: producer item -> consumer item, labelled with the value's shape and dtype;
- groups: the module hierarchy as module *calls*. A run of consecutive nodes recorded inside module
  path P is one call of P, so a module called twice (a shared pooling layer) gives two groups and
  folding a group never creates a cycle. A call holding a single node, containers that are never
  called (ModuleList) and, in graphs read from files, unnamed wrappers of a single group are left out. Each group knows its parent,
  its nesting level (1 for children of the root) and the totals of its items;
- every item has FLOPs (`lucid.ir.cost`), output bytes and, for planned graphs, its arena offset;
- `failure`: for a partial graph from a failed trace, the refused node is an item marked `failed`
  with the shape rule's message.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.cost import node_flops, value_bytes
from ..ir.text import format_type

#: module classes that hold children without being called themselves
UNCALLED_CONTAINERS = frozenset({"ModuleList", "ModuleDict"})


@dataclass
class Item:
    id: str
    kind: str                      # 'input', 'op', 'fused', 'output', 'update'
    op: str
    name: str                      # the value, or the module path of a node
    cls: str = ""                  # the module class of a node
    group: str | None = None       # innermost group id
    attrs: dict = field(default_factory=dict)
    operands: list = field(default_factory=list)    # [(role, name, type text)]
    output: str = ""               # type text of the result
    params: int = 0
    flops: int | None = 0
    bytes: int | None = 0
    members: list = field(default_factory=list)     # fused body: [{'op', 'module', 'attrs', 'flops'}]
    offset: int | None = None      # arena offset after memory planning
    failed: str | None = None      # the shape rule's message, for the node a trace failed on

    @property
    def label(self) -> str:
        return self.op if self.kind in ("op", "fused") else f"{self.kind} {self.name}"


@dataclass
class Edge:
    src: str
    dst: str
    label: str                     # shape and dtype, e.g. 'f32[1, 4, 16, 16, 16]'


#: Boxes a picture may have before `depth="auto"` folds module calls: about what a 1600 x 1000 window
#: shows with its text at full size (some nine layers of boxes), so a big model opens at its blocks.
READABLE_BOXES = 24


@dataclass
class Group:
    id: str
    path: str
    cls: str | None
    parent: str | None
    level: int = 1
    call: int = 1                  # which call of this module path (1, 2, ...)
    items: list = field(default_factory=list)       # ids of items anywhere inside
    params: int = 0
    flops: int | None = 0
    bytes: int | None = 0

    @property
    def label(self) -> str:
        name = f"{self.path}: {self.cls}" if self.cls else self.path
        return name + (f" (call {self.call})" if self.call > 1 else "")


@dataclass
class Drawing:
    name: str
    items: list
    edges: list
    groups: dict                   # id -> Group, parents before children
    failure: str | None = None

    def folded_at(self, depth: int | None) -> dict:
        """item id -> id of the box it is drawn in when groups at nesting `depth` are folded (groups
        deeper than that are inside them); items outside such groups map to themselves."""
        box = {}
        for item in self.items:
            box[item.id] = item.id
            group = self.groups.get(item.group)
            while depth is not None and group is not None:
                if group.level == depth:
                    box[item.id] = group.id
                group = self.groups.get(group.parent)
        return box

    def readable_depth(self, max_boxes: int = READABLE_BOXES) -> int | None:
        """The deepest folding whose picture has at most `max_boxes` boxes: `None` (nothing folded)
        when the whole graph is that small, else the deepest nesting level that fits, else 1. A level
        drawing no more boxes than the level above it (a Sequential filling its module) counts as
        that level: the picture is the same and the outer module's name says more."""
        levels = sorted({g.level for g in self.groups.values()})
        best, shown = 1, 0
        for depth in levels + [None]:              # shallow to deep: each level draws at least as many boxes
            boxes = len(set(self.folded_at(depth).values()))
            if boxes > max_boxes:
                break
            if boxes > shown:
                best, shown = depth, boxes
        return best


def build(graph, module_classes: dict | None = None, plan=None, failure=None) -> Drawing:
    """The drawing of `graph`. `module_classes` maps module paths to class names (known when drawing
    a module); `plan` is a `MemoryPlan` whose offsets annotate the items; `failure` is the exception
    of a failed trace (its `failing_node` is drawn, marked)."""
    nodes = [n for n in graph.nodes if not n.is_constant]
    failing = getattr(failure, "failing_node", None)
    if failing is not None:
        nodes.append(failing)
    items, producer = _input_items(graph)
    params = {v: v.type.size for v in graph.params}
    edges = []
    for index, node in enumerate(nodes):
        item = _node_item(node, f"n{index}", params, plan)
        if node is failing:
            item.failed = getattr(failure, "rule_message", str(failure))
        edges += _edges_into(node.inputs, item.id, producer)
        items.append(item)
        if node.output is not None:
            producer[node.output] = item.id
    sinks = _sink_items(graph, producer, edges)
    groups = _groups(items, module_classes or {}, {v.name: size for v, size in params.items()})
    _place_sinks(sinks, {i.id: i for i in items}, edges, groups)
    items += sinks
    return Drawing(graph.name, items, edges, groups, str(failure) if failure is not None else None)


def _input_items(graph):
    items, producer = [], {}
    for v in graph.inputs:
        items.append(Item(f"i_{v.name}", "input", "input", v.name, output=format_type(v.type), bytes=value_bytes(v)))
        producer[v] = items[-1].id
    return items, producer


def _node_item(node, item_id: str, params: dict, plan) -> Item:
    operands, param_elements = [], 0
    for k, v in enumerate(node.inputs):
        if v in params:
            operands.append(("param", v.name, format_type(v.type)))
            param_elements += 0 if any(v is u for u in node.inputs[:k]) else params[v]
        elif v.node is not None and v.node.is_constant:
            operands.append(("constant", _constant_text(v.node.value), format_type(v.type)))
        else:
            operands.append(("input", v.name or _producer(v.node), format_type(v.type)))
    fused = node.op == "fused"
    output = node.output
    return Item(
        item_id, "fused" if fused else "op", node.op, node.scope.path if node.scope else "",
        node.scope.cls if node.scope else "",
        attrs={} if fused else {k: _attr_text(a) for k, a in node.attrs.items()},
        operands=operands, output=format_type(output.type) if output is not None else "",
        params=param_elements, flops=node_flops(node) if output is not None else 0,
        bytes=value_bytes(output) if output is not None else 0,
        members=_members(node.attrs["body"]) if fused else [],
        offset=plan.offsets.get(output) if plan is not None else None,
    )


def _members(body) -> list:
    return [{"op": n.op, "module": str(n.scope) if n.scope else "", "output": format_type(n.output.type),
             "attrs": {k: _attr_text(a) for k, a in n.attrs.items()}, "flops": node_flops(n)}
            for n in body.nodes if not n.is_constant]


def _edges_into(values, dst: str, producer: dict) -> list:
    seen, edges = set(), []
    for v in values:
        if v in producer and v not in seen:
            seen.add(v)
            edges.append(Edge(producer[v], dst, format_type(v.type)))
    return edges


def _sink_items(graph, producer: dict, edges: list) -> list:
    sinks = [("output", str(k), v) for k, v in enumerate(graph.outputs)]
    sinks += [("update", name, v) for name, v in graph.state_updates.items()]
    items = []
    for kind, name, v in sinks:
        if v not in producer:
            continue
        items.append(Item(f"{kind[0]}_{name}", kind, kind, name, output=format_type(v.type), bytes=value_bytes(v)))
        edges.append(Edge(producer[v], items[-1].id, format_type(v.type)))
    return items


def _producer(node) -> str:
    return f"{node.op} @ {node.scope.path}" if node.scope and node.scope.path else node.op


def _attr_text(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _constant_text(array) -> str:
    return repr(array.item()) if array.size == 1 else f"constant ({array.size} elements)"


def _groups(items: list, module_classes: dict, param_sizes: dict) -> dict:
    """Module calls as groups (see the module docstring); sets each node item's `group`."""
    groups, open_calls, calls, previous = {}, {}, {}, set()
    for item in items:
        if item.kind not in ("op", "fused"):
            continue
        parts = item.name.split(".") if item.name else []
        prefixes = [".".join(parts[:k]) for k in range(1, len(parts) + 1)]
        parent = None
        for path in prefixes:
            if path not in previous:
                calls[path] = calls.get(path, 0) + 1
                open_calls[path] = f"g{len(groups)}"
                cls = module_classes.get(path) or (item.cls if path == item.name else None)
                groups[open_calls[path]] = Group(open_calls[path], path, cls, parent, call=calls[path])
            parent = open_calls[path]
            if groups[parent].cls is None and path == item.name:
                groups[parent].cls = item.cls or None
        item.group = parent
        previous = set(prefixes)
    _drop_wrappers(groups, items)
    _total(groups, items, param_sizes)
    return groups


def _drop_wrappers(groups: dict, items: list) -> None:
    """Leave out groups that add nothing: a call holding one node (the node's box says its module),
    containers that are never called, and unnamed paths that only wrap one other group. Innermost
    first."""
    for group in reversed(list(groups.values())):
        children = [g for g in groups.values() if g.parent == group.id]
        direct = [i for i in items if i.group == group.id]
        single_node = not children and len(direct) == 1
        wrapper = group.cls in UNCALLED_CONTAINERS or (group.cls is None and not direct and len(children) == 1)
        if single_node or wrapper:
            for child in children:
                child.parent = group.parent
            for item in direct:
                item.group = group.parent
            del groups[group.id]
    for group in groups.values():
        group.level = 1 if group.parent is None else groups[group.parent].level + 1


def _sum(a: int | None, b: int | None) -> int | None:
    """A total of counts, None (unknown: symbolic sizes) if either is."""
    return None if a is None or b is None else a + b


def _total(groups: dict, items: list, param_sizes: dict) -> None:
    params: dict = {g: set() for g in groups}
    for item in items:
        group = groups.get(item.group)
        while group is not None:
            group.items.append(item.id)
            group.flops = _sum(group.flops, item.flops)
            group.bytes = _sum(group.bytes, item.bytes)
            params[group.id].update(name for role, name, _ in item.operands if role == "param")
            group = groups.get(group.parent)
    for group_id, names in params.items():
        groups[group_id].params = sum(param_sizes[n] for n in names)


def _place_sinks(sinks: list, by_id: dict, edges: list, groups: dict) -> None:
    """A state update belongs to the module call that computed it (it folds with it)."""
    source = {e.dst: e.src for e in edges}
    for sink in sinks:
        if sink.kind == "update":
            sink.group = by_id[source[sink.id]].group
            group = groups.get(sink.group)
            while group is not None:
                group.items.append(sink.id)
                group = groups.get(group.parent)
