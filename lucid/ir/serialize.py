"""`graph.save(path)` / `lucid.ir.load(path)`: a graph and its bound parameter values in one file.

The file is a lucid archive (`lucid/archive.py`, the format `lucid.save` writes: zip + JSON manifest +
.npy, never pickled) holding
`{"format": "lucid-graph", "version": 1, "text": <the graph's text form>, "params": {name: array}}`.
Loading refuses anything else, and versions newer than this lucid reads, with a GraphError naming
the file; the text is parsed and verified, and the arrays become the graph's bindings.
"""
from __future__ import annotations

import os

import numpy as np

from ..archive import load as load_archive, save as save_archive
from ..errors import GraphError, SerializationError
from .graph import Graph
from .text import parse

FORMAT = "lucid-graph"
VERSION = 1


def save(graph: Graph, path) -> None:
    params = {name: np.asarray(binding) for name, binding in graph.bindings.items()}
    save_archive({"format": FORMAT, "version": VERSION, "text": str(graph), "params": params}, path)


def load(path) -> Graph:
    """Read a graph written by `graph.save`; GraphError if the file is not one this lucid understands."""
    name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else getattr(path, "name", repr(path))
    try:
        content = load_archive(path)
    except SerializationError as exc:
        raise GraphError(f"lucid.ir.load: {name} is not a lucid graph file: {exc}") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise GraphError(f"lucid.ir.load: {name} is a lucid file but not a graph (format {FORMAT!r} expected)")
    version = content.get("version")
    if type(version) is not int or not 1 <= version <= VERSION:
        raise GraphError(f"lucid.ir.load: {name} has graph format version {version!r}; this lucid reads "
                         f"versions 1 to {VERSION}")
    text, params = content.get("text"), content.get("params")
    if (not isinstance(text, str) or not isinstance(params, dict)
            or not all(isinstance(v, np.ndarray) for v in params.values())):
        raise GraphError(f"lucid.ir.load: {name} lacks the graph text or its parameter table")
    try:
        graph = parse(text)
    except GraphError as exc:
        raise GraphError(f"lucid.ir.load: {name} holds a graph that does not parse: {exc}") from None
    graph.bindings = dict(params)
    try:
        return graph.verify()
    except GraphError as exc:
        raise GraphError(f"lucid.ir.load: {name}: {exc}") from None
