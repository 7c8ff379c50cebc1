"""For tests of what LLVM makes of the IR lucid emits (vectorised loops, masked tails): a function over
two float arrays to write a loop in, and a module as the JIT's level-3 pass pipeline leaves it."""
from __future__ import annotations

import llvmlite.binding as llvm
import llvmlite.ir as ir

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
    machine = host().machine(3)
    parsed = llvm.parse_assembly(str(module))
    parsed.triple, parsed.data_layout = machine.triple, str(machine.target_data)
    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    tuning.loop_vectorization = tuning.slp_vectorization = True
    builder = llvm.create_pass_builder(machine, tuning)
    builder.getModulePassManager().run(parsed, builder)
    return str(parsed)
