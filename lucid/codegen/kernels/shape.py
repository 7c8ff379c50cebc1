"""Data-movement kernels: reshape, permute, broadcast_to, slice, pad, concat, one_hot.

Almost everything here is one generic strided copy,
    dst[dst_offset + sum_d i_d * dst_stride_d] = src[src_offset + sum_d i_d * src_stride_d]
over an index space `shape`, plus a fill kernel:
- reshape copies contiguously (the memory planner aliases every reshape that is not a graph output,
  so only those reach codegen);
- permute, broadcast_to and slice read the input with other strides (permuted, 0 along broadcast
  axes, scaled by the step and offset by the start);
- pad fills the output with the padding value, then copies the input into the strided positions;
- concat copies each input into its block of the output (all in one kernel: the blocks are
  disjoint), converting to the promoted dtype.
`one_hot` writes each row directly; an index outside [0, num_classes) gives a row of zeros (the
NumPy reference raises instead; native code must not fail or write out of bounds).

Size-1 axes are dropped and adjacent axes that step alike in source and destination are merged
before the kernel is built. Work items are (block of rows, chunk of the innermost axis), see
`RowChunks`; the innermost loop is the destination's innermost axis, so stores are contiguous.
When that axis reads the source with a large stride while another axis reads it contiguously (a
transpose), the copy goes through tiles of TILE x TILE elements so both sides stay in cache.

Every lowering here takes symbolic sizes: shapes, strides, offsets and item counts are then sizes
computed per call (`KernelBuilder.size`); a symbolic copy is never tiled, and a row of symbolic
length is cut in chunks of CHUNK (`RowChunks`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import llvmlite.ir as ir
import numpy as np

from ...ir import symbolic
from ...ir.graph import Node, Value
from ..irgen import I8, counted_loop, element_type, i64, linear_index, unravel
from ..lowering import Lowering, lowers
from .elementwise import CHUNK, broadcast_strides, contiguous_strides, simplify
from .scalar import Scalars, convert

TILE = 32


# ---------------------------------------------------------------------------------------------
# Work items: rows x chunks


class RowChunks:
    """Work items over `rows` rows of `inner` elements: each item is a block of `group` whole rows
    (short rows) or one chunk of at most CHUNK elements of one row (long rows), so that every item
    has about CHUNK elements of work whatever the shape (symbolic rows: blocks of rows; a symbolic
    row length: chunks of it, one row per block)."""

    def __init__(self, rows, inner, chunk: int = CHUNK):
        self.rows, self.inner, self.chunk = symbolic.as_size(rows), symbolic.as_size(inner), chunk
        if symbolic.is_symbolic(self.inner):
            self.chunks, self.group = symbolic.ceil_div(self.inner, chunk), 1
            self.items = self.rows * self.chunks
            return
        self.chunks = max(1, math.ceil(self.inner / chunk))
        self.group = max(1, chunk // max(self.inner, 1)) if self.chunks == 1 else 1
        if symbolic.is_symbolic(self.rows):
            self.items = 0 if self.inner == 0 else symbolic.ceil_div(self.rows, self.group) * self.chunks
        else:
            self.items = 0 if self.rows == 0 or self.inner == 0 else math.ceil(self.rows / self.group) * self.chunks

    def emit(self, k, item: ir.Value, row_body) -> None:
        """Call `row_body(row, start, stop)` for every row of `item` (i64 values), with the item's
        element range [start, stop) of that row."""
        b = k.b
        if symbolic.same(self.chunks, 1):
            start, stop = i64(0), k.extent(self.inner)
            first = item if self.group == 1 else b.mul(item, i64(self.group))
        else:
            block, chunk = b.udiv(item, k.extent(self.chunks)), b.urem(item, k.extent(self.chunks))
            first = block
            start = b.mul(chunk, i64(self.chunk))
            end = b.add(start, i64(self.chunk))
            stop = b.select(b.icmp_signed("<", end, k.extent(self.inner)), end, k.extent(self.inner))
        if self.group == 1:
            row_body(first, start, stop)
            return
        last = b.add(first, i64(self.group))
        last = b.select(b.icmp_signed("<", last, k.extent(self.rows)), last, k.extent(self.rows))
        with counted_loop(b, last, first, name="row") as row:
            row_body(row, start, stop)


def kernel_of_parts(lowering: Lowering, name: str, parts: list) -> None:
    """One kernel running several independent parts (each with `.items` and `.emit(k, item)`), the
    items of part p following those of part p - 1. Parts must write disjoint memory."""
    parts = [p for p in parts if symbolic.is_symbolic(p.items) or p.items > 0]
    if not parts:
        return
    if len(parts) == 1:
        lowering.kernel(name, parts[0].items, parts[0].emit)
        return

    def body(k, item):
        b, first = k.b, 0
        for part in parts:
            inside = b.and_(b.icmp_signed(">=", item, k.extent(first)),
                            b.icmp_signed("<", item, k.extent(first + part.items)))
            with b.if_then(inside):
                part.emit(k, b.sub(item, k.extent(first)))
            first += part.items

    lowering.kernel(name, sum(p.items for p in parts), body)


# ---------------------------------------------------------------------------------------------
# Loads and stores with dtype conversion


def load_register(k, value: Value, index: ir.Value) -> ir.Value:
    """Element `index` of `value` in registers (bool as i1)."""
    b = k.b
    loaded = b.load(b.gep(k.pointer(value), [index]))
    return b.icmp_unsigned("!=", loaded, ir.Constant(I8, 0)) if value.dtype.name == "bool" else loaded


def store_register(k, scalar: ir.Value, value: Value, index: ir.Value) -> None:
    b = k.b
    if value.dtype.name == "bool":
        scalar = b.zext(scalar, I8)
    b.store(scalar, b.gep(k.pointer(value), [index]))


def constant_of(dtype, number) -> ir.Constant:
    """`number` converted to `dtype` as np.full does, as a constant of the stored element type."""
    item = np.full((), number).astype(dtype.numpy).item()
    ty = element_type(dtype)
    return ir.Constant(ty, int(item) if isinstance(ty, ir.IntType) else float(item))


# ---------------------------------------------------------------------------------------------
# Strided copy and fill


@dataclass
class Copy:
    """dst[dst_offset + i . dst_strides] = src[src_offset + i . src_strides] for i over `shape`."""

    dst: Value
    src: Value
    shape: tuple
    dst_strides: tuple
    src_strides: tuple
    dst_offset: int = 0
    src_offset: int = 0

    def __post_init__(self):
        simple = simplify(self.shape, [self.dst_strides, self.src_strides])
        if simple is None:
            self.items = 0
            return
        self.shape, (self.dst_strides, self.src_strides) = simple[0], simple[1]
        self.tiled = self._tile_axis()
        if self.tiled is not None:
            a = self.tiled
            self.outer_axes = [d for d in range(len(self.shape) - 1) if d != a]
            self.tiles = (math.ceil(self.shape[a] / TILE), math.ceil(self.shape[-1] / TILE))
            outer = math.prod(self.shape[d] for d in self.outer_axes)
            self.items = outer * self.tiles[0] * self.tiles[1]
        else:
            self.rows = RowChunks(math.prod(self.shape[:-1]), self.shape[-1])
            self.items = self.rows.items

    def _tile_axis(self):
        """The axis to tile with the innermost one: the source's contiguous axis, when the innermost
        axis reads the source with a stride of at least a cache line and both axes are long."""
        if symbolic.is_symbolic((self.shape, self.src_strides)):
            return None
        if len(self.shape) < 2 or abs(self.src_strides[-1]) < 16 or self.shape[-1] < TILE:
            return None
        for d in range(len(self.shape) - 1):
            if self.src_strides[d] == 1 and self.shape[d] >= TILE:
                return d
        return None

    def move(self, k, dst_index, src_index) -> None:
        b = k.b
        if self.src.dtype == self.dst.dtype:
            b.store(b.load(b.gep(k.pointer(self.src), [src_index])), b.gep(k.pointer(self.dst), [dst_index]))
        else:
            s = Scalars(b, k.module)
            scalar = convert(s, load_register(k, self.src, src_index), self.src.dtype, self.dst.dtype)
            store_register(k, scalar, self.dst, dst_index)

    def emit(self, k, item: ir.Value) -> None:
        if self.tiled is not None:
            self._emit_tiled(k, item)
            return
        b, inner = k.b, len(self.shape) - 1

        def sizes(values):
            return [k.size(n) for n in values]

        def row_body(row, start, stop):
            outer = unravel(b, row, sizes(self.shape[:-1])) if inner else []
            dst_base = linear_index(b, outer, sizes(self.dst_strides[:-1]), k.size(self.dst_offset))
            src_base = linear_index(b, outer, sizes(self.src_strides[:-1]), k.size(self.src_offset))
            with counted_loop(b, stop, start, name="j") as j:
                self.move(k, linear_index(b, [j], sizes(self.dst_strides[-1:]), dst_base),
                          linear_index(b, [j], sizes(self.src_strides[-1:]), src_base))

        self.rows.emit(k, item, row_body)

    def _emit_tiled(self, k, item: ir.Value) -> None:
        """One TILE x TILE tile of (axis `tiled`, innermost axis) at one position of the other axes."""
        b, a, last = k.b, self.tiled, len(self.shape) - 1
        ta, tj = self.tiles
        tile_j, rest = b.urem(item, i64(tj)), b.udiv(item, i64(tj))
        tile_a, outer_flat = b.urem(rest, i64(ta)), b.udiv(rest, i64(ta))
        outer_shape = tuple(self.shape[d] for d in self.outer_axes)
        outer = unravel(b, outer_flat, outer_shape) if outer_shape else []
        dst_base = linear_index(b, outer, [self.dst_strides[d] for d in self.outer_axes], self.dst_offset)
        src_base = linear_index(b, outer, [self.src_strides[d] for d in self.outer_axes], self.src_offset)

        def bounds(tile, n):
            start = b.mul(tile, i64(TILE))
            end = b.add(start, i64(TILE))
            return start, b.select(b.icmp_signed("<", end, i64(n)), end, i64(n))

        a0, a1 = bounds(tile_a, self.shape[a])
        j0, j1 = bounds(tile_j, self.shape[last])
        with counted_loop(b, a1, a0, name="ta") as i:
            dst_row = linear_index(b, [i], [self.dst_strides[a]], dst_base)
            src_row = linear_index(b, [i], [self.src_strides[a]], src_base)
            with counted_loop(b, j1, j0, name="tj") as j:
                self.move(k, linear_index(b, [j], [self.dst_strides[last]], dst_row),
                          linear_index(b, [j], [self.src_strides[last]], src_row))


@dataclass
class Fill:
    """dst[i] = constant for i in [0, count) (a constant of dst's stored element type)."""

    dst: Value
    constant: ir.Constant
    count: object                   # an int or a symbolic size

    def __post_init__(self):
        self.rows = RowChunks(1, self.count)
        self.items = self.rows.items

    def emit(self, k, item: ir.Value) -> None:
        b = k.b

        def row_body(row, start, stop):
            with counted_loop(b, stop, start, name="j") as j:
                b.store(self.constant, b.gep(k.pointer(self.dst), [j]))

        self.rows.emit(k, item, row_body)


def contiguous_copy(node: Node, src: Value | None = None) -> Copy:
    """Copy of the node's input (same shape) into its output, element for element."""
    src = node.inputs[0] if src is None else src
    shape = node.output.shape
    strides = contiguous_strides(shape)
    return Copy(node.output, src, shape, strides, strides)


# ---------------------------------------------------------------------------------------------
# Lowerings


@lowers("reshape", run_time_extents=True)
def lower_reshape(lowering: Lowering, node: Node) -> None:
    n = node.output.type.size
    kernel_of_parts(lowering, "reshape", [Copy(node.output, node.inputs[0], (n,), (1,), (1,))])


@lowers("permute", run_time_extents=True)
def lower_permute(lowering: Lowering, node: Node) -> None:
    x, y = node.inputs[0], node.output
    own = contiguous_strides(x.shape)
    src = tuple(own[p] for p in node.attrs["perm"])
    kernel_of_parts(lowering, "permute", [Copy(y, x, y.shape, contiguous_strides(y.shape), src)])


@lowers("broadcast_to", run_time_extents=True)
def lower_broadcast_to(lowering: Lowering, node: Node) -> None:
    x, y = node.inputs[0], node.output
    src = broadcast_strides(x.shape, y.shape)
    kernel_of_parts(lowering, "broadcast_to", [Copy(y, x, y.shape, contiguous_strides(y.shape), src)])


@lowers("slice", run_time_extents=True)
def lower_slice(lowering: Lowering, node: Node) -> None:
    x, y = node.inputs[0], node.output
    own = contiguous_strides(x.shape)
    offset = sum(a * s for a, s in zip(node.attrs["starts"], own))
    src = tuple(s * step for s, step in zip(own, node.attrs["steps"]))
    kernel_of_parts(lowering, "slice", [Copy(y, x, y.shape, contiguous_strides(y.shape), src, 0, offset)])


@lowers("pad", run_time_extents=True)
def lower_pad(lowering: Lowering, node: Node) -> None:
    x, y = node.inputs[0], node.output
    attrs = node.attrs
    own = contiguous_strides(y.shape)
    offset = sum(lo * s for lo, s in zip(attrs["lo"], own))
    dst = tuple(s * (gap + 1) for s, gap in zip(own, attrs["interior"]))
    padded = not symbolic.same(y.type.size, x.type.size) if y.type.is_symbolic else y.type.size > x.type.size
    if padded:                                 # some padding: fill it all first, then copy over it
        kernel_of_parts(lowering, "pad_fill", [Fill(y, constant_of(y.dtype, attrs["value"]), y.type.size)])
    kernel_of_parts(lowering, "pad", [Copy(y, x, x.shape, dst, contiguous_strides(x.shape), offset)])


@lowers("concat", run_time_extents=True)
def lower_concat(lowering: Lowering, node: Node) -> None:
    y, axis = node.output, node.attrs["axis"]
    own = contiguous_strides(y.shape)
    parts, offset = [], 0
    for x in node.inputs:
        parts.append(Copy(y, x, x.shape, own, contiguous_strides(x.shape), offset * own[axis]))
        offset += x.shape[axis]
    kernel_of_parts(lowering, "concat", parts)


@dataclass
class OneHot:
    """y[r, j] = (x[r] == j) for each row r of the flattened indices; an out-of-range index gives a
    row of zeros."""

    x: Value
    y: Value
    classes: int

    def __post_init__(self):
        self.rows = RowChunks(self.x.type.size, self.classes)
        self.items = self.rows.items

    def emit(self, k, item: ir.Value) -> None:
        b = k.b
        ty = k.pointer(self.y).type.pointee
        one, zero = ir.Constant(ty, 1.0), ir.Constant(ty, 0.0)

        def row_body(row, start, stop):
            index = b.load(b.gep(k.pointer(self.x), [row]))
            base = b.mul(row, i64(self.classes))
            with counted_loop(b, stop, start, name="j") as j:
                b.store(b.select(b.icmp_signed("==", index, j), one, zero), b.gep(k.pointer(self.y), [b.add(base, j)]))

        self.rows.emit(k, item, row_body)


@lowers("one_hot", run_time_extents=True)
def lower_one_hot(lowering: Lowering, node: Node) -> None:
    kernel_of_parts(lowering, "one_hot", [OneHot(node.inputs[0], node.output, node.attrs["num_classes"])])
