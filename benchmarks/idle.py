"""Idle cost of the worker pool: CPU used between compiled calls, and back-to-back call time.

    python benchmarks/idle.py                 # Conv3d 2x8x16x16x16 -> 8 + ReLU, 1 and 2 threads
    python benchmarks/idle.py --rounds 3 --threads 2

The model runs compiled (`lucid.compile`) and exported (`lucid.export`, called through
`lucid.runtime.load`). For each configuration (side, thread count) a round makes
- `--calls` paused calls: each call is followed by a sleep of 5, 10 or 20 ms (in turn). The process's
  CPU time (`getrusage(RUSAGE_SELF)`, user + system, every thread) is read around each call and each
  sleep: the CPU used while the caller sleeps is what the worker pool costs between calls ("idle CPU");
  the CPU used during the calls is the work ("call CPU"), their wall time "paused wall";
- 200 back-to-back calls (no pause): their median wall time ("back-to-back").
The configurations take turns within each round (so all see the same machine load), and the table
gives the median of each figure over the rounds, per call.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conv import restart_with_malloc_tunables
    restart_with_malloc_tunables()

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import lucid  # noqa: E402
import lucid.nn as nn  # noqa: E402
import lucid.runtime  # noqa: E402

SHAPE = (2, 8, 16, 16, 16)
PAUSES = (0.005, 0.010, 0.020)
BACK_TO_BACK = 200


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def paused_calls(call, calls: int) -> dict:
    """Milliseconds per call: CPU while the caller sleeps between calls, CPU and wall time of the calls."""
    idle = busy = wall = 0.0
    for k in range(calls):
        cpu, start = cpu_seconds(), time.perf_counter()
        call()
        after_call, wall_after = cpu_seconds(), time.perf_counter()
        time.sleep(PAUSES[k % len(PAUSES)])
        idle += cpu_seconds() - after_call
        busy += after_call - cpu
        wall += wall_after - start
    return {"idle": 1e3 * idle / calls, "call": 1e3 * busy / calls, "paused": 1e3 * wall / calls}


def back_to_back_ms(call) -> float:
    times = []
    for _ in range(BACK_TO_BACK):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def sides(folder: str) -> dict:
    """name: (call, set_threads) for the compiled model and its exported library."""
    lucid.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(8, 8, 3, padding=1), nn.ReLU()).eval()
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    with lucid.no_grad():
        compiled = lucid.compile(model, lucid.spec(*SHAPE))
        library = lucid.runtime.load(lucid.export(model, lucid.spec(*SHAPE), path=os.path.join(folder, "idle.so")).library)
    tensor = lucid.tensor(x)

    def set_compiled_threads(threads: int) -> None:
        os.environ["LUCID_NUM_THREADS"] = str(threads)

    return {"compile": (lambda: compiled(tensor), set_compiled_threads),
            "export": (lambda: library(x), library.set_num_threads)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every configuration (default 5)")
    parser.add_argument("--calls", type=int, default=60, help="paused calls per configuration and round (default 60)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts (default 1 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        configurations = [(name, call, set_threads, threads)
                          for name, (call, set_threads) in sides(folder).items() for threads in args.threads]
        figures = {(name, threads): [] for name, _, _, threads in configurations}
        for _ in range(args.rounds):
            for name, call, set_threads, threads in configurations:
                set_threads(threads)
                call()
                measured = paused_calls(call, args.calls)
                measured["back_to_back"] = back_to_back_ms(call)
                figures[name, threads].append(measured)
                time.sleep(0.05)                      # the pool of this side settles before the next
    print(f"Conv3d {'x'.join(map(str, SHAPE))} -> 8 + ReLU; medians over {args.rounds} rounds, ms per call")
    print(f"{'side':8} {'threads':>7} {'idle CPU':>9} {'call CPU':>9} {'paused wall':>12} {'back-to-back':>13}")
    for (name, threads), rounds in figures.items():
        median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        print(f"{name:8} {threads:>7} {median['idle']:9.3f} {median['call']:9.3f} {median['paused']:12.3f} "
              f"{median['back_to_back']:13.3f}")


if __name__ == "__main__":
    main()
