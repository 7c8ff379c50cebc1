"""Weights prepared once per weight version: a conv's packed weight blocks (packing.py) and Winograd's
transformed weights (winograd.py) are kept from call to call, and made again only when the weights
changed.

What a conv derives from its weight tensor goes to the graph's persistent memory (`Kept`,
`Lowering.persistent`; each concurrent call has its own, zeroed before its first call), with a copy
of the weights it was made from. The node's first kernel, `emit_weight_check`, compares the weights
with that copy, a chunk of `CHECK_CHUNK` elements per work item, bit for bit, storing the vectors
that differ: a chunk that differed, or that no call has made results from yet, has its byte in the
check's flags set (else cleared). The kernels preparing weights then run their work items only when
some chunk's byte is set (`WeightCheck.changed`; `when_changed` wraps their bodies); otherwise the
readers find the last call's results where they left them. A waiting kernel must separate the check
from the kernels reading its flags.

Guarantees:
- prepared weights always come from weights bit-equal to this call's: nothing is trusted but the
  comparison, so every way of changing a weight (an optimiser step on `p.data`, an in-place op,
  `load_state_dict`, `.data =`, other arrays in `params=`, a weight computed by the graph) is seen;
- a call with unchanged weights reads them and the copy once (O(weights), no transform, no
  gather); a call after a change also writes the copy, and makes the results again;
- weights the compile was told change on every call (a training step's parameters) have no check:
  their results are made on every call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import llvmlite.ir as ir

from ....ir.graph import Value
from ...irgen import counted_loop, element_type, i64, load_vector, store_vector
from ...lowering import Lowering
from .primitives import I8, Kept, any_byte_set, at_most

#: Weight elements one work item of the check compares (a multiple of every vector width).
CHECK_CHUNK = 4096


@dataclass(frozen=True)
class WeightCheck:
    """The check's state in the persistent memory: `chunks` bytes, 1 where this call's weights
    differ from the copy (or no call made results from them yet), then `chunks` bytes, 1 once a
    call has."""

    flags: Kept
    chunks: int

    def changed(self, k) -> ir.Value:
        """i1: this call's weights are not the ones the kept results were made from."""
        return any_byte_set(k, k.persistent_pointer(self.flags.offset, I8), self.chunks)


def emit_weight_check(lowering: Lowering, w: Value) -> WeightCheck | None:
    """The kernel comparing `w` with its kept copy (see the module docstring), in one pass: each
    vector of the chunk is compared and, where it differs, stored into the copy. It waits for the
    kernels before it, so it is a node's first kernel, and the kernels reading its flags must come
    after a waiting kernel. None (no kernel: the weights are prepared on every call) for a parameter
    the lowering was told changes from call to call (`Lowering.changing_weights`: a training step's
    weights, whose check would find them changed each time, at the cost of reading them and their
    copy and writing the copy)."""
    if lowering.changes_from_call_to_call(w):
        return None
    element = element_type(w.dtype)
    lanes = lowering.target.lanes(w.dtype)
    size = int(w.type.size)
    chunks = math.ceil(size / CHECK_CHUNK)
    check = WeightCheck(Kept.reserve(lowering, 2 * chunks), chunks)
    copy = Kept.reserve(lowering, size * w.dtype.numpy.itemsize)
    bits = 8 * w.dtype.numpy.itemsize                         # compared as bits: a NaN equals itself

    def body(k, item):
        b = k.b
        source = b.bitcast(k.pointer(w, element), ir.IntType(bits).as_pointer())
        kept = k.persistent_pointer(copy.offset, ir.IntType(bits))
        flags = k.persistent_pointer(check.flags.offset, I8)
        start = b.mul(item, i64(CHECK_CHUNK))
        differs = k.alloca(ir.IntType(1), name="differs")
        b.store(ir.Constant(ir.IntType(1), 0), differs)

        def compare_and_copy(at, width):
            value = _load(b, source, at, width)
            changed = b.icmp_unsigned("!=", b.bitcast(b.xor(value, _load(b, kept, at, width)), ir.IntType(bits * width)),
                                      ir.Constant(ir.IntType(bits * width), 0))
            with b.if_then(changed):
                _store(b, value, kept, at)
                b.store(changed, differs)

        _each_element(b, start, at_most(b, b.sub(i64(size), start), CHECK_CHUNK), lanes, compare_and_copy)
        made = b.gep(flags, [b.add(item, i64(chunks))])          # the chunk's results were made before
        changed = b.or_(b.load(differs), b.icmp_unsigned("==", b.load(made), ir.Constant(I8, 0)))
        b.store(ir.Constant(I8, 1), made)
        b.store(b.zext(changed, I8), b.gep(flags, [item]))

    lowering.kernel("weights_check", chunks, body, moves_data=True)
    return check


def when_changed(check: WeightCheck | None, body):
    """A kernel body running `body(k, item)` only when `check` saw the weights change (always
    without a check)."""
    if check is None:
        return body

    def guarded(k, item):
        with k.b.if_then(check.changed(k)):
            body(k, item)
    return guarded


def _each_element(b: ir.IRBuilder, start, count, lanes: int, visit) -> None:
    """visit(at, lanes) for each whole vector of elements [start, start + count), then visit(at, 1)
    for each element left."""
    vectors = b.udiv(count, i64(lanes))
    with counted_loop(b, vectors, name="v") as v:
        visit(b.add(start, b.mul(v, i64(lanes))), lanes)
    with counted_loop(b, count, b.mul(vectors, i64(lanes)), name="e") as e:
        visit(b.add(start, e), 1)


def _load(b: ir.IRBuilder, base, at, width: int):
    return b.load(b.gep(base, [at])) if width == 1 else load_vector(b, base, at, width)


def _store(b: ir.IRBuilder, value, base, at) -> None:
    if isinstance(value.type, ir.VectorType):
        store_vector(b, value, base, at)
    else:
        b.store(value, b.gep(base, [at]))
