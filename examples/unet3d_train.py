"""Train a 3-D UNet with a compiled training step: segment random spheres in noisy volumes.

    python examples/unet3d_train.py            # 16^3 volumes, base 8, depth 2, batch 2, 300 steps
    python examples/unet3d_train.py --quick    # tiny: 8^3, base 2, depth 1, 30 steps (a smoke run)
    python examples/unet3d_train.py --size 32 --steps 500 --batch 4

Each batch is made with NumPy from a seeded RNG: a binary mask of a few random spheres, and the
image `mask * intensity + noise`. `lucid.compile(model)` turns the UNet (examples/models.py) into
native code; in training its backward is compiled too, so `loss.backward()` on the eager
cross-entropy loss fills the parameters' `.grad` and `lucid.optim.Adam` steps as usual.

It prints the loss every few steps, then a summary: the first vs last average loss, accuracy and
Dice of the foreground on a held-out batch, and the time of a training step compiled vs eager
(same model, same batch). The first compiled call traces, optimises and compiles with LLVM; that
native code is cached on disk (LUCID_CACHE_DIR), so a second run starts faster. Exit status is 0
only if the loss fell.
"""

import argparse
import os
import sys
import time

import numpy as np

# Run from a checkout without installing: the repository root holds the lucid package, this
# directory holds models.py.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import lucid  # noqa: E402
import lucid.nn.functional as F  # noqa: E402
from lucid import Tensor  # noqa: E402
from lucid.codegen import jit  # noqa: E402
from models import UNet3D  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--size", type=int, default=16, help="spatial size D = H = W (default 16)")
    parser.add_argument("--batch", type=int, default=2, help="volumes per batch (default 2)")
    parser.add_argument("--base", type=int, default=8, help="UNet channels at the top level (default 8)")
    parser.add_argument("--depth", type=int, default=2, help="UNet levels (default 2)")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 1e-2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the data (default 0)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke run: size 8, base 2, depth 1, 30 steps (overriding those options)")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.base, args.depth, args.steps = 8, 2, 1, 30
    if args.size % 2 ** args.depth:
        parser.error(f"--size must be divisible by 2**depth = {2 ** args.depth}")
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    return args


# ------------------------------------------------------------------------------------- data
def sphere_mask(rng, size):
    """A (size, size, size) boolean mask: the union of 1 to 3 spheres at random places."""
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), axis=-1)
    mask = np.zeros((size,) * 3, dtype=bool)
    for _ in range(rng.integers(1, 4)):
        radius = rng.uniform(size / 8, size / 4) + 0.5
        centre = rng.uniform(radius - 1, size - radius, size=3)
        mask |= ((grid - centre) ** 2).sum(axis=-1) <= radius ** 2
    return mask


def make_batch(rng, batch, size, noise=0.8):
    """(images (N, 1, S, S, S) float32, labels (N, S, S, S) int64): image = mask * intensity + noise."""
    masks = np.stack([sphere_mask(rng, size) for _ in range(batch)])
    intensity = rng.uniform(0.8, 1.5, size=(batch, 1, 1, 1))
    images = masks * intensity + noise * rng.standard_normal(masks.shape)
    return Tensor(images[:, None].astype(np.float32)), Tensor(masks.astype(np.int64))


# ---------------------------------------------------------------------------------- training
def train_step(net, optimizer, images, labels):
    """One step: forward with `net` (compiled or eager), cross entropy, backward, Adam. Returns the loss."""
    optimizer.zero_grad()
    loss = F.cross_entropy(net(images), labels)
    loss.backward()
    optimizer.step()
    return loss.item()


def train(compiled, optimizer, rng, args):
    """Train for args.steps steps on fresh batches; returns the losses and the first step's time."""
    log_every = max(1, args.steps // 10)
    losses, first_step = [], 0.0
    for step in range(1, args.steps + 1):
        images, labels = make_batch(rng, args.batch, args.size)
        loss, seconds = timed(train_step, compiled, optimizer, images, labels)
        losses.append(loss)
        if step == 1:
            first_step = seconds
        if step % log_every == 0 or step == 1:
            print(f"step {step:4d}  loss {losses[-1]:.4f}", flush=True)
    return losses, first_step


def first_vs_last(losses):
    """Mean loss of the first and of the last tenth of the steps (at least 3 steps each, if there are)."""
    count = min(max(3, len(losses) // 10), len(losses) // 2)
    return float(np.mean(losses[:count])), float(np.mean(losses[-count:])), count


# -------------------------------------------------------------------------------- evaluation
def evaluate(compiled, model, images, labels):
    """Voxel accuracy and foreground Dice of the model (eval mode, compiled, no grad) on a batch."""
    model.eval()
    with lucid.no_grad():
        logits = compiled(images).numpy()
    model.train()
    predicted = logits.argmax(axis=1) == 1
    truth = labels.numpy() == 1
    accuracy = float((predicted == truth).mean())
    dice = 2 * float((predicted & truth).sum()) / max(1, int(predicted.sum() + truth.sum()))
    return accuracy, dice


def time_steps(net, optimizer, images, labels, repeats):
    """Median seconds of `repeats` training steps with `net` on one batch (after one warm-up step)."""
    train_step(net, optimizer, images, labels)
    return float(np.median([timed(train_step, net, optimizer, images, labels)[1] for _ in range(repeats)]))


def timed(fn, *args):
    """(fn(*args), seconds it took)."""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def llvm_counts():
    """(modules compiled by LLVM, objects loaded from the disk cache) so far in this process."""
    return jit.COUNTERS["compiled"], jit.COUNTERS["loaded"]


def describe_first_call(seconds, before):
    """What a first compiled call cost, and whether LLVM ran or the disk cache answered."""
    compiled, loaded = (now - then for now, then in zip(llvm_counts(), before))
    source = f"LLVM compiled {compiled} module(s)" if compiled else "no LLVM compilation"
    if loaded:
        source += f", {loaded} loaded from the disk cache"
    return f"{seconds:.2f} s (tracing + passes + {source})"


# ------------------------------------------------------------------------------------- main
def build(args):
    """The seeded UNet, its compiled form and an Adam optimiser over its parameters."""
    lucid.manual_seed(args.seed)
    model = UNet3D(in_channels=1, out_channels=2, base=args.base, depth=args.depth)
    count = sum(p.numel() for p in model.parameters())
    print(f"UNet3D base={args.base} depth={args.depth}: {count} parameters; batches of {args.batch} "
          f"volumes of {args.size}^3; Adam lr={args.lr}; {args.steps} steps")
    print(f"native code cache: {jit.cache_dir()}")
    return model, lucid.compile(model), lucid.optim.Adam(model.parameters(), lr=args.lr)


def report_loss(losses):
    """Print the first vs last average loss; True if it fell."""
    first, last, window = first_vs_last(losses)
    verdict = f"fell by {100 * (first - last) / first:.1f}%" if last < first else "DID NOT FALL"
    print(f"loss: first {window} steps {first:.4f} -> last {window} steps {last:.4f} ({verdict})")
    return last < first


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    model, compiled, optimizer = build(args)

    before = llvm_counts()
    losses, first_step = train(compiled, optimizer, rng, args)
    train_note = describe_first_call(first_step, before)

    images, labels = make_batch(np.random.default_rng(args.seed + 1), max(4, args.batch), args.size)
    before = llvm_counts()
    (accuracy, dice), first_eval = timed(evaluate, compiled, model, images, labels)
    eval_note = describe_first_call(first_eval, before)
    background = float((labels.numpy() == 0).mean())

    images, labels = make_batch(rng, args.batch, args.size)
    compiled_time = time_steps(compiled, optimizer, images, labels, repeats=5)
    eager_time = time_steps(model, optimizer, images, labels, repeats=3)

    print()
    fell = report_loss(losses)
    print(f"held-out batch: accuracy {accuracy:.3f} (all-background would be {background:.3f}), "
          f"foreground Dice {dice:.3f}")
    print(f"first compiled training step: {train_note}")
    print(f"first compiled eval call:     {eval_note}")
    print("  (native code is cached on disk, so a second run skips LLVM and starts faster)")
    print(f"training step (median), batch {args.batch}: compiled {1e3 * compiled_time:.1f} ms, "
          f"eager {1e3 * eager_time:.1f} ms -> compiled is {eager_time / compiled_time:.1f}x faster")
    return 0 if fell else 1


if __name__ == "__main__":
    sys.exit(main())
