"""3-D networks, lucid compiled vs PyTorch eager, torch.compile, ONNX Runtime and OpenVINO: a training
step and inference, and where lucid's step spends its time, kernel family by kernel family.

    python benchmarks/networks.py                           # every network, 1 and 2 threads
    python benchmarks/networks.py --networks R2Plus1dNet --threads 1
    python benchmarks/networks.py --tiny --quick            # a smoke run at the tests' sizes

The networks (examples/networks.py's residual-unit UNet with InstanceNorm + PReLU, GroupNorm
encoder-decoder with trilinear upsampling and (2+1)-D video ResNet with BatchNorm and adaptive pooling,
and examples/models.py's UNet3D with BatchNorm), and MONAI's UNet, BasicUNet, SegResNet and DynUNet
as their users build them (MONAI's installed sources on lucid, examples/real_models.py; named and
left out when MONAI is not installed), run at the sizes of `SIZES`. PyTorch runs the same networks
(examples/torch_networks.py and torch_models.py, MONAI's own classes), loaded from lucid's state dict.
- **train**: one training step: gradients set to None, forward, cross entropy, backward, AdamW step.
  lucid compiles the forward + cross entropy (`lucid.compile`, the backward with it), as the
  `compile` column has torch.compile do; the optimiser is eager on both. `torch` is PyTorch eager.
  Then backward and AdamW's step as usual (torch.compile's on a copy of the network).
- **infer**: the forward in eval mode without gradients: PyTorch eager (`torch`), also with the input
  and weights in channels-last memory (`torch CL`), torch.compile of the forward (`compile`), and the
  ONNX file `lucid.onnx.save` writes of the network, run by ONNX Runtime (`ort`) and OpenVINO (`ov`),
  whose outputs are first checked against lucid's: |peer - lucid| <= 1e-3 |lucid| + ONNX_TOLERANCE
  max |lucid|.
torch.compile compiles afresh for every thread count (dynamo's cache emptied: Inductor writes the
thread count into its code); the first call's time, the compile, is printed under each network's
rows. A peer that is not installed, or that fails on a network (the error is printed), shows n/a.
Times are medians of repeated calls after warm-up, the sides alternating in rounds (conv.py's
`median_times`), at each thread count (LUCID_NUM_THREADS and torch.set_num_threads). Ratios are
peer_ms / lucid_ms: above 1, lucid is faster; `best/lucid` is the fastest peer's.

Where the time goes (one thread): every kernel of lucid's compiled training step (forward and
backward graphs) and of its inference graph, run alone (kernels.py's `kernel_times`), summed by
kernel family: what the graph node it comes from does (`family`): convolutions (with the elementwise
chains fused into them), normalisation (every node a norm layer's module made, its gradients
included), resampling, other elementwise maps, copies (reshape, concat, pad, slice...) and the rest
(pooling, reductions, matmul). For each family: its FLOPs (`lucid.ir.cost.node_flops`: a
convolution's direct-algorithm count, which Winograd beats) and the least bytes it must move (each
node's distinct inputs and output), their ratio (arithmetic intensity), its GFLOP/s against the
machine's one-thread peak (a generated FMA loop) and its GB/s against the one-thread memory bandwidth
(a 256 MiB NumPy copy, read + write), and which roof of the roofline limits it: memory when its
intensity is below peak / bandwidth, else compute, with the fraction of that roof it reaches. Then
the step itself on one thread, split into the time inside the compiled executables and outside them
(autograd, zero_grad and AdamW, whose step is also timed alone).
Like conv.py, the script re-executes itself with glibc's mmap threshold raised.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from conv import (THREADS_SLOWER, TORCH_MISSING, cell, median_time, median_times, note, restart_with_malloc_tunables,
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
from lucid.codegen.peak import peak_gflops  # noqa: E402
from lucid.ir.cost import node_flops, value_bytes  # noqa: E402
from lucid.ir.ops.registry import OpKind  # noqa: E402
from models import UNet3D  # noqa: E402
from networks import GroupNormUNet, R2Plus1dNet, ResidualUNet  # noqa: E402
from real_models import monai_networks  # noqa: E402
from peers import available_peers, compiler_named, onnx_steps, peer_ratios, torch_compiled  # noqa: E402
from torch_models import torch_mirrors  # noqa: E402
from torch_networks import torch_networks  # noqa: E402



class Monai:
    """A MONAI network class by name: called, the lucid rewrite of MONAI's installed source builds it
    (examples/real_models.py); `torch_twin` builds MONAI's own."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, **options):
        return getattr(monai_networks()[1], self.name)(**options)

    def torch_twin(self, **options):
        return getattr(monai_networks()[0], self.name)(**options)


def monai_sizes(widths: tuple, shape: tuple) -> dict:
    """MONAI's four segmentation networks on `shape`, with `widths` channels from level to level (UNet
    all of them; BasicUNet, always 5 levels, the first one twice, then the next three and the first
    again as its decoder's output; SegResNet MONAI's default 8 initial filters (its GroupNorm has 8
    groups), doubling over one level fewer; DynUNet all but the last)."""
    levels = len(widths)
    return {
        "MONAI-UNet": (Monai("UNet"), dict(spatial_dims=3, in_channels=1, out_channels=2, channels=widths,
                                           strides=(2,) * (levels - 1), num_res_units=2), shape, 2, True),
        "MONAI-BasicUNet": (Monai("BasicUNet"), dict(spatial_dims=3, in_channels=1, out_channels=2,
                                                     features=(widths[0],) + widths[:4] + (widths[0],)),
                            shape, 2, True),
        "MONAI-SegResNet": (Monai("SegResNet"), dict(spatial_dims=3, in_channels=1, out_channels=2,
                                                     init_filters=8, blocks_down=(1, 2, 2, 4)[:levels - 1],
                                                     blocks_up=(1, 1, 1)[:levels - 2]), shape, 2, True),
        "MONAI-DynUNet": (Monai("DynUNet"), dict(spatial_dims=3, in_channels=1, out_channels=2,
                                                 kernel_size=[3] * (levels - 1), strides=[1] + [2] * (levels - 2),
                                                 upsample_kernel_size=[2] * (levels - 2), filters=list(widths[:-1]),
                                                 res_block=True), shape, 2, True),
    }


#: name: (class, constructor options, input shape, number of classes, whether every voxel has a label
#: (segmentation) rather than every clip).
SIZES = {
    "ResidualUNet": (ResidualUNet, dict(channels=(16, 32, 64, 128)), (1, 1, 64, 64, 64), 2, True),
    "GroupNormUNet": (GroupNormUNet, dict(channels=(16, 32, 64, 128)), (1, 1, 64, 64, 64), 2, True),
    "R2Plus1dNet": (R2Plus1dNet, dict(widths=(16, 32, 64, 128)), (2, 3, 8, 56, 56), 5, False),
    "UNet3D": (UNet3D, dict(in_channels=1, out_channels=2, base=16, depth=2), (2, 1, 32, 32, 32), 2, True),
    **monai_sizes((16, 32, 64, 128, 256), (1, 1, 64, 64, 64)),
}
#: The sizes of tests/test_networks.py, for smoke runs (their kernels are already in the test cache).
TINY = {
    "ResidualUNet": (ResidualUNet, dict(channels=(8, 16)), (2, 1, 8, 8, 8), 2, True),
    "GroupNormUNet": (GroupNormUNet, dict(channels=(8, 16)), (2, 1, 8, 8, 8), 2, True),
    "R2Plus1dNet": (R2Plus1dNet, dict(widths=(8, 16)), (2, 3, 4, 16, 16), 5, False),
    "UNet3D": (UNet3D, dict(in_channels=1, out_channels=2, base=4, depth=1), (2, 1, 8, 8, 8), 2, True),
    **monai_sizes((4, 8, 8, 16), (1, 1, 32, 32, 32)),
}
MODES = ("train", "infer")
#: The timed sides in column order: lucid, then its peers.
PEER_COLUMNS = ("torch", "torch CL", "torch.compile", "ort", "ov")
#: ONNX Runtime's and OpenVINO's outputs may differ from lucid's by this fraction of its largest |output|
#: (plus 1e-3 of each element): float32 sums in another order, through dozens of layers.
ONNX_TOLERANCE = 1e-4
NORM_LAYERS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d",
               "InstanceNorm3d", "LayerNorm")
CONVOLUTIONS = ("conv", "conv_transpose", "conv_weight_grad")
FAMILIES = ("conv", "norm", "resampling", "elementwise", "copies", "other")


def torch_twins(torch) -> dict:
    """The PyTorch versions of every network of SIZES, by name."""
    return {**torch_networks(torch), **torch_mirrors(torch)}


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
        self.compiled_loss = lucid.compile(lambda x, y: F.cross_entropy(self.model(x), y))
        self.twin = None
        if torch is not None:
            twin = network.torch_twin if isinstance(network, Monai) else torch_twins(torch)[name]
            self.twin = twin(**options)
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
            self.compiled_loss(x, y).backward()
            optimizer.step()
        return step

    def torch_training_step(self, torch, backend: str | None = None):
        """PyTorch's step, eager (backend None) or with the forward and loss compiled by torch.compile's
        `backend` (on a copy of the network)."""
        compiled = backend is not None
        twin = copy.deepcopy(self.twin) if compiled else self.twin
        optimizer = torch.optim.AdamW(twin.parameters(), lr=1e-4)
        x, y = torch.tensor(self.images), torch.tensor(self.labels)

        def loss(x, y):
            return torch.nn.functional.cross_entropy(twin(x), y)
        loss = torch_compiled(loss, backend) if compiled else loss

        def step():
            optimizer.zero_grad()
            loss(x, y).backward()
            optimizer.step()
        return step

    def lucid_inference(self):
        x = lucid.Tensor(self.images)

        def infer():
            with lucid.no_grad():
                return self.compiled(x)
        return infer

    def torch_inference(self, torch, column: str, backend: str):
        """PyTorch's forward as `column` runs it: "torch", "torch CL" (channels-last) or "torch.compile"
        (with torch.compile's `backend`)."""
        twin, x = self.twin, torch.tensor(self.images)
        if column == "torch CL":
            twin = copy.deepcopy(twin).to(memory_format=torch.channels_last_3d)
            x = x.contiguous(memory_format=torch.channels_last_3d)
        elif column == "torch.compile":
            twin = torch_compiled(twin, backend)

        def infer():
            with torch.no_grad():
                twin(x)
        return infer

    def export(self, folder: Path) -> Path | None:
        """The network written by lucid.onnx.save (in eval mode), or None after printing why it failed."""
        path = folder / f"{self.name}.onnx"
        try:
            lucid.onnx.save(self.model, lucid.spec(*self.shape), path=path)
        except Exception as error:
            print(f"lucid.onnx.save failed on {self.name}, so ort and ov show n/a: {type(error).__name__}: {error}")
            return None
        return path

    def variant(self, training: bool):
        """The compiled variant of the training step (forward and backward executables) or of inference."""
        compiled = self.compiled_loss if training else self.compiled
        return [v for v in compiled.variants.values() if hasattr(v, "backward") == training][-1]

    def executables(self, training: bool) -> list:
        variant = self.variant(training)
        return [variant.forward, variant.backward] if training else [variant.executable]


class Peers:
    """Each side's step of a network at one thread count, and what compiling torch's took."""

    def __init__(self, torch, available: set, backend: str):
        self.torch, self.available, self.backend = torch, available, backend
        self.onnx_path = None                  # the network as ONNX, once `export` wrote it
        self.compile_seconds = []

    def steps(self, network: Network, training: bool, threads: int) -> dict:
        """{column: step} for lucid and every peer that runs this mode."""
        steps = {"lucid": network.lucid_training_step() if training else network.lucid_inference()}
        if self.torch is not None:
            columns = ("torch",) if training else ("torch", "torch CL")
            steps.update((column, self.torch_step(network, training, column)) for column in columns)
            compiled = self.first_called(lambda: self.torch_step(network, training, "torch.compile"),
                                         "train" if training else "infer", threads)
            steps.update({"torch.compile": compiled} if compiled else {})
        if not training and self.onnx_path is not None:
            expected = steps["lucid"]().numpy()
            atol = ONNX_TOLERANCE * float(np.abs(expected).max())
            steps.update(onnx_steps(self.onnx_path, network.images, expected, self.available, threads, network.name,
                                    atol=atol))
        return steps

    def torch_step(self, network: Network, training: bool, column: str):
        """PyTorch's training step or inference as `column` runs it (torch, torch CL or torch.compile)."""
        if training:
            return network.torch_training_step(self.torch, self.backend if column == "torch.compile" else None)
        return network.torch_inference(self.torch, column, self.backend)

    def first_called(self, make, mode: str, threads: int):
        """torch.compile's step made by `make` after its first call (the compile, timed), or None
        after printing why it failed."""
        if "torch.compile" not in self.available:
            return None
        try:
            step = make()
            started = time.perf_counter()
            step()
        except Exception as error:
            print(f"torch.compile failed ({mode}, {threads} thread(s)), so its column shows n/a: "
                  f"{type(error).__name__}: {str(error).splitlines()[0]}")
            return None
        self.compile_seconds.append(f"{mode} {threads} thr {time.perf_counter() - started:.1f} s")
        return step


def time_row(network: Network, mode: str, threads: int, steps: dict, repeats: int, budget: dict) -> float:
    times = dict(zip(steps, (1e3 * t for t in median_times(list(steps.values()), repeats, **budget, settle=(0,)))))
    ratios = peer_ratios(times, PEER_COLUMNS)
    print(f"{network.name:16} {mode:5} {threads:>3} {times['lucid']:9.2f} "
          + " ".join(cell(times.get(column), 9) for column in PEER_COLUMNS)
          + "".join(f" {cell(r, width)}" for r, width in zip(ratios, (11, 9, 13, 9, 9, 10))), flush=True)
    return times["lucid"]


def first_losses(network: Network, torch) -> tuple:
    """Each side's training loss on the batch before any step (the same network: they agree unless
    dropout draws masks, which differ between the two frameworks)."""
    lucid_loss = network.compiled_loss(lucid.Tensor(network.images), lucid.Tensor(network.labels))
    if torch is None:
        return lucid_loss.item(), None
    torch_loss = torch.nn.functional.cross_entropy(network.twin(torch.tensor(network.images)),
                                                   torch.tensor(network.labels))
    return lucid_loss.item(), torch_loss.item()


def family(node) -> str:
    """The kernel family a node's time counts in: one of FAMILIES."""
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


def time_by_family(executables: list, repeats: int) -> dict:
    """{family: (seconds, FLOPs, bytes)} over every kernel of `executables`, each run alone on one thread."""
    seconds, nodes = defaultdict(float), defaultdict(set)
    for executable in executables:
        for _, _, kernel_seconds, node in kernel_times(executable, repeats):
            seconds[family(node)] += kernel_seconds
            nodes[family(node)].add(node)
    return {name: (seconds[name], sum(node_flops(n) for n in nodes[name]), sum(node_bytes(n) for n in nodes[name]))
            for name in FAMILIES if name in seconds}


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


class Machine:
    """One thread's roofline: peak GFLOP/s (FMA loop) and memory bandwidth in GB/s (a large copy)."""

    def __init__(self, quick: bool):
        self.peak, self.bandwidth = peak_gflops(1), memory_bandwidth(64 if quick else 256)

    def describe(self) -> str:
        return (f"one thread: peak {self.peak:.1f} GFLOP/s (generated FMA loop), memory bandwidth "
                f"{self.bandwidth:.1f} GB/s (NumPy copy, read + write); below {self.peak / self.bandwidth:.1f} "
                "FLOP/byte a kernel is memory-bound (roofline)")

    def roofline(self, seconds: float, flops: int, nbytes: int) -> str:
        """The cells of one family: intensity, rates against the roofs, the bound and the fraction of it reached."""
        intensity, gflops, gbytes = flops / nbytes, flops / seconds / 1e9, nbytes / seconds / 1e9
        bound = "compute" if intensity >= self.peak / self.bandwidth else "memory"
        roof = min(self.peak, intensity * self.bandwidth)
        return (f"{intensity:7.2f} {gflops:8.1f} {100 * gflops / self.peak:5.0f}% {gbytes:7.1f} "
                f"{100 * gbytes / self.bandwidth:5.0f}% {bound:>8} {100 * gflops / roof:6.0f}%")


class TimedExecutable:
    """A compiled executable that adds the seconds of each of its calls to `seconds`."""

    def __init__(self, executable):
        self.executable, self.seconds = executable, 0.0

    def __call__(self, *arrays):
        started = time.perf_counter()
        try:
            return self.executable(*arrays)
        finally:
            self.seconds += time.perf_counter() - started

    def __getattr__(self, name: str):
        return getattr(self.executable, name)


def inside_and_outside(network: Network, training: bool, repeats: int) -> tuple:
    """Median seconds of one step (training or inference) on one thread, and of its part inside the
    compiled executables."""
    os.environ["LUCID_NUM_THREADS"] = "1"
    step = network.lucid_training_step() if training else network.lucid_inference()
    step()
    variant = network.variant(training)
    names = ("forward", "backward") if training else ("executable",)
    originals = {name: getattr(variant, name) for name in names}
    timed = [TimedExecutable(originals[name]) for name in names]
    steps, inside = [], []
    try:
        for name, executable in zip(names, timed):
            setattr(variant, name, executable)
        for _ in range(repeats):
            before, started = sum(t.seconds for t in timed), time.perf_counter()
            step()
            steps.append(time.perf_counter() - started)
            inside.append(sum(t.seconds for t in timed) - before)
    finally:
        for name, executable in originals.items():
            setattr(variant, name, executable)
    return float(np.median(steps)), float(np.median(inside))


def optimizer_seconds(network: Network, repeats: int) -> float:
    """Median seconds of AdamW's step alone over the network's parameters (gradients present), one thread."""
    return median_time(lucid.optim.AdamW(network.model.parameters(), lr=1e-4).step, repeats, 0.0, 0.0)


def print_breakdown(network: Network, modes: list, repeats: int, machine: Machine) -> None:
    for training in (mode == "train" for mode in modes):
        title = "training step (forward + backward graphs)" if training else "inference"
        network.train(training)
        parts = time_by_family(network.executables(training), repeats)
        kernels = sum(seconds for seconds, _, _ in parts.values())
        print(f"  where the time goes, {title}: {1e3 * kernels:.1f} ms of kernels, each alone on one thread")
        print(f"    {'family':12} {'ms':>9} {'share':>6} {'MFLOP':>10} {'MB':>8} {'FLOP/B':>7} {'GFLOP/s':>8} "
              f"{'%peak':>6} {'GB/s':>7} {'%bw':>6} {'bound':>8} {'%roof':>7}")
        for name, (seconds, flops, nbytes) in parts.items():
            print(f"    {name:12} {1e3 * seconds:9.3f} {100 * seconds / kernels:5.1f}% {flops / 1e6:10.2f} "
                  f"{nbytes / 1e6:8.2f} {machine.roofline(seconds, flops, nbytes)}")
        step, inside = inside_and_outside(network, training, repeats)
        outside = "autograd, zero_grad and AdamW" if training else "the call's Python"
        print(f"    the {'step' if training else 'call'} on one thread: {1e3 * step:.1f} ms = {1e3 * inside:.1f} ms "
              f"in the compiled executables + {1e3 * (step - inside):.1f} ms outside them ({outside})"
              + (f"; AdamW's step alone {1e3 * optimizer_seconds(network, repeats):.1f} ms" if training else ""))


def run(names: list, modes: list, sizes: dict, thread_counts: list, repeats: int, dropout: float, quick: bool,
        backend: str = "inductor") -> None:
    try:
        import torch
    except ImportError:
        torch = None
        note(TORCH_MISSING)
    available = available_peers(unnamed=("torch.compile",) if torch is None else ())
    budget = dict(warm_up=0.0, timed=0.0) if quick else {}
    machine = Machine(quick)
    print(f"machine, {machine.describe()}")
    threads_slower = False
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            if isinstance(sizes[name][0], Monai) and importlib.util.find_spec("monai") is None:
                print(f"\n{name}: MONAI is not installed, so this network is not timed (pip install monai)")
                continue
            network = Network(name, sizes, torch, dropout)
            print(f"\n{network.describe()}")
            if "train" in modes:
                network.train(True)
                losses = first_losses(network, torch)
                print(f"same network: first training loss {losses[0]:.6f} (lucid compiled) vs "
                      f"{cell(losses[1], 0, 6)} (torch)")
            peers = Peers(torch, available, backend)
            print(f"{'network':16} {'mode':5} {'thr':>3} {'lucid ms':>9} {'torch ms':>9} {'torch CL':>9} "
                  f"{'compile':>9} {'ort ms':>9} {'ov ms':>9} {'torch/lucid':>11} {'CL/lucid':>9} "
                  f"{'compile/lucid':>13} {'ort/lucid':>9} {'ov/lucid':>9} {'best/lucid':>10}")
            for training in (mode == "train" for mode in modes):
                network.train(training)
                if not training and available & {"ort", "ov"}:
                    peers.onnx_path = network.export(Path(folder))     # with the weights the training rows left
                lucid_times = []
                for threads in thread_counts:
                    os.environ["LUCID_NUM_THREADS"] = str(threads)
                    if torch is not None:
                        torch.set_num_threads(threads)
                    steps = peers.steps(network, training, threads)
                    lucid_times.append(time_row(network, "train" if training else "infer", threads, steps, repeats,
                                                budget))
                threads_slower |= slower_with_more_threads(lucid_times)
            if peers.compile_seconds:
                print(f"torch.compile's first call (the compile{compiler_named(backend)}): "
                      + ", ".join(peers.compile_seconds))
            print_breakdown(network, modes, 1 if quick else 5, machine)
    if threads_slower:
        note(THREADS_SLOWER)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=list(SIZES), choices=list(SIZES), metavar="NAME",
                        help=f"networks to time (default: all of {', '.join(SIZES)})")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                        help="the training step, inference or both (default both)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts to time (default 1 2)")
    parser.add_argument("--repeats", type=int, default=5, help="at least this many timed calls per side (default 5)")
    parser.add_argument("--dropout", type=float, default=0.1,
                        help="ResidualUNet's dropout probability (default 0.1; with 0 both sides' first losses "
                             "must agree, with more they draw different masks)")
    parser.add_argument("--tiny", action="store_true", help="the tests' small sizes instead of SIZES")
    parser.add_argument("--quick", action="store_true", help="1 repeat, no warm-up or time budget (a smoke run)")
    parser.add_argument("--torch-compile-backend", default="inductor", metavar="NAME",
                        help="torch.compile's backend for the compile column (default inductor, the peer; "
                             "the tests' smoke run takes aot_eager, which skips Inductor's C++ compiles)")
    args = parser.parse_args(argv)
    run(args.networks, args.modes, TINY if args.tiny else SIZES, args.threads, 1 if args.quick else args.repeats,
        args.dropout, args.quick, args.torch_compile_backend)


if __name__ == "__main__":
    main()
