"""What compiling a small conv's kernels as written costs at run time (`compile_worker.level_for`).

    python benchmarks/small_conv_levels.py

A conv node reading and writing fewer than `TINY_WORK` elements has its data-moving kernels (packing,
unpacking, zeroing, the weight check) and its conv kernel (which orders the calls of its register
tile) compiled at level 0, as written; only the tile keeps level 3. This script builds each row's
graph twice in one process, once with that rule and once with those kernels at level 2 (the rule
before), and calls the two `Executable`s alternately on one thread: with the same weights every call
(their packing is kept) and with the weights changed every call (repacked each time, as in
training). It prints each side's median and their ratio (level 0 / level 2: 1 is as fast).
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("LUCID_CACHE_DIR", tempfile.mkdtemp(prefix="lucid-levels-"))
import lucid  # noqa: E402
import lucid.nn.functional as F  # noqa: E402
from lucid.codegen import build  # noqa: E402
from lucid.codegen.compile_worker import level_for  # noqa: E402
from lucid.passes import autodiff, memory_planning  # noqa: E402
from lucid.runtime.executable import Executable  # noqa: E402

#: (input shape, output channels) of 3x3x3 convs (padding 1) on 2,800 to 3,900 elements in all.
ROWS = [((1, 4, 6, 6, 6), 8), ((1, 8, 4, 4, 4), 8), ((2, 2, 5, 5, 5), 4), ((1, 3, 8, 8, 8), 4)]
CALLS = 400


def level_2_instead_of_0(module) -> int:
    """The rule before: these nodes' kernels at level 2 (a graph of one conv has no other tiny kernel)."""
    return level_for(module) or 2


def executable(graph, rule) -> Executable:
    build.level_for = rule
    try:
        return Executable(memory_planning.run(graph))
    finally:
        build.level_for = level_for


def row_graph(shape, out_channels: int, backward: bool, rng):
    """The conv's graph (with its gradients when `backward`) and its arguments."""
    x = rng.standard_normal(shape).astype(np.float32)
    w = (0.1 * rng.standard_normal((out_channels, shape[1], 3, 3, 3))).astype(np.float32)
    graph = lucid.trace(lambda x, w: F.conv3d(x, w, padding=1), lucid.spec(x.shape), lucid.spec(w.shape))
    arguments = [x, w]
    if backward:
        graph = autodiff.run(graph, wrt=[v.name for v in graph.inputs])
        arguments.append(rng.standard_normal(graph.inputs[2].shape).astype(np.float32))
    return graph, arguments


def alternate(sides, argument_lists) -> list[float]:
    """Median seconds of each side's call, the sides alternating (and their order too), call r taking
    argument_lists[r % len(argument_lists)]."""
    times = [[] for _ in sides]
    for r in range(CALLS):
        arguments = argument_lists[r % len(argument_lists)]
        for side in (range(len(sides)) if r % 2 else reversed(range(len(sides)))):
            start = time.perf_counter()
            sides[side](*arguments, threads=1)
            times[side].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'input':18s} {'out':>3s} {'mode':8s} {'weights':9s} {'level 0 us':>10s} {'level 2 us':>10s} {'ratio':>6s}")
    for shape, out_channels in ROWS:
        for backward in (False, True):
            graph, arguments = row_graph(shape, out_channels, backward, rng)
            sides = [executable(graph, level_for), executable(graph, level_2_instead_of_0)]
            for got, expected in zip(sides[0](*arguments), sides[1](*arguments)):
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
            changed = list(arguments)
            changed[1] = arguments[1] * np.float32(1.01)
            for label, argument_lists in (("kept", [arguments]), ("changed", [arguments, changed])):
                at_0, at_2 = alternate(sides, argument_lists)
                print(f"{str(shape):18s} {out_channels:3d} {'fwd+bwd' if backward else 'fwd':8s} {label:9s} "
                      f"{at_0 * 1e6:10.1f} {at_2 * 1e6:10.1f} {at_0 / at_2:6.3f}")


if __name__ == "__main__":
    main()
