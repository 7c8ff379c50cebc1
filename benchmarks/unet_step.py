"""A whole 3-D UNet training step (forward + cross-entropy + backward) compiled by lucid vs PyTorch eager.

    python benchmarks/unet_step.py                          # 32^3 volumes, base 16, depth 2, batch 2
    python benchmarks/unet_step.py --size 16 --base 8 --threads 1

The UNet is examples/models.py's UNet3D (DoubleConv3d = (Conv3d k3 + BatchNorm3d + ReLU) x 2,
MaxPool3d, ConvTranspose3d k2 s2, skip concatenation, 1x1x1 head), in training mode. PyTorch runs the
same network (examples/torch_models.py, loaded from lucid's state dict) on the same batch. Each side's step sets the gradients to None, computes the loss and calls backward; the time
is the median of repeated steps after warm-up (the sides alternating in rounds, see conv.py's
`median_times`), on 1 and on 2 threads, and the ratio is
torch_ms / lucid_ms (above 1: lucid is faster); without PyTorch installed, lucid is timed alone
and the PyTorch columns show n/a. Like benchmarks/conv.py, the script re-executes
itself with glibc's mmap threshold raised so PyTorch's buffers are not mapped afresh on every step.
"""
from __future__ import annotations

import argparse
import os
import sys

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
from models import UNet3D  # noqa: E402
from torch_models import torch_mirrors  # noqa: E402


def lucid_step(model, images, labels, compiled=None):
    """A training step of `compiled` (default: `lucid.compile(model)`), setting `model`'s gradients to None."""
    compiled = compiled or lucid.compile(model)
    x, y = lucid.Tensor(images), lucid.Tensor(labels)

    def step():
        for p in model.parameters():
            p.grad = None
        F.cross_entropy(compiled(x), y).backward()
    return step


def torch_step(torch, model, images, labels):
    x, y = torch.tensor(images), torch.tensor(labels)

    def step():
        for p in model.parameters():
            p.grad = None
        torch.nn.functional.cross_entropy(model(x), y).backward()
    return step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="volume size D = H = W (default 32)")
    parser.add_argument("--base", type=int, default=16, help="UNet channels at the top level (default 16)")
    parser.add_argument("--depth", type=int, default=2, help="UNet levels (default 2)")
    parser.add_argument("--batch", type=int, default=2, help="volumes per step (default 2)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts to time (default 1 2)")
    parser.add_argument("--repeats", type=int, default=7, help="at least this many timed steps per side (default 7)")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None

    lucid.manual_seed(0)
    model = UNet3D(in_channels=1, out_channels=2, base=args.base, depth=args.depth)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, 1) + (args.size,) * 3).astype(np.float32)
    labels = rng.integers(0, 2, (args.batch,) + (args.size,) * 3)
    print(f"UNet3D base={args.base} depth={args.depth}, batch {args.batch} x 1 x {args.size}^3, "
          "training step (forward + cross entropy + backward)")
    steps = [lucid_step(model, images, labels)]
    if torch is None:
        note(TORCH_MISSING)
    else:
        reference = torch_mirrors(torch)["UNet3D"](in_channels=1, out_channels=2, base=args.base, depth=args.depth)
        reference.load_state_dict({name: torch.tensor(np.asarray(value)) for name, value in model.state_dict().items()})
        steps.append(torch_step(torch, reference, images, labels))
        losses = (F.cross_entropy(model(lucid.Tensor(images)), lucid.Tensor(labels)).item(),
                  torch.nn.functional.cross_entropy(reference(torch.tensor(images)), torch.tensor(labels)).item())
        print(f"same network: loss {losses[0]:.6f} (lucid eager) vs {losses[1]:.6f} (torch)")
    print(f"{'thr':>3} {'lucid ms':>9} {'torch ms':>9} {'torch/lucid':>11}")
    lucid_times = []
    for threads in args.threads:
        os.environ["LUCID_NUM_THREADS"] = str(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        lucid_ms, torch_ms = ([1e3 * t for t in median_times(steps, args.repeats, settle=(0,))] + [None])[:2]
        print(f"{threads:>3} {lucid_ms:9.2f} {cell(torch_ms, 9)} {cell(ratio(torch_ms, lucid_ms), 11)}", flush=True)
        lucid_times.append(lucid_ms)
    if slower_with_more_threads(lucid_times):
        note(THREADS_SLOWER)


if __name__ == "__main__":
    main()
