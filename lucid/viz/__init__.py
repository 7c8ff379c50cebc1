"""`lucid.viz`: pictures of lucid graphs, from a graph or from a module and its inputs.

    lucid.viz.render(model, lucid.spec(1, 1, 32, 32, 32), path="unet.html", depth=2)

`render(graph_or_module, *inputs, path, stage="traced", depth=None)` writes one file whose format
follows the suffix of `path`:
- `.html`: one self-contained interactive page (its script, style and the graph data are inside the
  file; it loads nothing): every stage of `stages.STAGES` selectable, the module hierarchy folding
  and unfolding on click, search, pan and zoom, a side panel with the clicked node's details;
- `.svg`: a static picture of `stage`, laid out in Python (`layout.py`);
- `.dot`: the same picture as graphviz input.
`depth` folds module calls nested `depth` levels deep into one box (`None`: nothing folded;
`"auto"`, the default: `Drawing.readable_depth`, the deepest folding that keeps a drawing to
`model.READABLE_BOXES` boxes, chosen for each drawing of the page, or for the first drawing of a
picture, so a big model opens at its blocks and each box unfolds on click). A module
whose trace fails with a lucid error is drawn as far as it was traced, the refused node marked with
its shape rule's message; `render` then returns normally with `failure` set (the error's text).

The package only reads graphs; see `model.py` for what a drawing shows.
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass

from ..errors import GraphError, LucidError
from ..ir.graph import Graph
from . import dot, html, model, svg
from .stages import STAGES, stage_graphs

FORMATS = {".html": html.render, ".svg": svg.render, ".dot": dot.render}


@dataclass
class Rendered:
    path: pathlib.Path
    stages: list              # the stages drawn
    failure: str | None       # the trace error, when only a partial graph could be drawn


def render(graph_or_module, *inputs, path, stage: str = "traced", depth: int | str | None = "auto") -> Rendered:
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"lucid.viz.render: cannot tell the format of {str(path)!r}; "
                         f"use a path ending in {', '.join(FORMATS)}")
    if stage not in STAGES:
        raise ValueError(f"lucid.viz.render: unknown stage {stage!r}; known stages: {', '.join(STAGES)}")
    if depth not in (None, "auto") and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        raise ValueError(f"lucid.viz.render: depth must be a positive integer, 'auto' or None, got {depth!r}")
    graph, classes, failure = _graph(graph_or_module, inputs)
    if failure is not None:
        drawn = {"traced": [("traced", model.build(failure.partial_graph, module_classes=classes, failure=failure))]}
    elif suffix == ".html":
        drawn = _every_stage(graph, classes)
    else:
        drawn = {stage: _drawings(graph, stage, classes)}
    first = stage if stage in drawn else next(iter(drawn))
    if suffix == ".html":
        text = html.render(drawn, first, depth)
    else:
        if depth == "auto":
            depth = drawn[first][0][1].readable_depth()
        text = FORMATS[suffix](drawn[first], depth)
    path.write_text(text, encoding="utf-8")
    return Rendered(path, list(drawn), str(failure) if failure is not None else None)


def _graph(graph_or_module, inputs: tuple):
    """(graph, module path -> class name, trace failure or None)."""
    if isinstance(graph_or_module, Graph):
        if inputs:
            raise ValueError(f"lucid.viz.render: a graph is drawn as it is; got {len(inputs)} inputs for it")
        return graph_or_module, {}, None
    from ..tracing import trace

    if not callable(graph_or_module):
        raise TypeError(f"lucid.viz.render: expected a lucid.ir.Graph, a module or a function, "
                        f"got {type(graph_or_module).__name__}")
    classes = ({p: type(m).__name__ for p, m in graph_or_module.named_modules()}
               if hasattr(graph_or_module, "named_modules") else {})
    try:
        return trace(graph_or_module, *inputs), classes, None
    except LucidError as error:
        if getattr(error, "partial_graph", None) is None:
            raise
        return None, classes, error


def _drawings(graph, stage: str, classes: dict) -> list:
    return [(title, model.build(g, classes, plan)) for title, g, plan in stage_graphs(graph, stage)]


#: Stages whose passes plan memory, which needs concrete sizes: a graph with symbolic dimensions has
#: none of them (specialise it to draw them).
SIZED_STAGES = ("planned", "training")


def _every_stage(graph, classes: dict) -> dict:
    drawn = {}
    for stage in STAGES:
        if graph.symbols() and stage in SIZED_STAGES:
            continue
        try:
            drawn[stage] = _drawings(graph, stage, classes)
        except GraphError:
            if stage != "training":      # only the training stage may be missing (nothing to differentiate)
                raise
    return drawn


__all__ = ["render", "Rendered", "STAGES"]
