"""The `random` operator: Philox4x32-10 on vectors of blocks, bit for bit the reference's numbers.

The stream is defined in `lucid/ir/ops/random.py` (element i is word i % 4 of the block i // 4). A
group is one vector of L consecutive blocks (L = the target's float32 lanes): the ten rounds run on
<L x i64> vectors holding the 32-bit counter words (see `_Stream`); the four result words, turned
into numbers, are interleaved into the 4L consecutive elements of the group with shuffles and stored
as one vector. The last group of the output may be partial: it goes through a stack buffer and a
short copy. A work item is ITEM_BLOCKS blocks. With AVX2 (8 lanes) the loop over a group of 32
float32 uniforms is about 230 instructions, some 7 per number.

Uniform numbers are exact conversions (as the reference's); normal numbers use LLVM's log, sqrt,
cos and sin in float64, so they agree with NumPy's to its last bits (libm's rounding aside).
"""
from __future__ import annotations

import math

import llvmlite.ir as ir

from ...ir import symbolic
from ...ir.graph import Node
from ...ir.ops.random import KEY_STEPS, MULTIPLIERS, ROUNDS, WORDS
from ..irgen import F32, F64, I32, I64, counted_loop, element_type, i64, intrinsic, splat, store_vector, vector_type
from ..lowering import KernelBuilder, Lowering, lowers

ITEM_BLOCKS = 1024          # blocks (4096 elements) per work item; a multiple of every vector width


class _Stream:
    """The loop-invariant words of one draw (key, the draw's counter words) and the rounds.

    Every 32-bit word is held in a 64-bit lane with its high half zero, so each round's 32 x 32 -> 64
    product is one `pmuludq`-style multiply and no lane is ever shuffled between rounds."""

    def __init__(self, k: KernelBuilder, node: Node, lanes: int):
        b, self.b, self.lanes = k.b, k.b, lanes
        self.wide = vector_type(I64, lanes)
        state = k.pointer(node.inputs[0])
        seed, counter = b.load(b.gep(state, [i64(0)])), b.load(b.gep(state, [i64(1)]))
        self.key = self.halves(seed)
        self.draw = [splat(b, word, lanes) for word in self.halves(b.add(counter, i64(node.attrs["draw"])))]

    def halves(self, value: ir.Value) -> list:
        """The low and high 32-bit words of an i64 (or of each lane of an <L x i64>), zero-extended."""
        def constant(v: int) -> ir.Constant:
            return ir.Constant(value.type, [v] * value.type.count if isinstance(value.type, ir.VectorType) else v)

        return [self.b.and_(value, constant(0xFFFFFFFF)), self.b.lshr(value, constant(32))]

    def words(self, first_block: ir.Value) -> list:
        """Philox4x32-10 of the L blocks from `first_block` (i64): four <L x i32> words."""
        b, lanes, wide = self.b, self.lanes, self.wide
        blocks = b.add(splat(b, first_block, lanes), ir.Constant(wide, list(range(lanes))))
        c = self.halves(blocks) + list(self.draw)
        keys = list(self.key)
        multipliers = [ir.Constant(wide, [m] * lanes) for m in MULTIPLIERS]
        for round_ in range(ROUNDS):
            if round_:
                keys = [b.and_(b.add(key, i64(step)), i64(0xFFFFFFFF)) for key, step in zip(keys, KEY_STEPS)]
            low0, high0 = self.halves(b.mul(c[0], multipliers[0]))
            low1, high1 = self.halves(b.mul(c[2], multipliers[1]))
            c = [b.xor(b.xor(high1, c[1]), splat(b, keys[0], lanes)), low1,
                 b.xor(b.xor(high0, c[3]), splat(b, keys[1], lanes)), low0]
        return [b.trunc(word, vector_type(I32, lanes)) for word in c]


def _uniform(b: ir.IRBuilder, word: ir.Value, element: ir.Type) -> ir.Value:
    """Words as uniform numbers in [0, 1): float32 (w >> 8) * 2^-24, float64 w * 2^-32 (exact)."""
    lanes = word.type.count
    if element == F32:
        scaled = b.uitofp(b.lshr(word, ir.Constant(word.type, [8] * lanes)), vector_type(F32, lanes))
        return b.fmul(scaled, ir.Constant(vector_type(F32, lanes), [2.0 ** -24] * lanes))
    return b.fmul(b.uitofp(word, vector_type(F64, lanes)), ir.Constant(vector_type(F64, lanes), [2.0 ** -32] * lanes))


def _normal(b: ir.IRBuilder, module: ir.Module, words: list, element: ir.Type) -> list:
    """Box-Muller on the word pairs (w0, w1), (w2, w3), in float64, rounded to `element`."""
    lanes = words[0].type.count
    vtype = vector_type(F64, lanes)

    def constant(value: float) -> ir.Constant:
        return ir.Constant(vtype, [value] * lanes)

    def call(name: str, x: ir.Value) -> ir.Value:
        return b.call(intrinsic(module, f"llvm.{name}.v{lanes}f64", vtype, [vtype]), [x])

    result = []
    for first, second in (words[0:2], words[2:4]):
        u = b.fmul(b.fadd(b.uitofp(first, vtype), constant(1.0)), constant(2.0 ** -32))
        radius = call("sqrt", b.fmul(constant(-2.0), call("log", u)))
        angle = b.fmul(b.fmul(b.uitofp(second, vtype), constant(2.0 ** -32)), constant(2.0 * math.pi))
        result += [b.fmul(radius, call("cos", angle)), b.fmul(radius, call("sin", angle))]
    return result if element == F64 else [b.fptrunc(z, vector_type(element, lanes)) for z in result]


def _interleaved(b: ir.IRBuilder, values: list) -> ir.Value:
    """The 4L elements of a group in order: element 4l + j is lane l of values[j]."""
    lanes = values[0].type.count
    pairs = ir.Constant(vector_type(I32, 2 * lanes), [lane + half * lanes for lane in range(lanes) for half in (0, 1)])
    low = b.shuffle_vector(values[0], values[1], pairs)          # w0[l], w1[l]
    high = b.shuffle_vector(values[2], values[3], pairs)         # w2[l], w3[l]
    order = [2 * lane + j if j < 2 else 2 * lanes + 2 * lane + j - 2 for lane in range(lanes) for j in range(WORDS)]
    return b.shuffle_vector(low, high, ir.Constant(vector_type(I32, WORDS * lanes), order))


@lowers("random", run_time_extents=True)
def lower_random(lowering: Lowering, node: Node) -> None:
    """The output's size may be symbolic: element i's number does not depend on the size."""
    out = node.output
    size, lanes = out.type.size, lowering.target.vector_floats
    element = element_type(out.dtype)
    blocks = symbolic.ceil_div(size, WORDS)
    group = WORDS * lanes                                  # elements per group of L blocks

    def body(k: KernelBuilder, item):
        b = k.b
        stream, y = _Stream(k, node, lanes), k.pointer(out)
        spill = k.alloca(vector_type(element, group))
        first = b.mul(item, i64(ITEM_BLOCKS))
        all_blocks, size_value = k.extent(blocks), k.extent(size)
        last = b.select(b.icmp_signed("<", b.add(first, i64(ITEM_BLOCKS)), all_blocks),
                        b.add(first, i64(ITEM_BLOCKS)), all_blocks)
        with counted_loop(b, last, first, step=lanes, name="block") as block:
            words = stream.words(block)
            values = ([_uniform(b, w, element) for w in words] if node.attrs["distribution"] == "uniform"
                      else _normal(b, k.module, words, element))
            numbers, start = _interleaved(b, values), b.mul(block, i64(WORDS))
            whole = b.icmp_signed("<=", b.add(start, i64(group)), size_value)
            with b.if_else(whole) as (full, partial):
                with full:
                    store_vector(b, numbers, y, start)
                with partial:
                    b.store(numbers, spill)
                    spilled = b.bitcast(spill, element.as_pointer())
                    with counted_loop(b, size_value, start, name="tail") as index:
                        b.store(b.load(b.gep(spilled, [b.sub(index, start)])), b.gep(y, [index]))

    lowering.kernel("random", symbolic.ceil_div(blocks, ITEM_BLOCKS), body)
