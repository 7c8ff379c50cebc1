"""A convolution as every conv algorithm sees it: the node (`ConvProblem`, with the elementwise
`Epilogue` fused behind it), its sizes as 3-D (`Geometry`), how the weight tensor is read
(`WeightLayout`), the kernel taps, and the register tile's shape (`Blocking`, `choose_blocking`)."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from ....ir import symbolic
from ....ir.graph import Value
from ...cpu_model import CpuModel
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


#: Most output points in a register tile (with one vector of channels a tile could hold more, but
#: longer rows are rare and its loads already match its FMAs). Only one-vector tiles on a CPU with 32
#: vector registers reach it (16 output channels with AVX-512): 16 rather than 14 lets a 32^3
#: Winograd item's 16 points be one tile instead of two of 8 (8 accumulators, just the FMA latency
#: times the pipes): UNet3D's inference 4.5% faster, its training step 3%, BasicUNet's and
#: DynUNet's inference 1.5-2% (fresh processes alternating; 20 and 24 measured as 16).
MOST_POINTS = 16


def choose_blocking(ocg: int, points_available: int, lowering: Lowering, dtype) -> Blocking:
    """The register tile of a layer with `ocg` output channels per group and rows of
    `points_available` output points, for the target's CPU model: the vector width (the widest, or
    half of it) and vectors of output channels per tile (1 when one vector holds them all, else 2,
    or 3 when they fill more than two) whose tile `tile_rate` rates fastest (on a tie: not 3 vectors,
    then fewer blocks of output channels, then wider vectors); as many points as the registers hold
    (`most_points`), tiles of a row balanced. Three vectors pay where two would leave much of the
    last block padding: a stem's 24 channels are one block of 24, not 32 with 8 of zeros. Lanes and
    vectors depend on `ocg` and the target only, so every kernel of a layer shares them. For rows of
    a symbolic length, the most points (`tile.row_tiles` balances each row at run time)."""
    model, itemsize = lowering.target.model, dtype.numpy.itemsize
    widest = lowering.target.lanes(dtype)
    while widest > 4 and widest // 2 >= ocg:
        widest //= 2
    candidates = [widest] + ([widest // 2] if widest >= 8 else [])
    shapes = [(lanes, vectors) for lanes in candidates
              for vectors in ((1,) if ocg <= lanes else (2, 3) if ocg > 2 * lanes else (2,))]
    lanes, vectors = max(shapes, key=lambda shape: (tile_rate(model, ocg, *shape, itemsize), shape[1] != 3,
                                                    -math.ceil(ocg / (shape[0] * shape[1])), shape[0]))
    most = most_points(model, vectors)
    if symbolic.is_symbolic(points_available):
        return Blocking(lanes, vectors, most)
    tiles = math.ceil(max(points_available, 1) / most)
    return Blocking(lanes, vectors, math.ceil(max(points_available, 1) / tiles))     # balanced tiles


def most_points(model: CpuModel, vectors: int) -> int:
    """Points of a tile of `vectors` vectors of channels: points x vectors accumulators, one
    register per weight vector and one for the broadcast input value fit the register file."""
    return max(1, min((model.vector_registers - vectors - 2) // vectors, MOST_POINTS))


def tile_rate(model: CpuModel, ocg: int, lanes: int, vectors: int, itemsize: int) -> float:
    """Output-channel FMAs (on real channels, not the padding of the last block) per cycle of a
    register tile of `vectors` vectors of `lanes` elements and `most_points` points, on `model`: each
    step (one input channel and tap) issues vectors x points FMAs and vectors + points loads (the
    weights and the broadcast inputs), each taking `model.slots` pipe cycles, and no accumulator can
    take a step sooner than the FMA latency after its last."""
    points = most_points(model, vectors)
    cycles = step_cycles(model, model.slots(lanes * itemsize // 4), points, vectors)
    width = lanes * vectors
    return points * width * ocg / (math.ceil(ocg / width) * width) / cycles


def step_cycles(model: CpuModel, slots: int, scalars: int, vectors: int) -> float:
    """Cycles of one step (a tap and input channel) of a register tile that broadcasts `scalars`
    values and loads `vectors` vectors, each op taking `slots` pipe cycles on `model`: its scalars x
    vectors FMAs, its scalars + vectors loads, and no accumulator stepping sooner than the FMA latency."""
    return max(scalars * vectors * slots / model.fma_pipes, (scalars + vectors) * slots / model.load_ports,
               model.fma_latency)


def at_least_all(sizes) -> int | symbolic.Expr:
    """A size at least each of `sizes` (ints or symbolic sizes, all >= 0) for every value of the
    symbols: their max when they are ints, else the largest where the symbols' ranges decide which
    is, or else their sum."""
    sizes = list(sizes)
    largest = sizes[0]
    for size in sizes[1:]:
        if not symbolic.is_symbolic(size - largest):
            largest = largest + max(size - largest, 0)
            continue
        low, high = symbolic.bounds(size - largest)
        largest = largest if high <= 0 else size if low >= 0 else largest + size
    return largest


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
class Prologue:
    """Nodes computing a convolution's input from other values, fused in front of the conv: an
    elementwise tree (a norm's normalize and activation) or a concatenation along the channels,
    computed as the input is packed: the last node's value is the convolution's input, which is
    never stored."""

    nodes: tuple

    @property
    def output(self) -> Value:
        return self.nodes[-1].output

    @property
    def sources(self) -> tuple | None:
        """The values a node joining them along the channels (`joins_channels`: a concatenation)
        puts one after the other, in order; None for an elementwise tree."""
        first = self.nodes[0]
        return tuple(first.inputs) if first.opdef.joins_channels(first.attrs) else None


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
    prologue: Prologue | None = None     # x is then its output: only the input packings read it
    statistics: object = None            # unpack.RowStatistics: the stored output's rows' sums

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
