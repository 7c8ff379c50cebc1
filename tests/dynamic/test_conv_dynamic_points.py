"""Transposed convs and stride-1 convs with few output channels compiled for symbolic sizes take the
over-points path (over_points.py: tiles of the most vectors, the last tile's vectors counted per
call), as their static compiles do: the input gradient of a stem conv (3 input channels), a
segmentation head into 2 classes.

Oracles: eager lucid (NumPy kernels) at every size, and the direct-loop NumPy oracle of
tests/oracle.py (float64, shares nothing with lucid) at one odd size. Tolerances as
test_conv_dynamic.py: relative to each output's largest magnitude."""
import numpy as np
import pytest

import lucid
import lucid.nn as nn
import oracle
from test_conv_dynamic import (assert_close, assert_gradients_equal_eager, built, compiled_for_every_row_length,
                               symbolic_variant_kernels)

#: (batch, (D, H, W)), the first the smallest on every axis (dynamic=True takes its sizes as the
#: minimum): even and odd sizes, phase rows from 4 to 23 points.
SIZES = [(1, (4, 8, 8)), (2, (5, 9, 13)), (3, (4, 16, 31)), (1, (7, 11, 46)), (2, (6, 8, 21))]
ORACLE_SIZE = (2, (5, 9, 19))


def stem(seed: int) -> nn.Conv3d:
    """A stem conv as benchmarks/conv.py's row F, smaller: 3 -> 8 channels, kernel (3, 5, 5),
    stride (1, 2, 2), padding (1, 2, 2); its input gradient is a transposed conv to 3 channels."""
    lucid.manual_seed(seed)
    return nn.Conv3d(3, 8, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2))


def test_stem_gradients_compiled_once_equal_eager_and_the_oracle():
    net = stem(seed=5)
    compiled = assert_gradients_equal_eager(net, SIZES)
    modules = built(compiled)
    n, volume = ORACLE_SIZE
    data = lucid.randn(n, 3, *volume).numpy()
    x = lucid.tensor(data, requires_grad=True)
    y = compiled(x)
    (y * y).sum().backward()
    w, b = net.weight.numpy().astype(np.float64), net.bias.numpy().astype(np.float64)
    expected = oracle.conv_nd(data.astype(np.float64), w, b, stride=(1, 2, 2), padding=(1, 2, 2))
    expected = [expected, *oracle.conv_nd_vjp(2 * expected, data.astype(np.float64), w, b, stride=(1, 2, 2),
                                              padding=(1, 2, 2))]
    got = [y.detach().numpy(), x.grad.numpy(), net.weight.grad.numpy(), net.bias.grad.numpy()]
    for got_one, want in zip(got, expected, strict=True):
        assert_close(got_one, want)
    stats = compiled.stats()
    assert stats["traces"] == 1 and stats["dynamic_variants"] == 1
    assert built(compiled) == modules                      # nothing compiled or loaded after the first call
    labels = symbolic_variant_kernels(compiled)
    assert "convT_direct_points" in labels and "convT_direct" not in labels, labels


@pytest.mark.parametrize("stride", [1, 2])
def test_rows_of_every_length_from_1_to_40(stride):
    """A transposed conv 16 -> 3 channels with a symbolic row length: every count of whole tiles and
    every count of vectors left over (3 channels, 8 lanes and 16 registers: tiles of up to 3 vectors), against eager, and
    against the oracle at a few lengths."""
    lucid.manual_seed(9)
    net = nn.ConvTranspose3d(16, 3, (1, 3, 4), stride=(1, 1, stride), padding=(0, 1, 1))

    def against_the_oracle(width, x, got):
        if width in (1, 17, 40):
            expected = oracle.conv_transpose_nd(x.numpy().astype(np.float64), net.weight.numpy().astype(np.float64),
                                                net.bias.numpy().astype(np.float64), stride=(1, 1, stride),
                                                padding=(0, 1, 1))
            assert_close(got, expected)

    compiled = compiled_for_every_row_length(net, 16, range(1, 41), against_the_oracle)
    labels = symbolic_variant_kernels(compiled)
    assert "convT_direct_points" in labels and "convT_direct" not in labels, labels


def test_a_head_into_two_classes_compiled_once_equals_eager():
    """A 3 x 3 x 3 conv 6 -> 2 channels of stride 1, its forward and gradients at every size."""
    lucid.manual_seed(3)
    head = nn.Conv3d(6, 2, 3, padding=1)
    compiled = assert_gradients_equal_eager(head, [(1, (4, 5, 16)), (2, (5, 7, 23)), (1, (6, 9, 40))])
    assert "conv_direct_points" in symbolic_variant_kernels(compiled)
