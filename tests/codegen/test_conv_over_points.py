"""Convs of stride 1 with few output channels (fewer than half a vector) and more than one tap
across (h, w) are vectorised over output points (conv/over_points.py), as the transposed ones are: a
segmentation network's last 3 x 3 x 3 convs into 2 classes, where vectors of output channels would be
mostly padding. Forward with a bias and a fused epilogue, and every gradient of a training graph,
against the plain-loop float64 oracle (tests/oracle.py); odd sizes, dilation, groups, 1-D to 3-D.
(tests/dynamic/test_conv_dynamic_points.py compiles one for every size.)"""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn.functional as F
import oracle
from lucid.passes import autodiff, fusion, memory_planning
from lucid.runtime.executable import Executable
from model_helpers import kernel_labels

TOL = {"float32": 1e-4, "float64": 1e-10}
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

#: x shape, w shape, attributes (all of stride 1)
CASES = [
    ((1, 2, 5, 9, 21), (2, 2, 3, 3, 3), dict(padding=1)),                      # MONAI UNet's last unit
    ((2, 16, 4, 7, 19), (2, 16, 3, 3, 3), dict(padding=(0, 1, 1))),            # a head from 16 channels
    ((2, 6, 3, 8, 17), (4, 3, 1, 3, 5), dict(padding=(0, 2, 2), dilation=(1, 2, 1), groups=2)),
    ((3, 4, 11, 23), (3, 4, 3, 3), dict(padding=1)),
    ((2, 3, 37), (1, 3, 5), dict(padding=2)),
]


def _close(got, want, dtype, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(float(np.abs(want).max()), 1e-30)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype] * scale, err_msg=what)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("x_shape, w_shape, attrs", CASES)
def test_forward_with_an_epilogue_and_every_gradient_against_the_oracle(x_shape, w_shape, attrs, dtype):
    rng = np.random.default_rng(sum(x_shape))
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (x_shape, w_shape, (w_shape[0],)))
    conv = CONV[len(x_shape) - 2]
    spec = lambda a: lucid.spec(*a.shape, dtype=a.dtype.name)

    forward = fusion.run(lucid.trace(lambda x, w, b: F.relu(conv(x, w, b, **attrs)) * 0.5, spec(x), spec(w), spec(b)))
    executable = Executable(memory_planning.run(forward))
    assert "conv_direct_points" in kernel_labels(executable)
    want = oracle.conv_nd(*(a.astype(np.float64) for a in (x, w, b)), **attrs)
    _close(executable(x, w, b, threads=2)[0], np.maximum(want, 0) * 0.5, dtype, "forward")

    graph = lucid.trace(lambda x, w, b: conv(x, w, b, **attrs), spec(x), spec(w), spec(b))
    grad = autodiff.run(graph, wrt=["x", "w", "b"])
    seed = rng.standard_normal(want.shape).astype(dtype)
    outputs = Executable(memory_planning.run(grad))(x, w, b, seed, threads=2)
    wanted = oracle.conv_nd_vjp(seed.astype(np.float64), *(a.astype(np.float64) for a in (x, w, b)), **attrs)
    _close(outputs[0], want, dtype, "forward of the training graph")
    for name, got, ref in zip(("input", "weight", "bias"), outputs[1:], wanted, strict=True):
        _close(got, ref, dtype, f"gradient of the {name}")
