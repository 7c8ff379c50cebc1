"""The layered layout (lucid/viz/layout.py) on random graphs: no two boxes overlap, every edge runs
downwards through one route point per layer it crosses, and barycentre ordering removes crossings
that the first order had."""
import random

import pytest

from lucid.viz import layout


def random_dag(seed: int, count: int):
    rng = random.Random(seed)
    sizes = {f"n{k}": (rng.uniform(40, 200), rng.uniform(20, 80)) for k in range(count)}
    edges = [(f"n{a}", f"n{b}") for b in range(count) for a in range(b) if rng.random() < 2.5 / (b + 1)]
    return sizes, edges


@pytest.mark.parametrize("seed", range(12))
def test_random_graphs_have_no_overlapping_boxes_and_downward_edges(seed):
    sizes, edges = random_dag(seed, 10 + 5 * seed)
    placed = layout.layered(sizes, edges)
    boxes = [placed.box(n) for n in sizes]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] + 1e-6 or b[2] <= a[0] + 1e-6 or a[3] <= b[1] + 1e-6 or b[3] <= a[1] + 1e-6
    assert all(0 <= box[0] and box[2] <= placed.width and 0 <= box[1] and box[3] <= placed.height for box in boxes)
    assert set(placed.routes) == set(edges)
    for (s, d), route in placed.routes.items():
        assert route[0] == pytest.approx((placed.centres[s][0], placed.box(s)[3]))
        assert route[-1] == pytest.approx((placed.centres[d][0], placed.box(d)[1]))
        assert all(y0 < y1 for (_, y0), (_, y1) in zip(route, route[1:]))


def test_a_long_edge_gets_one_route_point_per_layer_it_passes():
    sizes = {n: (60.0, 30.0) for n in "abcde"}
    edges = [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d"), ("d", "e")]
    placed = layout.layered(sizes, edges)
    assert len(placed.routes[("a", "d")]) == 2 + 2           # passes the layers of b and c
    a, b, c = (placed.box(n) for n in "abc")
    for x, y in placed.routes[("a", "d")][1:-1]:                # the route goes around b and c, not through them
        assert not any(box[0] <= x <= box[2] and box[1] <= y <= box[3] for box in (b, c))


def test_barycentre_ordering_uncrosses_a_graph_the_first_order_crosses():
    # depth-first discovery orders the lower layer n5, n4, which crosses twice; n4, n5 crosses nothing
    sizes = {f"n{k}": (50.0, 20.0) for k in range(6)}
    edges = [("n0", "n5"), ("n1", "n4"), ("n1", "n5"), ("n2", "n4"), ("n3", "n5")]
    placed = layout.layered(sizes, edges)
    x = {n: placed.centres[n][0] for n in sizes}
    crossings = sum((x[s1] - x[s2]) * (x[d1] - x[d2]) < 0 for s1, d1 in edges for s2, d2 in edges)
    assert crossings == 0


def test_separate_pieces_are_packed_without_overlap():
    sizes = {f"{c}{k}": (80.0, 30.0) for c in "abcdefgh" for k in range(3)}
    edges = [(f"{c}0", f"{c}1") for c in "abcdefgh"] + [(f"{c}1", f"{c}2") for c in "abcdefgh"]
    placed = layout.layered(sizes, edges)
    boxes = [placed.box(n) for n in sizes]
    assert placed.width < 8 * (80 + 2 * layout.MARGIN)              # not all in one row
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
