"""A module as the JIT's level-3 pass pipeline leaves it, as LLVM text: for tests of what LLVM makes of
the IR lucid emits (vectorised loops, masked tails)."""
from __future__ import annotations

import llvmlite.binding as llvm
import llvmlite.ir as ir

from lucid.codegen.target import host


def optimised_ir(module: ir.Module) -> str:
    machine = host().machine(3)
    parsed = llvm.parse_assembly(str(module))
    parsed.triple, parsed.data_layout = machine.triple, str(machine.target_data)
    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    tuning.loop_vectorization = tuning.slp_vectorization = True
    builder = llvm.create_pass_builder(machine, tuning)
    builder.getModulePassManager().run(parsed, builder)
    return str(parsed)
