"""How each compiled executable of the example networks speeds up from one thread to two.

    python benchmarks/threads.py                         # UNet3D and R2Plus1dNet, training and inference
    python benchmarks/threads.py --networks R2Plus1dNet --modes infer

For each network of networks.py's SIZES and each mode, it compiles the network, then times every
executable of the variant (a training step's forward and backward, or inference) on zero inputs at
one and two threads, alternating (conv.median_times), and prints the medians, the speedup, the
kernels the executable runs and how many of them have fewer than 8 work items (too few to share).
The FMA peak's own speedup (`peak_gflops(2) / peak_gflops(1)`) is the ceiling. What it measures is
how the threads share each kernel's work items (lucid/codegen/parallel.py) and wait at barriers.
With --by-family, each executable's calls at one and two threads also record when each thread was
done with each kernel (`Executable.timeline`: the kernels as they run in sequence, not alone), and
a table per executable gives each kernel family's time at 1 and 2 threads (a kernel's time: from
the last thread done with the kernel before to the last one done with it; medians over the calls)
and, at 2 threads, the time the first thread done with a kernel waited for the other ("idle").
Like conv.py, the script re-executes itself with glibc's mmap threshold raised.
"""
from __future__ import annotations

import argparse

from conv import median_times, restart_with_malloc_tunables, sibling_script

if __name__ == "__main__":
    restart_with_malloc_tunables()

import numpy as np  # noqa: E402

network_benchmark = sibling_script("networks")
from lucid.codegen.peak import peak_gflops  # noqa: E402

FEW_ITEMS = 8


def executable_row(name: str, mode: str, part: str, executable, repeats: int, budget: dict) -> str:
    arrays = [np.zeros(v.shape, v.dtype.numpy) for v in executable.graph.inputs]
    one, two = (1e3 * t for t in median_times([lambda: executable(*arrays, threads=1),
                                                lambda: executable(*arrays, threads=2)], repeats, **budget))
    items = [kernel.items for kernel, _ in executable.kernels()]
    few = sum(1 for n in items if isinstance(n, int) and n < FEW_ITEMS)
    return f"{name:12} {mode:5} {part:>9} {len(items):7} {few:9} {one:9.2f} {two:9.2f} {one / two:7.2f}"


def kernel_seconds(executable, arrays: list, threads: int, repeats: int) -> tuple:
    """(each kernel's time in sequence, the time the threads done first waited for the last), medians
    over `repeats` timelines at `threads` threads."""
    times, idle = [], []
    for _ in range(repeats + 1):
        marks = executable.timeline(*arrays, threads=threads)
        ends = marks.max(axis=0)
        times.append(np.diff(ends, prepend=0.0))
        idle.append(((ends - marks) * (len(marks) > 1)).sum(axis=0) / len(marks))
    return np.median(times[1:], axis=0), np.median(idle[1:], axis=0)


def family_rows(executable, repeats: int) -> list:
    """Rows of `--by-family`'s table for one executable."""
    arrays = [np.zeros(v.shape, v.dtype.numpy) for v in executable.graph.inputs]
    one, _ = kernel_seconds(executable, arrays, 1, repeats)
    two, idle = kernel_seconds(executable, arrays, 2, repeats)
    families = {}
    for k, (kernel, node) in enumerate(executable.kernels()):
        row = families.setdefault(network_benchmark.family(node), np.zeros(4))
        row += (one[k], two[k], idle[k], 1)
    rows = [f"    {'family':12} {'kernels':>7} {'1 thr ms':>9} {'2 thr ms':>9} {'speedup':>7} {'idle ms':>8}"]
    for name, (a, b, wait, count) in sorted(families.items(), key=lambda item: -item[1][0]):
        rows.append(f"    {name:12} {int(count):7} {1e3 * a:9.2f} {1e3 * b:9.2f} {a / b:7.2f} {1e3 * wait:8.2f}")
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["UNet3D", "R2Plus1dNet"],
                        choices=list(network_benchmark.SIZES), metavar="NAME")
    parser.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    parser.add_argument("--repeats", type=int, default=10, help="at least this many timed calls per side")
    parser.add_argument("--tiny", action="store_true", help="the tests' small sizes instead of SIZES")
    parser.add_argument("--quick", action="store_true", help="1 repeat, no warm-up or time budget (a smoke run)")
    parser.add_argument("--by-family", action="store_true",
                        help="also each kernel family's time at 1 and 2 threads, the kernels in sequence")
    args = parser.parse_args(argv)
    sizes = network_benchmark.TINY if args.tiny else network_benchmark.SIZES
    repeats, budget = (1, dict(warm_up=0, timed=0)) if args.quick else (args.repeats, {})
    print(f"FMA peak: 1 thread {peak_gflops(1):.0f} GFLOP/s, 2 threads {peak_gflops(2):.0f} GFLOP/s")
    print(f"{'network':12} {'mode':5} {'part':>9} {'kernels':>7} {'<8 items':>9} {'1 thr ms':>9} {'2 thr ms':>9} "
          f"{'speedup':>7}")
    for name in args.networks:
        network = network_benchmark.Network(name, sizes, None, 0.0)
        for mode in args.modes:
            training = mode == "train"
            network.train(training)
            (network.lucid_training_step() if training else network.lucid_inference())()
            parts = ("forward", "backward") if training else ("inference",)
            for part, executable in zip(parts, network.executables(training)):
                print(executable_row(name, mode, part, executable, repeats, budget), flush=True)
                if args.by_family:
                    print("\n".join(family_rows(executable, repeats)), flush=True)


if __name__ == "__main__":
    main()
