"""Run-time extents for the families beyond stage 2 (issue 21): resample and its gradient, the pooling
gradients, reductions over outer (column-order) axes, argmax, moments in column order, matmul, and
the `size` operator the symbolic gradients divide by. A training step of a conv-free UNet-like model
is compiled once with `dynamic=True` and run at batch sizes 1..8 and volumes of 16..48 voxels per
axis (steps of 8, and odd sizes).

Oracles: eager lucid (NumPy kernels, the same gradient rules with concrete counts), finite
differences of the compiled loss, and NumPy forwards written here."""
import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
from lucid.ir import ops

#: (batch, (D, H, W)): batches 1..8, volumes 16..48 in steps of 8, and odd sizes
SIZES = [(2, (16, 16, 16)), (1, (24, 17, 32)), (5, (32, 40, 23)), (8, (48, 16, 31)), (3, (17, 33, 48)),
         (7, (40, 24, 16)), (4, (31, 48, 40))]


def channels(linear: nn.Linear, x):
    """A 1x1x1 convolution as a Linear over the channel axis (a matmul with a symbolic batch)."""
    return linear(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


class UNetLike(nn.Module):
    """A UNet's structure without convolutions: norm, ReLU, max pool, a norm at half size, nearest
    and trilinear upsampling padded to the skip's size (odd sizes: D % 2), concat, a channel mix, and
    a loss inside the compiled step (its mean divides by a size computed per call)."""

    def __init__(self):
        super().__init__()
        self.stem_norm = nn.BatchNorm3d(2)
        self.stem_mix = nn.Linear(2, 4)
        self.down_norm = nn.GroupNorm(2, 4)
        self.head_mix = nn.Linear(8, 3)
        self.head_norm = nn.InstanceNorm3d(3, affine=True)

    def forward(self, x, target):
        skip = channels(self.stem_mix, self.stem_norm(x).relu())
        down = self.down_norm(F.max_pool3d(skip, 2) + F.avg_pool3d(skip, 2)).relu()
        up = F.interpolate(down, scale_factor=2, mode="nearest")
        up = F.pad(up, (0, skip.shape[4] - up.shape[4], 0, skip.shape[3] - up.shape[3], 0, skip.shape[2] - up.shape[2]))
        smooth = F.interpolate(down, size=tuple(skip.shape[2:]), mode="trilinear")
        y = self.head_norm(channels(self.head_mix, lucid.cat([skip, up + smooth], dim=1)))
        return y, F.mse_loss(y, target) + F.cross_entropy(y, target.softmax(dim=1))


def data(n: int, volume: tuple, seed: int):
    rng = np.random.default_rng(seed)
    return (lucid.Tensor(rng.standard_normal((n, 2) + volume).astype(np.float32), requires_grad=True),
            lucid.Tensor(rng.standard_normal((n, 3) + volume).astype(np.float32)))


def built(compiled) -> int:
    stats = compiled.stats()
    return stats["native_compiles"] + stats["cache_loads"]


def step(model, x, target):
    """Outputs and the gradients of the loss (parameters, then the input), from a fresh tape."""
    for p in model.parameters():
        p.grad = None
    x.grad = None
    y, loss = model(x, target)
    loss.backward()
    return [y.numpy(), loss.numpy()], [p.grad.numpy() for p in model.parameters()] + [x.grad.numpy()]


def test_a_training_step_compiles_once_for_every_batch_and_volume_size():
    lucid.manual_seed(0)
    net, reference = UNetLike(), UNetLike()
    reference.load_state_dict(net.state_dict())
    compiled = lucid.compile(net, dynamic=True)
    modules = None
    for k, (n, volume) in enumerate(SIZES):
        x, target = data(n, volume, k)
        outputs, grads = step(compiled, x, target)
        if modules is None:
            modules = built(compiled)
        eager_outputs, eager_grads = step(reference, x, target)
        for got, expected in zip(outputs + grads, eager_outputs + eager_grads, strict=True):
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-5, err_msg=f"at {(n, volume)}")
        for name in ("running_mean", "running_var"):          # the running variance's n / (n - 1) per call
            np.testing.assert_allclose(getattr(net.stem_norm, name).numpy(), getattr(reference.stem_norm, name).numpy(),
                                       rtol=1e-4, atol=1e-6)
    stats = compiled.stats()
    assert stats["traces"] == 1 and stats["variants"] == stats["dynamic_variants"] == 1
    assert built(compiled) == modules                      # no module compiled or loaded after the first call


def test_compiled_gradients_match_finite_differences_at_an_odd_size():
    lucid.manual_seed(1)
    net = UNetLike().eval()                                 # fixed statistics: the loss is a function of x
    compiled = lucid.compile(net, dynamic=True)
    compiled(*data(2, (6, 4, 4), 9))                        # compiled at another size first
    x, target = data(3, (7, 5, 9), 2)
    _, grads = step(compiled, x, target)
    loss = lambda array: float(compiled(lucid.Tensor(array), target)[1].numpy())
    base = x.numpy().astype(np.float64)
    rng, h = np.random.default_rng(4), 1e-2
    for index in [tuple(rng.integers(0, s) for s in base.shape) for _ in range(5)]:
        bump = np.zeros_like(base)
        bump[index] = h
        numeric = (loss((base + bump).astype(np.float32)) - loss((base - bump).astype(np.float32))) / (2 * h)
        assert grads[-1][index] == pytest.approx(numeric, rel=2e-2, abs=2e-4), index
    assert compiled.stats()["traces"] == 1


def outer_reductions(x):
    return (x.sum(dim=0), x.mean(dim=(0, 2)), x.amax(dim=(0, 3)), x.amin(dim=2), x.argmax(dim=1), x.argmax(dim=3),
            x.argmax(dim=0), ops.moments(x.flatten(2).mean(dim=2), 0))     # batch norm's statistics on (N, C)


def numpy_outer_reductions(x):
    per_channel = x.reshape(x.shape[0], x.shape[1], -1).mean(axis=2)
    statistics = np.stack([per_channel.mean(0), per_channel.var(0)])
    return (x.sum(0), x.mean((0, 2)), x.max((0, 3)), x.min(2), x.argmax(1), x.argmax(3), x.argmax(0), statistics)


def test_column_order_reductions_argmax_and_moments_take_run_time_sizes():
    compiled = lucid.compile(outer_reductions, dynamic=True)
    modules = None
    for n, (d, h, w) in [(2, (3, 1, 2)), (7, (9, 1, 16)), (1, (17, 8, 5)), (4, (3, 31, 2))]:    # first: the mins
        x = np.random.default_rng(n).standard_normal((n, 3, d, h, w)).astype(np.float32)
        x[..., 0] = x[..., 1]                               # ties: argmax takes the first
        got = compiled(lucid.Tensor(x))
        modules = modules or built(compiled)
        for a, b in zip(got, numpy_outer_reductions(x), strict=True):
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-4, atol=1e-5)
    assert built(compiled) == modules and compiled.stats()["dynamic_variants"] == 1


def pooling_and_resampling(x):
    """Every pooling gradient's and resample's path: strides, padding, ceil mode, dilation,
    count_include_pad, nearest-exact and align_corners, sizes given per axis."""
    pooled = (F.max_pool3d(x, 3, stride=2, padding=1).sum() + F.max_pool3d(x, 2, ceil_mode=True, dilation=(1, 2, 1)).sum()
              + F.avg_pool3d(x, 3, stride=2, padding=1, count_include_pad=False).sum()
              + F.avg_pool3d(x, (2, 1, 3), stride=(1, 1, 2), ceil_mode=True).sum())
    up = (F.interpolate(x, scale_factor=(2, 3, 1), mode="nearest-exact").mean()
          + F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=True).mean()
          + F.interpolate(x, size=(5, 3, 7), mode="trilinear").mean())
    return pooled * up + (F.interpolate(x, scale_factor=2, mode="nearest") * 0.5).sum()


def test_pooling_and_resampling_gradients_equal_eager_at_every_size():
    compiled = lucid.compile(pooling_and_resampling, dynamic=True)
    modules = None
    for n, volume in [(1, (6, 4, 4)), (3, (9, 12, 7)), (2, (16, 4, 11))]:        # first: the mins
        x = lucid.Tensor(np.random.default_rng(n).standard_normal((n, 2) + volume).astype(np.float32),
                         requires_grad=True)
        compiled(x).backward()
        got = x.grad.numpy()
        modules = modules or built(compiled)
        x.grad = None
        pooling_and_resampling(x).backward()
        np.testing.assert_allclose(got, x.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=f"at {(n, volume)}")
    assert built(compiled) == modules and compiled.stats()["traces"] == 1


class SmallUNet(nn.Module):
    """Conv + BatchNorm + ReLU, max pool, upsample padded to the skip, concat, a 1x1x1 conv head."""

    def __init__(self):
        super().__init__()
        block = lambda cin, cout: nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU())
        self.down, self.bottom, self.up = block(1, 4), block(4, 4), block(8, 4)
        self.head = nn.Conv3d(4, 2, 1)

    def forward(self, x, target):
        skip = self.down(x)
        deep = F.interpolate(self.bottom(F.max_pool3d(skip, 2)), scale_factor=2, mode="nearest")
        deep = F.pad(deep, (0, skip.shape[4] - deep.shape[4], 0, skip.shape[3] - deep.shape[3],
                            0, skip.shape[2] - deep.shape[2]))
        y = self.head(self.up(lucid.cat([skip, deep], dim=1)))
        return y, F.mse_loss(y, target)


def test_a_unet_training_step_with_convolutions_compiles_once():
    """The whole issue-21 training step: convolutions, batch norm, pooling, upsampling, concat."""
    lucid.manual_seed(2)
    net, reference = SmallUNet(), SmallUNet()
    reference.load_state_dict(net.state_dict())
    compiled = lucid.compile(net, dynamic=True)
    modules = None
    for k, (n, volume) in enumerate([(1, (16, 16, 16)), (2, (24, 17, 16)), (3, (17, 16, 32))]):
        rng = np.random.default_rng(k)
        x = lucid.Tensor(rng.standard_normal((n, 1) + volume).astype(np.float32), requires_grad=True)
        target = lucid.Tensor(rng.standard_normal((n, 2) + volume).astype(np.float32))
        outputs, grads = step(compiled, x, target)
        modules = modules or built(compiled)
        eager_outputs, eager_grads = step(reference, x, target)
        for got, expected in zip(outputs + grads, eager_outputs + eager_grads, strict=True):
            # batch norm's backward subtracts means of sums over up to 26k voxels: float32 order
            # differences reach ~3e-3 of a weight gradient's largest entry (a fixed-size compile too)
            atol = 5e-3 * np.abs(expected).max() + 2e-5
            np.testing.assert_allclose(got, expected, rtol=2e-3, atol=atol, err_msg=f"at {(n, volume)}")
    assert compiled.stats()["traces"] == 1 and built(compiled) == modules
