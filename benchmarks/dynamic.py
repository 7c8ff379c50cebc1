"""Symbolic shapes' cost (issue 21): lucid.compile(dynamic=True) against the static compile, and a first call at a new size.

    python benchmarks/dynamic.py                    # conv.py's rows B-G2, the norm row, the UNet step; 1 and 2 threads
    python benchmarks/dynamic.py --shapes C G1 --threads 1
    python benchmarks/dynamic.py --shapes seed --tiny --quick --threads 1      # a smoke run

Rows: each conv row of benchmarks/conv.py (its shapes, forward and forward+backward, `conv_step`),
a row of the families that take symbolic sizes today ("norm": GroupNorm + SiLU + MaxPool3d +
softmax, inference) and the UNet training step of benchmarks/unet_step.py. For each row and thread
count it prints
- static ms and dynamic ms: the median time of a call of the same step compiled for its sizes
  (`dynamic=False`) and for symbolic batch and spatial sizes (`dynamic=True`), the two timed in
  alternating rounds (conv.py's `median_times`), and static/dynamic: the dynamic variant's speed
  relative to the static one (1 is as fast; the goal is >= 0.9);
- first-call overhead: the wall time of the first call at a new size minus a steady call at that
  size, the median over new sizes (each spatial dimension 1 and 2 larger than the compiled size,
  in multiples of 2**depth for the UNet; a call at 3 larger first grows the arena, whose fresh
  pages are not what is measured; the goal is under 1 ms); "host +ms": the same for the call's
  time outside the kernels (lucid's own work: the variant, the sizes, the per-size layout, checks,
  outputs), which a single first call of a long row measures to a few microseconds where the wall
  difference carries the kernels' run-to-run noise; and the modules compiled
  (`stats()["native_compiles"]`) and loaded from the disk cache (`cache_loads`) by those calls
  (the goal is 0/0).
A row whose operators codegen does not take with symbolic sizes yet prints that reason (the
CompileError of `dynamic=True`) instead of numbers.
"""
from __future__ import annotations

import os
import sys
import time

from conv import SHAPES, Case, conv_step, median_time, median_times, restart_with_malloc_tunables, rows_parser

if __name__ == "__main__":
    restart_with_malloc_tunables()

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))
import lucid  # noqa: E402
import lucid.nn as nn  # noqa: E402
import lucid.nn.functional as F  # noqa: E402
from lucid.errors import CompileError, ShapeError, TraceError  # noqa: E402
from lucid.runtime.executable import Executable  # noqa: E402
from models import UNet3D  # noqa: E402
from unet_step import lucid_step  # noqa: E402

#: conv.py's rows this script times by default (its seed row is the smoke run's).
CONV_ROWS = ["B", "C", "D", "E", "F", "G1", "G2"]
#: How much larger each spatial dimension is at the new sizes whose first call is timed, and at
#: the call before them that grows the arena.
NEW_SIZES, GROW = (1, 2), 3
#: What compiling a row for symbolic sizes may refuse: an operator codegen does not take
#: symbolically, model code needing a number, a size rule the graph cannot state.
REFUSALS = (CompileError, ShapeError, TraceError)


class NormNet(nn.Module):
    """GroupNorm + SiLU + MaxPool3d + softmax: families that take symbolic sizes today."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(4, channels)

    def forward(self, x):
        return F.max_pool3d(F.silu(self.norm(x)), 2).softmax(dim=1)


class Row:
    """One benchmark row: `step(compiled, shape)` makes a timed call of a compiled function at an
    input shape; `make(dynamic)` compiles the row's function; `granule`: the multiple its spatial
    sizes must keep (a UNet's 2**depth, for its skip connections)."""

    def __init__(self, name: str, mode: str, shape: tuple, make, step, granule: int = 1):
        self.name, self.mode, self.shape, self.make, self.step = name, mode, shape, make, step
        self.granule = granule


class ConvLayer(nn.Module):
    """conv.py's case as a layer: its weight and bias are parameters, so `dynamic=True` makes only
    the input's batch and spatial sizes symbolic."""

    def __init__(self, case: Case):
        super().__init__()
        self.case = case
        self.weight, self.bias = nn.Parameter(lucid.Tensor(case.w)), nn.Parameter(lucid.Tensor(case.b))

    def forward(self, x):
        return self.case.lucid_fn(x, self.weight, self.bias, **self.case.options)


def conv_rows(name: str) -> list:
    layer = ConvLayer(Case(name))
    rng = np.random.default_rng(0)

    def step_of(backward):
        def step(compiled, shape):
            x = lucid.Tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=backward)
            return conv_step(lambda x, w, b: compiled(x), [x, layer.weight, layer.bias], backward, lucid.no_grad)
        return step

    return [Row(name, "fwd+bwd" if backward else "fwd", layer.case.x.shape,
                lambda dynamic: lucid.compile(layer, dynamic=dynamic), step_of(backward))
            for backward in (False, True)]


def norm_row(tiny: bool) -> Row:
    lucid.manual_seed(0)
    model = NormNet(8).eval()
    shape = (1, 8, 8, 8, 8) if tiny else (2, 8, 32, 32, 32)

    def step(compiled, shape):
        x = lucid.Tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
        return conv_step(lambda x: compiled(x), [x], False, lucid.no_grad)

    return Row("norm", "fwd", shape, lambda dynamic: lucid.compile(model, dynamic=dynamic), step)


def unet_row(tiny: bool) -> Row:
    base, depth, size, batch = (2, 1, 8, 1) if tiny else (16, 2, 32, 2)
    lucid.manual_seed(0)
    model = UNet3D(in_channels=1, out_channels=2, base=base, depth=depth)

    def step(compiled, shape):
        rng = np.random.default_rng(0)
        images = rng.standard_normal(shape).astype(np.float32)
        labels = rng.integers(0, 2, (shape[0],) + shape[2:])
        return lucid_step(model, images, labels, compiled)

    def make(dynamic):
        return lucid.compile(model, dynamic=dynamic)

    return Row("unet", "step", (batch, 1) + (size,) * 3, make, step, granule=2 ** depth)


def larger(row: Row, by: int) -> tuple:
    """The row's shape with each spatial dimension `by` granules larger."""
    return row.shape[:2] + tuple(n + by * row.granule for n in row.shape[2:])


def built(compiled) -> tuple:
    stats = compiled.stats()
    return stats["native_compiles"], stats["cache_loads"]


class KernelClock:
    """The time compiled calls spend running their kernels (`Executable._execute`, wrapped), so a
    call's host time (lucid's own work: choosing the variant, binding the sizes, the per-size layout,
    checks, allocating outputs) can be told from it: one slow kernel run in a single first call
    would otherwise hide a sub-millisecond overhead in a 300 ms row."""

    def __init__(self):
        self.seconds = 0.0
        run = Executable._execute

        def timed(executable, *args):
            started = time.perf_counter()
            try:
                return run(executable, *args)
            finally:
                self.seconds += time.perf_counter() - started

        Executable._execute = timed

    def host_seconds(self, step) -> float:
        """Wall seconds of `step()` outside the kernels."""
        self.seconds, started = 0.0, time.perf_counter()
        step()
        return time.perf_counter() - started - self.seconds


def first_call_overhead(row: Row, compiled, repeats: int, budget: dict, clock: KernelClock) -> tuple:
    """(median seconds of a first call at a new size beyond a steady call there: wall and host
    time, (modules compiled, modules loaded) by those first calls)."""
    row.step(compiled, larger(row, GROW))()
    before = built(compiled)
    walls, hosts = [], []
    for by in NEW_SIZES:
        step = row.step(compiled, larger(row, by))
        started = time.perf_counter()
        first_host = clock.host_seconds(step)
        first = time.perf_counter() - started
        walls.append(first - median_time(step, repeats, **budget))
        hosts.append(first_host - float(np.median([clock.host_seconds(step) for _ in range(max(repeats, 3))])))
    after = built(compiled)
    return float(np.median(walls)), float(np.median(hosts)), (after[0] - before[0], after[1] - before[1])


def time_row(row: Row, threads: int, repeats: int, budget: dict, clock: KernelClock) -> str:
    """The row's line: its numbers, or the reason dynamic=True refuses it."""
    os.environ["LUCID_NUM_THREADS"] = str(threads)
    label = f"{row.name:6} {row.mode:8} {threads:>3}"
    static, dynamic = row.make(False), row.make(True)
    try:
        dynamic_step = row.step(dynamic, row.shape)
        dynamic_step()
    except REFUSALS as error:
        return f"{label}  refused: {str(error).splitlines()[0]}"
    static_step = row.step(static, row.shape)
    static_ms, dynamic_ms = [1e3 * t for t in median_times([static_step, dynamic_step], repeats, **budget)]
    wall, host, (compiles, loads) = first_call_overhead(row, dynamic, repeats, budget, clock)
    return (f"{label} {static_ms:10.2f} {dynamic_ms:11.2f} {static_ms / dynamic_ms:11.2f} "
            f"{1e3 * wall:14.3f} {1e3 * host:10.3f} {compiles:>6}/{loads}")


def main(argv=None) -> None:
    parser = rows_parser(__doc__.splitlines()[0])
    parser.set_defaults(shapes=CONV_ROWS)
    parser.add_argument("--tiny", action="store_true", help="a small norm row and UNet (a smoke run)")
    parser.add_argument("--no-unet", dest="unet", action="store_false", help="leave out the UNet step")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    budget = dict(warm_up=0.0, timed=0.0) if args.quick else {}
    print(f"{'row':6} {'mode':8} {'thr':>3} {'static ms':>10} {'dynamic ms':>11} {'static/dyn':>11} "
          f"{'1st call +ms':>14} {'host +ms':>10} {'compiled/loaded':>15}")
    clock = KernelClock()
    rows = [row for name in args.shapes for row in conv_rows(name)] + [norm_row(args.tiny)]
    rows += [unet_row(args.tiny)] if args.unet else []
    for row in rows:
        for threads in args.threads:
            print(time_row(row, threads, repeats, budget, clock), flush=True)


if __name__ == "__main__":
    main()
