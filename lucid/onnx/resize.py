"""ONNX `Resize` (and the older `Upsample`) as lucid `resample` operators, one per resized axis.

ONNX describes a resize by a coordinate transformation (half_pixel, pytorch_half_pixel,
align_corners, asymmetric), a mode (nearest, linear) and, for nearest, a rounding rule. lucid's
`resample` follows PyTorch's formulas (and ONNX's asymmetric linear one). Since shapes are static,
the importer settles each axis by arithmetic: it writes ONNX's interpolation along the axis as an
(output x input) matrix and takes the lucid resampling whose own matrix equals it (nearest /
nearest-exact, linear with or without align_corners, linear-asymmetric). An axis no lucid
resampling reproduces is refused naming the node and the attributes, so an import never changes
what the model computes.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import ops
from ..ir.ops.resample import resample_table

#: lucid's resamplings, (mode, align_corners), tried for each ONNX mode.
CANDIDATES = {"nearest": (("nearest", False), ("nearest-exact", False)),
              "linear": (("linear", False), ("linear", True), ("linear-asymmetric", False))}

#: The largest (output x input) matrix compared for one axis.
MAX_MATRIX = 1 << 24

ROUNDING = {"round_prefer_floor": lambda x: np.ceil(x - 0.5), "round_prefer_ceil": lambda x: np.floor(x + 0.5),
            "floor": np.floor, "ceil": np.ceil}


def resize(node, x, roi=None, scales=None, sizes=None):
    mode = node.choice("mode", "nearest", ("nearest", "linear"))
    coordinates = node.choice("coordinate_transformation_mode", "half_pixel",
                              ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"))
    rounding = node.choice("nearest_mode", "round_prefer_floor", tuple(ROUNDING))
    node.choice("exclude_outside", 0, (0,))
    node.choice("antialias", 0, (0,))
    node.choice("keep_aspect_ratio_policy", "stretch", ("stretch",))
    node.attr("cubic_coeff_a")
    node.attr("extrapolation_value")
    rank = len(x.shape)
    axes = [a % rank for a in node.ints("axes", tuple(range(rank)))]
    if sizes is not None and np.size(sizes):
        targets = [int(s) for s in np.asarray(sizes).reshape(-1)]
        factors = [m / x.shape[a] for a, m in zip(axes, targets)]
        given = False
    elif scales is not None and np.size(scales):
        factors = [float(s) for s in np.asarray(scales).reshape(-1)]
        targets = [math.floor(x.shape[a] * f) for a, f in zip(axes, factors)]
        given = True
    else:
        raise node.error("Resize needs scales or sizes")
    if len(targets) != len(axes) or min(targets) < 1:
        raise node.error(f"the output sizes {targets} do not fit axes {axes} of shape {tuple(x.shape)}")
    for axis, size, factor in zip(axes, targets, factors):
        x = _resample_axis(node, x, axis, size, factor, given, (mode, coordinates, rounding))
    return x


def upsample(node, x, scales):
    """The opset-9 Upsample: nearest (floor) or linear with asymmetric coordinates, by scales."""
    mode = node.choice("mode", "nearest", ("nearest", "linear"))
    factors = [float(s) for s in np.asarray(scales).reshape(-1)]
    if len(factors) != len(x.shape):
        raise node.error(f"scales {factors} must have one entry per axis of shape {tuple(x.shape)}")
    for axis, factor in enumerate(factors):
        x = _resample_axis(node, x, axis, math.floor(x.shape[axis] * factor), factor, True,
                           (mode, "asymmetric", "floor"))
    return x


def _resample_axis(node, x, axis: int, size: int, factor: float, given: bool, semantics: tuple):
    """x resampled along `axis` as ONNX's `semantics` (mode, coordinates, rounding) say, or x itself."""
    n = x.shape[axis]
    if n * size > MAX_MATRIX:
        raise node.error(f"resizing axis {axis} from {n} to {size} is larger than lucid imports")
    wanted = _onnx_matrix(n, size, factor, *semantics)
    if size == n and np.array_equal(wanted, np.eye(n)):
        return x
    scale = 1.0 / factor if given else None
    for mode, align_corners in CANDIDATES[semantics[0]]:
        if np.allclose(_lucid_matrix(n, size, mode, align_corners, scale), wanted, atol=1e-6):
            return ops.resample(x, axis=axis, size=size, mode=mode, align_corners=align_corners, scale=scale)
    raise node.error(f"mode={semantics[0]!r} with coordinate_transformation_mode={semantics[1]!r}"
                     + (f" and nearest_mode={semantics[2]!r}" if semantics[0] == "nearest" else "")
                     + f" resizing axis {axis} from {n} to {size} matches no resampling lucid has "
                       "(PyTorch's nearest, nearest-exact and linear with or without align_corners, "
                       "and linear-asymmetric)")


def _onnx_matrix(n: int, m: int, factor: float, mode: str, coordinates: str, rounding: str) -> np.ndarray:
    o = np.arange(m, dtype=np.float64)
    if coordinates == "align_corners":
        source = o * (n - 1) / (m - 1) if m > 1 else np.zeros(m)
    elif coordinates == "asymmetric":
        source = o / factor
    elif coordinates == "pytorch_half_pixel" and m == 1:
        source = np.zeros(m)
    else:
        source = (o + 0.5) / factor - 0.5
    if mode == "nearest":
        index = np.clip(ROUNDING[rounding](source), 0, n - 1).astype(np.int64)
        return _matrix(n, index, index, np.zeros(m))
    source = np.clip(source, 0, n - 1)
    i0 = np.floor(source).astype(np.int64)
    return _matrix(n, i0, np.minimum(i0 + 1, n - 1), source - i0)


def _lucid_matrix(n: int, m: int, mode: str, align_corners: bool, scale) -> np.ndarray:
    return _matrix(n, *resample_table(n, m, mode, align_corners, scale))


def _matrix(n: int, i0, i1, w) -> np.ndarray:
    rows = np.arange(len(i0))
    matrix = np.zeros((len(i0), n))
    np.add.at(matrix, (rows, i0), 1 - w)
    np.add.at(matrix, (rows, i1), w)
    return matrix
