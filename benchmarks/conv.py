"""Convolution speed: lucid compiled vs lucid eager vs PyTorch, forward and forward+backward.

    python benchmarks/conv.py                 # every shape, 1 and 2 threads
    python benchmarks/conv.py --shapes C E    # some shapes
    python benchmarks/conv.py --quick         # a smoke run: small repeat counts, no eager timing

For each shape, mode (fwd, fwd+bwd) and thread count it prints the median time of repeated runs
(after 0.5 s of warm-up, at least --repeats runs and 1 s of them, the sides alternating in rounds of
0.1 s; see `median_times`) of lucid's compiled code, lucid's eager mode (1 run; only with --eager) and PyTorch (when installed) in its
default layout and with channels-last input and weight ("torch CL": torch.channels_last_3d, or
channels_last for 2-D), lucid's effective GFLOP/s and its fraction of the machine's peak
(measured with a generated FMA loop on the same number of threads), and the ratios
torch_ms / lucid_ms and CL_ms / lucid_ms (above 1: lucid is faster). fwd+bwd computes the input,
weight and bias gradients (3x the forward FLOPs). A column that was not measured (PyTorch not
installed, eager mode without --eager) shows n/a.

Each round of lucid's calls starts after a short pause, so PyTorch's OpenMP threads (which spin for
a moment after a call) do not compete with it for the cores. Both sides get steady memory: the script re-executes itself with glibc's mmap threshold raised
(GLIBC_TUNABLES), so PyTorch's large buffers are not mapped afresh on every call; lucid's compiled
code reuses its own arena anyway.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time

TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184"


def sibling_script(name: str):
    """The benchmark script `name`.py beside this one, loaded as a module named `name`_benchmark
    (networks.py cannot be imported as `networks`: that is examples/networks.py's name)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_benchmark",
                                                  os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def restart_with_malloc_tunables() -> None:
    """Re-execute the running benchmark script once with TUNABLES in its environment (glibc reads
    them only when a process starts); every script calls this first when run as a program."""
    if os.environ.get("GLIBC_TUNABLES") != TUNABLES:
        os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, GLIBC_TUNABLES=TUNABLES))


if __name__ == "__main__":
    restart_with_malloc_tunables()

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lucid  # noqa: E402
import lucid.nn.functional as F  # noqa: E402
from lucid.codegen.build import SERIAL_FLOPS  # noqa: E402
from lucid.codegen.peak import peak_gflops  # noqa: E402

#: Seconds to wait before each round of lucid's calls, after PyTorch's: its OpenMP threads spin for
#: a moment after their last call and would compete with lucid's threads for the two cores.
SETTLE = 0.01

# name: (transposed, input shape, out channels, kernel, stride, padding)
SHAPES = {
    "B": (True, (2, 64, 4, 8, 8), 32, 4, 2, 1),
    "C": (False, (1, 32, 32, 32, 32), 32, 3, 1, 1),
    "D": (False, (1, 64, 16, 32, 32), 64, 3, 1, 1),
    "E": (True, (1, 32, 16, 32, 32), 16, 4, 2, 1),
    "F": (False, (8, 3, 16, 112, 112), 64, (3, 7, 7), (1, 2, 2), (1, 3, 3)),
    "G1": (False, (16, 64, 56, 56), 64, 3, 1, 1),
    "G2": (True, (16, 64, 28, 28), 32, 4, 2, 1),
    "seed": (True, (1, 4, 8, 8, 8), 2, 4, 2, 1),
}


#: What a column shows when it was not measured, and the notes printed once above or below the table.
NOT_MEASURED = "n/a"
TORCH_MISSING = ("PyTorch is not installed, so its columns show n/a; to compare with it: "
                 ".venv/bin/pip install torch==2.13.0")
EFFECTIVE_RATE = ("eff GFLOP/s and eff % peak are effective rates: the direct algorithm's FLOPs (2 per weight "
                  "per output) over the time. Rows run with Winograd (3 x 3 stride 1 or 4 x 4 stride 2, 16 "
                  "channels or more) do 1.8-2.3x fewer multiplications, so they can pass 100% of peak.")
THREADS_SLOWER = ("More threads were slower on some row: a small call has too little work to split well "
                  "(waking the second worker and waiting for both costs tens of microseconds), and a second "
                  "core busy with other processes makes it worse. Graphs under "
                  f"{SERIAL_FLOPS / 1e6:.0f} MFLOP (conv.py's seed row) run on one thread whatever "
                  "LUCID_NUM_THREADS says, so their rows differ only by timing noise.")


def describe_shape(name: str) -> str:
    """One line of a shape's full geometry: `B  conv_transpose3d (2, 64, 4, 8, 8) -> 32 channels, kernel 4, ...`."""
    transposed, x_shape, out_channels, kernel, stride, padding = SHAPES[name]
    op = f"conv_transpose{len(x_shape) - 2}d" if transposed else f"conv{len(x_shape) - 2}d"
    return (f"{name:5} {op:16} input {x_shape} -> {out_channels} channels, kernel {kernel}, "
            f"stride {stride}, padding {padding}")


def shapes_help() -> str:
    """The --help epilog listing every shape's geometry."""
    return "shapes (input is N, C, D, H, W or N, C, H, W):\n" + "\n".join("  " + describe_shape(n) for n in SHAPES)


def note(text: str) -> None:
    """Print an explanation once, wrapped."""
    print(textwrap.fill(text, 110))


def cell(value: float | None, width: int, digits: int = 2) -> str:
    """A right-aligned number, or n/a for a column that was not measured."""
    return f"{NOT_MEASURED:>{width}}" if value is None else f"{value:{width}.{digits}f}"


def slower_with_more_threads(times: list) -> bool:
    """Whether any time in `times` (one per thread count, in increasing order) exceeds the one before."""
    return any(later > earlier for earlier, later in zip(times, times[1:]))


def ratio(numerator: float | None, denominator: float) -> float | None:
    return None if numerator is None else numerator / denominator


def functions(transposed: bool, rank: int):
    name = f"conv_transpose{rank}d" if transposed else f"conv{rank}d"
    torch_fn = None
    try:
        import torch
        torch_fn = getattr(torch.nn.functional, name)
    except ImportError:
        pass
    return getattr(F, name), torch_fn


def weight_shape(transposed: bool, in_channels: int, out_channels: int, kernel, rank: int) -> tuple:
    kernel = (kernel,) * rank if isinstance(kernel, int) else tuple(kernel)
    return ((in_channels, out_channels) if transposed else (out_channels, in_channels)) + kernel


def _macs(transposed: bool, x_shape: tuple, w_shape: tuple, y_shape: tuple) -> int:
    """Multiply-adds: each output (conv) or input (transposed conv, no inserted zeros) element meets
    one weight row of w_shape[1] * kernel entries."""
    per_element = int(np.prod(w_shape[1:]))
    return int(np.prod(x_shape if transposed else y_shape)) * per_element


#: Seconds of calls of each side before timing starts, and at least this many seconds of timed
#: calls of each side (beyond the `repeats` minimum): a step's first calls run slower while its
#: memory settles (fresh pages, caches), lucid's for about 20 calls on G2 at 2 threads (12.6 ms
#: falling to 11.2 ms), so short runs would time the warm-up instead of the steady state.
WARM_UP_SECONDS = 0.5
TIMED_SECONDS = 1.0

#: The sides are timed in alternating rounds of about this many seconds each: this VM's speed
#: drifts over seconds (the same step's median moves by up to 1.7x between consecutive 0.5 s
#: stretches at 2 threads), and alternating lets every side see the same stretches. Each round
#: starts with an untimed call, which pays for the caches and memory the other side left (F's
#: fwd+bwd step, 0.6 s: lucid's timed calls took 714 ms with it timed, 570-590 ms back to back).
ROUND_SECONDS = 0.1


def median_times(fns: list, repeats: int, warm_up: float = WARM_UP_SECONDS, timed: float = TIMED_SECONDS,
                 settle: tuple = ()) -> list:
    """The median seconds of one call of each of `fns`, timed in alternating rounds of
    ROUND_SECONDS (an untimed call, then at least one timed) until each has at least `repeats`
    timed calls and `timed` seconds of them, after `warm_up` seconds (at least one call) of each.
    Before each round of fns[i] for i in `settle`, a pause of SETTLE seconds."""
    for fn in fns:
        warm_up_end = time.perf_counter() + warm_up
        fn()
        while time.perf_counter() < warm_up_end:
            fn()
    times = [[] for _ in fns]
    while any(len(t) < repeats or sum(t) < timed for t in times):
        for index, fn in enumerate(fns):
            if index in settle:
                time.sleep(SETTLE)
            fn()
            round_end = time.perf_counter() + ROUND_SECONDS
            while True:
                started = time.perf_counter()
                fn()
                times[index].append(time.perf_counter() - started)
                if started >= round_end or (not timed and len(times[index]) >= repeats):
                    break
    return [float(np.median(t)) for t in times]


def median_time(fn, repeats: int, warm_up: float = WARM_UP_SECONDS, timed: float = TIMED_SECONDS) -> float:
    """The median seconds of one call of `fn` (see `median_times`)."""
    return median_times([fn], repeats, warm_up, timed)[0]


class Case:
    def __init__(self, name: str):
        transposed, x_shape, out_channels, kernel, stride, padding = SHAPES[name]
        self.name, self.rank = name, len(x_shape) - 2
        rng = np.random.default_rng(0)
        w_shape = weight_shape(transposed, x_shape[1], out_channels, kernel, self.rank)
        self.x = rng.standard_normal(x_shape).astype(np.float32)
        self.w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
        self.b = rng.standard_normal(out_channels).astype(np.float32)
        self.options = dict(stride=stride, padding=padding)
        self.lucid_fn, self.torch_fn = functions(transposed, self.rank)
        self.compiled = lucid.compile(lambda x, w, b: self.lucid_fn(x, w, b, **self.options))
        self.flops = 2 * _macs(transposed, x_shape, w_shape, self._output_shape())

    def _output_shape(self) -> tuple:
        specs = [lucid.spec(*a.shape) for a in (self.x, self.w, self.b)]
        return lucid.trace(lambda x, w, b: self.lucid_fn(x, w, b, **self.options), *specs).outputs[0].shape

    def lucid_step(self, backward: bool, compiled: bool):
        fn = self.compiled if compiled else (lambda x, w, b: self.lucid_fn(x, w, b, **self.options))
        tensors = [lucid.Tensor(a, requires_grad=backward) for a in (self.x, self.w, self.b)]
        return conv_step(fn, tensors, backward, lucid.no_grad)

    def torch_step(self, backward: bool, channels_last: bool = False):
        """PyTorch's step in its default layout, or with the input and weight in channels-last memory."""
        import torch

        tensors = [torch.tensor(a) for a in (self.x, self.w, self.b)]
        if channels_last:
            layout = torch.channels_last_3d if self.rank == 3 else torch.channels_last
            tensors[:2] = [t.contiguous(memory_format=layout) for t in tensors[:2]]
        tensors = [t.requires_grad_(backward) for t in tensors]
        return conv_step(lambda x, w, b: self.torch_fn(x, w, b, **self.options), tensors, backward, torch.no_grad)


def conv_step(fn, tensors: list, backward: bool, no_grad):
    """One timed call of `fn(*tensors)` (either framework's): forward + `.sum().backward()` with the
    gradients reset, or the forward alone under `no_grad()`."""
    def step():
        if backward:
            for t in tensors:
                t.grad = None
            fn(*tensors).sum().backward()
        else:
            with no_grad():
                fn(*tensors)
    return step


def run(names: list, thread_counts: list, repeats: int, eager: bool, quick: bool = False) -> None:
    try:
        import torch
    except ImportError:
        torch = None
    budget = dict(warm_up=0.0, timed=0.0) if quick else {}
    peaks = {t: peak_gflops(t) for t in thread_counts}
    print("peak (generated FMA loop): " + ", ".join(f"{t} thread(s) {p:.0f} GFLOP/s" for t, p in peaks.items()))
    if torch is None:
        note(TORCH_MISSING)
    if not eager:
        note("eager ms: n/a without --eager")
    note(EFFECTIVE_RATE)
    print(f"{'shape':6} {'mode':8} {'thr':>3} {'lucid ms':>9} {'eager ms':>9} {'torch ms':>9} {'torch CL':>9} "
          f"{'eff GFLOP/s':>11} {'eff % peak':>10} {'torch/lucid':>11} {'CL/lucid':>9}")
    threads_slower = False
    for name in names:
        case = Case(name)
        for backward in (False, True):
            flops = case.flops * (3 if backward else 1)
            row_ms = []
            for threads in thread_counts:
                os.environ["LUCID_NUM_THREADS"] = str(threads)
                steps = [case.lucid_step(backward, True)]
                if torch is not None and case.torch_fn is not None:
                    torch.set_num_threads(threads)
                    steps += [case.torch_step(backward), case.torch_step(backward, channels_last=True)]
                times = [1e3 * t for t in median_times(steps, repeats, **budget, settle=(0,))]
                lucid_ms, torch_ms, channels_last_ms = times + [None] * (3 - len(times))
                eager_ms = 1e3 * median_time(case.lucid_step(backward, False), 1, 0.0, 0.0) if eager else None
                gflops = flops / lucid_ms / 1e6
                print(f"{name:6} {'fwd+bwd' if backward else 'fwd':8} {threads:>3} {lucid_ms:9.2f} {cell(eager_ms, 9)} "
                      f"{cell(torch_ms, 9)} {cell(channels_last_ms, 9)} {gflops:11.1f} "
                      f"{100 * gflops / peaks[threads]:9.1f}% {cell(ratio(torch_ms, lucid_ms), 11)} "
                      f"{cell(ratio(channels_last_ms, lucid_ms), 9)}", flush=True)
                row_ms.append(lucid_ms)
            threads_slower |= slower_with_more_threads(row_ms)
    if threads_slower:
        note(THREADS_SLOWER)


def timing_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--threads, --repeats and --quick, as the scripts timing lucid against its peers take them."""
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts to time (default 1 2)")
    parser.add_argument("--repeats", type=int, default=7, help="at least this many timed calls per side (default 7)")
    parser.add_argument("--quick", action="store_true", help="2 repeats, no warm-up or time budget (a smoke run)")
    return parser


def rows_parser(description: str) -> argparse.ArgumentParser:
    """The options of a script timing conv.py's rows: --shapes, then `timing_options`."""
    parser = argparse.ArgumentParser(description=description, epilog=shapes_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES), metavar="SHAPE",
                        help="shapes to time, from the list below (default: all)")
    return timing_options(parser)


def main(argv=None) -> None:
    parser = rows_parser(__doc__.splitlines()[0])
    parser.add_argument("--eager", action="store_true", help="also time lucid's eager mode (slow)")
    args = parser.parse_args(argv)
    run(args.shapes, args.threads, 2 if args.quick else args.repeats, args.eager, args.quick)


if __name__ == "__main__":
    main()
