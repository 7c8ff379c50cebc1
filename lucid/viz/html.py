"""The interactive HTML viewer: one self-contained file.

`render(stages, initial, depth)` takes `{stage: [(title, Drawing)]}` and a depth (an int, `None` or
`"auto"`: each drawing opens folded at its own `readable_depth`) and returns an HTML page whose
style (`viewer.css`), script (`viewer.js`) and graph data (JSON, in a `<script type=
"application/json">` element) are all inside it: it loads nothing, from the network or from disk,
and works offline. Python computes each box's text and size (`view.py`, the metrics the SVG uses);
the page folds and unfolds module calls and lays out the visible boxes itself (`viewer.js` has the
layered layout of `layout.py`, since each fold changes the graph it draws).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from html import escape

from . import layout, svg, view

HERE = pathlib.Path(__file__).parent
METRICS = {"char": view.CHAR_WIDTH, "title": view.TITLE_CHAR_WIDTH, "label": svg.LABEL_CHAR_WIDTH, "pad": view.PADDING, "min": view.MIN_WIDTH, "line": view.LINE_HEIGHT,
           "gap": layout.GAP, "layerGap": layout.LAYER_GAP, "margin": layout.MARGIN,
           "placeholder": layout.PLACEHOLDER_WIDTH, "sweeps": layout.SWEEPS}


def render(stages: dict, initial: str, depth: int | str | None) -> str:
    data = {"stages": [{"name": name, "panels": [_panel(title, d, depth) for title, d in panels]}
                       for name, panels in stages.items()],
            "initial": initial, "metrics": METRICS}
    name = next(iter(stages.values()))[0][1].name
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (TEMPLATE.replace("@TITLE@", escape(name))
            .replace("@CSS@", (HERE / "viewer.css").read_text(encoding="utf-8"))
            .replace("@JS@", (HERE / "viewer.js").read_text(encoding="utf-8"))
            .replace("@DATA@", payload))


def _panel(title: str, drawing, depth) -> dict:
    return {"title": title, "failure": drawing.failure,
            "depth": drawing.readable_depth() if depth == "auto" else depth,
            "items": [_item(item) for item in drawing.items],
            "groups": [_group(g) for g in drawing.groups.values()],
            "edges": [[e.src, e.dst, e.label] for e in drawing.edges]}


def _item(item) -> dict:
    box = view.item_box(item)
    details = {k: v for k, v in dataclasses.asdict(item).items() if k not in ("id", "group")}
    return {"id": item.id, "group": item.group, "kind": box.kind, "category": box.category, "title": box.title,
            "lines": box.lines, "size": view.box_size(box), "details": details}


def _group(group) -> dict:
    box = view.group_box(group)
    return {"id": group.id, "parent": group.parent, "level": group.level, "label": group.label,
            "title": box.title, "lines": box.lines, "size": view.box_size(box),
            "details": {"module": group.label, "nodes": len(group.items), "params": group.params,
                        "flops": group.flops, "bytes": group.bytes}}


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>@TITLE@ — lucid graph</title>
<link rel="icon" href="data:,">
<style>
@CSS@
</style>
</head>
<body>
<header>
  <strong id="graph-name">@TITLE@</strong>
  <label>stage <select id="stage"></select></label>
  <input id="search" type="search" placeholder="search op or module (Enter: go)">
  <button id="start" type="button" title="key 0 or r">start view</button>
  <button id="fit" type="button" title="key f">fit</button>
  <button id="fold-all" type="button">fold all</button>
  <button id="unfold-all" type="button">unfold all</button>
  <button id="export" type="button">export SVG</button>
</header>
<div id="banner" hidden></div>
<main>
  <div id="view">
    <svg id="canvas" xmlns="http://www.w3.org/2000/svg"><g id="viewport"></g></svg>
    <svg id="minimap" xmlns="http://www.w3.org/2000/svg"><g id="minimap-graph"></g><rect id="minimap-view"></rect></svg>
  </div>
  <aside id="side">
    <section id="details"><p class="hint">Click a node for its details; click a folded module (▸) to open it.</p></section>
    <section id="help"><h3>help</h3><table>
      <tr><td>drag · wheel</td><td>pan · zoom</td></tr>
      <tr><td>f</td><td>fit: the whole graph</td></tr>
      <tr><td>0 or r</td><td>start view: the input, text at full size</td></tr>
      <tr><td>minimap</td><td>the whole graph and the visible part: click or drag to go there</td></tr>
      <tr><td>click ▸ box</td><td>open the folded module</td></tr>
    </table></section>
    <section><h3>modules</h3><div id="tree"></div></section>
  </aside>
</main>
<script type="application/json" id="lucid-data">@DATA@</script>
<script>
@JS@
</script>
</body>
</html>
"""
