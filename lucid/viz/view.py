"""What a static picture draws of a `Drawing`: its boxes and edges with some groups folded.

`boxes(drawing, depth)` folds every module call at nesting level `depth` (deeper ones are inside it;
`None` folds nothing) and returns `(boxes, edges)`:
- a `Box` per visible item or folded group, with its title, text lines, style kind and size (from
  monospace text metrics, wide enough for the shape label of its outgoing edges, so labels drawn
  centred under boxes never overlap one another);
- edges between boxes, one per (source box, target box, shape), none inside a folded group.
The SVG and DOT renderers draw exactly this; the HTML viewer folds interactively in the browser.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from ..ir.ops import OpKind, all_ops

CHAR_WIDTH = 6.6          # px per character of the 11 px monospace font
TITLE_CHAR_WIDTH = 7.3    # px per character of the 12 px bold title
LINE_HEIGHT = 14.0
PADDING = 8.0
MIN_WIDTH = 90.0
WRAP = 56                 # characters per line of a failure message


@dataclass
class Box:
    id: str
    kind: str              # 'input', 'op', 'fused', 'output', 'update', 'group', 'failed'
    title: str
    lines: list = field(default_factory=list)
    labels: list = field(default_factory=list)    # shape labels of outgoing edges
    tooltip: str = ""
    size: tuple = (0.0, 0.0)
    category: str = ""     # colour class of an op


def boxes(drawing, depth: int | None) -> tuple:
    folded = drawing.folded_at(depth)
    result, seen = {}, set()
    for item in drawing.items:
        box_id = folded[item.id]
        if box_id not in result:
            result[box_id] = item_box(item) if box_id == item.id else group_box(drawing.groups[box_id])
    edges = []
    for edge in drawing.edges:
        key = (folded[edge.src], folded[edge.dst], edge.label)
        if key[0] != key[1] and key not in seen:
            seen.add(key)
            edges.append(key)
            if edge.label not in result[key[0]].labels:
                result[key[0]].labels.append(edge.label)
    for box in result.values():
        box.size = box_size(box)
    return list(result.values()), edges


def category(op: str) -> str:
    """The colour class of an operator: that of its declared kind."""
    opdef = all_ops().get(op)
    return CATEGORIES.get(opdef.kind, "other") if opdef is not None else "other"


#: colour class of each operator kind (other kinds: "other")
CATEGORIES = {
    OpKind.CONTRACTION: "conv",
    OpKind.REDUCTION: "norm",
    OpKind.ELEMENTWISE: "activation",
    OpKind.POOLING: "pool",
    OpKind.LAYOUT: "shape",
}


def quantity(n: int | None, unit: str) -> str:
    """`4489216, 'FLOP'` -> `'4.5 MFLOP'`; None (a count over symbolic sizes) -> `'? FLOP'`."""
    if n is None:
        return f"? {unit}"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= factor:
            return f"{n / factor:.1f} {prefix}{unit}"
    return f"{n} {unit}"


def item_box(item) -> Box:
    """The box of one item (its size still to be set by `box_size`)."""
    if item.failed is not None:
        lines = [f"{item.name}: {item.cls}" if item.name else ""] + textwrap.wrap(item.failed, WRAP)
        return Box(item.id, "failed", f"✖ {item.op}", [line for line in lines if line], tooltip=item.failed)
    if item.kind == "fused":
        lines = [m["op"] for m in item.members]
        return Box(item.id, "fused", "fused", lines, tooltip=_stats(item.params, item.flops, item.bytes))
    if item.kind != "op":
        return Box(item.id, item.kind, item.label, [item.output])
    lines = [f"{item.name}: {item.cls}"] if item.name else []
    return Box(item.id, "op", item.op, lines, tooltip=_stats(item.params, item.flops, item.bytes),
               category=category(item.op))


def group_box(group) -> Box:
    """The box of a folded group: its label, node count and totals."""
    lines = [f"{len(group.items)} nodes", _stats(group.params, group.flops, group.bytes)]
    return Box(group.id, "group", group.label, lines, tooltip=lines[1])


def _stats(params: int, flops: int, nbytes: int) -> str:
    return f"{quantity(params, 'params') if params else 'no params'} · {quantity(flops, 'FLOP')} · {quantity(nbytes, 'B')}"


def box_size(box: Box) -> tuple:
    """Width (title, lines and outgoing shape labels fit) and height of a box."""
    widths = [len(box.title) * TITLE_CHAR_WIDTH] + [len(t) * CHAR_WIDTH for t in box.lines + box.labels]
    return max(MIN_WIDTH, max(widths) + 2 * PADDING), (1 + len(box.lines)) * LINE_HEIGHT + 2 * PADDING
