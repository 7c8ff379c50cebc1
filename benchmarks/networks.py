"""The three networks of examples/networks.py, lucid compiled vs PyTorch eager: a training step and inference.

    python benchmarks/networks.py                           # all three, 1 and 2 threads
    python benchmarks/networks.py --networks R2Plus1dNet --threads 1
    python benchmarks/networks.py --tiny --quick            # a smoke run at the tests' sizes

The networks (a residual-unit UNet with InstanceNorm + PReLU, a GroupNorm encoder-decoder with
trilinear upsampling, a (2+1)-D video ResNet with BatchNorm and adaptive pooling) run at the sizes of
`SIZES`. PyTorch runs the same networks (examples/torch_networks.py, loaded from lucid's state dict).
- **train**: one training step: gradients set to None, forward, cross entropy, backward, AdamW step.
  lucid's forward and backward are compiled (`lucid.compile`), its loss and optimiser are eager.
- **infer**: the forward in eval mode without gradients; PyTorch also with the input and weights in
  channels-last memory (`torch CL`).
Times are medians of repeated calls after warm-up, the sides alternating in rounds (conv.py's
`median_times`), at each thread count (LUCID_NUM_THREADS and torch.set_num_threads). Ratios are
torch_ms / lucid_ms: above 1, lucid is faster. Without PyTorch, its columns show n/a.

Where the time goes: every kernel of lucid's compiled training step (forward and backward graphs) and
of its inference graph, run alone on one thread (kernels.py's `kernel_times`), summed by what the
graph node it comes from does (`category`): convolutions (with the elementwise chains fused into
them), normalisation (every node a norm layer's module made, its gradients included), resampling,
other elementwise maps, copies (reshape, concat, pad, slice...) and the rest. Normalisation and
resampling are memory-bound, so their rate is given in GB/s (each node's input and output bytes over
its time) next to the machine's memory bandwidth on one thread (a 256 MiB NumPy copy, read + write).
Like conv.py, the script re-executes itself with glibc's mmap threshold raised.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections import defaultdict

from conv import (THREADS_SLOWER, TORCH_MISSING, cell, median_times, note, ratio, restart_with_malloc_tunables,
                  slower_with_more_threads)

if __name__ == "__main__":
    restart_with_malloc_tunables()

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))
import lucid  # noqa: E402
import lucid.nn.functional as F  # noqa: E402
from kernels import kernel_times  # noqa: E402
from lucid.ir.cost import value_bytes  # noqa: E402
from lucid.ir.ops.registry import OpKind  # noqa: E402
from networks import GroupNormUNet, R2Plus1dNet, ResidualUNet  # noqa: E402
from torch_networks import torch_networks  # noqa: E402

#: name: (class, constructor options, input shape, number of classes, whether every voxel has a label
#: (segmentation) rather than every clip).
SIZES = {
    "ResidualUNet": (ResidualUNet, dict(channels=(16, 32, 64, 128)), (1, 1, 64, 64, 64), 2, True),
    "GroupNormUNet": (GroupNormUNet, dict(channels=(16, 32, 64, 128)), (1, 1, 64, 64, 64), 2, True),
    "R2Plus1dNet": (R2Plus1dNet, dict(widths=(16, 32, 64, 128)), (2, 3, 8, 56, 56), 5, False),
}
#: The sizes of tests/test_networks.py, for smoke runs (their kernels are already in the test cache).
TINY = {
    "ResidualUNet": (ResidualUNet, dict(channels=(8, 16)), (2, 1, 8, 8, 8), 2, True),
    "GroupNormUNet": (GroupNormUNet, dict(channels=(8, 16)), (2, 1, 8, 8, 8), 2, True),
    "R2Plus1dNet": (R2Plus1dNet, dict(widths=(8, 16)), (2, 3, 4, 16, 16), 5, False),
}
NORM_LAYERS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d",
               "InstanceNorm3d", "LayerNorm")
CONVOLUTIONS = ("conv", "conv_transpose", "conv_weight_grad")
CATEGORIES = ("conv", "norm", "resampling", "elementwise", "copies", "other")
MEMORY_BOUND = ("norm", "resampling")


class Network:
    """One network at one size: the lucid model, its PyTorch twin (None without torch) and a batch."""

    def __init__(self, name: str, sizes: dict, torch, dropout: float):
        network, options, shape, classes, per_voxel = sizes[name]
        if network is ResidualUNet:
            options = dict(options, dropout=dropout)
        self.name, self.shape = name, shape
        lucid.manual_seed(0)
        self.model = network(**options)
        rng = np.random.default_rng(0)
        self.images = rng.standard_normal(shape).astype(np.float32)
        self.labels = rng.integers(0, classes, shape[:1] + shape[2:] if per_voxel else shape[:1])
        self.compiled = lucid.compile(self.model)
        self.twin = None
        if torch is not None:
            self.twin = torch_networks(torch)[name](**options)
            self.twin.load_state_dict({key: torch.tensor(np.asarray(value))
                                       for key, value in self.model.state_dict().items()})

    def train(self, training: bool) -> None:
        self.model.train(training)
        if self.twin is not None:
            self.twin.train(training)

    def describe(self) -> str:
        parameters = sum(int(np.prod(p.shape)) for p in self.model.parameters())
        return f"{self.name}, input {self.shape}, {parameters / 1e6:.2f} M parameters"

    def lucid_training_step(self):
        optimizer = lucid.optim.AdamW(self.model.parameters(), lr=1e-4)
        x, y = lucid.Tensor(self.images), lucid.Tensor(self.labels)

        def step():
            optimizer.zero_grad()
            F.cross_entropy(self.compiled(x), y).backward()
            optimizer.step()
        return step

    def torch_training_step(self, torch):
        optimizer = torch.optim.AdamW(self.twin.parameters(), lr=1e-4)
        x, y = torch.tensor(self.images), torch.tensor(self.labels)

        def step():
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(self.twin(x), y).backward()
            optimizer.step()
        return step

    def lucid_inference(self):
        x = lucid.Tensor(self.images)

        def infer():
            with lucid.no_grad():
                self.compiled(x)
        return infer

    def torch_inference(self, torch, channels_last: bool = False):
        twin, x = self.twin, torch.tensor(self.images)
        if channels_last:
            twin = copy.deepcopy(twin).to(memory_format=torch.channels_last_3d)
            x = x.contiguous(memory_format=torch.channels_last_3d)

        def infer():
            with torch.no_grad():
                twin(x)
        return infer

    def executables(self, training: bool) -> list:
        """The compiled executables of the training step (forward, backward) or of inference."""
        variants = [v for v in self.compiled.variants.values() if hasattr(v, "backward") == training]
        return [variants[-1].forward, variants[-1].backward] if training else [variants[-1].executable]


def first_losses(network: Network, torch) -> tuple:
    """Each side's training loss on the batch before any step (the same network: they agree unless
    dropout draws masks, which differ between the two frameworks)."""
    lucid_loss = F.cross_entropy(network.compiled(lucid.Tensor(network.images)), lucid.Tensor(network.labels))
    if torch is None:
        return lucid_loss.item(), None
    torch_loss = torch.nn.functional.cross_entropy(network.twin(torch.tensor(network.images)),
                                                   torch.tensor(network.labels))
    return lucid_loss.item(), torch_loss.item()


def category(node) -> str:
    """What a node's time counts as: one of CATEGORIES."""
    ops = {n.op for n in node.attrs["body"].nodes} if node.op == "fused" else {node.op}
    if ops & set(CONVOLUTIONS):
        return "conv"
    if node.scope is not None and node.scope.cls in NORM_LAYERS:
        return "norm"
    if ops & {"resample", "resample_grad"}:
        return "resampling"
    kind = node.opdef.kind
    if node.op == "fused" or kind is OpKind.ELEMENTWISE:
        return "elementwise"
    return "copies" if kind is OpKind.LAYOUT else "other"


def node_bytes(node) -> int:
    """Bytes a node must at least read and write: its distinct inputs and its output."""
    return sum(value_bytes(v) for v in set(node.inputs)) + value_bytes(node.output)


def time_by_category(executables: list, repeats: int) -> dict:
    """{category: (seconds, bytes)} over every kernel of `executables`, each run alone on one thread."""
    seconds, nodes = defaultdict(float), defaultdict(set)
    for executable in executables:
        for _, _, kernel_seconds, node in kernel_times(executable, repeats):
            seconds[category(node)] += kernel_seconds
            nodes[category(node)].add(node)
    return {name: (seconds[name], sum(node_bytes(n) for n in nodes[name])) for name in CATEGORIES if name in seconds}


def memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """GB/s of the best of `repeats` one-thread NumPy copies of `megabytes` (bytes read + written)."""
    source = np.ones(megabytes * 2 ** 20 // 4, np.float32)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.nbytes / best / 1e9


def print_breakdown(network: Network, repeats: int, bandwidth: float) -> None:
    for training, title in ((True, "training step (forward + backward graphs)"), (False, "inference")):
        parts = time_by_category(network.executables(training), repeats)
        total = sum(seconds for seconds, _ in parts.values())
        print(f"  where the time goes, {title}: {1e3 * total:.1f} ms of kernels on one thread")
        for name, (seconds, nbytes) in parts.items():
            rate = (f"  {nbytes / seconds / 1e9:6.1f} GB/s ({100 * nbytes / seconds / 1e9 / bandwidth:.0f}% of "
                    "the copy's)") if name in MEMORY_BOUND else ""
            print(f"    {name:12} {1e3 * seconds:9.2f} ms {100 * seconds / total:5.1f}%{rate}")


def time_row(network: Network, mode: str, threads: int, steps: list, repeats: int, budget: dict) -> float:
    times = [1e3 * t for t in median_times(steps, repeats, **budget, settle=(0,))]
    lucid_ms, torch_ms, channels_last_ms = times + [None] * (3 - len(times))
    print(f"{network.name:14} {mode:5} {threads:>3} {lucid_ms:9.2f} {cell(torch_ms, 9)} {cell(channels_last_ms, 9)} "
          f"{cell(ratio(torch_ms, lucid_ms), 11)} {cell(ratio(channels_last_ms, lucid_ms), 9)}", flush=True)
    return lucid_ms


def run(names: list, sizes: dict, thread_counts: list, repeats: int, dropout: float, quick: bool) -> None:
    try:
        import torch
    except ImportError:
        torch = None
        note(TORCH_MISSING)
    budget = dict(warm_up=0.0, timed=0.0) if quick else {}
    bandwidth = memory_bandwidth(64 if quick else 256)
    print(f"memory bandwidth (one-thread NumPy copy, read + write): {bandwidth:.1f} GB/s")
    threads_slower = False
    for name in names:
        network = Network(name, sizes, torch, dropout)
        print(f"\n{network.describe()}")
        network.train(True)
        losses = first_losses(network, torch)
        print(f"same network: first training loss {losses[0]:.6f} (lucid compiled) vs {cell(losses[1], 0, 6)} (torch)")
        print(f"{'network':14} {'mode':5} {'thr':>3} {'lucid ms':>9} {'torch ms':>9} {'torch CL':>9} "
              f"{'torch/lucid':>11} {'CL/lucid':>9}")
        for training in (True, False):
            network.train(training)
            lucid_times = []
            for threads in thread_counts:
                os.environ["LUCID_NUM_THREADS"] = str(threads)
                if training:
                    steps = [network.lucid_training_step()]
                    steps += [network.torch_training_step(torch)] if torch is not None else []
                else:
                    steps = [network.lucid_inference()]
                    steps += [network.torch_inference(torch), network.torch_inference(torch, True)] if torch else []
                if torch is not None:
                    torch.set_num_threads(threads)
                lucid_times.append(time_row(network, "train" if training else "infer", threads, steps, repeats, budget))
            threads_slower |= slower_with_more_threads(lucid_times)
        print_breakdown(network, 1 if quick else 3, bandwidth)
    if threads_slower:
        note(THREADS_SLOWER)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=list(SIZES), choices=list(SIZES), metavar="NAME",
                        help=f"networks to time (default: all of {', '.join(SIZES)})")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts to time (default 1 2)")
    parser.add_argument("--repeats", type=int, default=5, help="at least this many timed calls per side (default 5)")
    parser.add_argument("--dropout", type=float, default=0.1,
                        help="ResidualUNet's dropout probability (default 0.1; with 0 both sides' first losses "
                             "must agree, with more they draw different masks)")
    parser.add_argument("--tiny", action="store_true", help="the tests' small sizes instead of SIZES")
    parser.add_argument("--quick", action="store_true", help="1 repeat, no warm-up or time budget (a smoke run)")
    args = parser.parse_args(argv)
    run(args.networks, TINY if args.tiny else SIZES, args.threads, 1 if args.quick else args.repeats,
        args.dropout, args.quick)


if __name__ == "__main__":
    main()
