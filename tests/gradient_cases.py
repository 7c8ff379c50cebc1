"""The gradient case table shared by the operator gradient tests.

`CASES` maps every differentiable registered operator to small example calls (`Case`), written with
lucid's public operator functions (`lucid.ir.ops`) or `lucid.nn.functional`, on float64 inputs drawn
away from kinks (relu/abs/leaky_relu/clamp not near their break points, max/min/maximum/minimum/
max_pool without ties, log/sqrt/pow of positive values). Every input of a case is differentiated.

Used by tests/ir/test_op_gradients.py (eager tape vs finite differences) and
tests/passes/test_autodiff.py (the autodiff pass vs the eager tape and finite differences):

    from gradient_cases import CASES, flat_cases, forward, loss_weights

All inputs come from one seeded generator, drawn at import in a fixed order, so the table is the
same in every run.
"""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn.functional as F
from lucid.ir import ops

F64 = lucid.float64
_rng = np.random.default_rng(20240611)


# ----------------------------------------------------------------------------------------------
# Input generators (all float64, deterministic)


def rnd(*shape):
    """Standard normal values."""
    return _rng.standard_normal(shape)


def away(*shape, lo=0.2, hi=1.5):
    """Values with |x| in [lo, hi] and random sign: away from 0 (the kink of relu/abs/leaky_relu)."""
    return _rng.uniform(lo, hi, shape) * _rng.choice([-1.0, 1.0], shape)


def pos(*shape, lo=0.5, hi=2.0):
    """Positive values (log, sqrt, fractional powers, variances)."""
    return _rng.uniform(lo, hi, shape)


def distinct(*shape, gap=0.05):
    """Values pairwise at least `gap` apart (no ties for max/min/max_pool), in random order."""
    n = int(np.prod(shape, dtype=np.int64))
    values = (np.arange(n) - n / 2) * gap * 2 + _rng.uniform(0, gap / 2, n)
    return _rng.permutation(values).reshape(shape) / max(1.0, n * gap / 2)


def inside(shape, lo, hi, margin=0.1):
    """Values around [lo, hi] kept at least `margin` from the clamp bounds (None: no bound)."""
    centre = [b for b in (lo, hi) if b is not None]
    x = _rng.uniform(min(centre) - 1.0, max(centre) + 1.0, shape)
    for bound in (lo, hi):
        if bound is not None:
            near = np.abs(x - bound) < margin
            x[near] = bound + np.where(x[near] >= bound, margin, -margin) * 2
    return x


def apart(x_shape, y_shape, gap=0.05):
    """Two arrays whose broadcast elements differ by at least `gap` (no ties for maximum/minimum)."""
    while True:
        x, y = _rng.standard_normal(x_shape), _rng.standard_normal(y_shape)
        if np.min(np.abs(x - y)) > gap:
            return x, y


class Case:
    """One example call: `fn(*tensors)` on float64 tensors made from `arrays` (all differentiated)."""

    def __init__(self, label: str, fn, *arrays, rtol=1e-5, atol=1e-7):
        self.label, self.fn, self.arrays, self.rtol, self.atol = label, fn, arrays, rtol, atol


def const(array, dtype=F64):
    """A constant (non-differentiated) tensor."""
    return lucid.Tensor(array, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Helpers building specific calls


def _pool(kind, rank, **kw):
    fn = getattr(F, f"{kind}_pool{rank}d")
    return lambda x: fn(x, **kw)


def _mask(*shape):
    return lucid.Tensor(_rng.random(shape) > 0.5)


_cond_a = _mask(3, 1)
_cond_b = _mask(2, 3, 4)
_cond_c = _mask(4)


# ----------------------------------------------------------------------------------------------
# The table: operator name -> example calls

CASES: dict[str, list[Case]] = {
    # ---------------------------------------------------------------- unary maps
    "neg": [Case("2x3", ops.neg, rnd(2, 3)),
            Case("unary-minus 0-d", lambda x: -x, rnd())],
    "abs": [Case("away-from-0", ops.abs_, away(3, 4))],
    "exp": [Case("3x2", ops.exp, rnd(3, 2))],
    "log": [Case("positive", ops.log, pos(2, 5, lo=0.2, hi=3.0))],
    "sqrt": [Case("positive", ops.sqrt, pos(4, 3))],
    "erf": [Case("wide range", ops.erf, rnd(2, 6) * 1.5)],
    "tanh": [Case("2x3x2", ops.tanh, rnd(2, 3, 2) * 1.5)],
    "sigmoid": [Case("wide range", ops.sigmoid, rnd(3, 4) * 3.0),
                Case("large |x|", ops.sigmoid, np.array([-12.0, -6.0, 5.5, 11.0]))],
    "relu": [Case("away-from-0", ops.relu, away(3, 5)),
             Case("method", lambda x: x.relu(), away(2, 2, 2))],
    "leaky_relu": [Case("default slope", ops.leaky_relu, away(3, 4)),
                   Case("slope 0.2", lambda x: ops.leaky_relu(x, 0.2), away(2, 5)),
                   Case("F slope -0.3", lambda x: F.leaky_relu(x, negative_slope=-0.3), away(6))],
    "gelu": [Case("none", lambda x: ops.gelu(x, "none"), rnd(3, 5) * 2.0),
             Case("tanh", lambda x: ops.gelu(x, "tanh"), rnd(3, 5) * 2.0),
             Case("F tanh", lambda x: F.gelu(x, approximate="tanh"), rnd(2, 2, 3))],
    "pow_scalar": [Case("square", lambda x: ops.pow_scalar(x, 2), rnd(3, 3)),
                   Case("cube", lambda x: x ** 3, rnd(2, 4)),
                   Case("sqrt-power", lambda x: ops.pow_scalar(x, 0.5), pos(5)),
                   Case("negative fractional", lambda x: ops.pow_scalar(x, -1.5), pos(2, 3)),
                   Case("exponent 1", lambda x: ops.pow_scalar(x, 1.0), rnd(4)),
                   Case("exponent 0", lambda x: ops.pow_scalar(x, 0.0), rnd(3))],
    "clamp": [Case("both bounds", lambda x: ops.clamp(x, -0.5, 0.7), inside((3, 6), -0.5, 0.7)),
              Case("min only", lambda x: ops.clamp(x, min=0.1), inside((4, 4), 0.1, None)),
              Case("max only", lambda x: x.clamp(max=-0.2), inside((10,), None, -0.2))],
    "cast": [Case("float64->float64", lambda x: ops.cast(x, F64), rnd(2, 3))],
    # ---------------------------------------------------------------- broadcasting binary maps
    "add": [Case("same shape", ops.add, rnd(2, 3), rnd(2, 3)),
            Case("(2,3,4)+(3,1)", ops.add, rnd(2, 3, 4), rnd(3, 1)),
            Case("(1,3,1)+(2,1,4)", ops.add, rnd(1, 3, 1), rnd(2, 1, 4)),
            Case("(4,)+0-d", ops.add, rnd(4), rnd()),
            Case("python scalar", lambda x: 2.5 + x, rnd(3))],
    "sub": [Case("(2,3,4)-(4,)", ops.sub, rnd(2, 3, 4), rnd(4)),
            Case("(3,1)-(1,3)", ops.sub, rnd(3, 1), rnd(1, 3)),
            Case("python scalar lhs", lambda x: 1.5 - x, rnd(2, 2))],
    "mul": [Case("(2,1,4)*(3,1)", ops.mul, rnd(2, 1, 4), rnd(3, 1)),
            Case("(2,3)*(2,3)", ops.mul, rnd(2, 3), rnd(2, 3)),
            Case("x*x (same tensor twice)", lambda x: x * x, rnd(5)),
            Case("1x1 * (2,3)", ops.mul, rnd(1, 1), rnd(2, 3))],
    "div": [Case("(2,3)/(3,)", ops.div, rnd(2, 3), away(3, lo=0.5)),
            Case("(3,1)/(1,4)", ops.div, rnd(3, 1), away(1, 4, lo=0.5)),
            Case("scalar / x", lambda x: 2.0 / x, away(2, 3, lo=0.5)),
            Case("x / scalar", lambda x: x / 4.0, rnd(3))],
    "maximum": [Case("same shape", ops.maximum, *apart((2, 3), (2, 3))),
                Case("(3,4) vs (4,)", ops.maximum, *apart((3, 4), (4,))),
                Case("(2,1,3) vs (4,1)", ops.maximum, *apart((2, 1, 3), (4, 1)))],
    "minimum": [Case("same shape", ops.minimum, *apart((2, 3), (2, 3))),
                Case("(3,1) vs (1,5)", ops.minimum, *apart((3, 1), (1, 5), gap=0.02))],
    "where": [Case("cond (3,1), x (1,4), y (3,4)", lambda x, y: ops.where(_cond_a, x, y), rnd(1, 4), rnd(3, 4)),
              Case("cond (2,3,4), x (3,4), y (4,)", lambda x, y: ops.where(_cond_b, x, y), rnd(3, 4), rnd(4)),
              Case("y a python scalar", lambda x: ops.where(_cond_c, x, 0.5), rnd(2, 4))],
    # ---------------------------------------------------------------- reductions
    "sum": [Case("all", lambda x: ops.sum_(x), rnd(2, 3)),
            Case("axis 1", lambda x: ops.sum_(x, 1), rnd(2, 3, 4)),
            Case("axes (0,2) keepdims", lambda x: ops.sum_(x, (0, 2), keepdims=True), rnd(2, 3, 4)),
            Case("axis -1 keepdims", lambda x: x.sum(-1, keepdims=True), rnd(3, 2)),
            Case("all keepdims", lambda x: ops.sum_(x, None, keepdims=True), rnd(2, 2, 2))],
    "mean": [Case("all", lambda x: ops.mean(x), rnd(3, 4)),
             Case("axes (0,2)", lambda x: ops.mean(x, (0, 2)), rnd(2, 3, 4)),
             Case("axis -2 keepdims", lambda x: x.mean(axis=-2, keepdims=True), rnd(2, 3, 2))],
    "max": [Case("all", lambda x: ops.max_(x), distinct(3, 4)),
            Case("axis 1", lambda x: ops.max_(x, 1), distinct(2, 5, 3)),
            Case("axes (0,2) keepdims", lambda x: ops.max_(x, (0, 2), keepdims=True), distinct(2, 3, 4)),
            Case("method axis -1", lambda x: x.max(axis=-1), distinct(4, 3))],
    "min": [Case("all", lambda x: ops.min_(x), distinct(2, 5)),
            Case("axis 0 keepdims", lambda x: ops.min_(x, 0, keepdims=True), distinct(3, 4)),
            Case("axes (1,2)", lambda x: ops.min_(x, (1, 2)), distinct(2, 3, 2))],
    # ---------------------------------------------------------------- shape operators
    "reshape": [Case("(2,3,4)->(4,-1)", lambda x: ops.reshape(x, (4, -1)), rnd(2, 3, 4)),
                Case("flatten", lambda x: x.flatten(1), rnd(2, 3, 2)),
                Case("unsqueeze/squeeze", lambda x: x.unsqueeze(1).squeeze(2), rnd(3, 1, 2))],
    "permute": [Case("(2,0,1)", lambda x: ops.permute(x, (2, 0, 1)), rnd(2, 3, 4)),
                Case("transpose", lambda x: x.transpose(0, 3), rnd(2, 1, 3, 2)),
                Case(".T", lambda x: x.T, rnd(3, 4))],
    "broadcast_to": [Case("(3,1)->(2,3,4)", lambda x: ops.broadcast_to(x, (2, 3, 4)), rnd(3, 1)),
                     Case("expand (1,4)->(3,4)", lambda x: x.expand(3, -1), rnd(1, 4)),
                     Case("0-d->(2,2)", lambda x: ops.broadcast_to(x, (2, 2)), rnd())],
    "pad": [Case("lo/hi", lambda x: ops.pad(x, (1, 0), (2, 3)), rnd(2, 3)),
            Case("interior 1 and 2", lambda x: ops.pad(x, (0, 1, 2), (1, 0, 1), (1, 0, 2), value=0.5), rnd(2, 3, 3)),
            Case("interior on a size-1 axis", lambda x: ops.pad(x, (1, 0), (0, 2), (3, 1)), rnd(1, 4)),
            Case("F.pad positive", lambda x: F.pad(x, (1, 2, 0, 1)), rnd(1, 2, 3)),
            Case("F.pad mixed signs", lambda x: F.pad(x, (-1, 2, 1, -1)), rnd(2, 3, 4))],
    "slice": [Case("strided", lambda x: ops.slice_(x, (1, 0), (4, 5), (2, 3)), rnd(5, 6)),
              Case("3-D steps", lambda x: ops.slice_(x, (0, 1, 2), (2, 4, 7), (1, 2, 3)), rnd(2, 5, 7)),
              Case("getitem", lambda x: x[1:, ::2, 1], rnd(3, 5, 2)),
              Case("getitem ellipsis", lambda x: x[..., 1:3], rnd(2, 4)),
              Case("F.pad negative", lambda x: F.pad(x, (-1, -2)), rnd(2, 6))],
    "concat": [Case("3 inputs axis 1", lambda a, b, c: ops.concat([a, b, c], 1), rnd(2, 1, 3), rnd(2, 3, 3), rnd(2, 2, 3)),
               Case("3 inputs axis -1 (lucid.cat)", lambda a, b, c: lucid.cat([a, b, c], dim=-1), rnd(2, 2), rnd(2, 1), rnd(2, 3)),
               Case("same tensor twice", lambda a: lucid.concatenate([a, a], 0), rnd(2, 3))],
    # ---------------------------------------------------------------- linear algebra
    "matmul": [Case("2-D", ops.matmul, rnd(3, 4), rnd(4, 2)),
               Case("batch broadcasting (2,1,3,4)@(3,4,2)", ops.matmul, rnd(2, 1, 3, 4), rnd(3, 4, 2)),
               Case("3-D @ 2-D", lambda a, b: a @ b, rnd(2, 3, 4), rnd(4, 5)),
               Case("1-D @ 2-D", ops.matmul, rnd(4), rnd(4, 3)),
               Case("2-D @ 1-D", ops.matmul, rnd(3, 4), rnd(4)),
               Case("1-D @ 1-D", ops.matmul, rnd(5), rnd(5)),
               Case("1-D @ 3-D", ops.matmul, rnd(3), rnd(2, 3, 2)),
               Case("3-D @ 1-D", ops.matmul, rnd(2, 3, 4), rnd(4))],
    # ---------------------------------------------------------------- convolutions
    "conv": [
        Case("1d stride 2 pad 1 dilation 2 bias",
             lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1, dilation=2), rnd(2, 3, 9), rnd(4, 3, 3), rnd(4)),
        Case("2d groups 2 asymmetric padding",
             lambda x, w, b: ops.conv(x, w, b, stride=(1, 2), padding=((1, 0), (0, 2)), dilation=(1, 1), groups=2),
             rnd(1, 4, 4, 5), rnd(2, 2, 2, 3), rnd(2)),
        Case("2d 'same' even kernel", lambda x, w: F.conv2d(x, w, padding="same"), rnd(1, 2, 4, 4), rnd(3, 2, 2, 2)),
        Case("3d stride (1,2,1) pad 1 no bias",
             lambda x, w: F.conv3d(x, w, stride=(1, 2, 1), padding=1), rnd(1, 2, 3, 4, 3), rnd(2, 2, 2, 2, 2)),
        Case("3d groups 2 dilation 2", lambda x, w, b: F.conv3d(x, w, b, dilation=(2, 1, 1), groups=2),
             rnd(1, 2, 4, 3, 3), rnd(2, 1, 2, 2, 2), rnd(2)),
    ],
    "conv_transpose": [
        Case("1d stride 2 output_padding 1 bias",
             lambda x, w, b: F.conv_transpose1d(x, w, b, stride=2, padding=1, output_padding=1),
             rnd(2, 3, 4), rnd(3, 2, 3), rnd(2)),
        Case("2d groups 2 stride (2,3) dilation (2,1) output_padding (1,2)",
             lambda x, w, b: F.conv_transpose2d(x, w, b, stride=(2, 3), padding=1, output_padding=(1, 2),
                                                groups=2, dilation=(2, 1)),
             rnd(1, 4, 3, 2), rnd(4, 1, 2, 2), rnd(2)),
        Case("1d output_padding >= stride (dilation 2)",
             lambda x, w: F.conv_transpose1d(x, w, stride=1, output_padding=1, dilation=2),
             rnd(1, 2, 4), rnd(2, 2, 2)),
        Case("3d stride 2 no bias", lambda x, w: F.conv_transpose3d(x, w, stride=2),
             rnd(1, 2, 2, 2, 2), rnd(2, 1, 2, 2, 2)),
    ],
    # ---------------------------------------------------------------- pooling
    "max_pool": [
        Case("1d k3 s2 p1", _pool("max", 1, kernel_size=3, stride=2, padding=1), distinct(2, 2, 9)),
        Case("1d k2 s1 dilation 2 ceil", _pool("max", 1, kernel_size=2, stride=2, dilation=2, ceil_mode=True),
             distinct(1, 2, 8)),
        Case("2d k(3,2) s(2,1) p(1,0) dilation (1,2)",
             _pool("max", 2, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)), distinct(1, 2, 6, 7)),
        Case("2d k3 s2 p1 ceil", _pool("max", 2, kernel_size=3, stride=2, padding=1, ceil_mode=True),
             distinct(1, 1, 6, 6)),
        Case("3d k2 s2 p(0,1,1) ceil", _pool("max", 3, kernel_size=2, stride=2, padding=(0, 1, 1), ceil_mode=True),
             distinct(1, 2, 3, 4, 3)),
        Case("3d k(2,3,2) s1 dilation (2,1,1)", _pool("max", 3, kernel_size=(2, 3, 2), stride=1, dilation=(2, 1, 1)),
             distinct(1, 1, 4, 4, 3)),
        Case("unbatched 2d", _pool("max", 2, kernel_size=2), distinct(2, 4, 4)),
    ],
    "avg_pool": [
        Case("1d k3 s2 p1 exclude pad", _pool("avg", 1, kernel_size=3, stride=2, padding=1, count_include_pad=False),
             rnd(2, 2, 8)),
        Case("1d k2 s2 ceil", _pool("avg", 1, kernel_size=2, stride=2, ceil_mode=True), rnd(1, 2, 7)),
        Case("2d k3 s2 p1 ceil include pad", _pool("avg", 2, kernel_size=3, stride=2, padding=1, ceil_mode=True),
             rnd(1, 2, 6, 5)),
        Case("2d k(2,3) s(1,2) p1 ceil exclude pad",
             _pool("avg", 2, kernel_size=(2, 3), stride=(1, 2), padding=1, ceil_mode=True, count_include_pad=False),
             rnd(1, 1, 4, 6)),
        Case("2d divisor_override 5", _pool("avg", 2, kernel_size=2, stride=1, padding=1, divisor_override=5),
             rnd(2, 1, 3, 3)),
        Case("3d k2 s(1,2,2) p(1,0,1) exclude pad",
             _pool("avg", 3, kernel_size=2, stride=(1, 2, 2), padding=(1, 0, 1), count_include_pad=False),
             rnd(1, 2, 3, 4, 3)),
        Case("3d k(3,2,2) s2 p1 ceil divisor_override 3",
             _pool("avg", 3, kernel_size=(3, 2, 2), stride=2, padding=1, ceil_mode=True, divisor_override=3),
             rnd(1, 1, 4, 3, 4)),
    ],
    # ---------------------------------------------------------------- resampling (F.interpolate)
    "resample": [
        Case("nearest x2 1d", lambda x: F.interpolate(x, scale_factor=2), rnd(1, 2, 3)),
        Case("nearest-exact size 2d", lambda x: F.interpolate(x, size=(5, 2), mode="nearest-exact"), rnd(1, 2, 3, 4)),
        Case("bilinear x1.7", lambda x: F.interpolate(x, scale_factor=1.7, mode="bilinear"), rnd(1, 1, 3, 4)),
        Case("trilinear x2", lambda x: F.interpolate(x, scale_factor=2, mode="trilinear"), rnd(1, 2, 2, 3, 2)),
        Case("trilinear size align_corners", lambda x: F.interpolate(x, size=(3, 5, 1), mode="trilinear",
                                                                     align_corners=True), rnd(1, 1, 2, 3, 2)),
        Case("linear-asymmetric x2.5 (ONNX import)",
             lambda x: ops.resample(x, axis=2, size=7, mode="linear-asymmetric", scale=0.4), rnd(1, 2, 3)),
    ],
    # ---------------------------------------------------------------- normalisation
    "moments": [
        Case("rows of 5 (2,3,5)", ops.moments, rnd(2, 3, 5)),
        Case("one row of 7", ops.moments, rnd(7) + 3.0),
        Case("axes (0, 2) of (3,2,4)", lambda x: ops.moments(x, (0, 2)), rnd(3, 2, 4)),
        Case("F.batch_norm training (N,C,D,H,W)", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
             rnd(2, 2, 2, 2, 2), rnd(2), rnd(2)),
        Case("F.batch_norm training (N,C)",
             lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True, eps=1e-3), rnd(5, 3), rnd(3), rnd(3)),
        Case("F.group_norm C=6 groups=3", lambda x, w, b: F.group_norm(x, 3, w, b), rnd(2, 6, 3, 2), rnd(6), rnd(6)),
        Case("F.instance_norm 3-D", lambda x, w, b: F.instance_norm(x, weight=w, bias=b), rnd(2, 3, 3, 2, 2),
             rnd(3), rnd(3)),
        Case("F.layer_norm over (3,5)", lambda x, w, b: F.layer_norm(x, (3, 5), w, b), rnd(2, 3, 5), rnd(3, 5),
             rnd(3, 5)),
    ],
    "normalize": [
        Case("per (sample, channel) statistics, per channel affine",
             ops.normalize, rnd(2, 3, 4), rnd(2, 3, 1), pos(2, 3, 1), rnd(1, 3, 1), rnd(1, 3, 1)),
        Case("per sample statistics, affine over the trailing axes",
             ops.normalize, rnd(2, 3, 4), rnd(2, 1, 1), pos(2, 1, 1), rnd(3, 4), rnd(4)),
        Case("F.batch_norm eval, all 5 inputs (N,C,L)", lambda x, m, v, w, b: F.batch_norm(x, m, v, w, b, eps=1e-5),
             rnd(3, 2, 4), rnd(2), pos(2), rnd(2), rnd(2)),
        Case("F.batch_norm eval, all 5 inputs (N,C,H,W) eps 0.1",
             lambda x, m, v, w, b: F.batch_norm(x, m, v, w, b, eps=0.1), rnd(2, 3, 2, 2), rnd(3), pos(3), rnd(3), rnd(3)),
        Case("F.batch_norm eval, all 5 inputs (N,C)", lambda x, m, v, w, b: F.batch_norm(x, m, v, w, b, eps=1e-3),
             rnd(4, 3), rnd(3), pos(3), rnd(3), rnd(3)),
    ],
    "softmax": [Case("axis -1", lambda x: ops.softmax(x), rnd(2, 3, 4)),
                Case("axis 0", lambda x: ops.softmax(x, 0), rnd(3, 2, 2)),
                Case("axis 1 (F dim=1)", lambda x: F.softmax(x, dim=1), rnd(2, 4, 3)),
                Case("1-D", lambda x: ops.softmax(x, 0), rnd(5) * 3)],
    "log_softmax": [Case("axis -1", lambda x: ops.log_softmax(x), rnd(2, 3, 4)),
                    Case("axis 0", lambda x: ops.log_softmax(x, 0), rnd(3, 4)),
                    Case("axis 1 (F dim=1)", lambda x: F.log_softmax(x, dim=1), rnd(2, 4, 3))],
    # ---------------------------------------------------------------- activations (ops/activation.py)
    "elu": [Case("ELU alpha 1", F.elu, away(3, 4, hi=3.0)),
            Case("SELU", F.selu, away(2, 5, hi=3.0)),
            Case("CELU alpha 0.5", lambda x: F.celu(x, 0.5), away(7, hi=3.0)),
            Case("op: alpha 2 scale 0.5 input_scale 3", lambda x: ops.elu(x, 2.0, 0.5, 3.0), away(2, 3))],
    "softplus": [Case("default", ops.softplus, rnd(3, 4) * 4.0),
                 Case("beta 2 threshold 3, both sides", lambda x: F.softplus(x, beta=2, threshold=3),
                      inside((2, 5), 1.5, None)),
                 Case("above the default threshold", ops.softplus, np.array([20.5, 25.0, -30.0]))],
    "silu": [Case("wide range", F.silu, rnd(3, 5) * 4.0)],
    "mish": [Case("wide range", F.mish, rnd(2, 3, 2) * 3.0)],
    "hardtanh": [Case("default bounds", F.hardtanh, inside((3, 4), -1.0, 1.0)),
                 Case("relu6", F.relu6, inside((2, 6), 0.0, 6.0)),
                 Case("op -2 0.5", lambda x: ops.hardtanh(x, -2, 0.5), inside((5,), -2.0, 0.5))],
    "prelu": [Case("one weight", lambda x, w: F.prelu(x, w), away(2, 3, 4), rnd(1)),
              Case("per channel (N,C,D,H,W)", lambda x, w: F.prelu(x, w), away(2, 3, 2, 2, 3), rnd(3)),
              Case("op, broadcast (3,1)", ops.prelu, away(3, 4), rnd(3, 1))],
    "hardsigmoid": [Case("both kinks avoided", F.hardsigmoid, inside((3, 5), -3.0, 3.0))],
    "hardswish": [Case("both kinks avoided", F.hardswish, inside((4, 5), -3.0, 3.0))],
}

# The same scalar loss weights used for every call of a case.
_G_SEED = 7


def differentiable_ops() -> set[str]:
    """Names of the registered operators with a gradient rule."""
    return {name for name, op in ops.all_ops().items() if op.differentiable}


def flat_cases():
    """Every case as a `pytest.param(op_name, case)` with id `<op>[<index>]-<label>`."""
    for name, cases in CASES.items():
        for i, case in enumerate(cases):
            yield pytest.param(name, case, id=f"{name}[{i}]-{case.label}")


def loss_weights(shape):
    """The fixed random weights G of the scalar loss `(y * G).sum()` (the same for every call)."""
    return np.random.default_rng(_G_SEED).standard_normal(shape)


def forward(case, arrays, requires_grad):
    """Run `case.fn` eagerly on float64 tensors made from `arrays`: (input tensors, output)."""
    tensors = [lucid.Tensor(a, dtype=F64, requires_grad=requires_grad) for a in arrays]
    return tensors, case.fn(*tensors)
