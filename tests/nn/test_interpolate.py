"""F.interpolate, nn.Upsample and PixelShuffle/PixelUnshuffle: eager and compiled, forward and gradients.

The oracle below builds, per spatial axis, the matrix A (out x in) of the 1-D resampling from the
index formulas written out here, and applies the axes one after the other; the input gradient of
sum(y * g) is then A^T applied to g. It is checked against finite differences, and everything
against PyTorch when it is installed.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
import lucid.runtime
from lucid.errors import ShapeError

RNG = np.random.default_rng(1818)
LINEAR_RANK = {"linear": 1, "bilinear": 2, "trilinear": 3}


def axis_matrix(n: int, m: int, mode: str, align_corners, factor) -> np.ndarray:
    """The m x n matrix of resampling one axis of size n to m (factor: the user's scale factor or None)."""
    step = n / m if factor is None else 1.0 / factor
    a = np.zeros((m, n))
    for o in range(m):
        if mode == "nearest":
            a[o, min(math.floor(o * step), n - 1)] = 1.0
        elif mode == "nearest-exact":
            a[o, min(math.floor((o + 0.5) * step), n - 1)] = 1.0
        else:
            if align_corners:
                source = o * (n - 1) / (m - 1) if m > 1 else 0.0
            else:
                source = max((o + 0.5) * step - 0.5, 0.0)
            low = min(math.floor(source), n - 1)
            high = min(low + 1, n - 1)
            a[o, low] += 1.0 - (source - low)
            a[o, high] += source - low
    return a


def oracle_matrices(shape, size, scale_factor, mode, align_corners):
    spatial = shape[2:]
    if size is not None:
        sizes = size if isinstance(size, tuple) else (size,) * len(spatial)
        factors = (None,) * len(spatial)
    else:
        factors = scale_factor if isinstance(scale_factor, tuple) else (scale_factor,) * len(spatial)
        sizes = tuple(math.floor(n * f) for n, f in zip(spatial, factors))
    return [axis_matrix(n, m, mode, align_corners, f) for n, m, f in zip(spatial, sizes, factors)]


def apply_axes(x: np.ndarray, matrices, transpose=False) -> np.ndarray:
    for axis, a in enumerate(matrices, start=2):
        x = np.moveaxis(np.tensordot(a.T if transpose else a, np.moveaxis(x, axis, 0), axes=1), 0, axis)
    return x


# (input shape, size, scale_factor, mode, align_corners)
CASES = [
    ((2, 3, 3, 4, 2), None, 2, "nearest", None),
    ((1, 2, 3, 2, 3), None, 2, "trilinear", None),
    ((1, 2, 3, 2, 3), None, 2, "trilinear", True),
    ((2, 2, 5, 3), None, 2, "bilinear", False),
    ((1, 2, 7), None, 2, "linear", None),
    ((1, 2, 3, 4, 5), (5, 7, 2), None, "trilinear", False),
    ((1, 2, 3, 4, 5), (5, 1, 3), None, "trilinear", True),
    ((1, 1, 5, 7), (3, 11), None, "bilinear", True),
    ((2, 1, 9), (4,), None, "linear", False),
    ((1, 2, 5, 3), None, (1.7, 0.6), "bilinear", False),
    ((1, 1, 4, 3, 5), None, (2.5, 1.5, 0.75), "trilinear", False),
    ((1, 2, 5, 3), None, (1.7, 2.5), "nearest", None),
    ((1, 2, 3, 7, 4), (5, 3, 9), None, "nearest", None),
    ((1, 2, 5, 3), None, (1.5, 2.5), "nearest-exact", None),
    ((1, 2, 3, 7, 4), (5, 3, 9), None, "nearest-exact", None),
    ((1, 2, 6), (4,), None, "nearest", None),
]
IDS = [f"{mode}-{len(s) - 2}d-{'size' if size else 'scale'}-{ac}-{i}" for i, (s, size, _, mode, ac) in enumerate(CASES)]


def call(lib, x, size, scale_factor, mode, align_corners):
    return lib.nn.functional.interpolate(x, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_and_gradient_match_the_oracle_eager_and_compiled(case):
    shape, size, scale_factor, mode, align_corners = case
    x = RNG.standard_normal(shape)
    matrices = oracle_matrices(shape, size, scale_factor, mode, align_corners)
    expected = apply_axes(x, matrices)
    g = RNG.standard_normal(expected.shape)
    expected_grad = apply_axes(g, matrices, transpose=True)
    fn = lambda t: call(lucid, t, size, scale_factor, mode, align_corners)  # noqa: E731
    for runner in (fn, lucid.compile(fn)):
        for dtype, rtol, atol in (("float64", 1e-12, 1e-12), ("float32", 1e-5, 1e-6)):
            t = lucid.tensor(x, dtype=dtype, requires_grad=True)
            y = runner(t)
            (y * lucid.tensor(g, dtype=dtype)).sum().backward()
            assert y.shape == expected.shape and y.dtype.name == dtype
            np.testing.assert_allclose(y.numpy(), expected, rtol=rtol, atol=atol)
            np.testing.assert_allclose(t.grad.numpy(), expected_grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("case", CASES[1:11:3], ids=IDS[1:11:3])
def test_oracle_gradient_is_the_finite_difference_one(case):
    shape, size, scale_factor, mode, align_corners = case
    x = RNG.standard_normal(shape)
    t = lucid.tensor(x, dtype="float64", requires_grad=True)
    y = call(lucid, t, size, scale_factor, mode, align_corners)
    g = RNG.standard_normal(y.shape)
    (y * lucid.tensor(g, dtype="float64")).sum().backward()
    numeric = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        bumped = [x.copy(), x.copy()]
        bumped[0][index] += 1e-6
        bumped[1][index] -= 1e-6
        values = [(call(lucid, lucid.tensor(b, dtype="float64"), size, scale_factor, mode, align_corners).numpy() * g).sum()
                  for b in bumped]
        numeric[index] = (values[0] - values[1]) / 2e-6
    np.testing.assert_allclose(t.grad.numpy(), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_pytorch(case):
    torch = pytest.importorskip("torch")
    shape, size, scale_factor, mode, align_corners = case
    x = RNG.standard_normal(shape).astype(np.float32)
    ours = lucid.tensor(x, requires_grad=True)
    theirs = torch.tensor(x, requires_grad=True)
    y = call(lucid, ours, size, scale_factor, mode, align_corners)
    y_ref = call(torch, theirs, size, scale_factor, mode, align_corners)
    g = RNG.standard_normal(tuple(y_ref.shape)).astype(np.float32)
    (y * lucid.tensor(g)).sum().backward()
    (y_ref * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(y.numpy(), y_ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_recompute_scale_factor_uses_the_size_ratio():
    x = RNG.standard_normal((1, 1, 5, 3))
    y = F.interpolate(lucid.tensor(x, dtype="float64"), scale_factor=1.7, mode="bilinear", recompute_scale_factor=True)
    matrices = [axis_matrix(5, 8, "linear", False, None), axis_matrix(3, 5, "linear", False, None)]
    np.testing.assert_allclose(y.numpy(), apply_axes(x, matrices), rtol=1e-12)


@pytest.mark.parametrize("kwargs, words", [
    (dict(size=4, scale_factor=2), "exactly one of size and scale_factor"),
    (dict(), "exactly one of size and scale_factor"),
    (dict(scale_factor=2, mode="trilinear"), "'trilinear' expects a 5-D input"),
    (dict(scale_factor=2, mode="linear"), "'linear' expects a 3-D input"),
    (dict(scale_factor=2, align_corners=True), "align_corners can only be set"),
    (dict(scale_factor=2, mode="bicubic"), "mode must be one of"),
    (dict(size=(4, 4, 4)), "expected size as one number or 2"),
    (dict(scale_factor=0.1), "empty output"),
    (dict(scale_factor=2, mode="bilinear", antialias=True), "antialias"),
])
def test_bad_arguments_are_refused_naming_f_interpolate(kwargs, words):
    with pytest.raises(ShapeError, match="F.interpolate") as info:
        F.interpolate(lucid.zeros(1, 2, 3, 4), **kwargs)
    assert words in str(info.value)


def test_upsample_modules_equal_the_functional_form():
    x = lucid.tensor(RNG.standard_normal((1, 2, 3, 4)), dtype="float64")
    pairs = [(nn.Upsample(scale_factor=2, mode="bilinear"), dict(scale_factor=2, mode="bilinear")),
             (nn.Upsample(size=(5, 6)), dict(size=(5, 6))),
             (nn.UpsamplingNearest2d(scale_factor=3), dict(scale_factor=3)),
             (nn.UpsamplingBilinear2d(size=(4, 7)), dict(size=(4, 7), mode="bilinear", align_corners=True))]
    for module, kwargs in pairs:
        np.testing.assert_array_equal(module(x).numpy(), F.interpolate(x, **kwargs).numpy())


def test_pixel_shuffle_and_unshuffle_move_the_documented_elements():
    r, c, h, w = 2, 3, 2, 3
    x = RNG.standard_normal((2, c * r * r, h, w)).astype(np.float32)
    y = nn.PixelShuffle(r)(lucid.tensor(x)).numpy()
    assert y.shape == (2, c, h * r, w * r)
    for n, k, i, j in np.ndindex(y.shape):
        assert y[n, k, i, j] == x[n, k * r * r + (i % r) * r + j % r, i // r, j // r]
    np.testing.assert_array_equal(nn.PixelUnshuffle(r)(lucid.tensor(y)).numpy(), x)
    compiled = lucid.compile(lambda t: F.pixel_shuffle(t, r))
    np.testing.assert_array_equal(compiled(lucid.tensor(x)).numpy(), y)
    with pytest.raises(ShapeError, match="pixel_shuffle"):
        F.pixel_shuffle(lucid.zeros(1, 3, 2, 2), 2)


def _unet_decoder():
    lucid.manual_seed(3)
    return nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.Upsample(scale_factor=2, mode="trilinear"),
                         nn.Conv3d(3, 2, 1))


def test_compiled_training_step_of_conv3d_and_trilinear_upsample_equals_eager(tmp_path):
    model = _unet_decoder()
    x = lucid.tensor(RNG.standard_normal((2, 2, 3, 4, 3)).astype(np.float32))
    target = lucid.tensor(RNG.standard_normal((2, 2, 6, 8, 6)).astype(np.float32))
    loss_fn = nn.MSELoss()
    step = lucid.compile(lambda a, b: loss_fn(model(a), b))
    grads = []
    for fn in (step, lambda a, b: loss_fn(model(a), b)):
        model.zero_grad()
        loss = fn(x, target)
        loss.backward()
        grads.append([p.grad.numpy().copy() for p in model.parameters()])
    for compiled, eager in zip(*grads):
        np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-6)

    files = lucid.export(model, lucid.spec(*x.shape), path=tmp_path / "decoder.so")
    got = lucid.runtime.load(files.library)(x.numpy())
    with lucid.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_layers_live_at_pytorch_module_paths():
    assert nn.modules.upsampling.Upsample is nn.Upsample
    assert nn.modules.upsampling.UpsamplingBilinear2d is nn.UpsamplingBilinear2d
    assert nn.modules.pixelshuffle.PixelShuffle is nn.PixelShuffle
