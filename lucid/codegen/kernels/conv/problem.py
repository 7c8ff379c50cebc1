"""A convolution as every conv algorithm sees it: the node (`ConvProblem`, with the elementwise
`Epilogue` fused behind it), its sizes as 3-D (`Geometry`), how the weight tensor is read
(`WeightLayout`), the kernel taps, and the register tile's shape (`Blocking`, `choose_blocking`)."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from ....ir.graph import Value
from ...lowering import Lowering


def to_3d(values, fill) -> tuple:
    """`values` (one per spatial axis) as three, missing leading axes `fill`."""
    values = tuple(values)
    return (fill,) * (3 - len(values)) + values


@dataclass(frozen=True)
class Geometry:
    """A convolution's sizes as 3-D: input (N, C, in_sp), G groups of ICg -> OCg channels."""

    n: int
    groups: int
    icg: int
    ocg: int
    in_sp: tuple
    kernel: tuple
    stride: tuple
    dilation: tuple
    pad_lo: tuple


@dataclass(frozen=True)
class Blocking:
    lanes: int        # elements per vector
    vectors: int      # vectors of output channels per tile
    points: int       # output points per tile

    @property
    def width(self) -> int:
        return self.lanes * self.vectors


#: Most output points in a register tile (with one vector of channels a tile could hold more, but its
#: loads would outnumber its FMAs).
MOST_POINTS = 14


def choose_blocking(ocg: int, points_available: int, lowering: Lowering, dtype) -> Blocking:
    """Vectors of output channels (1 or 2) and points per tile: points x vectors accumulators, one
    register per weight vector and one for the broadcast input value fit the register file (32
    vector registers with AVX-512, else 16). Tiles of a row are balanced."""
    lanes = lowering.target.lanes(dtype)
    while lanes > 4 and lanes // 2 >= ocg:
        lanes //= 2
    vectors = 2 if ocg > lanes else 1
    registers = 32 if lowering.target.vector_floats == 16 else 16
    most = max(1, min((registers - vectors - 2) // vectors, MOST_POINTS))
    tiles = math.ceil(max(points_available, 1) / most)
    return Blocking(lanes, vectors, math.ceil(max(points_available, 1) / tiles))     # balanced tiles


def geometry_of(x: Value, kernel: tuple, attrs: dict, groups: int, icg: int, ocg: int) -> Geometry:
    """The geometry of a conv-like node with input `x`, `kernel` and the node's `attrs`."""
    return Geometry(x.shape[0], groups, icg, ocg, to_3d(x.shape[2:], 1), to_3d(kernel, 1),
                    to_3d(attrs["stride"], 1), to_3d(attrs["dilation"], 1),
                    to_3d(tuple(lo for lo, _ in attrs["padding"]), 0))


@dataclass(frozen=True)
class WeightLayout:
    """How the weight tensor is read: element (g, oc, ic, tap) is at g*sg + oc*soc + ic*sic + taps[t]."""

    sg: int
    soc: int
    sic: int
    taps: tuple          # linear kernel offsets of the taps, in packing order


@dataclass(frozen=True)
class Epilogue:
    """Elementwise nodes applied to each convolution output element before it is stored: `nodes`
    read the convolution's value `source` and other operands; the last one's value goes to `output`."""

    nodes: tuple
    source: Value
    output: Value


@dataclass(frozen=True)
class ConvProblem:
    """A conv or conv_transpose node as the algorithms see it: input `x` (N, groups * icg, ...),
    output `y`, geometry `g`, and where weight element (g, oc, ic, tap) of `w` lives (`weights`,
    taps in `kernel_taps(g.kernel)` order)."""

    x: Value
    w: Value
    bias: Value | None
    y: Value
    g: Geometry
    weights: WeightLayout
    epilogue: Epilogue | None
    transposed: bool = False

    def weights_of(self, taps: list) -> WeightLayout:
        """`weights` reading only the kernel offsets `taps` (a, b, c), in that order."""
        w = self.weights
        return WeightLayout(w.sg, w.soc, w.sic, tuple(w.taps[i] for i in linear_taps(self.g.kernel, taps)))


def kernel_taps(kernel: tuple) -> list:
    """Every kernel offset (a, b, c), row-major."""
    return list(itertools.product(*(range(k) for k in kernel)))


def linear_taps(kernel: tuple, taps: list):
    """The row-major linear index of each kernel offset (a, b, c) of `taps`."""
    return [(a * kernel[1] + b) * kernel[2] + c for a, b, c in taps]


def oc_blocks(g: Geometry, block: Blocking) -> int:
    """Blocks of `block.width` output channels per group."""
    return math.ceil(g.ocg / block.width)
