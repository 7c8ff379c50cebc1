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

import os
import sys

import numpy as np

# Run from a checkout without installing: the repository root holds the lucid package, this
# directory holds models.py.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import lucid  # noqa: E402
import lucid.nn.functional as F  # noqa: E402
from lucid import Tensor  # noqa: E402
from lucid.codegen import cache  # noqa: E402
from example_tools import (check_steps, describe_first_call, llvm_counts, report_loss,  # noqa: E402
                           report_step_times, sphere_mask, timed, train, training_parser)
from models import UNet3D  # noqa: E402


def parse_args(argv=None):
    parser = training_parser(__doc__, steps=300, batch=2, quick="size 8, base 2, depth 1, 30 steps")
    parser.add_argument("--size", type=int, default=16, help="spatial size D = H = W (default 16)")
    parser.add_argument("--base", type=int, default=8, help="UNet channels at the top level (default 8)")
    parser.add_argument("--depth", type=int, default=2, help="UNet levels (default 2)")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.base, args.depth, args.steps = 8, 2, 1, 30
    if args.size % 2 ** args.depth:
        parser.error(f"--size must be divisible by 2**depth = {2 ** args.depth}")
    check_steps(parser, args)
    return args


# ------------------------------------------------------------------------------------- data
def make_batch(rng, batch, size, noise=0.8):
    """(images (N, 1, S, S, S) float32, labels (N, S, S, S) int64): image = mask * intensity + noise."""
    masks = np.stack([sphere_mask(rng, size) for _ in range(batch)])
    intensity = rng.uniform(0.8, 1.5, size=(batch, 1, 1, 1))
    images = masks * intensity + noise * rng.standard_normal(masks.shape)
    return Tensor(images[:, None].astype(np.float32)), Tensor(masks.astype(np.int64))


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


# ------------------------------------------------------------------------------------- main
def build(args):
    """The seeded UNet, its compiled form and an Adam optimiser over its parameters."""
    lucid.manual_seed(args.seed)
    model = UNet3D(in_channels=1, out_channels=2, base=args.base, depth=args.depth)
    count = sum(p.numel() for p in model.parameters())
    print(f"UNet3D base={args.base} depth={args.depth}: {count} parameters; batches of {args.batch} "
          f"volumes of {args.size}^3; Adam lr={args.lr}; {args.steps} steps")
    print(f"native code cache: {cache.cache_dir()}")
    return model, lucid.compile(model), lucid.optim.Adam(model.parameters(), lr=args.lr)


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    model, compiled, optimizer = build(args)

    losses, train_note = train(compiled, optimizer, F.cross_entropy,
                               lambda: make_batch(rng, args.batch, args.size), args.steps)

    images, labels = make_batch(np.random.default_rng(args.seed + 1), max(4, args.batch), args.size)
    before = llvm_counts()
    (accuracy, dice), first_eval = timed(evaluate, compiled, model, images, labels)
    eval_note = describe_first_call(first_eval, before)
    background = float((labels.numpy() == 0).mean())

    images, labels = make_batch(rng, args.batch, args.size)

    print()
    fell = report_loss(losses)
    print(f"held-out batch: accuracy {accuracy:.3f} (all-background would be {background:.3f}), "
          f"foreground Dice {dice:.3f}")
    print(f"first compiled training step: {train_note}")
    print(f"first compiled eval call:     {eval_note}")
    print("  (native code is cached on disk, so a second run skips LLVM and starts faster)")
    report_step_times(compiled, model, optimizer, F.cross_entropy, images, labels)
    return 0 if fell else 1


if __name__ == "__main__":
    sys.exit(main())
