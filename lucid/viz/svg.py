"""The static SVG picture: boxes placed by the layered layout (`layout.py`), drawn with no external
resource (no fonts, images or scripts; monospace text whose widths `view.py` estimates).

`render(panels, depth)` draws each `(title, Drawing)` panel side by side (forward | backward) and
returns the SVG text. Every box is a `<rect class="node ...">` in absolute coordinates, with its text
inside it and a `<title>` tooltip (module, parameters, FLOPs, bytes); edges are cubic curves through
the layout's route points with an arrowhead; each box's outgoing shape labels are centred under it.
A failed trace shows its message in a banner above the partial graph, and the refused node in red.
"""
from __future__ import annotations

import textwrap
from xml.sax.saxutils import escape

from . import layout, view

PANEL_GAP = 48.0
HEADER = 28.0
BANNER_WRAP = 110
LABELS = 3                 # shape labels drawn under a box (a folded group may have more outputs)
LABEL_HEIGHT = 13.0
LABEL_CHAR_WIDTH = 6.0     # px per character of the 10 px labels

STYLE = """
text { font-family: monospace; font-size: 11px; fill: #1f2328; }
.title { font-size: 12px; font-weight: bold; }
.panel-title { font-size: 15px; font-weight: bold; }
.node rect, rect.node { stroke: #57606a; stroke-width: 1; fill: #ffffff; }
rect.input, rect.output, rect.update { fill: #eaeef2; }
rect.conv { fill: #ddf4ff; } rect.norm { fill: #dafbe1; } rect.activation { fill: #fff1e5; }
rect.pool { fill: #e0f5f3; } rect.shape { fill: #f6f8fa; } rect.other { fill: #fbefff; }
rect.fused { fill: #f3e8ff; stroke: #8250df; stroke-dasharray: 5 3; stroke-width: 1.5; }
rect.group { fill: #fff8c5; stroke: #9a6700; stroke-width: 1.5; }
rect.failed { fill: #ffebe9; stroke: #cf222e; stroke-width: 2.5; }
.edge { fill: none; stroke: #8c959f; stroke-width: 1.2; }
text.shape-label { font-size: 10px; fill: #57606a; }
rect.shape-label { fill: #ffffff; fill-opacity: 0.92; }
.banner { fill: #cf222e; font-size: 12px; }
"""


def render(panels: list, depth: int | None) -> str:
    parts, left, bottom = [], 0.0, 0.0
    banner = _banner(panels)
    top = len(banner) * view.LINE_HEIGHT + (12 if banner else 0)
    for k, line in enumerate(banner):
        parts.append(f'<text class="banner" x="{layout.MARGIN}" y="{layout.MARGIN + k * view.LINE_HEIGHT:.1f}">'
                     f'{escape(line)}</text>')
    for title, drawing in panels:
        width, height = _panel(parts, drawing, title, left, top, depth, len(panels) > 1)
        left += width + PANEL_GAP
        bottom = max(bottom, top + height)
    banner_width = max((len(line) for line in banner), default=0) * view.TITLE_CHAR_WIDTH + 2 * layout.MARGIN
    width = max(left - PANEL_GAP, 200.0, banner_width)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{bottom:.0f}" '
            f'viewBox="0 0 {width:.0f} {bottom:.0f}">\n<style>{STYLE}</style>\n'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#8c959f"/></marker></defs>\n'
            f'<rect width="100%" height="100%" fill="#ffffff"/>\n' + "\n".join(parts) + "\n</svg>\n")


def _banner(panels: list) -> list:
    failures = [d.failure for _, d in panels if d.failure]
    return [line for f in failures for line in textwrap.wrap("trace failed: " + f, BANNER_WRAP)]


def _panel(parts: list, drawing, title: str, left: float, top: float, depth, titled: bool) -> tuple:
    boxes, edges = view.boxes(drawing, depth)
    placed = layout.layered({b.id: b.size for b in boxes}, [(s, d) for s, d, _ in edges])
    dy = top + (HEADER if titled else 0)
    if titled:
        parts.append(f'<text class="panel-title" x="{left + layout.MARGIN:.1f}" y="{top + layout.MARGIN:.1f}">'
                     f'{escape(title)}</text>')
    for (s, d), route in placed.routes.items():
        parts.append(f'<path class="edge" marker-end="url(#arrow)" d="{_curve(route, left, dy)}"/>')
    for box in boxes:
        parts.append(_box(box, placed.box(box.id), left, dy))
    return placed.width, placed.height + (dy - top)


def _curve(points: list, dx: float, dy: float) -> str:
    (x, y), path = points[0], []
    path.append(f"M{x + dx:.1f},{y + dy:.1f}")
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        middle = (y0 + y1) / 2
        path.append(f"C{x0 + dx:.1f},{middle + dy:.1f} {x1 + dx:.1f},{middle + dy:.1f} {x1 + dx:.1f},{y1 + dy:.1f}")
    return " ".join(path)


def _box(box, bounds: tuple, dx: float, dy: float) -> str:
    x0, y0, x1, y1 = bounds[0] + dx, bounds[1] + dy, bounds[2] + dx, bounds[3] + dy
    classes = " ".join(c for c in ("node", box.kind, box.category) if c)
    out = [f'<g id="{escape(box.id)}"><title>{escape(box.tooltip or box.title)}</title>',
           f'<rect class="{classes}" x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" rx="4"/>']
    centre = (x0 + x1) / 2
    for k, line in enumerate([box.title] + box.lines):
        cls = ' class="title"' if k == 0 else ""
        y = y0 + view.PADDING + (k + 0.8) * view.LINE_HEIGHT
        out.append(f'<text{cls} x="{centre:.1f}" y="{y:.1f}" text-anchor="middle">{escape(line)}</text>')
    for k, label in enumerate(box.labels[:LABELS]):
        y = y1 + 3 + k * LABEL_HEIGHT
        half = len(label) * LABEL_CHAR_WIDTH / 2 + 3
        out.append(f'<rect class="shape-label" x="{centre - half:.1f}" y="{y:.1f}" width="{2 * half:.1f}" '
                   f'height="{LABEL_HEIGHT:.1f}" rx="2"/><text class="shape-label" x="{centre:.1f}" '
                   f'y="{y + LABEL_HEIGHT - 3:.1f}" text-anchor="middle">{escape(label)}</text>')
    out.append("</g>")
    return "".join(out)
