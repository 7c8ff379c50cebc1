"""From LLVM modules to callable native code, and the disk cache that makes that a one-time cost.

Object code is cached per module: `objects(modules, target)` returns the object code of each
(name, LLVM text) module, reading it from the cache when present and intact, else compiling it (LLVM
O3 with loop and SLP vectorisation) — the missing ones one after the other, each in its own LLVM
context (threads would not help: llvmlite runs one compilation at a time per process; 40 modules took
28 s on one thread and 29 s on two) — and storing it for the next time. Modules named in `unoptimised` (a graph's entry
module: it only orders the kernels and hands out their work items, so its own speed is nothing next
to theirs) are compiled as written (O0 and fast instruction selection), about ten times cheaper than
at O3. Kernel modules are named by a hash of their code, so a kernel shared by several graphs is
compiled once (`build.py` keeps, beside them, each graph's manifest: a process that meets a known
graph loads its objects without lowering or compiling anything). `NativeCode(objects)` links object
code in one MCJIT engine. `COUNTERS["compiled"]` counts LLVM compilations in this process (tests
assert a warm cache does none).

Object names are keys of the code generator's source hash (`cache.code_fingerprint()`), the LLVM
version, the target's fingerprint, the optimisation level and the module's text, so a changed lucid
or LLVM never reads what another one wrote. How entries are stored and verified before use is
`cache.py`'s part; an unwritable cache only costs compilations.
"""
from __future__ import annotations

from collections.abc import Collection

import llvmlite.binding as llvm

from .cache import cache_key, code_fingerprint, load_object, write_object
from .target import Target

COUNTERS = {"compiled": 0, "loaded": 0}


# ---------------------------------------------------------------------------------------------
# Object code


def objects(modules: list[tuple[str, str]], target: Target,
            unoptimised: Collection[str] = ()) -> list[tuple[str, bytes]]:
    """(cache name, object code) of each (name, LLVM text) module, from the cache or compiled; those
    named in `unoptimised` at O0."""
    levels = [0 if name in unoptimised else 3 for name, _ in modules]
    names = [_object_name(text, target, level) for (_, text), level in zip(modules, levels)]
    codes = [load_object(name) for name in names]
    missing = [k for k, code in enumerate(codes) if code is None]
    COUNTERS["loaded"] += len(modules) - len(missing)
    for k in missing:
        codes[k] = compile_module(modules[k][1], target, levels[k])
        write_object(names[k], codes[k])
    return list(zip(names, codes))


def compile_module(text, target: Target, level: int = 3) -> bytes:
    """Object code of one module (LLVM text or an llvmlite module), optimised at O`level` (3, with
    the vectorisers, or 0: as written)."""
    COUNTERS["compiled"] += 1
    machine = target.machine(level)
    parsed = llvm.parse_assembly(str(text), context=llvm.create_context())
    parsed.triple, parsed.data_layout = machine.triple, str(machine.target_data)
    parsed.verify()
    tuning = llvm.create_pipeline_tuning_options(speed_level=level)
    tuning.loop_vectorization = tuning.slp_vectorization = level == 3
    builder = llvm.create_pass_builder(machine, tuning)
    builder.getModulePassManager().run(parsed, builder)
    return machine.emit_object(parsed)


class NativeCode:
    """Object code linked in its own JIT engine (kept alive as long as this object)."""

    def __init__(self, codes: list[bytes], target: Target):
        machine = target.machine()
        empty = llvm.parse_assembly("")
        empty.triple = machine.triple
        self.engine = llvm.create_mcjit_compiler(empty, machine)
        for code in codes:
            self.engine.add_object_file(llvm.ObjectFileRef.from_data(code))
        self.engine.finalize_object()

    def address(self, name: str) -> int:
        address = self.engine.get_function_address(name)
        if not address:
            raise RuntimeError(f"codegen: the compiled object has no function {name!r}")
        return address


def _object_name(text: str, target: Target, level: int) -> str:
    llvm_version = ".".join(map(str, llvm.llvm_version_info))
    return f"{cache_key(code_fingerprint(), llvm_version, target.fingerprint, f'O{level}', text)}.o"
