"""`pad` in PyTorch's modes, composed of slices and concatenations."""
from __future__ import annotations

import numbers

from ...errors import ShapeError
from ...ir import ops, symbolic
from .arguments import require_tensor
from .pooling import axis_slice



PAD_MODES = ("constant", "reflect", "replicate", "circular")


def pad(input, pad, mode="constant", value=None):
    """PyTorch's F.pad: `pad` lists (low, high) pairs starting from the last axis; negative values crop.

    'reflect' mirrors about the edge element, 'replicate' repeats it, 'circular' wraps around; these
    pad the last 1-3 axes of a batched or unbatched input and are composed of slices and a concat.
    Negative padding crops the input before it is padded, except for 'reflect', which crops after.
    A symbolic amount (`skip.shape[2] - x.shape[2]`, traced with symbolic dimensions) must be >= 0 for
    every size, in mode 'constant'.
    """
    x = require_tensor(input, "pad")
    if mode not in PAD_MODES:
        raise ShapeError(f"pad: mode must be one of {PAD_MODES}, got mode={mode!r}")
    if not isinstance(pad, (tuple, list)) or len(pad) % 2 or len(pad) // 2 > x.ndim or not all(
            isinstance(p, (numbers.Integral, symbolic.Expr)) and not isinstance(p, bool) for p in pad):
        raise ShapeError(f"pad: expected an even number of ints, at most 2 * rank ({2 * x.ndim}), got {pad!r}")
    if symbolic.is_symbolic(tuple(pad)) and (mode != "constant" or any(symbolic.bounds(p)[0] < 0 for p in pad)):
        raise ShapeError(f"pad: symbolic padding {tuple(pad)} must be >= 0 for every size and in mode 'constant', "
                         f"got mode={mode!r}")
    if mode != "constant":
        _check_edge_mode(x, pad, mode, value)
    lo, hi = [0] * x.ndim, [0] * x.ndim
    for i in range(len(pad) // 2):
        lo[x.ndim - 1 - i], hi[x.ndim - 1 - i] = symbolic.as_size(pad[2 * i]), symbolic.as_size(pad[2 * i + 1])
    if mode == "reflect":   # PyTorch mirrors the whole input, then crops
        return _crop(_extend(x, lo, hi, mode, value), lo, hi, pad)
    return _extend(_crop(x, lo, hi, pad), lo, hi, mode, value)


def _extend(x, lo: list, hi: list, mode: str, value):
    """`x` with the positive entries of `lo` and `hi` added to each axis in `mode`."""
    lo, hi = [_added(a) for a in lo], [_added(b) for b in hi]
    if mode == "constant":
        padded = any(symbolic.is_symbolic(a) or a for a in lo + hi)
        return ops.pad(x, lo, hi, value=0.0 if value is None else value) if padded else x
    for axis in range(x.ndim):
        if lo[axis] or hi[axis]:
            x = _extend_axis(x, axis, lo[axis], hi[axis], mode)
    return x


def _check_edge_mode(x, pad, mode: str, value) -> None:
    """PyTorch's limits for the non-constant modes: 1-3 padded axes of a (C, *) or (N, C, *) input."""
    axes = len(pad) // 2
    if not 1 <= axes <= 3 or x.ndim not in (axes + 1, axes + 2):
        raise ShapeError(f"pad: mode={mode!r} pads the last 1, 2 or 3 axes of an input with one or two more "
                         f"axes; got {len(pad)} padding values for a {x.ndim}-D input")
    if value is not None and value != 0:
        raise ShapeError(f"pad: mode={mode!r} takes no fill value, got value={value!r}")


def _added(amount):
    """What a padding amount adds (a symbolic amount is >= 0: all of it)."""
    return amount if symbolic.is_symbolic(amount) else max(amount, 0)


def _removed(amount) -> int:
    """What a padding amount crops (a symbolic amount is >= 0: nothing)."""
    return 0 if symbolic.is_symbolic(amount) else max(-amount, 0)


def _crop(x, lo: list, hi: list, pad):
    """Remove what negative padding takes off each side."""
    starts = tuple(_removed(a) for a in lo)
    stops = tuple(n - _removed(b) for n, b in zip(x.shape, hi))
    if any(b < a for a, b in zip(starts, stops)):
        raise ShapeError(f"pad: negative padding {tuple(pad)} removes more than the whole input of shape {x.shape}")
    if starts != (0,) * x.ndim or stops != tuple(x.shape):
        x = ops.slice_(x, starts, stops)
    return x


def _extend_axis(x, axis: int, lo: int, hi: int, mode: str):
    """`x` with `lo` and `hi` elements added along `axis` by reflecting, replicating or wrapping."""
    n = x.shape[axis]
    limit = n - 1 if mode == "reflect" else n
    if max(lo, hi) > limit or n == 0:
        rule = "smaller than" if mode == "reflect" else "at most"
        raise ShapeError(f"pad: mode={mode!r} needs padding {rule} the axis it pads, got padding ({lo}, {hi}) "
                         f"for axis {axis} of size {n} (input shape {x.shape})")
    if mode == "reflect":
        before = [axis_slice(x, axis, i, i + 1) for i in range(lo, 0, -1)]
        after = [axis_slice(x, axis, n - 2 - j, n - 1 - j) for j in range(hi)]
    elif mode == "replicate":
        before = [_repeat_along(axis_slice(x, axis, 0, 1), axis, lo)] if lo else []
        after = [_repeat_along(axis_slice(x, axis, n - 1, n), axis, hi)] if hi else []
    else:
        before = [axis_slice(x, axis, n - lo, n)] if lo else []
        after = [axis_slice(x, axis, 0, hi)] if hi else []
    return ops.concat(before + [x] + after, axis)


def _repeat_along(edge, axis: int, count: int):
    return ops.broadcast_to(edge, tuple(count if d == axis else n for d, n in enumerate(edge.shape)))
