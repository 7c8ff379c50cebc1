"""Train a 3-D convolutional autoencoder (lazy transposed-conv decoder) with a compiled training step.

    python examples/autoencoder3d.py            # 16^3 volumes, batch 4, 200 steps
    python examples/autoencoder3d.py --quick    # 8^3 volumes, base 4, 150 steps (a few seconds)

The model is `ConvAutoencoder3D` (examples/models.py): a strided Conv3d encoder and a decoder of
`LazyConvTranspose3d` layers, whose in_channels nobody wrote down. `lucid.trace` on a
`lucid.spec` (a shape, no data) resolves them by shape inference before the optimiser is built,
so Adam sees every parameter. The volumes are random spheres with soft edges; the loss is the
mean squared reconstruction error. It prints the loss every few steps, then the reconstruction
error on a held-out batch next to the error of predicting the batch's mean voxel everywhere (the
baseline a model that learned nothing reaches), and the training step time compiled vs eager.
Exit status is 0 only if the loss fell and the reconstruction beats that baseline.
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
                           report_step_times, sphere_mask, train, training_parser)
from models import ConvAutoencoder3D  # noqa: E402


def parse_args(argv=None):
    parser = training_parser(__doc__, steps=200, batch=4, quick="size 8, base 4, 150 steps")
    parser.add_argument("--size", type=int, default=16, help="spatial size D = H = W, divisible by 4 (default 16)")
    parser.add_argument("--base", type=int, default=8, help="channels after the first conv (default 8)")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.base, args.steps = 8, 4, 150
    if args.size % 4 or args.size < 4:
        parser.error("--size must be a positive multiple of 4")
    check_steps(parser, args)
    return args


def make_batch(rng, batch, size):
    """(volumes, volumes): (N, 1, S, S, S) float32 spheres with soft edges (0.2 outside, 0.8 inside); input = target."""
    masks = np.stack([sphere_mask(rng, size) for _ in range(batch)]).astype(np.float32)
    soft = sum(np.roll(masks, shift, axis) for axis in (1, 2, 3) for shift in (-1, 1)) / 6
    volumes = Tensor((0.2 + 0.3 * masks + 0.3 * soft)[:, None].astype(np.float32))
    return volumes, volumes


def build(args):
    """The seeded autoencoder with its lazy layers resolved from a spec, compiled, and its optimiser."""
    lucid.manual_seed(args.seed)
    model = ConvAutoencoder3D(in_channels=1, base=args.base, latent=2 * args.base)
    lazy = {name: m for name, m in model.named_modules() if getattr(m, "in_channels", 0) is None}
    graph = lucid.trace(model, lucid.spec(args.batch, 1, args.size, args.size, args.size))
    resolved = {name: m.in_channels for name, m in lazy.items()}
    count = sum(p.numel() for p in model.parameters())
    print(f"ConvAutoencoder3D base={args.base}: lazy layers {resolved} (in_channels resolved by tracing a "
          f"spec: {len(graph.nodes)} graph nodes, no data); {count} parameters")
    print(f"batches of {args.batch} volumes of {args.size}^3; Adam lr={args.lr}; {args.steps} steps")
    return model, lucid.compile(model), lucid.optim.Adam(model.parameters(), lr=args.lr)


def held_out_error(compiled, model, volumes):
    """(mean squared error of the reconstruction, error of predicting the batch's mean voxel)."""
    model.eval()
    with lucid.no_grad():
        error = F.mse_loss(compiled(volumes), volumes).item()
    model.train()
    data = volumes.numpy()
    return error, float(((data - data.mean()) ** 2).mean())


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    model, compiled, optimizer = build(args)

    losses, train_note = train(compiled, optimizer, F.mse_loss, lambda: make_batch(rng, args.batch, args.size),
                               args.steps)

    volumes, _ = make_batch(np.random.default_rng(args.seed + 1), args.batch, args.size)
    error, baseline = held_out_error(compiled, model, volumes)

    print()
    fell = report_loss(losses)
    verdict = f"{baseline / error:.1f}x better" if error < baseline else "NOT BETTER"
    print(f"held-out batch: reconstruction error {error:.4f}, predicting the mean voxel {baseline:.4f} ({verdict})")
    print(f"first compiled training step: {train_note}")
    report_step_times(compiled, model, optimizer, F.mse_loss, volumes, volumes)
    return 0 if fell and error < baseline else 1


if __name__ == "__main__":
    sys.exit(main())
