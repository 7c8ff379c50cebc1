"""The optimisation level of each kernel module (`compile_worker.level_for`, stated in that module's
docstring), that the cheaper levels compute what the full pipeline computes, that only level 3 runs
LLVM's loop strength reduction (whose option is global to a process, so a module's object must not
depend on what was compiled before it), and that a graph's level-0 kernel modules are linked with
its entry module into one object.

The rule is checked on the modules a real graph lowers to (their role as the kernel's lowering
declares it, their work as `lowering.node_work` counts it); the oracle of the results is the NumPy
reference (`lucid.ir.run`) and the same graph compiled with every kernel at level 3, as all were
before levels were chosen per kernel.
"""
from __future__ import annotations

import numpy as np

import lucid
import lucid.nn.functional as F
from lucid.codegen import build, compile_worker, jit
from lucid.codegen.build import memory_plan_of
from lucid.codegen.compile_worker import COMPUTE_WORK, TINY_WORK, Worker, compile_module, level_for
from lucid.codegen.lowering import KernelModule, Lowering
from lucid.codegen.target import host
from lucid.passes import memory_planning
from lucid.runtime.executable import Executable

BIG = (1, 4, 12, 12, 12)       # conv output (1, 8, 10, 10, 10): 8000 elements, 1.7 MFLOP
SMALL = (2, 3, 5)              # 30 elements


def network(x, w, s):
    y = F.conv3d(x, w)
    return F.relu(y), y.sum(), y[:, 2:5, 1:9], s * 2.0 + 1.0


def arrays(rng) -> list[np.ndarray]:
    return [rng.standard_normal(shape).astype(np.float32) for shape in (BIG, (8, 4, 3, 3, 3), SMALL)]


def planned(example: list[np.ndarray]):
    return memory_planning.run(lucid.trace(network, *(lucid.spec(a.shape, dtype=a.dtype) for a in example)))


def test_the_rule_reads_the_role_and_the_work():
    big, small, tiny = COMPUTE_WORK, COMPUTE_WORK - 1, TINY_WORK - 1
    assert level_for(KernelModule("k", "", compute_bound=True, work=big)) == 3
    assert level_for(KernelModule("k", "", compute_bound=True, work=small)) == 2
    assert level_for(KernelModule("k", "", compute_bound=False, work=big)) == 2
    assert level_for(KernelModule("k", "", compute_bound=False, work=TINY_WORK)) == 2
    assert level_for(KernelModule("k", "", compute_bound=True, work=tiny)) == 0
    assert level_for(KernelModule("k", "", compute_bound=False, work=tiny)) == 0
    assert level_for(KernelModule("k", "", compute_bound=True, work=None)) == 3     # symbolic sizes
    assert level_for(KernelModule("k", "", compute_bound=False, work=None)) == 2


def test_a_graph_s_kernels_get_the_level_of_their_role_and_work():
    graph = planned(arrays(np.random.default_rng(0)))
    lowering = Lowering(graph, memory_plan_of(graph), host())
    lowering.lower()
    levels = {}
    for kernel in lowering.kernels:
        levels.setdefault(kernel.label, set()).add(level_for(lowering.modules[kernel.name]))
    conv_kernels = {label for label in levels if label.startswith(("conv_direct", "wino_conv"))}
    assert conv_kernels and all(levels[label] == {2} for label in conv_kernels), levels
    tiles = {name: module for name, module in lowering.modules.items() if name.startswith("lucid_f_")}
    assert tiles and all(level_for(module) == 3 for module in tiles.values())      # the register tiles
    for kernel in lowering.kernels:
        if kernel.label.startswith(("conv_direct", "wino_conv")):
            assert any(f'declare void @"{name}"' in lowering.modules[kernel.name].text for name in tiles), kernel.label
    assert levels["relu"] == {2} and levels["sum"] == {2} and levels["slice"] == {2}, levels
    assert levels["mul"] == {0} and levels["add"] == {0}, levels       # the 30-element map


def run(example, monkeypatch, tmp_path, rule) -> tuple[list, list[int]]:
    """The graph's outputs compiled in this process with `rule` choosing each kernel's level, and the
    levels compiled (a fresh cache, so every module is compiled)."""
    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LUCID_COMPILE_JOBS", "1")
    monkeypatch.setattr(build, "level_for", rule)
    compiled = []

    def spy(text, target, level=3):
        compiled.append(level)
        return compile_worker.compile_module(text, target, level)

    monkeypatch.setattr(jit, "compile_module", spy)
    return Executable(planned(example))(*example), compiled


def test_the_cheap_levels_compute_what_level_3_computes(monkeypatch, tmp_path):
    example = arrays(np.random.default_rng(1))
    reference = lucid.ir.run(planned(example), *example)
    chosen, levels = run(example, monkeypatch, tmp_path / "chosen", level_for)
    assert {0, 2, 3} <= set(levels)
    full, levels = run(example, monkeypatch, tmp_path / "full", lambda module: 3)
    assert set(levels) == {0, 3}                                   # 0: the entry module
    for position, (got, at_3, expected) in enumerate(zip(chosen, full, reference)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4, err_msg=f"output {position}")
        np.testing.assert_allclose(got, at_3, rtol=1e-5, atol=1e-4, err_msg=f"output {position}")


def test_a_graph_s_level_0_kernels_are_one_object_with_its_entry(monkeypatch, tmp_path):
    example = arrays(np.random.default_rng(2))
    texts, compile_module = [], compile_worker.compile_module

    def recorded(text, target, level=3):
        texts.append((text, level))
        return compile_module(text, target, level)

    monkeypatch.setattr(compile_worker, "compile_module", recorded)
    results, _ = run(example, monkeypatch, tmp_path, level_for)
    linked = [text for text, level in texts if level == 0]
    assert len(linked) == 1 and isinstance(linked[0], list)
    entry, *kernels = linked[0]
    assert "lucid_run" in entry and kernels and all('define void @"lucid_k_' in text for text in kernels)
    for position, (got, expected) in enumerate(zip(results, lucid.ir.run(planned(example), *example))):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4, err_msg=f"output {position}")


def test_only_level_3_runs_loop_strength_reduction_whatever_was_compiled_before(monkeypatch):
    graph = planned(arrays(np.random.default_rng(3)))
    lowering = Lowering(graph, memory_plan_of(graph), host())
    lowering.lower()
    target = host()
    modules = [(module.text, level_for(module)) for module in lowering.modules.values() if level_for(module)]
    assert {level for _, level in modules} == {2, 3}
    first = [compile_module(text, target, level) for text, level in modules]
    backwards = [compile_module(text, target, level) for text, level in reversed(modules)][::-1]
    assert first == backwards
    worker = Worker()
    try:
        assert [worker.compile(text, target, level) for text, level in modules] == first
    finally:
        worker.close()
    monkeypatch.setattr(compile_worker, "STRENGTH_REDUCTION_FROM", 0)      # every level with it
    everywhere = [compile_module(text, target, level) for text, level in modules]
    changed = {level for (_, level), alone, with_it in zip(modules, first, everywhere) if alone != with_it}
    assert changed == {2}


def test_a_conv_on_few_elements_moves_its_data_at_level_0_and_computes_in_its_tile_at_level_3():
    """Its packing, unpacking, weight check and conv kernel (which calls the tile) count the 2,240
    elements the conv reads and writes (level 0); the tile does its 110,592 operations (level 3)."""
    x, w = np.zeros((1, 4, 6, 6, 6), np.float32), np.zeros((8, 4, 3, 3, 3), np.float32)
    graph = memory_planning.run(lucid.trace(lambda x, w: F.conv3d(x, w), lucid.spec(x.shape), lucid.spec(w.shape)))
    lowering = Lowering(graph, memory_plan_of(graph), host())
    lowering.lower()
    levels = {kernel.label: level_for(lowering.modules[kernel.name]) for kernel in lowering.kernels}
    movers = {label for label in levels if label.startswith(("conv_pack", "conv_unpack", "weights_check"))}
    assert {"conv_pack_input", "conv_pack_weight", "weights_check"} <= movers, levels
    assert all(levels[label] == 0 for label in movers), levels
    assert levels["conv_direct"] == 0, levels
    tiles = [module for name, module in lowering.modules.items() if name.startswith("lucid_f_")]
    assert tiles and all(level_for(module) == 3 for module in tiles)
    weights = np.random.default_rng(4).standard_normal(w.shape).astype(np.float32)
    data = np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(Executable(graph)(data, weights)[0], lucid.ir.run(graph, data, weights),
                               rtol=1e-5, atol=1e-5)
