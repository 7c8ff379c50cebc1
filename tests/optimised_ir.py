"""For tests of what LLVM makes of the IR lucid emits (vectorised loops, masked tails): a function over
two float arrays to write a loop in, and a module as the JIT's level-3 optimisation leaves it
(`compile_worker.optimised_module`, the code path of every kernel)."""
from __future__ import annotations

import llvmlite.ir as ir

from lucid.codegen.compile_worker import optimised_module
from lucid.codegen.irgen import F32, I64
from lucid.codegen.target import host


def array_function(module_name: str, name: str) -> tuple:
    """(module, builder at its entry, source, target, n) of `void name(float* source, float* target,
    i64 n)` in a new module; the pointers are noalias, as a kernel's buffers are to LLVM."""
    module = ir.Module(module_name)
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), [F32.as_pointer()] * 2 + [I64]), name)
    source, target, n = function.args
    for pointer in (source, target):
        pointer.add_attribute("noalias")
    return module, ir.IRBuilder(function.append_basic_block()), source, target, n


def optimised_ir(module: ir.Module) -> str:
    """`module` as the JIT optimises it for this host at level 3, as LLVM text."""
    return str(optimised_module(module, host(), 3))
