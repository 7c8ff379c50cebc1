"""The machine lucid generates code for, as LLVM sees it.

By default that is the host: its CPU name and feature string come from LLVM, and the widest float
vector follows from the features (16 lanes with AVX-512F, 8 with AVX, else 4: every x86-64 has SSE2).
Nothing assumes AVX-512. What the code generator assumes about the core beyond that (FMA pipes and
their width, registers, caches) is its `model` (`cpu_model.py`). `LUCID_CPU` (an LLVM CPU name such
as `x86-64-v3`) and `LUCID_CPU_FEATURES` (an LLVM feature string) override the host, e.g. to check
the AVX2 code path on an AVX-512 machine.
The fingerprint of the target is part of every disk-cache key. A `pic` target (position-independent
code, for the shared libraries `lucid.export` writes) has its own fingerprint, so its objects never
mix with the JIT's. `cores` (the host's: those this process may use) sizes some work splits, such as
the smallest layer Winograd takes.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import llvmlite.binding as llvm

from .cpu_model import CpuModel, model_of, widest_floats


@dataclass(frozen=True)
class Target:
    triple: str
    cpu: str
    features: str
    pic: bool = False
    cores: int = 1          # cores the code may run on (some work splits depend on it)

    @property
    def model(self) -> CpuModel:
        """What the code generator's choices assume about one core of this target."""
        return model_of(self.cpu, self.features)

    @property
    def vector_floats(self) -> int:
        """Lanes of the widest float32 vector register this target has."""
        return widest_floats(self.cpu, self.features)

    def lanes(self, dtype) -> int:
        """Elements of `dtype` (a lucid DType) in the widest float vector register."""
        return self.vector_floats * 4 // dtype.numpy.itemsize

    @property
    def fingerprint(self) -> str:
        return f"{self.triple}|{self.cpu}|{self.features}|{self.cores}" + ("|pic" if self.pic else "")

    def machine(self, level: int = 3) -> llvm.TargetMachine:
        """A new target machine generating code at optimisation `level` (0..3; a JIT engine takes
        ownership of the one it is given)."""
        _initialise()
        return llvm.Target.from_triple(self.triple).create_target_machine(
            cpu=self.cpu, features=self.features, opt=level, reloc="pic" if self.pic else "default",
            codemodel="default" if self.pic else "jitdefault")


@functools.cache
def _initialise() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    # The loop vectoriser's interleaved-access groups are off: with them, LLVM 22 aborts the process
    # (SelectionDAGBuilder::setValue, "Already set a value for this node") on the AVX2 code of a direct
    # conv's output unpack at 8x8 with a relu or sigmoid epilogue. The kernels lucid writes as vectors
    # (the conv tiles) do not use them; of the 744 kernels of the three example networks' training and
    # inference graphs, 21 small strided reductions compile differently without them.
    llvm.set_option("", "-enable-interleaved-mem-accesses=0")


def host() -> Target:
    """The target to compile for: the host, unless LUCID_CPU / LUCID_CPU_FEATURES say otherwise."""
    _initialise()
    cpu = os.environ.get("LUCID_CPU") or llvm.get_host_cpu_name()
    features = os.environ.get("LUCID_CPU_FEATURES")
    if features is None:
        features = "" if os.environ.get("LUCID_CPU") else llvm.get_host_cpu_features().flatten()
    return Target(llvm.get_process_triple(), cpu, features, cores=available_cores())


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
