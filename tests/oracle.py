"""Independent NumPy reference ("oracle") for N-d convolution and transposed convolution.

Written straight from the mathematical definitions, with a loop over kernel offsets
(``np.ndindex``): each offset's term is one product over the batch, the channels and the slices of
positions it reaches (`_tap_slices`: the positions whose index lands inside the input, or the output).
It deliberately shares nothing with lucid's kernels (no im2col, no ``as_strided``), so that a
test comparing lucid against it is a real cross-check. Everything is computed in float64.

Conventions (spatial rank 1, 2 or 3; batched input only):

* ``x``: (N, C, *spatial)
* conv weight: (O, C // groups, *k); transposed-conv weight: (C, O // groups, *k)
* ``stride``, ``dilation``, ``output_padding``: int or one int per spatial dim
* ``padding``: int, one int per dim (symmetric), or one ``(lo, hi)`` pair per dim (asymmetric)

Convolution (cross-correlation, as in PyTorch)::

    y[n, g*Og + o, p] = b[g*Og + o]
                        + sum_{c, k} x[n, g*Cg + c, p*s - lo + k*d] * w[g*Og + o, c, k]

with out-of-range input positions reading zero, and output size per dim
``floor((in + lo + hi - d*(k-1) - 1) / s) + 1``.

Transposed convolution, defined by scattering::

    y[n, g*Og + o, i*s - lo + k*d] += x[n, g*Cg + c, i] * w[g*Cg + c, o, k]

(contributions landing outside the output are dropped), plus bias, with output size per dim
``(in-1)*s - lo - hi + d*(k-1) + output_padding + 1``.
"""
from __future__ import annotations


import numpy as np

__all__ = [
    "conv_nd",
    "conv_nd_vjp",
    "conv_transpose_nd",
    "conv_transpose_nd_vjp",
    "conv_output_shape",
    "conv_transpose_output_shape",
    "same_padding",
    "same_padding_transpose",
    "normalize_padding",
]


# ----------------------------------------------------------------------------- helpers

def _tup(v, nd: int, name: str) -> tuple:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * nd
    v = tuple(int(e) for e in v)
    if len(v) != nd:
        raise ValueError(f"oracle: {name} needs {nd} values, got {v}")
    return v


def normalize_padding(padding, nd: int) -> tuple:
    """int | ints per dim | (lo, hi) pairs per dim  ->  tuple of (lo, hi) pairs."""
    if isinstance(padding, (int, np.integer)):
        return ((int(padding), int(padding)),) * nd
    padding = tuple(padding)
    if len(padding) != nd:
        raise ValueError(f"oracle: padding needs {nd} entries, got {padding}")
    out = []
    for p in padding:
        if isinstance(p, (int, np.integer)):
            out.append((int(p), int(p)))
        else:
            lo, hi = p
            out.append((int(lo), int(hi)))
    return tuple(out)


def same_padding(in_size: int, k: int, s: int = 1, d: int = 1) -> tuple:
    """SPEC §3 'same' for a convolution, one spatial dim.

    ``ceil(in/s)`` outputs; total padding ``max((out-1)*s + d*(k-1) + 1 - in, 0)``,
    the odd element going to the high side. Returns ``(lo, hi)``.
    """
    out = -(-in_size // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - in_size, 0)
    lo = total // 2
    return (lo, total - lo)


def same_padding_transpose(in_size: int, k: int, s: int = 1, d: int = 1) -> tuple:
    """'same' for a transposed convolution, one spatial dim: ``in*s`` outputs.

    total = d*(k-1) + 1 - s; if total >= 0 it is cropped as ``lo = total//2``,
    ``hi = total - lo`` and output_padding is 0; otherwise padding is 0 and
    ``output_padding = s - 1 - d*(k-1)``. Returns ``((lo, hi), output_padding)``.
    """
    total = d * (k - 1) + 1 - s
    if total >= 0:
        lo = total // 2
        return (lo, total - lo), 0
    return (0, 0), s - 1 - d * (k - 1)


def conv_output_shape(in_spatial, k, stride, pads, dilation) -> tuple:
    out = []
    for i, kk, s, (lo, hi), d in zip(in_spatial, k, stride, pads, dilation):
        out.append((i + lo + hi - d * (kk - 1) - 1) // s + 1)
    return tuple(out)


def conv_transpose_output_shape(in_spatial, k, stride, pads, output_padding, dilation) -> tuple:
    return tuple(
        (i - 1) * s - lo - hi + d * (kk - 1) + op + 1
        for i, kk, s, (lo, hi), op, d in zip(in_spatial, k, stride, pads, output_padding, dilation)
    )


def _check_input(x, w, groups, transposed):
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if x.ndim not in (3, 4, 5):
        raise ValueError(f"oracle: batched (N, C, *spatial) input with 1..3 spatial dims expected, got {x.shape}")
    if w.ndim != x.ndim:
        raise ValueError(f"oracle: weight rank {w.ndim} does not match input rank {x.ndim}")
    C = x.shape[1]
    if transposed:
        if w.shape[0] != C or C % groups:
            raise ValueError(f"oracle: transposed weight {w.shape} vs input channels {C}, groups {groups}")
    else:
        if w.shape[1] * groups != C or w.shape[0] % groups:
            raise ValueError(f"oracle: weight {w.shape} vs input channels {C}, groups {groups}")
    return x, w


# ----------------------------------------------------------------------------- convolution

def _conv_geometry(x, w, stride, padding, dilation):
    nd = x.ndim - 2
    k = w.shape[2:]
    s = _tup(stride, nd, "stride")
    d = _tup(dilation, nd, "dilation")
    pads = normalize_padding(padding, nd)
    out_sp = conv_output_shape(x.shape[2:], k, s, pads, d)
    if any(o < 1 for o in out_sp):
        raise ValueError(f"oracle: non-positive conv output size {out_sp}")
    return nd, k, s, d, pads, out_sp


def _tap_slices(kk, s, d, pads, positions, sizes):
    """For one kernel tap `kk`: the positions p < `positions` (per axis) whose p * stride - lo +
    kk * dilation falls inside `sizes`, and those landing indices, as two tuples of slices (the input
    a conv's outputs read through this tap, or the outputs a transposed conv's inputs write through
    it); None when no position lands inside."""
    from_slices, to_slices = [], []
    for ki, si, di, (lo, _), count, n in zip(kk, s, d, pads, positions, sizes):
        offset = ki * di - lo                       # where position 0 lands
        first = max(0, -(offset // si))             # the first p with p * si + offset >= 0
        last = min(count - 1, (n - 1 - offset) // si)
        if last < first:
            return None
        from_slices.append(slice(first, last + 1))
        to_slices.append(slice(first * si + offset, last * si + offset + 1, si))
    return tuple(from_slices), tuple(to_slices)


def conv_nd(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Grouped N-d cross-correlation, float64. Returns (N, O, *out_spatial)."""
    x, w = _check_input(x, w, groups, transposed=False)
    nd, k, s, d, pads, out_sp = _conv_geometry(x, w, stride, padding, dilation)
    N, C = x.shape[:2]
    O = w.shape[0]
    G = groups
    Cg, Og = C // G, O // G
    xg = x.reshape((N, G, Cg) + x.shape[2:])
    wg = w.reshape((G, Og, Cg) + tuple(k))
    y = np.zeros((N, G, Og) + out_sp, dtype=np.float64)
    for kk in np.ndindex(*k):                      # each tap adds its term to every output it reaches
        slices = _tap_slices(kk, s, d, pads, out_sp, x.shape[2:])
        if slices is None:
            continue
        p, i = slices
        # (N, G, Cg, *positions) x (G, Og, Cg) -> (N, G, Og, *positions)
        y[(Ellipsis,) + p] += np.einsum("ngc...,goc->ngo...", xg[(Ellipsis,) + i], wg[(Ellipsis,) + kk])
    y = y.reshape((N, O) + out_sp)
    if b is not None:
        y += np.asarray(b, dtype=np.float64).reshape((1, O) + (1,) * nd)
    return y


def conv_nd_vjp(g, x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Vector-Jacobian product of :func:`conv_nd`: returns (grad_x, grad_w, grad_b or None)."""
    x, w = _check_input(x, w, groups, transposed=False)
    nd, k, s, d, pads, out_sp = _conv_geometry(x, w, stride, padding, dilation)
    g = np.asarray(g, dtype=np.float64)
    N, C = x.shape[:2]
    O = w.shape[0]
    if g.shape != (N, O) + out_sp:
        raise ValueError(f"oracle: upstream grad shape {g.shape}, expected {(N, O) + out_sp}")
    G = groups
    Cg, Og = C // G, O // G
    xg = x.reshape((N, G, Cg) + x.shape[2:])
    wg = w.reshape((G, Og, Cg) + tuple(k))
    gg = g.reshape((N, G, Og) + out_sp)
    gx = np.zeros_like(xg)
    gw = np.zeros_like(wg)
    axes = "xyz"[:nd]                              # einsum letters of the positions, summed over
    for kk in np.ndindex(*k):
        slices = _tap_slices(kk, s, d, pads, out_sp, x.shape[2:])
        if slices is None:
            continue
        p, i = slices
        gp = gg[(Ellipsis,) + p]  # (N, G, Og, *positions)
        gx[(Ellipsis,) + i] += np.einsum("ngo...,goc->ngc...", gp, wg[(Ellipsis,) + kk])
        gw[(Ellipsis,) + kk] += np.einsum(f"ngo{axes},ngc{axes}->goc", gp, xg[(Ellipsis,) + i])
    gb = None if b is None else g.sum(axis=(0,) + tuple(range(2, 2 + nd)))
    return gx.reshape(x.shape), gw.reshape(w.shape), gb


# ----------------------------------------------------------------------------- transposed

def _convT_geometry(x, w, stride, padding, output_padding, dilation):
    nd = x.ndim - 2
    k = w.shape[2:]
    s = _tup(stride, nd, "stride")
    d = _tup(dilation, nd, "dilation")
    op = _tup(output_padding, nd, "output_padding")
    pads = normalize_padding(padding, nd)
    out_sp = conv_transpose_output_shape(x.shape[2:], k, s, pads, op, d)
    if any(o < 1 for o in out_sp):
        raise ValueError(f"oracle: non-positive transposed-conv output size {out_sp}")
    return nd, k, s, d, pads, out_sp


def conv_transpose_nd(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """Grouped N-d transposed convolution by scatter, float64. Returns (N, O, *out_spatial)."""
    x, w = _check_input(x, w, groups, transposed=True)
    nd, k, s, d, pads, out_sp = _convT_geometry(x, w, stride, padding, output_padding, dilation)
    N, C = x.shape[:2]
    G = groups
    Cg = C // G
    Og = w.shape[1]
    O = Og * G
    xg = x.reshape((N, G, Cg) + x.shape[2:])
    wg = w.reshape((G, Cg, Og) + tuple(k))
    y = np.zeros((N, G, Og) + out_sp, dtype=np.float64)
    for kk in np.ndindex(*k):                      # each tap scatters every input it reaches
        slices = _tap_slices(kk, s, d, pads, x.shape[2:], out_sp)
        if slices is None:
            continue
        i, j = slices
        y[(Ellipsis,) + j] += np.einsum("ngc...,gco->ngo...", xg[(Ellipsis,) + i], wg[(Ellipsis,) + kk])
    y = y.reshape((N, O) + out_sp)
    if b is not None:
        y += np.asarray(b, dtype=np.float64).reshape((1, O) + (1,) * nd)
    return y


def conv_transpose_nd_vjp(g, x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """Vector-Jacobian product of :func:`conv_transpose_nd`: (grad_x, grad_w, grad_b or None)."""
    x, w = _check_input(x, w, groups, transposed=True)
    nd, k, s, d, pads, out_sp = _convT_geometry(x, w, stride, padding, output_padding, dilation)
    g = np.asarray(g, dtype=np.float64)
    N, C = x.shape[:2]
    G = groups
    Cg = C // G
    Og = w.shape[1]
    O = Og * G
    if g.shape != (N, O) + out_sp:
        raise ValueError(f"oracle: upstream grad shape {g.shape}, expected {(N, O) + out_sp}")
    xg = x.reshape((N, G, Cg) + x.shape[2:])
    wg = w.reshape((G, Cg, Og) + tuple(k))
    gg = g.reshape((N, G, Og) + out_sp)
    gx = np.zeros_like(xg)
    gw = np.zeros_like(wg)
    axes = "xyz"[:nd]                              # einsum letters of the positions, summed over
    for kk in np.ndindex(*k):
        slices = _tap_slices(kk, s, d, pads, x.shape[2:], out_sp)
        if slices is None:
            continue
        i, j = slices
        gj = gg[(Ellipsis,) + j]  # (N, G, Og, *positions)
        gx[(Ellipsis,) + i] += np.einsum("ngo...,gco->ngc...", gj, wg[(Ellipsis,) + kk])
        gw[(Ellipsis,) + kk] += np.einsum(f"ngc{axes},ngo{axes}->gco", xg[(Ellipsis,) + i], gj)
    gb = None if b is None else g.sum(axis=(0,) + tuple(range(2, 2 + nd)))
    return gx.reshape(x.shape), gw.reshape(w.shape), gb


# ----------------------------------------------------------------------------- 'same' resolution

def resolve_conv_padding(padding, in_spatial, k, stride, dilation):
    """Turn lucid-style conv padding (int, tuple, 'same', 'valid') into (lo, hi) pairs."""
    nd = len(in_spatial)
    k = _tup(k, nd, "kernel_size")
    s = _tup(stride, nd, "stride")
    d = _tup(dilation, nd, "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "same":
            return tuple(same_padding(i, kk, ss, dd) for i, kk, ss, dd in zip(in_spatial, k, s, d))
        raise ValueError(f"oracle: unknown padding {padding!r}")
    return normalize_padding(padding, nd)


def resolve_conv_transpose_padding(padding, output_padding, in_spatial, k, stride, dilation):
    """Turn transposed-conv padding (int, tuple, 'same') into ((lo, hi) pairs, output_padding)."""
    nd = len(in_spatial)
    k = _tup(k, nd, "kernel_size")
    s = _tup(stride, nd, "stride")
    d = _tup(dilation, nd, "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd, _tup(output_padding, nd, "output_padding")
        if padding == "same":
            res = [same_padding_transpose(i, kk, ss, dd) for i, kk, ss, dd in zip(in_spatial, k, s, d)]
            return tuple(r[0] for r in res), tuple(r[1] for r in res)
        raise ValueError(f"oracle: unknown padding {padding!r}")
    return normalize_padding(padding, nd), _tup(output_padding, nd, "output_padding")


__all__ += ["resolve_conv_padding", "resolve_conv_transpose_padding"]
