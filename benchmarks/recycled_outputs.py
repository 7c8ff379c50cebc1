"""A compiled training step with glibc's default allocator: lucid's output arrays recycled, or fresh.

    python benchmarks/recycled_outputs.py                              # UNet3D and R2Plus1dNet, 1 and 2 threads
    python benchmarks/recycled_outputs.py --networks UNet3D --threads 2 --rounds 5

The other scripts run with glibc tunables that keep freed memory mapped (conv.py's TUNABLES), so
that neither framework pays for fresh pages. This one measures what a user's process, with glibc's
defaults, pays: each side runs in a fresh process of its own (GLIBC_TUNABLES removed from its
environment), the sides alternating round after round. A process builds networks.py's network, takes
`--warm-up` training steps, then times `--steps` more, one by one: the median milliseconds of a step
and the minor page faults per step (`getrusage`). "recycled" is lucid as it is
(`runtime.executable._RecycledOutputs`: an output array nothing refers to any more is handed out
again); "fresh" sets `_RecycledOutputs.SMALLEST_BYTES` past any array, so every output is a new one;
"torch" is PyTorch's eager step (networks.py's, the same network and batch) in such a process, where
PyTorch is installed (else n/a). The table gives each side's median over the rounds.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SIDES = ("recycled", "fresh", "torch")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conv import cell, note, ratio  # noqa: E402


def child(side: str, name: str, threads: int, warm_up: int, steps: int, tiny: bool) -> None:
    """Runs in a fresh process: prints one JSON line, {"ms": median ms per step, "faults": per step}."""
    if "GLIBC_TUNABLES" in os.environ:
        raise SystemExit("recycled_outputs.py: a side must run with glibc's defaults, and GLIBC_TUNABLES is set")
    os.environ["LUCID_NUM_THREADS"] = str(threads)
    from conv import sibling_script

    import lucid.runtime.executable as executable
    if side == "fresh":
        executable._RecycledOutputs.SMALLEST_BYTES = 1 << 62
    networks = sibling_script("networks")
    torch = None
    if side == "torch":
        import torch
        torch.set_num_threads(threads)
    network = networks.Network(name, networks.TINY if tiny else networks.SIZES, torch, 0.0)
    network.train(True)
    step = network.torch_training_step(torch) if torch else network.lucid_training_step()
    for _ in range(warm_up):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(json.dumps({"ms": 1e3 * statistics.median(times), "faults": faults / steps}))


def run_side(side: str, name: str, threads: int, args) -> dict | None:
    if side == "torch" and importlib.util.find_spec("torch") is None:
        return None
    environment = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--networks", name,
               "--threads", str(threads), "--warm-up", str(args.warm_up), "--steps", str(args.steps)]
    done = subprocess.run(command + (["--tiny"] if args.tiny else []), env=environment, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["UNet3D", "R2Plus1dNet"], metavar="NAME",
                        help="networks.py's networks to train (default UNet3D R2Plus1dNet)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts (default 1 2)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per side, alternating (default 3)")
    parser.add_argument("--warm-up", type=int, default=6, help="untimed steps in each process (default 6)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps in each process (default 8)")
    parser.add_argument("--tiny", action="store_true", help="networks.py's small sizes (the tests' smoke run)")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.networks[0], args.threads[0], args.warm_up, args.steps, args.tiny)
        return
    print("glibc's default allocator (no GLIBC_TUNABLES); medians over "
          f"{args.rounds} fresh processes per side, {args.steps} timed steps each")
    if importlib.util.find_spec("torch") is None:
        note("PyTorch is not installed, so its column shows n/a (pip install torch)")
    print(f"{'network':14} {'thr':>3} {'recycled ms':>11} {'fresh ms':>9} {'torch ms':>9} {'fresh/recycled':>14} "
          f"{'torch/recycled':>14} {'faults/step recycled':>20} {'fresh':>7} {'torch':>7}")
    for name in args.networks:
        for threads in args.threads:
            results = {side: [] for side in SIDES}
            for _ in range(args.rounds):
                for side in SIDES:
                    results[side].append(run_side(side, name, threads, args))
            ms, faults = ({side: None if None in results[side] else statistics.median(r[key] for r in results[side])
                           for side in SIDES} for key in ("ms", "faults"))
            print(f"{name:14} {threads:>3} {ms['recycled']:11.2f} {ms['fresh']:9.2f} {cell(ms['torch'], 9)} "
                  f"{ms['fresh'] / ms['recycled']:14.2f} {cell(ratio(ms['torch'], ms['recycled']), 14)} "
                  f"{faults['recycled']:20.0f} {faults['fresh']:7.0f} {cell(faults['torch'], 7, 0)}", flush=True)


if __name__ == "__main__":
    main()
