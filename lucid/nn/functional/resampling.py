"""Resampling: `interpolate` (one `resample` per spatial axis), `pixel_shuffle` / `pixel_unshuffle`."""
from __future__ import annotations

import math
import numbers

from ...errors import ShapeError
from ...ir import ops, symbolic
from .arguments import require_tensor



INTERPOLATE_RANKS = {"linear": 1, "bilinear": 2, "trilinear": 3}


def _per_axis(value, rank: int, what: str, kind, owner: str = "F.interpolate") -> tuple:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * rank
    if len(values) != rank or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        raise ShapeError(f"{owner}: expected {what} as one number or {rank} of them (one per spatial axis), got {value!r}")
    return values


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """PyTorch's F.interpolate for (N, C, *spatial) inputs with 1 to 3 spatial axes."""
    x = require_tensor(input, "F.interpolate")
    rank = x.ndim - 2
    if mode not in ("nearest", "nearest-exact", *INTERPOLATE_RANKS):
        raise ShapeError(f"F.interpolate: mode must be one of 'nearest', 'nearest-exact', 'linear', 'bilinear', "
                         f"'trilinear', got {mode!r}")
    if not 1 <= rank <= 3 or INTERPOLATE_RANKS.get(mode, rank) != rank:
        wanted = f"a {INTERPOLATE_RANKS[mode] + 2}-D" if mode in INTERPOLATE_RANKS else "a 3-D, 4-D or 5-D"
        raise ShapeError(f"F.interpolate: mode {mode!r} expects {wanted} input (N, C, *spatial), got shape {x.shape}")
    if align_corners is not None and mode not in INTERPOLATE_RANKS:
        raise ShapeError(f"F.interpolate: align_corners can only be set with the interpolating modes "
                         f"'linear', 'bilinear', 'trilinear', not with mode {mode!r}")
    if antialias:
        raise ShapeError(f"F.interpolate: antialias=True is not supported (mode {mode!r})")
    if (size is None) == (scale_factor is None):
        raise ShapeError("F.interpolate: give exactly one of size and scale_factor, "
                         f"got size={size!r} and scale_factor={scale_factor!r}")
    in_sp = x.shape[2:]
    if size is not None:
        out_sp, scales = _per_axis(size, rank, "size", (numbers.Integral, symbolic.Expr)), (None,) * rank
        if any(m < 1 for m in out_sp):
            raise ShapeError(f"F.interpolate: size must be positive, got {size!r}")
    else:
        factors = _per_axis(scale_factor, rank, "scale_factor", numbers.Real)
        out_sp = tuple(_scaled(n, float(f)) for n, f in zip(in_sp, factors))
        if any(m < 1 for m in out_sp):
            raise ShapeError(f"F.interpolate: scale_factor {scale_factor!r} makes an empty output from input shape {x.shape}")
        scales = (None,) * rank if recompute_scale_factor else tuple(1.0 / float(f) for f in factors)
    axis_mode = "linear" if mode in INTERPOLATE_RANKS else mode
    for axis, (m, scale) in enumerate(zip(out_sp, scales), start=2):
        x = ops.resample(x, axis=axis, size=symbolic.as_size(m), mode=axis_mode, align_corners=bool(align_corners), scale=scale)
    return x


def _scaled(n, factor: float):
    """floor(n * factor); for a symbolic size n only a whole factor has an exact result (`D * 2`)."""
    if not symbolic.is_symbolic(n):
        return math.floor(n * factor)
    if not factor.is_integer():
        raise ShapeError(f"F.interpolate: scale_factor {factor} is not a whole number, so the output size of the "
                         f"symbolic dimension {n} has no exact expression; use a whole factor or size=")
    return n * int(factor)


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    return interpolate(input, size, scale_factor, mode, align_corners)


def _shuffle_factor(x, factor, owner: str) -> int:
    if not isinstance(factor, numbers.Integral) or isinstance(factor, bool) or factor < 1:
        raise ShapeError(f"{owner}: expected a positive int factor, got {factor!r}")
    if x.ndim < 3:
        raise ShapeError(f"{owner}: expected an input of at least 3 dimensions (*, C, H, W), got shape {x.shape}")
    return int(factor)


def pixel_shuffle(input, upscale_factor):
    """(*, C*r*r, H, W) -> (*, C, H*r, W*r)."""
    x = require_tensor(input, "pixel_shuffle")
    r = _shuffle_factor(x, upscale_factor, "pixel_shuffle")
    *batch, c, h, w = x.shape
    if c % (r * r):
        raise ShapeError(f"pixel_shuffle: channels {c} are not divisible by upscale_factor squared ({r * r})")
    lead = len(batch)
    x = x.reshape((*batch, c // (r * r), r, r, h, w))
    x = x.permute(*range(lead), lead, lead + 3, lead + 1, lead + 4, lead + 2)
    return x.reshape((*batch, c // (r * r), h * r, w * r))


def pixel_unshuffle(input, downscale_factor):
    """(*, C, H*r, W*r) -> (*, C*r*r, H, W)."""
    x = require_tensor(input, "pixel_unshuffle")
    r = _shuffle_factor(x, downscale_factor, "pixel_unshuffle")
    *batch, c, h, w = x.shape
    if h % r or w % r:
        raise ShapeError(f"pixel_unshuffle: height {h} and width {w} must be divisible by downscale_factor {r}")
    lead = len(batch)
    x = x.reshape((*batch, c, h // r, r, w // r, r))
    x = x.permute(*range(lead), lead, lead + 2, lead + 4, lead + 1, lead + 3)
    return x.reshape((*batch, c * r * r, h // r, w // r))
