"""A layered (top-to-bottom) layout of a directed graph of boxes, computed with networkx.

`layered(sizes, edges)` takes box sizes `{id: (width, height)}` and edges `[(src, dst)]` and returns
a `Layout` with box centres and edge routes. It guarantees:
- boxes never overlap: boxes of one layer are at least GAP apart horizontally, layers are at least
  LAYER_GAP apart vertically (room for an edge label under each box);
- every edge points downwards: a box's layer is its longest path from a source (cycles, which
  drawings of lucid graphs do not have, are broken first), then pulled down towards its readers;
- an edge spanning several layers is routed through placeholder points, one per layer, which take
  part in ordering and placement like thin boxes, so long edges go around boxes, not through them;
- separate pieces of the graph are laid out one by one and packed in rows;
- crossings are reduced by barycentre sweeps (down and up, keeping the best order seen);
- x positions follow each box's neighbours: each sweep places a layer as close as possible to the
  mean of its neighbours' positions subject to the ordering and spacing (an exact least-squares
  placement, pool-adjacent-violators), placeholders weighted more so long edges run straight.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

GAP = 28.0
LAYER_GAP = 56.0
MARGIN = 24.0
PLACEHOLDER_WIDTH = 10.0
SWEEPS = 12


@dataclass
class Layout:
    centres: dict            # id -> (x, y)
    sizes: dict              # id -> (width, height)
    routes: dict             # (src, dst) -> [(x, y), ...] from the source's bottom to the target's top
    width: float
    height: float

    def box(self, node_id) -> tuple:
        """(left, top, right, bottom) of a box."""
        (x, y), (w, h) = self.centres[node_id], self.sizes[node_id]
        return x - w / 2, y - h / 2, x + w / 2, y + h / 2


def layered(sizes: dict, edges: list) -> Layout:
    graph = nx.DiGraph()
    graph.add_nodes_from(sizes)
    graph.add_edges_from((s, d) for s, d in edges if s != d)
    order = {n: k for k, n in enumerate(sizes)}
    components = sorted(nx.weakly_connected_components(graph), key=lambda c: (-len(c), min(map(order.get, c))))
    return _pack([_component(graph.subgraph(c).copy(), sizes) for c in components])


def _component(graph: nx.DiGraph, sizes: dict) -> Layout:
    """The layout of one connected component, its top-left corner at (MARGIN, MARGIN)."""
    _break_cycles(graph)
    layer = _layers(graph)
    chains, width = _add_placeholders(graph, layer, sizes)
    layers = _order(graph, layer)
    x = _place(graph, layers, width)
    y, height = _rows(layers, sizes)
    centres = {n: (x[n], y[layer[n]]) for n in layer if not isinstance(n, tuple)}
    routes = {}
    for (s, d), chain in chains.items():
        start = (x[s], y[layer[s]] + sizes[s][1] / 2)
        end = (x[d], y[layer[d]] - sizes[d][1] / 2)
        routes[(s, d)] = [start] + [(x[p], y[layer[p]]) for p in chain] + [end]
    right = max((x[n] + width[n] / 2 for n in x), default=0.0)
    return Layout(centres, {n: sizes[n] for n in centres}, routes, right + MARGIN, height)


def _pack(parts: list) -> Layout:
    """Components side by side in rows no wider than the widest component (the main graph first;
    the many small pieces a gradient graph has do not stretch the picture sideways)."""
    limit = max((p.width for p in parts), default=0.0)
    limit = max(limit, sum(p.width * p.height for p in parts) ** 0.5)
    result = Layout({}, {}, {}, 0.0, 0.0)
    left = top = row_height = 0.0
    for part in parts:
        if left and left + part.width > limit:
            left, top, row_height = 0.0, top + row_height, 0.0
        result.centres.update({n: (x + left, y + top) for n, (x, y) in part.centres.items()})
        result.routes.update({e: [(x + left, y + top) for x, y in r] for e, r in part.routes.items()})
        result.sizes.update(part.sizes)
        left += part.width
        row_height = max(row_height, part.height)
        result.width, result.height = max(result.width, left), max(result.height, top + row_height)
    return result


def _break_cycles(graph: nx.DiGraph) -> None:
    while True:
        try:
            s, d = nx.find_cycle(graph)[-1][:2]
        except nx.NetworkXNoCycle:
            return
        graph.remove_edge(s, d)
        graph.add_edge(d, s)


def _layers(graph: nx.DiGraph) -> dict:
    """Longest path from the sources, then every box with room below it moved down next to its
    nearest reader (so a value read late is not drawn far above its reader)."""
    order = list(nx.topological_sort(graph))
    layer = {}
    for n in order:
        layer[n] = max((layer[p] + 1 for p in graph.predecessors(n)), default=0)
    for n in reversed(order):
        successors = [layer[s] for s in graph.successors(n)]
        if successors:
            layer[n] = min(successors) - 1
    return layer


def _add_placeholders(graph: nx.DiGraph, layer: dict, sizes: dict) -> tuple:
    """Split edges spanning layers into chains of placeholders; returns the chains and all widths."""
    width = {n: sizes[n][0] for n in sizes}
    chains = {}
    for s, d in list(graph.edges):
        chain = []
        for k in range(layer[s] + 1, layer[d]):
            p = ("placeholder", s, d, k)
            layer[p], width[p] = k, PLACEHOLDER_WIDTH
            chain.append(p)
        if chain:
            graph.remove_edge(s, d)
            nx.add_path(graph, [s] + chain + [d])
        chains[(s, d)] = chain
    return chains, width


def _order(graph: nx.DiGraph, layer: dict) -> list:
    """Boxes of each layer, left to right, with few crossings."""
    count = max(layer.values(), default=-1) + 1
    first_seen = {n: k for k, n in enumerate(nx.dfs_preorder_nodes(graph))}
    layers = [sorted((n for n in layer if layer[n] == k), key=first_seen.get) for k in range(count)]
    best, best_crossings = [list(r) for r in layers], _crossings(graph, layers)
    for sweep in range(SWEEPS):
        downwards = sweep % 2 == 0
        indices = range(1, count) if downwards else range(count - 2, -1, -1)
        for k in indices:
            fixed = {n: i for i, n in enumerate(layers[k - 1 if downwards else k + 1])}
            neighbours = graph.predecessors if downwards else graph.successors
            layers[k] = _by_barycentre(layers[k], fixed, neighbours)
        crossings = _crossings(graph, layers)
        if crossings < best_crossings:
            best, best_crossings = [list(r) for r in layers], crossings
    return best


def _by_barycentre(row: list, fixed: dict, neighbours) -> list:
    def key(item):
        index, n = item
        positions = [fixed[m] for m in neighbours(n) if m in fixed]
        return (sum(positions) / len(positions) if positions else index, index)
    return [n for _, n in sorted(enumerate(row), key=key)]


def _crossings(graph: nx.DiGraph, layers: list) -> int:
    total = 0
    for upper, lower in zip(layers, layers[1:]):
        at = {n: i for i, n in enumerate(lower)}
        ends = sorted((i, at[m]) for i, n in enumerate(upper) for m in graph.successors(n) if m in at)
        total += sum(1 for a in range(len(ends)) for b in range(a + 1, len(ends))
                     if ends[a][0] < ends[b][0] and ends[a][1] > ends[b][1])
    return total


def _place(graph: nx.DiGraph, layers: list, width: dict) -> dict:
    x = {}
    for row in layers:
        left = MARGIN
        for n in row:
            x[n] = left + width[n] / 2
            left += width[n] + GAP
    for sweep in range(2 * SWEEPS):
        downwards = sweep % 2 == 0
        rows = layers[1:] if downwards else layers[-2::-1]
        for row in rows:
            neighbours = graph.predecessors if downwards else graph.successors
            wanted = []
            for n in row:
                near = [x[m] for m in neighbours(n)]
                wanted.append(sum(near) / len(near) if near else x[n])
            for n, value in zip(row, _spaced(row, wanted, width)):
                x[n] = value
    shift = MARGIN - min((x[n] - width[n] / 2 for n in x), default=MARGIN)
    return {n: value + shift for n, value in x.items()}


def _spaced(row: list, wanted: list, width: dict) -> list:
    """Positions in row order, each at least its half-widths plus GAP from the previous, as close as
    possible (weighted least squares) to `wanted`: pool-adjacent-violators on offset targets."""
    offsets, total = [], 0.0
    for k, n in enumerate(row):
        if k:
            total += (width[row[k - 1]] + width[n]) / 2 + GAP
        offsets.append(total)
    blocks = []                    # [weighted sum, weight, count]
    for n, target, offset in zip(row, wanted, offsets):
        weight = 4.0 if isinstance(n, tuple) else 1.0
        blocks.append([weight * (target - offset), weight, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, w, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += w
            blocks[-1][2] += c
    base = [b[0] / b[1] for b in blocks for _ in range(b[2])]
    return [b + offset for b, offset in zip(base, offsets)]


def _rows(layers: list, sizes: dict) -> tuple:
    """The y of each layer's centre line, and the total height."""
    y, top = [], MARGIN
    for row in layers:
        height = max((sizes[n][1] for n in row if n in sizes), default=0.0)
        y.append(top + height / 2)
        top += height + LAYER_GAP
    return y, top - LAYER_GAP + MARGIN
