"""Direct convs whose packed weights outgrow the cache run their work items channel block by channel
block (`direct.weights_outer`): each block's weights are read from memory once, its rows one after
the other, instead of every row reading all the weights again (a 3-D UNet's 256-channel bottom
convs: 7 MB per row).

Which convs take that order (the rule, and the kernels a lowering emits), and their values against
the plain-loop oracle (`oracle.py`, float64): odd sizes, groups, strides, a last block of fewer
channels, the convs reading their NCDHW input where it is (`depth_classes`), an epilogue, one and two
threads, and a training step's gradients through such a conv."""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn.functional as F
import oracle
from lucid.codegen.kernels.conv import direct
from lucid.codegen.kernels.conv.problem import Blocking, Geometry
from lucid.passes import dead_code, fusion, memory_planning
from lucid.runtime.executable import Executable
from model_helpers import kernel_labels

TOL = 2e-5


def _geometry(icg: int, ocg: int, groups: int = 1) -> Geometry:
    return Geometry(n=1, groups=groups, icg=icg, ocg=ocg, in_sp=(4, 4, 4), kernel=(3, 3, 3), stride=(1, 1, 1),
                    dilation=(1, 1, 1), pad_lo=(1, 1, 1))


def test_the_rule_reads_each_weight_once_when_that_moves_fewer_bytes():
    block = Blocking(lanes=16, vectors=2, points=4)
    big = _geometry(256, 256)                                        # 7 MB of packed weights
    assert direct.weights_outer(big, block, 27, rows=16, input_bytes=221 << 10, itemsize=4)
    small = _geometry(64, 64)                                        # 442 KiB: they stay in cache
    assert not direct.weights_outer(small, block, 27, rows=4096, input_bytes=64 << 20, itemsize=4)
    # a large input read again for each of 8 blocks costs more than the weights read again per row
    assert not direct.weights_outer(big, block, 27, rows=2, input_bytes=256 << 20, itemsize=4)
    assert direct.weights_outer(big, block, 27, rows=64, input_bytes=1 << 20, itemsize=4)


# input shape, output channels, kernel, attributes: odd sizes
CASES = [
    ((1, 24, 3, 5, 6), 40, (3, 3, 3), dict(padding=1)),                  # 40 channels: a shorter last block
    ((2, 12, 4, 3, 7), 36, (3, 3, 3), dict(padding=1, stride=(1, 2, 1), groups=3)),
    ((1, 20, 5, 4, 4), 18, (2, 3, 1), dict(padding=(1, 0, 0), dilation=(2, 1, 1))),
    ((2, 9, 6, 3, 3), 33, (3, 1, 1), dict(padding=(1, 0, 0))),            # reads its NCDHW input itself
]


@pytest.fixture
def small_cache(monkeypatch):
    """Weights of more than 1 KiB count as outgrowing the cache, so small convs take the order."""
    monkeypatch.setattr(direct, "WEIGHTS_IN_CACHE", 1 << 10)


def _arrays(x_shape, oc, kernel, attrs, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((oc, x_shape[1] // attrs.get("groups", 1)) + kernel).astype(np.float32)
    return [x, w, rng.standard_normal(oc).astype(np.float32)]


def _executable(fn, arrays, name):
    graph = lucid.trace(fn, *(lucid.spec(a.shape) for a in arrays), name=name)
    return Executable(memory_planning.run(dead_code.run(fusion.run(graph))))


def _assert_close(actual, wanted, what):
    scale = max(float(np.max(np.abs(wanted))), 1e-30)
    error = float(np.max(np.abs(np.asarray(actual, np.float64) - wanted)))
    assert error <= TOL * scale, f"{what}: max error {error:.3g} > {TOL:g} x {scale:.3g}"


def _direct_items(executable) -> list:
    return [kernel.items for kernel, _ in executable.kernels() if kernel.label == "conv_direct"]


@pytest.mark.parametrize("index", range(len(CASES)))
def test_blocks_outer_matches_the_oracle(small_cache, index):
    x_shape, oc, kernel, attrs = CASES[index]
    arrays = _arrays(x_shape, oc, kernel, attrs, index)
    executable = _executable(lambda x, w, b: F.relu(F.conv3d(x, w, b, **attrs)), arrays, f"blocks_outer_{index}")
    labels = kernel_labels(executable)
    assert "conv_direct" in labels and "conv_unpack" in labels, labels      # no unpacking in place
    x, w, b = (a.astype(np.float64) for a in arrays)
    expected = np.maximum(oracle.conv_nd(x, w, b, **attrs), 0)
    for threads in (2, 1):
        _assert_close(executable(*arrays, threads=threads)[0], expected, f"{x_shape} {attrs}, {threads} threads")


def test_the_same_conv_with_a_large_cache_keeps_rows_outer(monkeypatch):
    """Above the rule's threshold, the same conv of CASES[0] unpacks each row in its direct kernel
    (16 rows or more) or keeps rows outer; both orders give the same values."""
    x_shape, oc, kernel, attrs = (1, 24, 4, 4, 6), 40, (3, 3, 3), dict(padding=1)
    arrays = _arrays(x_shape, oc, kernel, attrs, 9)
    monkeypatch.setattr(direct, "WEIGHTS_IN_CACHE", 1 << 30)
    rows_outer = _executable(lambda x, w, b: F.conv3d(x, w, b, **attrs), arrays, "rows_outer")
    assert "conv_unpack" not in kernel_labels(rows_outer)     # (lowered again now if the code was on disk)
    monkeypatch.setattr(direct, "WEIGHTS_IN_CACHE", 1 << 10)
    blocks_outer = _executable(lambda x, w, b: F.conv3d(x, w, b, **attrs), arrays, "blocks_outer")
    assert "conv_unpack" in kernel_labels(blocks_outer)
    np.testing.assert_array_equal(rows_outer(*arrays)[0], blocks_outer(*arrays)[0])


def test_a_bottleneck_conv_at_its_real_size():
    """MONAI UNet's bottom conv (256 channels at 4^3, batch 1) takes the order with the real
    threshold: 8 or 16 blocks x 16 rows of items, and the oracle's values."""
    arrays = _arrays((1, 256, 4, 4, 4), 256, (3, 3, 3), dict(padding=1), 3)
    executable = _executable(lambda x, w, b: F.conv3d(x, w, b, padding=1), arrays, "bottleneck")
    labels = kernel_labels(executable)
    assert "conv_unpack" in labels and "wino_conv" not in labels, labels
    items = _direct_items(executable)
    assert len(items) == 1 and items[0] % 16 == 0 and items[0] > 16, items
    x, w, b = (a.astype(np.float64) for a in arrays)
    _assert_close(executable(*arrays, threads=2)[0], oracle.conv_nd(x, w, b, padding=1), "bottleneck")


def test_training_gradients_through_blocks_outer(small_cache):
    """A compiled training step (its weights change every call, so no weight check) through a conv
    taking the order: the loss's gradients against the oracle's vector-Jacobian product."""
    x_shape, oc, kernel, attrs = CASES[0]
    x, w, b = _arrays(x_shape, oc, kernel, attrs, 11)
    conv = lucid.nn.Conv3d(x_shape[1], oc, kernel, **attrs)
    conv.weight.data = lucid.tensor(w)
    conv.bias.data = lucid.tensor(b)
    g = np.random.default_rng(12).standard_normal((1, oc, 3, 5, 6)).astype(np.float32)

    def step(x_in):
        return (conv(x_in) * lucid.tensor(g)).sum()

    compiled = lucid.compile(step)
    x_tensor = lucid.tensor(x, requires_grad=True)
    for _ in range(2):                                       # the second call: the prepared weights again
        for p in (conv.weight, conv.bias, x_tensor):
            p.grad = None
        compiled(x_tensor).backward()
    dx, dw, db = oracle.conv_nd_vjp(g.astype(np.float64), x.astype(np.float64), w.astype(np.float64),
                                    b.astype(np.float64), **attrs)
    _assert_close(x_tensor.grad.numpy(), dx, "dx")
    _assert_close(conv.weight.grad.numpy(), dw, "dw")
    _assert_close(conv.bias.grad.numpy(), db, "db")
