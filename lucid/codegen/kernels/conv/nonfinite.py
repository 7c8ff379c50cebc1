"""Non-finite weights: where the kernels' zero padding would make NaN that the definition does not.

The kernels read zero-padded inputs, so outputs near a border multiply padding by weights. With
finite weights that adds zeros. With an infinite or NaN weight it adds 0 * inf = NaN, which is right
for a conv (PyTorch's conv multiplies its zero padding too) but wrong for a transposed conv (and so
for a conv's input gradient): that is the sum of the products that exist only, as in PyTorch and
the reference's scatter. Winograd's transforms, too, mix a non-finite weight into every output of a
tile.

So the kernel packing a weight also notes, per work item, whether the weights it packed are all
finite (`WeightFlags`: one byte per item, written whenever the item packs, so nothing needs
resetting; kept between calls with the packed weights, prepared.py). Readers
check every item's byte (`all_finite`, 8 bytes per load) once per work item or output row:
- a transposed conv whose weights are not all finite unpacks each output row as the exact sum over
  the products that exist (`ExactSum`, scalar loops), instead of reading the kernels' scratch;
- a Winograd work item whose weights are not all finite runs the direct tiles instead.
On finite weights this costs one vector add per packed weight vector and the flag reads.
"""
from __future__ import annotations

from dataclasses import dataclass

import llvmlite.ir as ir

from ....ir.graph import Value
from ...irgen import as_i64, counted_loop, element_type, i64
from ...lowering import Lowering
from .primitives import I8, Kept, any_byte_set, element_as, elementwise_at, region_pointer, sized, strided_offset
from .problem import ConvProblem, Geometry, Prologue, to_3d



@dataclass(frozen=True)
class WeightFlags:
    """One byte per work item of a weight-packing kernel, at `where` (a workspace offset, or a `Kept`
    one when the packing is kept between calls, prepared.py): 1 if the item's weights hold a NaN or
    an infinity, else 0."""

    where: object
    count: int

    @staticmethod
    def reserve(lowering: Lowering, count: int, kept: bool = False) -> "WeightFlags":
        return WeightFlags(Kept.reserve(lowering, max(count, 1)) if kept else lowering.scratch(max(count, 1)), count)

    def note(self, k, item, accumulated: ir.Value) -> None:
        """Write item `item`'s byte from `accumulated`, the sum of `finite_probe` of its weights."""
        b = k.b
        flag = b.zext(probed_not_finite(b, accumulated), I8)
        b.store(flag, b.gep(region_pointer(k, self.where, I8), [item]))

    def all_finite(self, k) -> ir.Value:
        """i1: no item noted a non-finite weight."""
        return k.b.not_(any_byte_set(k, region_pointer(k, self.where, I8), self.count))


def finite_probe(b: ir.IRBuilder, accumulated: ir.Value, value: ir.Value) -> ir.Value:
    """accumulated + value * 0: stays a (signed) zero while every value is finite, NaN after any
    infinity or NaN."""
    zero = ir.Constant(value.type, [0.0] * value.type.count if isinstance(value.type, ir.VectorType) else 0.0)
    return b.fadd(accumulated, b.fmul(value, zero))


def probed_not_finite(b: ir.IRBuilder, accumulated: ir.Value) -> ir.Value:
    """i1: some value `accumulated` (a sum of `finite_probe`s, a scalar or a vector) probed was a NaN
    or an infinity."""
    total = accumulated
    if isinstance(total.type, ir.VectorType):
        lanes = [b.extract_element(total, i64(lane)) for lane in range(total.type.count)]
        total = lanes[0]
        for lane in lanes[1:]:
            total = b.fadd(total, lane)
    return b.fcmp_unordered("uno", total, total)


@dataclass(frozen=True)
class ExactSum:
    """A transposed conv's output elements computed as the sum of the products that exist:
    y[n, oc, o] = sum over ic of the group and kernel taps t with o = i * stride - pad + t * dilation
    for an input position i, of x[n, ic, i] * w[ic, oc, t] (no bias), used when `flags` say a
    weight is not finite. With a `prologue`, x is its output, computed at each input element read."""

    x: Value
    w: Value
    g: Geometry
    flags: WeightFlags
    prologue: Prologue | None = None

    def value(self, k, n, oc, out: tuple) -> ir.Value:
        """The exact sum for output element (n, oc, *out) (out: d, h, w), in the output's dtype."""
        b, g = k.b, self.g
        element = element_type(self.x.dtype)
        xs = k.pointer(self.x) if self.prologue is None else None
        ws = k.pointer(self.w)
        acc = k.alloca(element, name="exact_sum")
        b.store(ir.Constant(element, 0.0), acc)
        grp, oc_in_group = b.udiv(oc, i64(g.ocg)), b.urem(oc, i64(g.ocg))
        kernel_strides = (g.kernel[1] * g.kernel[2], g.kernel[2], 1)
        in_sp, in_strides, plane = sized(k, (g.in_sp, (g.in_sp[1] * g.in_sp[2], g.in_sp[2], 1), _plane(g)))

        def input_at(x_index, position: tuple):
            if self.prologue is None:
                return b.load(b.gep(xs, [x_index]))
            if self.prologue.sources is None:
                return elementwise_at(k, self.prologue.nodes, self.x.shape, x_index, position, {})
            return _joined_at(k, self.prologue.sources, self.x.dtype, position, (x_index, plane), element)

        def axis(level: int, x_at, w_at, position: tuple) -> None:
            if level == 3:
                with counted_loop(b, g.icg, name="ic") as ic:
                    channel = b.add(b.mul(grp, i64(g.icg)), ic)
                    x_index = b.add(b.mul(b.add(b.mul(n, i64(self.x.shape[1])), channel), as_i64(plane)), x_at)
                    w_index = b.add(strided_offset(b, 0, (channel, oc_in_group), (g.ocg * _taps(g), _taps(g))), w_at)
                    product = b.fmul(input_at(x_index, (n, channel) + position), b.load(b.gep(ws, [w_index])))
                    b.store(b.fadd(b.load(acc), product), acc)
                return
            with counted_loop(b, g.kernel[level], name=f"t{level}") as t:
                reach = b.sub(b.add(out[level], i64(g.pad_lo[level])), b.mul(t, i64(g.dilation[level])))
                i = b.sdiv(reach, i64(g.stride[level])) if g.stride[level] > 1 else reach
                exists = b.and_(b.icmp_signed(">=", reach, i64(0)), b.icmp_signed("<", i, as_i64(in_sp[level])))
                if g.stride[level] > 1:
                    exists = b.and_(exists, b.icmp_signed("==", b.srem(reach, i64(g.stride[level])), i64(0)))
                with b.if_then(exists):
                    axis(level + 1, b.add(x_at, b.mul(i, as_i64(in_strides[level]))),
                         b.add(w_at, b.mul(t, i64(kernel_strides[level]))), position + (i,))

        axis(0, i64(0), i64(0), ())
        return b.load(acc)


def _joined_at(k, sources: tuple, dtype, position: tuple, flat: tuple, element):
    """The element (n, c, *spatial) of the concatenation of `sources` along the channels, of
    `dtype` (`flat`: its flat index there and the sources' plane size): read from the source holding
    channel c."""
    b = k.b
    n, c = position[:2]
    x_index, plane = flat
    channels = sum(source.shape[1] for source in sources)
    spatial = b.sub(x_index, b.mul(b.add(b.mul(n, i64(channels)), c), as_i64(plane)))
    value = k.alloca(element, name="joined")
    first = 0
    for source in sources:
        count = source.shape[1]
        inside = b.and_(b.icmp_unsigned(">=", c, i64(first)), b.icmp_unsigned("<", c, i64(first + count)))
        with b.if_then(inside):
            at = b.add(b.mul(b.add(b.mul(n, i64(count)), b.sub(c, i64(first))), as_i64(plane)), spatial)
            b.store(element_as(k, source, at, dtype), value)
        first += count
    return b.load(value)


def _plane(g: Geometry) -> int:
    return g.in_sp[0] * g.in_sp[1] * g.in_sp[2]


def _taps(g: Geometry) -> int:
    return g.kernel[0] * g.kernel[1] * g.kernel[2]


def exact_sum(problem: ConvProblem, flags: WeightFlags | None) -> ExactSum | None:
    """The exact sum of a transposed conv `problem`, None for a conv or without flags."""
    if not problem.transposed or flags is None:
        return None
    assert to_3d(problem.x.shape[2:], 1) == problem.g.in_sp
    return ExactSum(problem.x, problem.w, problem.g, flags, problem.prologue)
