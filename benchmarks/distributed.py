"""Data-parallel UNet training on MPI: 2 ranks x 1 thread against 1 process x 2 threads, and how much
of the gradient allreduce the backward hides.

    .venv/bin/python benchmarks/distributed.py            # UNet3D base 16, depth 2, global batch 4 x 1 x 32^3
    .venv/bin/python benchmarks/distributed.py --quick    # tiny smoke run (8^3, base 2, depth 1)

Run it without mpiexec: it starts the two configurations itself, alternating them round after round
(`--rounds`), each round `--steps` timed training steps after `--warm-up` untimed ones:

- `2 ranks x 1 thread`: `mpiexec -n 2` with LUCID_NUM_THREADS=1; each rank trains the compiled UNet
  wrapped in `lucid.nn.parallel.DistributedDataParallel` on half the global batch;
- `1 process x 2 threads`: LUCID_NUM_THREADS=2, the compiled UNet on the whole global batch.

A step is zero_grad, forward, cross entropy, backward, SGD step, on the same seeded weights and data.
The throughput is global batch / median step time (samples/s). The ranks also time, in alternation,
three things (medians), for the compiled model and for the eager model, both wrapped with buckets of
at most `--bucket-cap-mb` (several buckets for the full-size UNet):

- the backward alone: `loss.backward()` inside `no_sync()` (no communication);
- the allreduce alone: the buckets' allreduces (started together, then waited for), with no
  backward running;
- the backward with its allreduce: `loss.backward()` synchronised (the wrapper starts each bucket's
  allreduce as soon as its gradients are complete and waits for all of them at the end).

hidden = (backward alone + allreduce alone - backward with allreduce) / allreduce alone, clipped
to [0, 1]: the fraction of the allreduce time the backward covers. The eager tape finishes
parameters one by one; the compiled backward runs as one stage per bucket (the wrapper asks for it),
each bucket's allreduce starting when its stage ends. With one bucket nothing can overlap.
The last table is the scaling model of docs/distributed.md computed from these numbers: per-node
step time = the 1 process x 2 threads median on the per-rank batch, the compiled model's hidden
fraction, one ring allreduce of all the gradients per step.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))

#: The networks of the scaling model: (name, bandwidth in bytes/s, latency in s).
NETWORKS = (("100 Gb/s, 2 us (InfiniBand class)", 100e9 / 8, 2e-6), ("10 Gb/s, 50 us (Ethernet, TCP)", 10e9 / 8, 50e-6))
NODES = (8, 16, 32, 64, 128, 256)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="volume size D = H = W (default 32)")
    parser.add_argument("--base", type=int, default=16, help="UNet channels at the top level (default 16)")
    parser.add_argument("--depth", type=int, default=2, help="UNet levels (default 2)")
    parser.add_argument("--batch", type=int, default=4, help="global batch, split over the ranks (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two configurations (default 3)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration and round (default 10)")
    parser.add_argument("--warm-up", type=int, default=3, help="untimed steps before them (default 3)")
    parser.add_argument("--bucket-cap-mb", type=float, default=0.25,
                        help="bucket size of the wrappers (default 0.25 MB: several buckets for the UNet, so "
                             "early ones can overlap the rest of the backward)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8^3, base 2, depth 1, 1 round of 3 steps")
    parser.add_argument("--role", choices=("ranks", "single"), help=argparse.SUPPRESS)   # a started worker
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.base, args.depth, args.rounds, args.steps, args.warm_up = 8, 2, 1, 1, 3, 1
    if args.batch % 2:
        parser.error("--batch must be even (it is split over 2 ranks)")
    return args


# ---------------------------------------------------------------------------------------- workers
def training_setup(args, batch: int, offset: int):
    """The seeded UNet, its compiled form, the batch rows [offset, offset + batch) of the seeded
    global batch, and an SGD optimiser."""
    import lucid
    from models import UNet3D

    lucid.manual_seed(0)
    model = UNet3D(in_channels=1, out_channels=2, base=args.base, depth=args.depth)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, 1) + (args.size,) * 3).astype(np.float32)
    labels = rng.integers(0, 2, (args.batch,) + (args.size,) * 3)
    rows = slice(offset, offset + batch)
    return model, lucid.Tensor(images[rows]), lucid.Tensor(labels[rows]), lucid.optim.SGD(model.parameters(), lr=1e-3)


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def single_worker(args) -> dict:
    import lucid
    import lucid.nn.functional as F

    model, x, y, optimizer = training_setup(args, args.batch, 0)
    compiled = lucid.compile(model)

    def step():
        optimizer.zero_grad()
        F.cross_entropy(compiled(x), y).backward()
        optimizer.step()

    per_rank_model, per_rank_x, per_rank_y, per_rank_optimizer = training_setup(args, args.batch // 2, 0)
    per_rank_compiled = lucid.compile(per_rank_model)

    def per_rank_step():
        per_rank_optimizer.zero_grad()
        F.cross_entropy(per_rank_compiled(per_rank_x), per_rank_y).backward()
        per_rank_optimizer.step()

    for _ in range(args.warm_up):
        step(), per_rank_step()
    times = [[timed(step), timed(per_rank_step)] for _ in range(args.steps)]
    return {"step": [t[0] for t in times], "per_rank_step": [t[1] for t in times]}


def ranks_worker(args) -> dict | None:
    import lucid
    import lucid.distributed as dist
    from lucid.nn.parallel import DistributedDataParallel

    dist.init()
    rank, ranks = dist.get_rank(), dist.get_world_size()
    per_rank = args.batch // ranks
    times = {}
    for kind in ("compiled", "eager"):
        model, x, y, optimizer = training_setup(args, per_rank, rank * per_rank)
        wrapped = DistributedDataParallel(lucid.compile(model) if kind == "compiled" else model,
                                          bucket_cap_mb=args.bucket_cap_mb)
        steps = args.steps if kind == "compiled" else max(2, args.steps // 3)      # eager steps are slow
        for name, values in rank_timings(wrapped, x, y, optimizer, args.warm_up, steps).items():
            times[f"{kind} {name}"] = values
        times[f"{kind} buckets"] = [len(wrapped.reducer.buckets)]
    return times if rank == 0 else None


def rank_timings(ddp, x, y, optimizer, warm_up: int, steps: int) -> dict:
    """Seconds of a training step, of the backward alone (no_sync), of the buckets' allreduce alone
    and of the synchronised backward, in alternation, every rank starting each one (each backward:
    after its forward) together."""
    import lucid.distributed as dist
    import lucid.nn.functional as F

    def loss():
        optimizer.zero_grad()
        return F.cross_entropy(ddp(x), y)

    def step():
        loss().backward()
        optimizer.step()

    def backward_alone():
        with ddp.no_sync():
            pending = loss()
            dist.barrier()                  # the ranks start their backwards together, whatever their forwards took
            return timed(pending.backward)

    def backward_synced():
        pending = loss()
        dist.barrier()
        return timed(pending.backward)

    buckets = [np.zeros(sum(bucket.sizes), bucket.dtype) for bucket in ddp.reducer.buckets]

    def allreduce_alone():
        works = [dist.all_reduce(bucket, async_op=True) for bucket in buckets]
        for work in works:
            work.wait()

    measured = {"step": lambda: timed(step), "backward": backward_alone,
                "allreduce": lambda: timed(allreduce_alone), "backward_synced": backward_synced}
    for _ in range(warm_up):
        for fn in measured.values():
            fn()
    times = {name: [] for name in measured}
    for _ in range(steps):
        for name, fn in measured.items():
            dist.barrier()
            times[name].append(fn())
    return times


# ---------------------------------------------------------------------------------------- launcher
def run_configuration(args, role: str) -> dict:
    """One round of one configuration in fresh processes; rank 0's (or the process's) timings."""
    script = [sys.executable, os.path.abspath(__file__), "--role", role, "--size", str(args.size), "--base",
              str(args.base), "--depth", str(args.depth), "--batch", str(args.batch), "--steps", str(args.steps),
              "--warm-up", str(args.warm_up), "--bucket-cap-mb", str(args.bucket_cap_mb)]
    if role == "ranks":
        from lucid.distributed.launch import mpiexec_command

        command, threads = mpiexec_command(2, script[1:]), "1"
    else:
        command, threads = script, "2"
    environment = dict(os.environ, LUCID_NUM_THREADS=threads,
                       PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))


def launch(args) -> None:
    print(f"UNet3D base={args.base} depth={args.depth}, global batch {args.batch} x 1 x {args.size}^3, "
          f"SGD training step; {args.rounds} round(s) of {args.steps} timed steps per configuration, alternating")
    collected = {"ranks": {}, "single": {}}
    for round_number in range(args.rounds):
        order = ("ranks", "single") if round_number % 2 == 0 else ("single", "ranks")
        for role in order:
            for name, values in run_configuration(args, role).items():
                collected[role].setdefault(name, []).extend(values)
    medians = {role: {name: float(np.median(v)) for name, v in timings.items()} for role, timings in collected.items()}
    report(args, medians)


def report(args, medians: dict) -> None:
    ranks, single = medians["ranks"], medians["single"]
    print(f"\n{'configuration':<24} {'step ms':>9} {'samples/s':>10}")
    for label, seconds in (("2 ranks x 1 thread", ranks["compiled step"]), ("1 process x 2 threads", single["step"])):
        print(f"{label:<24} {seconds * 1e3:>9.2f} {args.batch / seconds:>10.2f}")
    print(f"throughput, 2 ranks / 1 process: {single['step'] / ranks['compiled step']:.2f}")
    print(f"\nallreduce hidden behind the backward (per rank, {args.batch // 2} sample(s); buckets of at most "
          f"{args.bucket_cap_mb} MB):")
    print(f"{'model':<10} {'buckets':>7} {'backward ms':>12} {'allreduce ms':>13} {'both ms':>9} {'hidden':>7}")
    hidden = {}
    for kind in ("compiled", "eager"):
        backward, allreduce, both = (ranks[f"{kind} {name}"] for name in ("backward", "allreduce", "backward_synced"))
        hidden[kind] = overlap_fraction(backward, allreduce, both)
        print(f"{kind:<10} {int(ranks[f'{kind} buckets']):>7} {backward * 1e3:>12.2f} {allreduce * 1e3:>13.3f} "
              f"{both * 1e3:>9.2f} {hidden[kind]:>7.0%}")
    scaling_table(args, single["per_rank_step"], hidden["compiled"])


def scaling_table(args, node_step: float, hidden: float) -> None:
    gradient_bytes = 4 * parameter_count(args)
    print(f"\nscaling model (docs/distributed.md): {gradient_bytes / 1e6:.3g} MB of gradients, per-node step "
          f"{node_step * 1e3:.2f} ms (1 process x 2 threads on a batch of {args.batch // 2}), {hidden:.0%} hidden; "
          "one allreduce per step; predicted weak-scaling efficiency on p nodes:")
    print(f"{'network':<36}" + "".join(f"{p:>8}" for p in NODES))
    for name, bandwidth, latency in NETWORKS:
        row = [efficiency(node_step, ring_allreduce_seconds(gradient_bytes, p, bandwidth, latency), hidden)
               for p in NODES]
        print(f"{name:<36}" + "".join(f"{e:>8.1%}" for e in row))


def overlap_fraction(backward: float, allreduce: float, both: float) -> float:
    return float(np.clip((backward + allreduce - both) / allreduce, 0.0, 1.0))


def ring_allreduce_seconds(gradient_bytes: float, nodes: int, bandwidth: float, latency: float) -> float:
    """A ring allreduce: 2 (p - 1) / p of the bytes over each link, in 2 (p - 1) latency-bound steps."""
    return 2 * (nodes - 1) / nodes * gradient_bytes / bandwidth + 2 * (nodes - 1) * latency


def efficiency(step: float, allreduce: float, hidden: float) -> float:
    """Weak scaling (the same batch per node): the step plus the allreduce time it does not hide."""
    return step / (step + (1 - hidden) * allreduce)


def parameter_count(args) -> int:
    from models import UNet3D

    return sum(p.numel() for p in UNet3D(in_channels=1, out_channels=2, base=args.base, depth=args.depth).parameters())


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.role is None:
        launch(args)
        return
    result = ranks_worker(args) if args.role == "ranks" else single_worker(args)
    if result is not None:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
