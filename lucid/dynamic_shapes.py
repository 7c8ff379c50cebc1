"""Which input dimensions `lucid.compile` makes symbolic, so one compiled variant serves many sizes.

The rule: the batch axis (0) and the spatial axes (2 and after, of inputs of rank 3 or more) may be
symbolic; the channel axis (1) never is (a layer's weights fix it). A symbolic dimension is named
after its axis: `N` for the batch, `D, H, W` for the spatial axes of a 5-d input, `H, W` of a 4-d one,
`L` of a 3-d one. The same name in several inputs is one dimension (an image and its mask share
`N, D, H, W`; a call giving them different sizes is a ShapeError naming the dimension).
- `dynamic=True`: every such axis of every input, from the first call on (`all_axes`).
- automatic (the default): the axes whose size differed between two calls of the same ranks and
  dtypes (`varying_axes`); positions whose sizes were equal in every call seen share a dimension.
Ranges: the batch dimension's min is 1; a spatial dimension's min is the smallest size seen for it
(with `dynamic=True`, the first call's). Shape rules decide their questions at the min (see
`lucid.ir.symbolic`), so a model that needs a few voxels (pooling, a valid conv) traces; a call
below the min gets a variant of its own (static when automatic; with `dynamic=True`, a symbolic one
whose min is that size).
`fits` tells whether concrete input types are served by symbolic ones (before the constraints the
graph recorded, which the executable checks per call).
"""
from __future__ import annotations

from .ir import symbolic
from .ir.types import TensorType

_SPATIAL_NAMES = {3: ("L",), 4: ("H", "W"), 5: ("D", "H", "W")}


def may_vary(rank: int, axis: int) -> bool:
    """Whether the rule lets this axis be symbolic (the batch axis, or a spatial axis)."""
    return axis == 0 or (rank >= 3 and axis >= 2)


def axis_name(rank: int, axis: int) -> str:
    if axis == 0:
        return "N"
    names = _SPATIAL_NAMES.get(rank)
    return names[axis - 2] if names else f"S{axis}"


def all_axes(types: tuple) -> dict:
    """{(input, axis): dimension name} for every axis the rule lets vary."""
    return {(i, axis): axis_name(len(t.shape), axis)
            for i, t in enumerate(types) for axis in range(len(t.shape)) if may_vary(len(t.shape), axis)}


def same_signature(a: tuple, b: tuple) -> bool:
    """Whether two calls' input types have the same ranks and dtypes (so sizes alone differ)."""
    return len(a) == len(b) and all(len(x.shape) == len(y.shape) and x.dtype == y.dtype for x, y in zip(a, b))


def varying_axes(history: list) -> dict | None:
    """{(input, axis): dimension name} for the axes whose size differed across the calls in
    `history` (input types of one signature); positions with the same sizes in every call share a
    name. None when nothing varied or an axis the rule keeps static (channels) did."""
    first = history[0]
    sizes_of = {(i, axis): tuple(types[i].shape[axis] for types in history)
                for i, t in enumerate(first) for axis in range(len(t.shape))}
    varying = {position: sizes for position, sizes in sizes_of.items() if len(set(sizes)) > 1}
    if not varying or any(not may_vary(len(first[i].shape), axis) for i, axis in varying):
        return None
    names, taken = {}, {}
    for (i, axis), sizes in sorted(varying.items()):
        if sizes not in taken:
            base = axis_name(len(first[i].shape), axis)
            used = set(taken.values())
            taken[sizes] = next(name for name in [base] + [f"{base}{k}" for k in range(1, len(varying) + 1)]
                                if name not in used)
        names[(i, axis)] = taken[sizes]
    return names


def symbolic_types(types: tuple, axes: dict, history: list = ()) -> tuple:
    """`types` with the axes of `axes` ({(input, axis): name}) replaced by those dimensions, each
    with its min from the sizes in `types` and `history` (earlier calls' types; see above)."""
    smallest = {}
    for i, axis in axes:
        for seen in list(history) + [types]:
            size = 1 if axis == 0 else seen[i].shape[axis]
            smallest[axes[(i, axis)]] = min(smallest.get(axes[(i, axis)], size), size)
    dims = {name: symbolic.dim(name, min=smallest[name]) for name in set(axes.values())}
    return tuple(TensorType(tuple(dims[axes[(i, axis)]] if (i, axis) in axes else n for axis, n in enumerate(t.shape)),
                            t.dtype) for i, t in enumerate(types))


def fits(declared: tuple, types: tuple) -> bool:
    """Whether concrete `types` match `declared` (symbolic) ones: same ranks and dtypes, equal
    concrete sizes, one size per dimension name."""
    if not same_signature(declared, types):
        return False
    seen = {}
    for d, t in zip(declared, types):
        for want, have in zip(d.shape, t.shape):
            symbol = want.symbol if isinstance(want, symbolic.Expr) else None
            if symbol is None:
                if symbolic.is_symbolic(want) or want != have:
                    return False
            elif seen.setdefault(symbol.name, have) != have or have < symbol.min:
                return False
    return True
