"""What the code generator's choices assume about a CPU core, per CPU family, in one place.

`model_of(cpu, features)` maps an LLVM CPU name (`znver3`, `skylake-avx512`, `x86-64-v2`...) and
feature string to a `CpuModel`: the widest float vector its instructions have, the FMA pipes and the
floats each does per cycle (Zen 4 runs a 512-bit FMA as two 256-bit halves; Zen 5 and the Xeons with
AVX-512 at full width), the vector loads per cycle, the FMA latency, the vector registers (32 with
AVX-512, else 16). The conv kernels choose register tiles
(`conv/problem.choose_blocking`) and algorithms (`conv/winograd.py`) from it. Cache sizes are not
part of it: no choice reads them yet (Winograd's stack arrays sized to a 256 KiB L2 would turn
D-like layers direct on Haswell, which nothing here could measure). A CPU the table does not know gets a conservative model from its
features alone. Explicit features (`LUCID_CPU_FEATURES`) that switch an instruction set off (or on)
change the family's model (`znver4` with `-avx512f` has AVX2 vectors and 16 registers).

The numbers are from the vendors' optimisation manuals; only the ratios matter to the choices (FMA
floats per cycle against loads per cycle, against the latency; the transforms' cost against the
FLOPs they save).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

@dataclass(frozen=True)
class CpuModel:
    family: str
    widest_floats: int       # float32 lanes of the widest vector register (16 AVX-512, 8 AVX, 4 SSE)
    fma_pipes: int           # vector FMA (or, without FMA, multiply) instructions issued per cycle
    pipe_floats: int         # float32 lanes one pipe completes per cycle (wider vectors take several cycles)
    load_ports: int          # vector loads of up to `pipe_floats` lanes per cycle
    fma_latency: int         # cycles from an FMA to a dependent FMA
    vector_registers: int

    @property
    def flops_per_cycle(self) -> int:
        """Float32 FLOPs one core completes per cycle, running FMAs flat out (2 per lane)."""
        return 2 * self.fma_pipes * self.pipe_floats

    def slots(self, lanes: int) -> int:
        """Pipe cycles one instruction on `lanes` float32 lanes takes (2 for a 512-bit op on Zen 4)."""
        return max(1, -(-lanes // self.pipe_floats))


def _family(name, widest, pipes, pipe_floats, loads, latency) -> CpuModel:
    return CpuModel(name, widest, pipes, pipe_floats, loads, latency, 32 if widest == 16 else 16)


#: The families lucid knows: LLVM CPU names -> model.
_ZEN1 = _family("zen1", 8, 2, 4, 2, 5)              # 256-bit ops as two 128-bit halves
_ZEN2_3 = _family("zen2-3", 8, 2, 8, 2, 5)          # Zen 3 loads 3 per cycle, 2 of them 256-bit
_ZEN4 = _family("zen4", 16, 2, 8, 2, 4)            # 512-bit ops as two 256-bit halves
_ZEN5 = _family("zen5", 16, 2, 16, 2, 4)
_HASWELL = _family("haswell-skylake", 8, 2, 8, 2, 4)
_AVX_NO_FMA = _family("sandybridge", 8, 1, 8, 1, 5)  # a multiply and an add pipe
_XEON_AVX512 = _family("skylake-avx512", 16, 2, 16, 2, 4)
_ICELAKE_SERVER = _family("icelake-server", 16, 2, 16, 2, 4)
_SAPPHIRE = _family("sapphirerapids", 16, 2, 16, 2, 4)
_CLIENT_AVX512 = _family("icelake-client", 16, 1, 16, 2, 4)   # one 512-bit FMA pipe
_HYBRID = _family("alderlake", 8, 2, 8, 3, 4)      # AVX-512 fused off
_FAMILIES = {
    "znver1": _ZEN1, "znver2": _ZEN2_3, "znver3": _ZEN2_3, "znver4": _ZEN4, "znver5": _ZEN5,
    "haswell": _HASWELL, "broadwell": _HASWELL, "skylake": _HASWELL, "x86-64-v3": _HASWELL,
    "sandybridge": _AVX_NO_FMA, "ivybridge": _AVX_NO_FMA,
    "skylake-avx512": _XEON_AVX512, "cascadelake": _XEON_AVX512, "cooperlake": _XEON_AVX512,
    "icelake-server": _ICELAKE_SERVER,
    "sapphirerapids": _SAPPHIRE, "emeraldrapids": _SAPPHIRE, "graniterapids": _SAPPHIRE,
    "icelake-client": _CLIENT_AVX512, "tigerlake": _CLIENT_AVX512, "rocketlake": _CLIENT_AVX512,
    "cannonlake": _CLIENT_AVX512,
    "alderlake": _HYBRID, "raptorlake": _HYBRID, "meteorlake": _HYBRID, "arrowlake": _HYBRID,
    "lunarlake": _HYBRID, "gracemont": _HYBRID,
}

#: What any x86-64 core has: SSE vectors, two pipes, small caches.
_BASELINE = _family("x86-64", 4, 2, 4, 2, 4)


def widest_floats(cpu: str, features: str) -> int:
    """Float32 lanes of the widest vector register of CPU `cpu` with the feature string `features`:
    the CPU's own (4, SSE, for a CPU the table does not know), then what the features switch on or
    off (a host's feature string names every feature; LUCID_CPU_FEATURES may name a few)."""
    flags = set(features.split(","))
    known = _FAMILIES.get(cpu)
    widest = known.widest_floats if known is not None else {"x86-64-v4": 16}.get(cpu, 4)
    if "+avx512f" in flags:
        widest = 16
    elif "+avx" in flags:
        widest = max(widest, 8)
    if "-avx" in flags:
        widest = 4
    elif "-avx512f" in flags:
        widest = min(widest, 8)
    return widest


@functools.cache
def model_of(cpu: str, features: str) -> CpuModel:
    """The model of LLVM CPU `cpu` with feature string `features` ("" for the CPU's own)."""
    widest = widest_floats(cpu, features)
    known = _FAMILIES.get(cpu)
    if known is None:
        return _conservative(cpu, widest, features)
    if widest == known.widest_floats:
        return known
    # The features change the family's widest vectors: its pipes run what they can of them per cycle.
    return replace(known, widest_floats=widest, pipe_floats=min(known.pipe_floats, widest),
                   vector_registers=32 if widest == 16 else 16)


def _conservative(cpu: str, widest: int, features: str) -> CpuModel:
    """An unknown CPU: vectors, registers and FMA from its features, two pipes of its widest vector
    (one without FMA), the baseline caches."""
    flags = set(features.split(","))
    has_fma = "+fma" in flags or ("-fma" not in flags and cpu == "x86-64-v4")
    return replace(_BASELINE, family=f"unknown ({cpu})", widest_floats=widest, pipe_floats=widest,
                   fma_pipes=2 if has_fma or widest == 4 else 1, vector_registers=32 if widest == 16 else 16)
