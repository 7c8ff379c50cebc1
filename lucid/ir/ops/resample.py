"""Resampling along one axis: `resample` and its transpose `resample_grad`.

Interpolation is separable, so F.interpolate applies `resample` once per spatial axis. Along an axis
of input size n resampled to m, output index o reads the source indices i0[o], i1[o] and blends
them with the weight w[o] of i1: y[o] = x[i0] * (1 - w) + x[i1] * w (nearest modes: i1 = i0, w = 0).
The source coordinate follows PyTorch, with scale = 1 / scale_factor when the caller gives one
(attribute `scale`) and n / m otherwise:
- nearest:        i0 = min(floor(o * scale), n - 1)  (computed in float32, as PyTorch does);
- nearest-exact:  i0 = min(floor((o + 0.5) * scale), n - 1);
- linear:         s = max((o + 0.5) * scale - 0.5, 0), or s = o * (n - 1) / (m - 1) with
                  align_corners (0 when m == 1); i0 = floor(s), i1 = min(i0 + 1, n - 1), w = s - i0;
- linear-asymmetric: s = o * scale, then i0, i1 and w as linear (i0 at most n - 1, w at most 1): ONNX's
                  linear Resize with asymmetric coordinates (what older exporters write for PyTorch's
                  and TensorFlow's upsampling); no PyTorch mode, so only the ONNX import emits it.
`resample_grad` (attribute `input_size`) is the transposed operator: it adds each output gradient,
weighted, back into the source indices it was read from.
"""
from __future__ import annotations

import numpy as np

from .. import symbolic
from ..types import TensorType
from .attributes import Bool, Int, OneOf, Optional, Real
from .registry import OpDef, OpKind, emit, register

MODES = ("nearest", "nearest-exact", "linear", "linear-asymmetric")
#: The modes that blend two source elements (the others copy one).
BLENDING = ("linear", "linear-asymmetric")


def resample_table(in_size: int, out_size: int, mode: str, align_corners: bool, scale) -> tuple:
    """(i0, i1, w) per output index: int64 source indices and the float64 weight of i1."""
    o = np.arange(out_size)
    if mode in BLENDING:
        step = scale if scale is not None else in_size / out_size
        if mode == "linear-asymmetric":
            source = o * step
        elif align_corners:
            source = o * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
        else:
            source = np.maximum((o + 0.5) * step - 0.5, 0.0)
        i0 = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
        i1 = np.minimum(i0 + 1, in_size - 1)
        return i0, i1, np.clip(source - i0, 0.0, 1.0)
    step = np.float32(scale if scale is not None else in_size / out_size)
    shift = np.float32(0.5 if mode == "nearest-exact" else 0.0)
    i0 = np.minimum(np.floor((o.astype(np.float32) + shift) * step).astype(np.int64), in_size - 1)
    return i0, i0, np.zeros(out_size)


class ResampleBase(OpDef):
    kind = OpKind.LAYOUT     # moves elements along an axis (linear also blends two neighbours)
    attributes = {"axis": Int(min=0), "size": Int(min=1, symbolic=True), "mode": OneOf(*MODES),
                  "align_corners": Bool(), "scale": Optional(Real(min=0))}

    def check(self, attrs, x: TensorType) -> None:
        self.require_float(x)
        if attrs["axis"] >= x.ndim:
            raise self.error(f"axis {attrs['axis']} is out of range for an input of shape {x.shape}")
        if x.shape[attrs["axis"]] < 1:
            raise self.error(f"cannot resample an empty axis {attrs['axis']} of shape {x.shape}")

    def resized(self, shape: tuple, axis: int, size: int) -> tuple:
        return shape[:axis] + (size,) + shape[axis + 1:]

    def flops(self, attrs, input_types, output_type) -> int:
        return 3 * output_type.size if attrs["mode"] in BLENDING else 0


def _expand(w: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    return w.reshape((1,) * axis + (-1,) + (1,) * (ndim - axis - 1))


@register
class Resample(ResampleBase):
    name = "resample"

    def infer(self, attrs, x):
        self.check(attrs, x)
        return TensorType(self.resized(x.shape, attrs["axis"], attrs["size"]), x.dtype)

    def compute(self, attrs, x):
        axis = attrs["axis"]
        i0, i1, w = resample_table(x.shape[axis], attrs["size"], attrs["mode"], attrs["align_corners"], attrs["scale"])
        y = np.take(x, i0, axis=axis)
        if attrs["mode"] in BLENDING:
            w = _expand(w.astype(x.dtype), x.ndim, axis)
            y = y * (1 - w) + np.take(x, i1, axis=axis) * w
        return np.ascontiguousarray(y, dtype=x.dtype)

    def grad(self, attrs, inputs, y, g):
        return (emit("resample_grad", g, input_size=symbolic.as_size(inputs[0].shape[attrs["axis"]]), **attrs),)


@register
class ResampleGrad(ResampleBase):
    name = "resample_grad"
    differentiable = False
    attributes = {**ResampleBase.attributes, "input_size": Int(min=1, symbolic=True)}

    def infer(self, attrs, gy):
        self.check(attrs, gy)
        if gy.shape[attrs["axis"]] != attrs["size"]:
            raise self.error(f"expected an output gradient of size {attrs['size']} along axis {attrs['axis']}, "
                             f"got shape {gy.shape}")
        return TensorType(self.resized(gy.shape, attrs["axis"], attrs["input_size"]), gy.dtype)

    def compute(self, attrs, gy):
        axis, n = attrs["axis"], attrs["input_size"]
        i0, i1, w = resample_table(n, attrs["size"], attrs["mode"], attrs["align_corners"], attrs["scale"])
        gx = np.zeros(self.resized(gy.shape, axis, n), dtype=gy.dtype)
        at = (slice(None),) * axis
        if attrs["mode"] not in BLENDING:
            np.add.at(gx, at + (i0,), gy)
            return gx
        w = _expand(w.astype(gy.dtype), gy.ndim, axis)
        np.add.at(gx, at + (i0,), gy * (1 - w))
        np.add.at(gx, at + (i1,), gy * w)
        return gx


def resample(x, *, axis: int, size: int, mode: str, align_corners: bool = False, scale=None):
    return emit("resample", x, axis=int(axis), size=symbolic.as_size(size), mode=mode, align_corners=bool(align_corners),
                scale=None if scale is None else float(scale))
