"""Memory-bound layers: normalisation and upsampling against the machine's measured memory bandwidth.

    python benchmarks/memory_bound.py                # every layer, fwd and fwd+bwd, 1 and 2 threads
    python benchmarks/memory_bound.py --layers GroupNorm upsample-trilinear
    python benchmarks/memory_bound.py --quick        # a smoke run: tiny shapes, 2 repeats

First the memory bandwidth: a STREAM-like copy of a BUFFER_MIB array (well above the last-level
cache) by 1 or 2 threads, each copying its half with NumPy (which releases the GIL), median of
repeated runs; a copy moves 2 bytes per byte copied (read + write). Then, for each layer on a
realistic 3-D activation (N, C, D, H, W) = ACTIVATION, float32, and each thread count: the median
time of lucid's compiled module and of PyTorch eager, timed in alternating rounds (conv.py's
`median_times`), and

    GB/s = bytes that must move / lucid's time,   % bw = GB/s / measured bandwidth,
    torch/lucid = PyTorch's time / lucid's time (above 1: lucid is faster).

Bytes that must move: a forward reads its input and writes its output once; forward+backward adds
reading the output gradient and writing the input gradient (parameters and statistics are
negligible). Upsampling x2 takes a (N, C, D/2, H/2, W/2) input to the activation's size.
fwd+bwd is `layer(x).sum().backward()` on both sides (the summing and seeding included alike).
BatchNorm3d runs in training mode (batch statistics, running statistics updated).
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from conv import TORCH_MISSING, cell, median_times, note, ratio, restart_with_malloc_tunables

if __name__ == "__main__":
    restart_with_malloc_tunables()

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lucid  # noqa: E402
import lucid.nn as nn  # noqa: E402

ACTIVATION = (2, 32, 64, 64, 64)
QUICK_ACTIVATION = (2, 4, 8, 8, 8)
BUFFER_MIB = 256
QUICK_BUFFER_MIB = 8


def _layers(nn_module, channels: int, spatial: tuple) -> dict:
    """name -> (make the layer from the nn namespace given, input shape divisor): the same
    constructors serve lucid.nn and torch.nn."""
    return {
        "GroupNorm": (lambda: nn_module.GroupNorm(8 if channels % 8 == 0 else 2, channels), 1),
        "InstanceNorm3d": (lambda: nn_module.InstanceNorm3d(channels, affine=True), 1),
        "LayerNorm": (lambda: nn_module.LayerNorm(spatial), 1),
        "BatchNorm3d": (lambda: nn_module.BatchNorm3d(channels), 1),
        "upsample-trilinear": (lambda: nn_module.Upsample(scale_factor=2, mode="trilinear"), 2),
        "upsample-nearest": (lambda: nn_module.Upsample(scale_factor=2, mode="nearest"), 2),
    }


LAYERS = list(_layers(nn, 4, (8, 8, 8)))


def copy_bandwidth(mib: int, threads: int, repeats: int) -> float:
    """GB/s of a copy of `mib` MiB by `threads` threads (each its contiguous share), counting the
    read and the write; the median of `repeats` copies after one untimed copy (which maps the pages)."""
    source = np.ones(mib * 2**20 // 4, np.float32)
    target = np.empty_like(source)
    shares = np.array_split(np.arange(source.size), threads)
    bounds = [(share[0], share[-1] + 1) for share in shares]

    def copy_share(lo: int, hi: int) -> None:
        np.copyto(target[lo:hi], source[lo:hi])

    def copy() -> None:
        workers = [threading.Thread(target=copy_share, args=b) for b in bounds]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    copy()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        copy()
        times.append(time.perf_counter() - started)
    return 2 * source.nbytes / float(np.median(times)) / 1e9


class Layer:
    """One layer at one activation size: lucid's compiled step and PyTorch's eager step."""

    def __init__(self, name: str, activation: tuple):
        self.name, self.channels, self.spatial = name, activation[1], activation[2:]
        make, divisor = _layers(nn, self.channels, self.spatial)[name]
        self.x = np.random.default_rng(0).standard_normal(
            activation[:2] + tuple(n // divisor for n in self.spatial)).astype(np.float32)
        self.output_bytes = int(np.prod(activation)) * 4
        self.compiled = lucid.compile(make())

    def bytes_moved(self, backward: bool) -> int:
        forward = self.x.nbytes + self.output_bytes
        return forward + (self.output_bytes + self.x.nbytes if backward else 0)

    def lucid_step(self, backward: bool):
        x = lucid.Tensor(self.x, requires_grad=backward)

        def step():
            if backward:
                x.grad = None
                self.compiled(x).sum().backward()
            else:
                with lucid.no_grad():
                    self.compiled(x)
        return step

    def torch_step(self, backward: bool):
        import torch

        layer = _layers(torch.nn, self.channels, self.spatial)[self.name][0]()
        x = torch.tensor(self.x).requires_grad_(backward)

        def step():
            if backward:
                x.grad = None
                layer(x).sum().backward()
            else:
                with torch.no_grad():
                    layer(x)
        return step


def run(names: list, thread_counts: list, repeats: int, quick: bool) -> None:
    try:
        import torch
    except ImportError:
        torch = None
    activation = QUICK_ACTIVATION if quick else ACTIVATION
    buffer_mib = QUICK_BUFFER_MIB if quick else BUFFER_MIB
    budget = dict(warm_up=0.0, timed=0.0) if quick else {}
    bandwidth = {t: copy_bandwidth(buffer_mib, t, repeats) for t in thread_counts}
    print(f"memory bandwidth (copy of {buffer_mib} MiB, read + write): "
          + ", ".join(f"{t} thread(s) {gbs:.1f} GB/s" for t, gbs in bandwidth.items()))
    print(f"activation {activation} float32; GB/s = bytes that must move / lucid's time")
    if torch is None:
        note(TORCH_MISSING)
    print(f"{'layer':19} {'mode':8} {'thr':>3} {'lucid ms':>9} {'torch ms':>9} {'GB/s':>7} {'% bw':>6} "
          f"{'torch GB/s':>10} {'torch/lucid':>11}")
    for name in names:
        layer = Layer(name, activation)
        for backward in (False, True):
            moved = layer.bytes_moved(backward)
            for threads in thread_counts:
                os.environ["LUCID_NUM_THREADS"] = str(threads)
                steps = [layer.lucid_step(backward)]
                if torch is not None:
                    torch.set_num_threads(threads)
                    steps.append(layer.torch_step(backward))
                times = [1e3 * t for t in median_times(steps, repeats, **budget, settle=(0,))]
                lucid_ms, torch_ms = times + [None] * (2 - len(times))
                gbs = moved / lucid_ms / 1e6
                torch_gbs = None if torch_ms is None else moved / torch_ms / 1e6
                print(f"{name:19} {'fwd+bwd' if backward else 'fwd':8} {threads:>3} {lucid_ms:9.2f} "
                      f"{cell(torch_ms, 9)} {gbs:7.2f} {100 * gbs / bandwidth[threads]:5.0f}% "
                      f"{cell(torch_gbs, 10)} {cell(ratio(torch_ms, lucid_ms), 11)}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", nargs="+", default=LAYERS, choices=LAYERS, metavar="LAYER",
                        help=f"layers to time (default: all of {', '.join(LAYERS)})")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts to time (default 1 2)")
    parser.add_argument("--repeats", type=int, default=7, help="at least this many timed calls per side (default 7)")
    parser.add_argument("--quick", action="store_true",
                        help=f"activation {QUICK_ACTIVATION}, {QUICK_BUFFER_MIB} MiB copy, 2 repeats (a smoke run)")
    args = parser.parse_args(argv)
    run(args.layers, args.threads, 2 if args.quick else args.repeats, args.quick)


if __name__ == "__main__":
    main()
