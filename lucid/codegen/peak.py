"""The machine's peak float32 FMA throughput, measured with a generated loop (for "% of peak").

The loop keeps `CHAINS` independent vector FMA chains in registers, at the target's widest vector,
so it runs at the core's FMA issue rate; `peak_gflops(threads)` times it on that many threads at
once (through the same entry point as compiled graphs) and returns the best of a few runs.
"""
from __future__ import annotations

import ctypes
import time

import llvmlite.ir as ir

from .irgen import F32, I64, KERNEL_TYPE, i64, intrinsic, splat
from .jit import NativeCode, compile_module
from .lowering import Kernel
from .parallel import emit_entry
from .target import host

CHAINS = 12
ITEMS = 64                     # work items, shared between the threads like any kernel's
ITERATIONS_PER_ITEM = 125_000  # of the FMA loop


def _module(lanes: int) -> ir.Module:
    module = ir.Module(name="peak")
    vtype = ir.VectorType(F32, lanes)
    fma = intrinsic(module, f"llvm.fma.v{lanes}f32", vtype, [vtype] * 3)
    kernel = ir.Function(module, KERNEL_TYPE, "k0_peak")
    b = ir.IRBuilder(kernel.append_basic_block("entry"))
    sink = b.bitcast(b.load(b.gep(kernel.args[0], [b.load(kernel.args[1])])), vtype.as_pointer())
    seed = b.load(sink, align=4)                     # unknown to the compiler: nothing folds
    iterations = b.mul(b.sub(kernel.args[3], kernel.args[2]), i64(ITERATIONS_PER_ITEM))
    a, c = b.fmul(seed, splat(b, ir.Constant(F32, 0.5), lanes)), b.fadd(seed, splat(b, ir.Constant(F32, 1e-3), lanes))
    start = b.block
    loop = b.append_basic_block("loop")
    done = b.append_basic_block("done")
    b.branch(loop)
    b.position_at_end(loop)
    index = b.phi(I64)
    index.add_incoming(i64(0), start)
    chains = [b.phi(vtype) for _ in range(CHAINS)]      # independent chains hide the FMA latency
    updated = [b.call(fma, [chain, a, c]) for chain in chains]
    for chain, value in zip(chains, updated):
        chain.add_incoming(seed, start)
        chain.add_incoming(value, loop)
    following = b.add(index, i64(1))
    index.add_incoming(following, loop)
    b.cbranch(b.icmp_signed("<", following, iterations), loop, done)
    b.position_at_end(done)
    total = updated[0]
    for value in updated[1:]:
        total = b.fadd(total, value)
    b.store(total, sink, align=4)
    b.ret_void()
    emit_entry(module, [Kernel("k0_peak", ITEMS, (0,))])
    return module


def peak_gflops(threads: int = 1, repeats: int = 3) -> float:
    """Float32 GFLOP/s of `threads` cores running FMAs flat out."""
    target = host()
    lanes = target.vector_floats
    native = NativeCode([compile_module(_module(lanes), target)], target)
    run = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(native.address("lucid_run"))
    sink = (ctypes.c_float * lanes)()
    table = (ctypes.c_void_p * 1)(ctypes.cast(sink, ctypes.c_void_p))
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run(ctypes.cast(table, ctypes.c_void_p), threads)
        best = min(best, time.perf_counter() - started)
    return 2 * CHAINS * lanes * ITERATIONS_PER_ITEM * ITEMS / best / 1e9
