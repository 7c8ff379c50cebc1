"""Train a small video classifier (Conv3d stem, pooling, Linear head) with a compiled training step.

    python examples/video_classifier.py            # clips of 3 x 8 x 32 x 32, batch 8, 150 steps
    python examples/video_classifier.py --quick    # clips of 3 x 4 x 16 x 16, batch 4, 40 steps

The model is `VideoClassifier` (examples/models.py): Conv3d k(3,7,7) s(1,2,2) -> BatchNorm3d ->
ReLU -> MaxPool3d, a Conv3d block, a global mean over time and space, and a Linear head. Each clip
shows a bright square on a noisy background, moving right, left, down, up or standing still: the
five classes. The class can only be told from how the frames change over time, so the model has to
use its temporal kernel. It prints the loss every few steps, then the accuracy on a held-out batch
(chance is 20%) and the training step time compiled vs eager. Exit status is 0 only if the loss
fell.
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import lucid  # noqa: E402
import lucid.nn.functional as F  # noqa: E402
from lucid import Tensor  # noqa: E402
from example_tools import (check_steps, report_loss,  # noqa: E402
                           report_step_times, train, training_parser)
from models import VideoClassifier  # noqa: E402

#: (frame-to-frame step along H, along W) of each class: right, left, down, up, still.
MOTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0), (0, 0))


def parse_args(argv=None):
    parser = training_parser(__doc__, steps=150, batch=8, quick="4 frames of 16 x 16, batch 4, 40 steps")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (default 8)")
    parser.add_argument("--size", type=int, default=32, help="frame height = width, divisible by 4 (default 32)")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.size, args.batch, args.steps = 4, 16, 4, 40
    if args.size % 4 or args.size < 8:
        parser.error("--size must be a multiple of 4, at least 8")
    check_steps(parser, args)
    return args


def make_clip(rng, label, frames, size):
    """(3, frames, size, size) float32: a square of side size/4 stepping by MOTIONS[label] each frame."""
    side, (dy, dx) = size // 4, MOTIONS[label]
    step = max(1, size // (2 * frames))
    y, x = (int(v) for v in rng.integers(side, size - 2 * side, size=2))
    clip = 0.3 * rng.standard_normal((3, frames, size, size))
    colour = rng.uniform(0.8, 1.2, size=3)[:, None, None]
    for t in range(frames):
        top, left = (y + dy * step * t) % (size - side), (x + dx * step * t) % (size - side)
        clip[:, t, top:top + side, left:left + side] += colour
    return clip.astype(np.float32)


def make_batch(rng, batch, frames, size):
    """(clips (N, 3, T, S, S) float32, labels (N,) int64), classes drawn uniformly."""
    labels = rng.integers(0, len(MOTIONS), size=batch)
    clips = np.stack([make_clip(rng, int(label), frames, size) for label in labels])
    return Tensor(clips), Tensor(labels.astype(np.int64))


def accuracy(compiled, model, clips, labels):
    """Fraction of clips whose largest logit is the true class (eval mode, compiled, no grad)."""
    model.eval()
    with lucid.no_grad():
        predicted = compiled(clips).numpy().argmax(axis=1)
    model.train()
    return float((predicted == labels.numpy()).mean())


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    lucid.manual_seed(args.seed)
    model = VideoClassifier(in_channels=3, num_classes=len(MOTIONS), width=8)
    compiled, optimizer = lucid.compile(model), lucid.optim.Adam(model.parameters(), lr=args.lr)
    print(f"VideoClassifier: {sum(p.numel() for p in model.parameters())} parameters; clips of 3 x "
          f"{args.frames} x {args.size} x {args.size}, batch {args.batch}; Adam lr={args.lr}; {args.steps} steps")

    losses, train_note = train(compiled, optimizer, F.cross_entropy,
                               lambda: make_batch(rng, args.batch, args.frames, args.size), args.steps)

    clips, labels = make_batch(np.random.default_rng(args.seed + 1), 64, args.frames, args.size)
    held_out = accuracy(compiled, model, clips, labels)
    clips, labels = make_batch(rng, args.batch, args.frames, args.size)

    print()
    fell = report_loss(losses)
    print(f"held-out batch of 64 clips: accuracy {held_out:.3f} (chance: {1 / len(MOTIONS):.3f})")
    print(f"first compiled training step: {train_note}")
    report_step_times(compiled, model, optimizer, F.cross_entropy, clips, labels)
    return 0 if fell else 1


if __name__ == "__main__":
    sys.exit(main())
