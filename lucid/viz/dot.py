"""The DOT text of a picture, for users with graphviz (`dot -Tpng`): the same boxes and edges as the
SVG (`view.boxes`), one `subgraph cluster_k` per panel, edge labels with the shapes, the refused node
of a failed trace in red."""
from __future__ import annotations

from . import view

FILL = {"input": "#eaeef2", "output": "#eaeef2", "update": "#eaeef2", "fused": "#f3e8ff",
        "group": "#fff8c5", "failed": "#ffebe9", "conv": "#ddf4ff", "norm": "#dafbe1",
        "activation": "#fff1e5", "pool": "#e0f5f3", "shape": "#f6f8fa", "other": "#fbefff"}


def render(panels: list, depth: int | None) -> str:
    lines = ["digraph lucid {", '  rankdir=TB; node [shape=box, style="rounded,filled", fontname="monospace"];',
             '  edge [fontname="monospace", fontsize=9];']
    for k, (title, drawing) in enumerate(panels):
        lines.append(f"  subgraph cluster_{k} {{")
        lines.append(f"    label={_quote(title + (' — trace failed: ' + drawing.failure if drawing.failure else ''))};")
        boxes, edges = view.boxes(drawing, depth)
        for box in boxes:
            colour = ', color="#cf222e", penwidth=2.5' if box.kind == "failed" else ""
            style = ', style="rounded,filled,dashed"' if box.kind == "fused" else ""
            fill = FILL[box.category or box.kind]
            lines.append(f'    {_quote(f"{k}:{box.id}")} [label={_quote(chr(10).join([box.title] + box.lines))}, '
                         f'fillcolor="{fill}"{style}{colour}];')
        for src, dst, label in edges:
            lines.append(f"    {_quote(f'{k}:{src}')} -> {_quote(f'{k}:{dst}')} [label={_quote(label)}];")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
