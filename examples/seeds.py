"""Run every example from the seed product pages, corrected where the pages print them wrongly.

    python examples/seeds.py           # everything, including the batch-16 MegEngine example
    python examples/seeds.py --quick   # same, but the big example uses batch 2

Each example is announced with a heading line and prints what the seed page prints.
Examples that the seeds print wrongly are run both as printed and as intended, and
the two that cannot run (Conv3dModel) show the clear error lucid raises.
"""

import argparse
import os
import sys
import time
import traceback

import numpy as np

# Run from a checkout without installing: the repository root holds the lucid package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lucid  # noqa: E402
import lucid.nn as nn  # noqa: E402
from lucid import Tensor  # noqa: E402


def heading(text):
    print()
    print("=" * 4, text, "=" * max(4, 72 - len(text)))


# --------------------------------------------------------------------------- seed 000
def convtranspose3d_basic():
    heading("seed 000: ConvTranspose3d basic 3D upsampling + backward")
    x = Tensor.randn(1, 4, 8, 8, 8, requires_grad=True)
    deconv3d = nn.ConvTranspose3d(4, 2, kernel_size=3, stride=2, padding=1, output_padding=1)
    y = deconv3d(x)
    print("y.shape:", y.shape)  # seed: (1, 2, 16, 16, 16)
    y.backward()
    print("x.grad.shape:", x.grad.shape)  # seed: (1, 4, 8, 8, 8)


class Decoder3D(nn.Module):
    def __init__(self):
        super().__init__()
        self.deconv = nn.ConvTranspose3d(8, 4, kernel_size=4, stride=2, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.deconv(x))


def decoder3d():
    heading("seed 000: Decoder3D (ConvTranspose3d + ReLU)")
    model = Decoder3D()
    z = Tensor.randn(2, 8, 4, 4, 4, requires_grad=True)
    out = model(z)
    print("out.shape:", out.shape)  # (2, 4, 8, 8, 8)
    out.backward()
    print("z.grad.shape:", z.grad.shape)
    print("deconv.weight.grad.shape:", model.deconv.weight.grad.shape)


# --------------------------------------------------------------------------- seed 001
def lazy_decoder_block():
    heading("seed 001: LazyConvTranspose3d decoder block")
    up3d = nn.LazyConvTranspose3d(out_channels=32, kernel_size=4, stride=2, padding=1)
    x = lucid.zeros(2, 64, 4, 8, 8)  # in_channels=64 inferred
    y = up3d(x)
    print("y.shape:", y.shape)  # seed: (2, 32, 8, 16, 16)
    print("up3d.in_channels:", up3d.in_channels)


def lazy_materialization():
    heading("seed 001: LazyConvTranspose3d materialization")
    lazy = nn.LazyConvTranspose3d(out_channels=16, kernel_size=3, padding=1)
    print(lazy.in_channels)  # seed: None
    _ = lazy(lucid.zeros(1, 8, 4, 4, 4))
    print(lazy.in_channels)  # seed: 8
    print("weight.shape:", lazy.weight.shape)


# --------------------------------------------------------------------------- seed 002
def conv3d_no_bias():
    heading("seed 002: Conv3d without bias (corrected: in_channels=1, input (1, 1, 2, 2, 2))")
    input_tensor = Tensor([[
        [[[1.0, 2.0],
          [3.0, 4.0]],
         [[5.0, 6.0],
          [7.0, 8.0]]]
    ]], requires_grad=True)  # Shape: (1, 1, 2, 2, 2)
    print("input.shape:", input_tensor.shape)
    conv3d = nn.Conv3d(in_channels=1, out_channels=1, kernel_size=2, bias=False)
    conv3d.weight.data[...] = np.arange(1, 9, dtype=np.float32).reshape(1, 1, 2, 2, 2)
    print(conv3d.weight)
    output = conv3d(input_tensor)  # Shape: (1, 1, 1, 1, 1)
    print(output)  # 204.0 = 1*1 + 2*2 + ... + 8*8
    output.backward()
    print("input_tensor.grad (= weight values):")
    print(input_tensor.grad)
    print("conv3d.weight.grad (= input values):")
    print(conv3d.weight.grad)


# The seed prints 16 weight values, shape (2, 1, 2, 2, 2), for a layer whose weight is
# (2, 2, 2, 2, 2).  Assigning them with `weight.data[...] = ...` broadcasts them over the
# input-channel axis, so both input channels use the same 2x2x2 kernel per output channel.
SEED_BIAS_WEIGHT = np.arange(1, 17, dtype=np.float32).reshape(2, 1, 2, 2, 2)
SEED_BIAS_BIAS = np.array([17.0, 18.0], dtype=np.float32)


def _bias_conv():
    conv3d = nn.Conv3d(in_channels=2, out_channels=2, kernel_size=2, bias=True)
    conv3d.weight.data[...] = np.broadcast_to(SEED_BIAS_WEIGHT, conv3d.weight.shape)
    conv3d.bias.data[...] = SEED_BIAS_BIAS
    return conv3d


def conv3d_bias_as_printed():
    heading("seed 002: Conv3d with bias, input as printed (36 values: unbatched (2, 2, 3, 3))")
    data = np.arange(1, 37, dtype=np.float32).reshape(2, 2, 3, 3)
    input_tensor = Tensor(data, requires_grad=True)  # (C=2, D=2, H=3, W=3), no batch axis
    conv3d = _bias_conv()
    print(conv3d.weight)
    print(conv3d.bias)
    output = conv3d(input_tensor)
    print("output.shape:", output.shape)  # (2, 1, 2, 2): unbatched output
    print(output)
    output.backward()
    print("input_tensor.grad.shape:", input_tensor.grad.shape)


def conv3d_bias_as_intended():
    heading("seed 002: Conv3d with bias, input as intended ((2, 2, 3, 3, 3), values 1..108)")
    data = np.arange(1, 109, dtype=np.float32).reshape(2, 2, 3, 3, 3)
    input_tensor = Tensor(data, requires_grad=True)
    conv3d = _bias_conv()
    output = conv3d(input_tensor)
    print("output.shape:", output.shape)  # seed: (2, 2, 2, 2, 2)
    print(output)
    output.backward()
    print("input_tensor.grad.shape:", input_tensor.grad.shape)
    print("conv3d.bias.grad:", conv3d.bias.grad)  # 16 ones summed per output channel


class Conv3dModel(nn.Module):
    def __init__(self):
        super(Conv3dModel, self).__init__()
        self.conv1 = nn.Conv3d(in_channels=1, out_channels=8, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv3d(in_channels=8, out_channels=16, kernel_size=3)
        self.pool = nn.MaxPool3D(kernel_size=2, stride=2)
        self.fc = nn.Linear(in_features=16 * 4 * 4 * 4, out_features=10)

    def forward(self, x):
        x = self.conv1(x)
        x = self.relu(x)
        x = self.conv2(x)
        x = self.relu(x)
        x = self.pool(x)
        x = x.reshape(x.shape[0], -1)
        x = self.fc(x)
        return x


SEED_MODEL_DATA = [
    [[[0.5, -1.2, 3.3],
      [0.7, 2.2, -0.3],
      [4.1, 5.5, 6.6]]]
]  # literally (1, 1, 3, 3)


def conv3d_model():
    heading("seed 002: Conv3dModel, input (1, 1, 3, 3, 3) as the seed's comment intends")
    model = Conv3dModel()
    input_data = Tensor.randn(1, 1, 3, 3, 3, requires_grad=True)
    try:
        model(input_data)
    except ValueError as e:
        print("ValueError (expected: conv2 leaves a 1x1x1 map, too small for the 2x2x2 pool):")
        print("   ", e)
    else:
        raise AssertionError("Conv3dModel on (1, 1, 3, 3, 3) should raise ValueError")

    heading("seed 002: Conv3dModel, input as printed (4-D (1, 1, 3, 3) = unbatched C=1, D=1, H=3, W=3)")
    input_data = Tensor(SEED_MODEL_DATA, requires_grad=True)
    print("input.shape:", input_data.shape)
    try:
        model(input_data)
    except ValueError as e:
        print("ValueError (expected: conv2's 3x3x3 kernel does not fit depth 1):")
        print("   ", e)
    else:
        raise AssertionError("Conv3dModel on (1, 1, 3, 3) should raise ValueError")

    heading("seed 002: Conv3dModel, input (1, 1, 10, 10, 10), the size its fc layer (16*4*4*4) implies")
    input_data = Tensor.randn(1, 1, 10, 10, 10, requires_grad=True)
    output = model(input_data)
    print("output.shape:", output.shape)  # (1, 10)
    print(output)
    output.backward()
    print("input_data.grad.shape:", input_data.grad.shape)


# --------------------------------------------------------------------------- seed 003
def convtranspose3d_megengine(batch):
    heading(f"seed 003: ConvTranspose3d(3, 64, 3, stride=2, padding=1) on ({batch}, 3, 32, 32, 32)")
    conv_transpose = nn.ConvTranspose3d(3, 64, 3, stride=2, padding=1)
    input = Tensor.randn(batch, 3, 32, 32, 32)
    t0 = time.perf_counter()
    with lucid.no_grad():
        output = conv_transpose(input)
    dt = time.perf_counter() - t0
    print(output.shape)  # seed (batch 16): (16, 64, 63, 63, 63)
    print(f"(forward took {dt:.2f} s)")


# --------------------------------------------------------------------------- seed 004
def convtranspose2d_basic():
    heading("seed 004: ConvTranspose2d basic use + backward")
    x = Tensor.randn(1, 3, 16, 16, requires_grad=True)
    deconv2d = nn.ConvTranspose2d(3, 2, kernel_size=3, stride=2, padding=1, output_padding=1)
    y = deconv2d(x)
    print(y.shape)  # seed: (1, 2, 32, 32)
    y.backward()
    print(x.grad.shape)  # seed: (1, 3, 16, 16)


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.deconv1 = nn.ConvTranspose2d(16, 8, kernel_size=4, stride=2, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.deconv1(x))


def decoder2d():
    heading("seed 004: Decoder (ConvTranspose2d + ReLU) on (1, 16, 8, 8)")
    model = Decoder()
    x = Tensor.randn(1, 16, 8, 8, requires_grad=True)
    out = model(x)
    print("out.shape:", out.shape)  # (1, 8, 16, 16)
    out.backward()
    print("x.grad.shape:", x.grad.shape)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="use batch 2 instead of 16 for the large seed-003 example")
    args = parser.parse_args(argv)

    lucid.manual_seed(0)
    np.set_printoptions(precision=4, suppress=True)

    examples = [
        convtranspose3d_basic,
        decoder3d,
        lazy_decoder_block,
        lazy_materialization,
        conv3d_no_bias,
        conv3d_bias_as_printed,
        conv3d_bias_as_intended,
        conv3d_model,
        lambda: convtranspose3d_megengine(2 if args.quick else 16),
        convtranspose2d_basic,
        decoder2d,
    ]
    failed = 0
    for example in examples:
        try:
            example()
        except Exception:
            failed += 1
            print("!! example failed:")
            traceback.print_exc(file=sys.stdout)
    print()
    if failed:
        print(f"{failed} of {len(examples)} seed examples FAILED")
        return 1
    print(f"all {len(examples)} seed examples ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
