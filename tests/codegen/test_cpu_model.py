"""The CPU model (lucid/codegen/cpu_model.py) and the conv choices made from it, for CPUs other than
the host's: LUCID_CPU (and LUCID_CPU_FEATURES) name the target, as a user checking another machine
would set them.

- Each family's model holds the vendors' numbers, written out again here: vector width, FMA pipes and
  the floats each completes per cycle, registers.
- The register tile fits the model's register file, its vectors are no wider than the target's,
  and the shapes named below are the ones the model rates fastest (worked out by hand in the
  comments).
- Winograd is taken where the multiply-adds it saves, at the model's FMA rate, outweigh its
  per-call weight transform.
- Code for the CPUs this host can run (haswell, x86-64-v2 and the host's own) gives the NumPy
  oracle's convolution; code for AVX-512 CPUs is only compiled to object code, never run.
"""
from __future__ import annotations

import dataclasses
import types

import llvmlite.binding as llvm
import numpy as np
import pytest

import lucid
import lucid.nn.functional as F
import oracle
from lucid.codegen.cpu_model import model_of
from lucid.codegen.kernels.conv import winograd
from lucid.codegen.kernels.conv.problem import choose_blocking
from lucid.codegen.lowering import Lowering
from lucid.codegen.target import Target, host
from lucid.ir.types import float32, float64
from lucid.passes import memory_planning
from lucid.runtime.executable import Executable

#: LUCID_CPU, LUCID_CPU_FEATURES of the CPUs the tests set.
CPUS = {
    "znver3": "+avx,+avx2,+fma,-avx512f",
    "znver4": "+avx,+avx2,+fma,+avx512f,+avx512vl",
    "skylake-avx512": "+avx,+avx2,+fma,+avx512f,+avx512vl",
    "haswell": "+avx,+avx2,+fma,-avx512f",
    "x86-64-v2": "+sse4.2,-avx",
}

#: (float32 lanes of the widest vector, FMA pipes, float32 lanes per pipe per cycle, vector registers)
#: from the vendors' manuals: Zen 4 splits a 512-bit FMA over two cycles of its 256-bit pipes; the
#: AVX-512 Xeons have two full-width pipes; Haswell two 256-bit FMA pipes; SSE-only CPUs 128-bit
#: vectors (two pipes, the conservative default for a CPU named only by its features).
FACTS = {
    "znver3": (8, 2, 8, 16),
    "znver4": (16, 2, 8, 32),
    "skylake-avx512": (16, 2, 16, 32),
    "haswell": (8, 2, 8, 16),
    "x86-64-v2": (4, 2, 4, 16),
}


def target_of(cpu: str, monkeypatch, cores: int = 1) -> Target:
    monkeypatch.setenv("LUCID_CPU", cpu)
    monkeypatch.setenv("LUCID_CPU_FEATURES", CPUS[cpu])
    return dataclasses.replace(host(), cores=cores)


@pytest.mark.parametrize("cpu", list(CPUS))
def test_the_model_of_each_family(cpu, monkeypatch):
    model = target_of(cpu, monkeypatch).model
    assert (model.widest_floats, model.fma_pipes, model.pipe_floats, model.vector_registers) == FACTS[cpu]
    assert target_of(cpu, monkeypatch).vector_floats == FACTS[cpu][0]


def test_features_override_the_family():
    assert model_of("znver4", "-avx512f").widest_floats == 8
    assert model_of("znver4", "-avx512f").vector_registers == 16
    assert model_of("znver4", "").widest_floats == 16
    assert model_of("skylake-avx512", "-avx").widest_floats == 4
    unknown = model_of("some-future-core", "+avx,+avx2,+fma,+avx512f")
    assert (unknown.widest_floats, unknown.vector_registers, unknown.fma_pipes) == (16, 32, 2)
    assert model_of("some-future-core", "").widest_floats == 4


def blocking(target: Target, ocg: int, points: int, dtype=float32):
    return choose_blocking(ocg, points, types.SimpleNamespace(target=target), dtype)


@pytest.mark.parametrize("cpu", list(CPUS))
@pytest.mark.parametrize("dtype", [float32, float64])
def test_register_tiles_fit_the_register_file(cpu, dtype, monkeypatch):
    target = target_of(cpu, monkeypatch)
    registers = target.model.vector_registers
    for ocg in range(1, 130):
        shapes = set()
        for points in (1, 5, 16, 29, 112):
            block = blocking(target, ocg, points, dtype)
            # accumulators, the weight vectors and a broadcast input value
            assert block.points * block.vectors + block.vectors + 1 <= registers, (ocg, points, block)
            assert block.lanes <= target.lanes(dtype) and block.vectors in (1, 2, 3)
            assert block.points <= points, (ocg, points, block)
            shapes.add((block.lanes, block.vectors))
        assert len(shapes) == 1, f"ocg {ocg}: lanes and vectors must not depend on the row length: {shapes}"


# cpu, output channels -> (lanes, vectors, points) for rows of 112 points, float32.
TILES = [
    # Two pipes of 8 floats, 2 loads per cycle, 16 registers: 2 vectors x 6 points.
    ("haswell", 32, (8, 2, 6)),
    ("haswell", 8, (8, 1, 13)),
    ("x86-64-v2", 32, (4, 2, 6)),
    # Full-width AVX-512 and 32 registers: 16 lanes; one vector x 16 points (MOST_POINTS), two x 14.
    ("skylake-avx512", 16, (16, 1, 16)),
    ("skylake-avx512", 64, (16, 2, 14)),
    # Zen 4: a 16-lane FMA or load takes two cycles of a pipe. One 16-lane vector x 14 points issues
    # 15 loads (30 load cycles over 2 ports = 15) for 14 FMAs (14 cycles): load-bound; two 8-lane
    # vectors x 14 points are FMA-bound at the same channels, so 256-bit vectors win.
    ("znver4", 16, (8, 2, 14)),
    # 32 channels: 2 x 16 lanes and 2 x 8 lanes (two blocks) both run at the FMA rate; fewer
    # blocks win the tie (the input is read once).
    ("znver4", 32, (16, 2, 14)),
    # 48 channels: 2 x 16 lanes would pad them to 64 (a quarter of the FMAs wasted), 3 blocks of
    # 2 x 8 lanes waste none.
    ("znver4", 48, (8, 2, 14)),
    # 24 channels with 16 registers: 2 x 8 lanes pad them to 32 (a quarter of the FMAs wasted);
    # 3 x 8 lanes x 3 points waste none, and their 9 accumulators cover 2 pipes x 4 cycles of latency.
    ("haswell", 24, (8, 3, 3)),
    ("haswell", 72, (8, 3, 3)),
    ("haswell", 144, (8, 2, 6)),
    # Zen 3's FMA takes 5 cycles: 9 accumulators leave the pipes idle 1 cycle in 10, which costs
    # 72 channels as much as 5 blocks of 2 x 8 lanes lose to padding: the tie keeps 2 vectors.
    ("znver3", 24, (8, 3, 3)),
    ("znver3", 72, (8, 2, 6)),
]


@pytest.mark.parametrize("cpu, ocg, expected", TILES)
def test_the_tile_the_model_rates_fastest(cpu, ocg, expected, monkeypatch):
    block = blocking(target_of(cpu, monkeypatch), ocg, 112)
    assert (block.lanes, block.vectors, block.points) == expected


def lowered_labels(fn, arrays, target: Target) -> tuple:
    """(kernel labels, kernel modules' LLVM text) of `fn`'s graph lowered for `target` (not compiled)."""
    graph = memory_planning.run(lucid.trace(fn, *(lucid.spec(a.shape, dtype=lucid.ir.types.as_dtype(a.dtype))
                                                  for a in arrays), name="cpu_model_case"))
    modules = []
    lowering = Lowering(graph, graph.memory_plan, target, on_module=lambda module: modules.append(module.text))
    lowering.lower()
    return [kernel.label for kernel in lowering.kernels], modules


def transposed_case(n: int, depth: int, rng=None):
    """conv_transpose3d of (n, 64, depth, 4, 4) -> 32 channels, kernel 4, stride 2, padding 1 (8
    stride phases of 2 x 2 x 2 taps: Winograd F(2x2, 2x2) with 2 depth terms per phase)."""
    rng = rng or np.random.default_rng(0)
    x = rng.standard_normal((n, 64, depth, 4, 4)).astype(np.float32)
    w = (rng.standard_normal((64, 32, 4, 4, 4)) * 0.1).astype(np.float32)
    return (lambda x, w: F.conv_transpose3d(x, w, stride=2, padding=1)), [x, w]


# Per phase the layer has n x depth x 2 x 2 tiles of 2 x 2 outputs; each saves 4 x 4 - 3 x 3 = 7
# multiply-adds per (output channel, input channel, term). Winograd needs them to outweigh
# WEIGHT_TRANSFORM_CYCLES = 12 at the model's rate (FMA pipes x floats per pipe multiply-adds per
# cycle): n = 1 (16 tiles: 112 multiply-adds) is 7 cycles on Haswell (16 per cycle), too few; n = 2
# (32 tiles, 224) is 14 cycles there, enough, but 7 on a full-width AVX-512 Xeon (32 per cycle);
# SSE (8 per cycle) takes Winograd at n = 1 already (14 cycles).
WINOGRAD = [
    ("haswell", 1, False), ("haswell", 2, True),
    ("skylake-avx512", 2, False), ("skylake-avx512", 4, True),
    ("znver4", 1, False), ("znver4", 2, True),
    ("x86-64-v2", 1, True),
]


@pytest.mark.parametrize("cpu, n, applies", WINOGRAD)
def test_winograd_where_it_repays_its_weight_transform(cpu, n, applies, monkeypatch):
    assert winograd.WEIGHT_TRANSFORM_CYCLES == 12
    fn, arrays = transposed_case(n, 4)
    labels, _ = lowered_labels(fn, arrays, target_of(cpu, monkeypatch))
    assert ("wino_conv" in labels) == applies, labels


def host_runs(cpu: str) -> bool:
    flags = set(host().features.split(","))
    needs = {"haswell": {"+avx2", "+fma"}, "x86-64-v2": {"+sse4.2"}}.get(cpu, set())
    return host().triple.startswith("x86_64") and needs <= flags


CASES = [
    ("winograd", lambda: transposed_case(2, 4, np.random.default_rng(3)), oracle.conv_transpose_nd,
     dict(stride=2, padding=1)),
    ("direct", lambda: _direct_case(np.random.default_rng(4)), oracle.conv_nd, dict(stride=1, padding=1)),
    ("planes", lambda: _planes_case(np.random.default_rng(5)), oracle.conv_nd, dict(padding=(1, 0, 0))),
]


def _direct_case(rng):
    """A conv with 20 output channels (a padded block on every vector width), too few input
    channels for Winograd: the direct kernel."""
    x = rng.standard_normal((2, 5, 3, 6, 9)).astype(np.float32)
    w = (rng.standard_normal((20, 5, 3, 3, 3)) * 0.2).astype(np.float32)
    return (lambda x, w: F.conv3d(x, w, stride=1, padding=1)), [x, w]


def _planes_case(rng):
    """A temporal 3x1x1 conv of 3 output channels (one vector of channels on every width, so
    vectorised over its planes' 6 x 7 points: tiles of whole vectors, then of fewer lanes)."""
    x = rng.standard_normal((2, 12, 5, 6, 7)).astype(np.float32)
    w = (rng.standard_normal((3, 12, 3, 1, 1)) * 0.2).astype(np.float32)
    return (lambda x, w: F.conv3d(x, w, padding=(1, 0, 0))), [x, w]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("cpu", ["haswell", "x86-64-v2", None])
def test_runnable_targets_match_the_oracle(cpu, case, monkeypatch, tmp_path):
    if cpu is None:
        target = dataclasses.replace(host(), cores=1)
    elif not host_runs(cpu):
        pytest.skip(f"the host cannot run {cpu} code")
    else:
        target = target_of(cpu, monkeypatch)
    name, build, reference, attrs = CASES[case]
    fn, arrays = build()
    monkeypatch.setattr(winograd, "MIN_ITEMS_PER_CORE", 0)
    specs = [lucid.spec(a.shape, dtype=lucid.ir.types.as_dtype(a.dtype)) for a in arrays]
    executable = Executable(memory_planning.run(lucid.trace(fn, *specs, name=f"cpu_{name}")), target)
    expected = reference(*(a.astype(np.float64) for a in arrays), **attrs)
    got = executable(*arrays, threads=2)[0]
    scale = float(np.max(np.abs(expected)))
    assert float(np.max(np.abs(got - expected))) <= 1e-4 * scale, f"{target.cpu} {name}"


@pytest.mark.parametrize("cpu", ["znver4", "skylake-avx512"])
def test_avx512_code_compiles_to_objects(cpu, monkeypatch):
    """Never run here: the conv's kernel modules compile to object code for the AVX-512 target."""
    target = target_of(cpu, monkeypatch)
    fn, arrays = transposed_case(4, 4)
    labels, modules = lowered_labels(fn, arrays, target)
    assert "wino_conv" in labels
    machine = target.machine()
    for text in modules:
        module = llvm.parse_assembly(text)
        module.verify()
        assert machine.emit_object(module)
