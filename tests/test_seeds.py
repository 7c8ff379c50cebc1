"""Every example of the seed product pages, with the shapes and values they show
(as corrected by SPEC.md section 3)."""

import itertools
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import lucid
import lucid.nn as nn
from lucid import Tensor
from seeds import Conv3dModel, Decoder, Decoder3D  # examples/seeds.py: the seed models are defined once

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _seed():
    lucid.manual_seed(0)


# --------------------------------------------------------------------------- helpers
def direct_conv3d(x, w, b=None):
    """Plain-loop 3-D cross-correlation, stride 1, no padding, batched NCDHW, float64."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n_, c_, d_, h_, w_ = x.shape
    o_, c2, kd, kh, kw = w.shape
    assert c2 == c_
    od, oh, ow = d_ - kd + 1, h_ - kh + 1, w_ - kw + 1
    out = np.zeros((n_, o_, od, oh, ow))
    for n, o, z, y, xx in itertools.product(range(n_), range(o_), range(od), range(oh), range(ow)):
        acc = 0.0
        for c, i, j, k in itertools.product(range(c_), range(kd), range(kh), range(kw)):
            acc += x[n, c, z + i, y + j, xx + k] * w[o, c, i, j, k]
        out[n, o, z, y, xx] = acc + (0.0 if b is None else b[o])
    return out


def direct_conv3d_grads_of_sum(x, w):
    """Gradients of sum(conv3d(x, w, b)) w.r.t. x, w and b, by the same plain loops."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n_, c_, d_, h_, w_ = x.shape
    o_, _, kd, kh, kw = w.shape
    od, oh, ow = d_ - kd + 1, h_ - kh + 1, w_ - kw + 1
    gx = np.zeros_like(x)
    gw = np.zeros_like(w)
    gb = np.zeros(o_)
    for n, o, z, y, xx in itertools.product(range(n_), range(o_), range(od), range(oh), range(ow)):
        gb[o] += 1.0
        for c, i, j, k in itertools.product(range(c_), range(kd), range(kh), range(kw)):
            gx[n, c, z + i, y + j, xx + k] += w[o, c, i, j, k]
            gw[o, c, i, j, k] += x[n, c, z + i, y + j, xx + k]
    return gx, gw, gb


def test_direct_conv3d_helper_is_right():
    # The helper itself, on the SPEC's 204 example and a hand-checked 1-channel case.
    v = np.arange(1, 9, dtype=np.float64).reshape(1, 1, 2, 2, 2)
    assert direct_conv3d(v, v)[0, 0, 0, 0, 0] == 204.0
    x = np.arange(27, dtype=np.float64).reshape(1, 1, 3, 3, 3)
    w = np.zeros((1, 1, 2, 2, 2))
    w[0, 0, 1, 1, 1] = 1.0  # picks x shifted by (1, 1, 1)
    np.testing.assert_array_equal(direct_conv3d(x, w, [5.0])[0, 0], x[0, 0, 1:, 1:, 1:] + 5.0)


# --------------------------------------------------------------------------- seed 000
def test_seed000_convtranspose3d_basic_upsampling():
    x = Tensor.randn(1, 4, 8, 8, 8, requires_grad=True)
    deconv3d = nn.ConvTranspose3d(4, 2, kernel_size=3, stride=2, padding=1, output_padding=1)
    assert deconv3d.weight.shape == (4, 2, 3, 3, 3)
    assert deconv3d.bias.shape == (2,)
    y = deconv3d(x)
    assert y.shape == (1, 2, 16, 16, 16)
    y.backward()
    assert x.grad.shape == (1, 4, 8, 8, 8)
    assert deconv3d.weight.grad.shape == (4, 2, 3, 3, 3)
    # d(sum y)/d bias = number of output positions per channel
    np.testing.assert_allclose(deconv3d.bias.grad.data, [16 ** 3, 16 ** 3])


def _oracle():
    return pytest.importorskip("oracle")  # tests/oracle.py: independent direct-loop reference


def test_seed000_convtranspose3d_values_match_oracle():
    oracle = _oracle()
    x = Tensor.randn(1, 4, 8, 8, 8, requires_grad=True)
    deconv3d = nn.ConvTranspose3d(4, 2, kernel_size=3, stride=2, padding=1, output_padding=1)
    y = deconv3d(x)
    args = dict(stride=2, padding=1, output_padding=1)
    w, b = deconv3d.weight.data, deconv3d.bias.data
    expected = oracle.conv_transpose_nd(x.data, w, b, **args)
    np.testing.assert_allclose(y.data, expected, rtol=1e-4, atol=1e-5)
    y.backward()
    gx, gw, gb = oracle.conv_transpose_nd_vjp(np.ones(y.shape), x.data, w, b, **args)
    np.testing.assert_allclose(x.grad.data, gx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(deconv3d.weight.grad.data, gw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(deconv3d.bias.grad.data, gb, rtol=1e-6)



def test_seed000_decoder3d():
    model = Decoder3D()
    z = Tensor.randn(2, 8, 4, 4, 4, requires_grad=True)
    out = model(z)
    assert out.shape == (2, 4, 8, 8, 8)
    assert (out.data >= 0).all()
    out.backward()
    assert z.grad.shape == (2, 8, 4, 4, 4)
    assert model.deconv.weight.grad.shape == (8, 4, 4, 4, 4)
    assert model.deconv.bias.grad.shape == (4,)


def test_seed000_decoder3d_values_match_oracle():
    oracle = _oracle()
    model = Decoder3D()
    z = Tensor.randn(2, 8, 4, 4, 4, requires_grad=True)
    out = model(z)
    w, b = model.deconv.weight.data, model.deconv.bias.data
    pre = oracle.conv_transpose_nd(z.data, w, b, stride=2, padding=1)
    np.testing.assert_allclose(out.data, np.maximum(pre, 0), rtol=1e-4, atol=1e-5)
    out.backward()
    mask = (out.data > 0).astype(np.float64)  # d relu / d pre, as lucid saw it
    gx, gw, gb = oracle.conv_transpose_nd_vjp(mask, z.data, w, b, stride=2, padding=1)
    np.testing.assert_allclose(z.grad.data, gx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.deconv.weight.grad.data, gw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.deconv.bias.grad.data, gb, rtol=1e-5)


# --------------------------------------------------------------------------- seed 001
def test_seed001_lazy_decoder_block():
    up3d = nn.LazyConvTranspose3d(out_channels=32, kernel_size=4, stride=2, padding=1)
    x = lucid.zeros(2, 64, 4, 8, 8)  # in_channels=64 inferred
    y = up3d(x)
    assert y.shape == (2, 32, 8, 16, 16)
    assert up3d.in_channels == 64
    assert up3d.weight.shape == (64, 32, 4, 4, 4)
    assert up3d.bias.shape == (32,)
    # zero input: every output element is its channel's bias
    expected = np.broadcast_to(up3d.bias.data.reshape(1, 32, 1, 1, 1), y.shape)
    np.testing.assert_allclose(y.data, expected, rtol=0, atol=1e-7)


def test_seed001_lazy_materialization():
    lazy = nn.LazyConvTranspose3d(out_channels=16, kernel_size=3, padding=1)
    assert lazy.in_channels is None
    out = lazy(lucid.zeros(1, 8, 4, 4, 4))
    assert lazy.in_channels == 8
    assert lazy.weight.shape == (8, 16, 3, 3, 3)
    assert out.shape == (1, 16, 4, 4, 4)


# --------------------------------------------------------------------------- seed 002
def test_seed002_conv3d_204_and_its_gradients():
    input_tensor = Tensor([[
        [[[1.0, 2.0],
          [3.0, 4.0]],
         [[5.0, 6.0],
          [7.0, 8.0]]]
    ]], requires_grad=True)
    assert input_tensor.shape == (1, 1, 2, 2, 2)
    conv3d = nn.Conv3d(in_channels=1, out_channels=1, kernel_size=2, bias=False)
    assert conv3d.bias is None
    assert conv3d.weight.shape == (1, 1, 2, 2, 2)
    values = np.arange(1, 9, dtype=np.float32).reshape(1, 1, 2, 2, 2)
    conv3d.weight.data[...] = values
    output = conv3d(input_tensor)
    assert output.shape == (1, 1, 1, 1, 1)
    assert output.data.reshape(()) == 204.0
    assert output.grad is None
    output.backward()
    np.testing.assert_array_equal(input_tensor.grad.data, values)  # = weight values
    np.testing.assert_array_equal(conv3d.weight.grad.data, values)  # = input values


# The seed prints 16 weight values ((2, 1, 2, 2, 2)) for a (2, 2, 2, 2, 2) weight;
# `weight.data[...] = ...` broadcasts them over the input-channel axis.
BIAS_W = np.arange(1, 17, dtype=np.float32).reshape(2, 1, 2, 2, 2)
BIAS_B = np.array([17.0, 18.0], dtype=np.float32)


def _bias_conv():
    conv3d = nn.Conv3d(in_channels=2, out_channels=2, kernel_size=2, bias=True)
    assert conv3d.weight.shape == (2, 2, 2, 2, 2)
    assert conv3d.bias.shape == (2,)
    conv3d.weight.data[...] = np.broadcast_to(BIAS_W, (2, 2, 2, 2, 2))
    conv3d.bias.data[...] = BIAS_B
    return conv3d


def test_direct_conv3d_helper_agrees_with_oracle():
    oracle = _oracle()
    data = np.arange(1, 109, dtype=np.float64).reshape(2, 2, 3, 3, 3)
    w = np.broadcast_to(BIAS_W, (2, 2, 2, 2, 2))
    np.testing.assert_array_equal(direct_conv3d(data, w, BIAS_B), oracle.conv_nd(data, w, BIAS_B))


def test_seed002_conv3d_bias_as_printed_is_unbatched():
    # The printed data is 36 values, i.e. (2, 2, 3, 3): an unbatched (C=2, D=2, H=3, W=3) input.
    data = np.arange(1, 37, dtype=np.float32).reshape(2, 2, 3, 3)
    x = Tensor(data, requires_grad=True)
    conv3d = _bias_conv()
    out = conv3d(x)
    assert out.shape == (2, 1, 2, 2)
    w = np.broadcast_to(BIAS_W, (2, 2, 2, 2, 2))
    expected = direct_conv3d(data[None], w, BIAS_B)[0]
    np.testing.assert_allclose(out.data, expected, rtol=1e-6)
    out.backward()
    gx, gw, gb = direct_conv3d_grads_of_sum(data[None], w)
    assert x.grad.shape == (2, 2, 3, 3)
    np.testing.assert_allclose(x.grad.data, gx[0], rtol=1e-6)
    np.testing.assert_allclose(conv3d.weight.grad.data, gw, rtol=1e-6)
    np.testing.assert_allclose(conv3d.bias.grad.data, gb)  # [4, 4]


def test_seed002_conv3d_bias_as_intended_batched():
    # The comment's shape (2, 2, 3, 3, 3), values 1..108.
    data = np.arange(1, 109, dtype=np.float32).reshape(2, 2, 3, 3, 3)
    x = Tensor(data, requires_grad=True)
    conv3d = _bias_conv()
    out = conv3d(x)
    assert out.shape == (2, 2, 2, 2, 2)
    w = np.broadcast_to(BIAS_W, (2, 2, 2, 2, 2))
    expected = direct_conv3d(data, w, BIAS_B)
    np.testing.assert_allclose(out.data, expected, rtol=1e-6)
    # spot value: sample 0, channel 0, origin = sum_c sum_k x * w + 17
    assert expected[0, 0, 0, 0, 0] == 1684.0 + 17.0
    out.backward()
    gx, gw, gb = direct_conv3d_grads_of_sum(data, w)
    np.testing.assert_allclose(x.grad.data, gx, rtol=1e-6)
    np.testing.assert_allclose(conv3d.weight.grad.data, gw, rtol=1e-6)
    np.testing.assert_allclose(conv3d.bias.grad.data, gb)  # [16, 16]


def test_seed002_conv3d_model_as_intended_raises_clear_pool_error():
    model = Conv3dModel()
    x = Tensor.randn(1, 1, 3, 3, 3, requires_grad=True)
    with pytest.raises(ValueError) as info:
        model(x)
    msg = str(info.value)
    assert "maxpool3d" in msg.lower(), msg
    assert re.search(r"\b1\b", msg), msg  # the 1x1x1 spatial size it received
    assert re.search(r"\b2\b", msg), msg  # the kernel size 2 it needs


def test_seed002_conv3d_model_literal_4d_input_raises_clear_conv_error():
    model = Conv3dModel()
    x = Tensor([
        [[[0.5, -1.2, 3.3],
          [0.7, 2.2, -0.3],
          [4.1, 5.5, 6.6]]]
    ], requires_grad=True)
    assert x.shape == (1, 1, 3, 3)  # unbatched: C=1, D=1, H=3, W=3
    with pytest.raises(ValueError) as info:
        model(x)  # conv1 (padding 1) keeps depth 1; conv2's kernel 3 does not fit it
    msg = str(info.value)
    assert "conv3d" in msg.lower(), msg
    assert re.search(r"\b3\b", msg), msg


def test_seed002_conv3d_model_runs_on_the_size_its_fc_implies():
    model = Conv3dModel()
    x = Tensor.randn(1, 1, 10, 10, 10, requires_grad=True)  # 10 -> 10 -> 8 -> 4
    out = model(x)
    assert out.shape == (1, 10)
    out.backward()
    assert x.grad.shape == (1, 1, 10, 10, 10)
    assert model.fc.weight.grad.shape == (10, 16 * 4 * 4 * 4)


# --------------------------------------------------------------------------- seed 003
def test_seed003_convtranspose3d_megengine_shape():
    conv_transpose = nn.ConvTranspose3d(3, 64, 3, stride=2, padding=1)
    assert conv_transpose.weight.shape == (3, 64, 3, 3, 3)
    x = Tensor.randn(2, 3, 32, 32, 32)  # the seed uses batch 16
    with lucid.no_grad():
        out = conv_transpose(x)
    assert out.shape == (2, 64, 63, 63, 63)


# --------------------------------------------------------------------------- seed 004
def test_seed004_convtranspose2d_basic():
    x = Tensor.randn(1, 3, 16, 16, requires_grad=True)
    deconv2d = nn.ConvTranspose2d(3, 2, kernel_size=3, stride=2, padding=1, output_padding=1)
    assert deconv2d.weight.shape == (3, 2, 3, 3)
    y = deconv2d(x)
    assert y.shape == (1, 2, 32, 32)
    y.backward()
    assert x.grad.shape == (1, 3, 16, 16)
    oracle = _oracle()
    args = dict(stride=2, padding=1, output_padding=1)
    w, b = deconv2d.weight.data, deconv2d.bias.data
    np.testing.assert_allclose(y.data, oracle.conv_transpose_nd(x.data, w, b, **args),
                               rtol=1e-4, atol=1e-5)
    gx, gw, gb = oracle.conv_transpose_nd_vjp(np.ones(y.shape), x.data, w, b, **args)
    np.testing.assert_allclose(x.grad.data, gx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(deconv2d.weight.grad.data, gw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(deconv2d.bias.grad.data, gb, rtol=1e-6)



def test_seed004_decoder():
    model = Decoder()
    x = Tensor.randn(1, 16, 8, 8, requires_grad=True)
    out = model(x)
    assert out.shape == (1, 8, 16, 16)
    assert (out.data >= 0).all()
    out.backward()
    assert x.grad.shape == (1, 16, 8, 8)
    assert model.deconv1.weight.grad.shape == (16, 8, 4, 4)
    oracle = _oracle()
    w, b = model.deconv1.weight.data, model.deconv1.bias.data
    pre = oracle.conv_transpose_nd(x.data, w, b, stride=2, padding=1)
    np.testing.assert_allclose(out.data, np.maximum(pre, 0), rtol=1e-4, atol=1e-5)
    mask = (out.data > 0).astype(np.float64)
    gx, gw, gb = oracle.conv_transpose_nd_vjp(mask, x.data, w, b, stride=2, padding=1)
    np.testing.assert_allclose(x.grad.data, gx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.deconv1.weight.grad.data, gw, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- the demo
def test_examples_seeds_quick_runs():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "seeds.py"), "--quick"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "204" in proc.stdout
