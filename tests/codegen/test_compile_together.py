"""Graphs built together (`build.graph_codes`, `runtime.executable.executables`): a training variant's
forward and backward (or backward stages) are lowered into one `jit.Compilation`, a module both
graphs have is compiled once, and the costliest missing module is compiled first; while workers are
fed, the GIL switch interval is short (restored after).

The oracles: each graph built on its own (`build.graph_code`, in another fresh cache) must give
the same object code, byte for byte (LLVM is deterministic), the same workspace and kernels; the
set of modules each graph's lowering hands on, lowered on its own, says how many compilations the
shared build must make; eager autograd gives the gradients.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

import lucid
import lucid.nn as nn
from lucid.codegen import build, jit
from lucid.codegen.build import graph_code, graph_codes, memory_plan_of
from lucid.codegen.compile_worker import compile_module, level_for
from lucid.codegen.lowering import Lowering
from lucid.codegen.target import host
from lucid.passes import pipeline
from lucid.runtime.executable import Executable


@pytest.fixture
def fresh_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def compilations(monkeypatch) -> list:
    """Each `Compilation` that build.py makes, with `compiled`: the names of the modules it compiled,
    in the order they were done."""
    made = []

    class Recorded(jit.Compilation):
        def __init__(self, target):
            super().__init__(target)
            self.compiled = []
            made.append(self)

        def _done(self, name, code):
            self.compiled.append(name)
            super()._done(name, code)

    monkeypatch.setattr(build, "Compilation", Recorded)
    return made


def small_model():
    lucid.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 3, padding=1))


def training_graphs(model) -> tuple:
    """The forward and backward graphs at 10^3 voxels: enough data (over `TINY_WORK` elements) that the
    convs' packing is compiled on its own (level 2), and the two graphs share modules."""
    graph = lucid.trace(model, lucid.spec(1, 1, 10, 10, 10))
    split = pipeline.for_training(graph, wrt=[name for name, _ in model.named_parameters()])
    return split.forward, split.backward


def modules_handed_on(graph, changing_weights: frozenset = frozenset()) -> set:
    """(kernel name, level) of each module lowering `graph` on its own hands on (level 0 ones go into
    the entry's object)."""
    handed = []
    Lowering(graph, memory_plan_of(graph, dynamic=True), host(), on_module=handed.append,
             changing_weights=changing_weights).lower()
    return {(module.name, level_for(module)) for module in handed if level_for(module)}


@pytest.mark.parametrize("jobs", [1, 2])
def test_graphs_built_together_give_the_code_each_gets_alone(jobs, fresh_cache, monkeypatch):
    monkeypatch.setenv("LUCID_COMPILE_JOBS", str(jobs))
    graphs = training_graphs(small_model())
    shared = modules_handed_on(graphs[0]) & modules_handed_on(graphs[1])
    assert shared, "the oracle needs a kernel module the forward and the backward both have"
    planned = [(graph, memory_plan_of(graph)) for graph in graphs]
    before = jit.COUNTERS["compiled"]
    together = graph_codes(planned, host())
    compiled_together = jit.COUNTERS["compiled"] - before
    monkeypatch.setenv("LUCID_CACHE_DIR", str(fresh_cache / "alone"))
    before = jit.COUNTERS["compiled"]
    alone = [graph_code(graph, plan, host()) for graph, plan in planned]
    assert compiled_together == jit.COUNTERS["compiled"] - before      # alone, the second graph loads them
    for got, expected in zip(together, alone, strict=True):
        assert got.objects == expected.objects
        assert got.workspace_bytes == expected.workspace_bytes
        assert [(k.name, node) for k, node in got.kernels] == [(k.name, node) for k, node in expected.kernels]


def test_each_graph_built_together_has_its_own_cache_entry(fresh_cache):
    graphs = training_graphs(small_model())
    planned = [(graph, memory_plan_of(graph)) for graph in graphs]
    built = graph_codes(planned, host())
    before = dict(jit.COUNTERS)
    for (graph, plan), code in zip(planned, built):
        loaded = graph_code(graph, plan, host())
        assert loaded.kernels is None and loaded.objects == code.objects      # from the graph's manifest
    assert jit.COUNTERS["compiled"] == before["compiled"]
    assert jit.COUNTERS["loaded"] - before["loaded"] == sum(len(code.objects) for code in built)


def test_graphs_built_together_take_those_met_before_from_the_cache(fresh_cache):
    forward, backward = training_graphs(small_model())
    planned = [(graph, memory_plan_of(graph)) for graph in (forward, backward)]
    graph_code(*planned[0], host())
    before = jit.COUNTERS["compiled"]
    got = graph_codes(planned, host())
    assert got[0].kernels is None and got[1].kernels is not None         # the forward's from its manifest
    backward_only = modules_handed_on(backward) - modules_handed_on(forward)
    assert jit.COUNTERS["compiled"] - before == len(backward_only) + 1    # + the backward's entry object


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_training_variant_compiles_both_graphs_in_one_compilation(jobs, fresh_cache, compilations, monkeypatch):
    monkeypatch.setenv("LUCID_COMPILE_JOBS", str(jobs))
    model, eager = small_model(), small_model()
    x = np.random.default_rng(1).standard_normal((1, 1, 10, 10, 10)).astype(np.float32)
    fast = lucid.compile(model)
    fast(lucid.Tensor(x)).sum().backward()
    eager(lucid.Tensor(x)).sum().backward()
    forward, backward = training_graphs(small_model())
    trained = frozenset(name for name, _ in model.named_parameters())      # compiled without weight checks
    distinct = modules_handed_on(forward, trained) | modules_handed_on(backward, trained)
    compilation, = compilations
    assert len(set(compilation.names)) < len(compilation.names)      # modules both graphs have, added by each
    assert sorted(compilation.compiled) == sorted(set(compilation.names))                 # each compiled once
    assert len(compilation.compiled) == len(distinct) + 2                                 # + each entry's object
    for name, parameter in model.named_parameters():
        np.testing.assert_allclose(parameter.grad.numpy(), dict(eager.named_parameters())[name].grad.numpy(),
                                   rtol=1e-4, atol=1e-5, err_msg=name)


def test_a_training_variants_executables_compute_what_separately_built_ones_do(fresh_cache, monkeypatch):
    model = small_model()
    fast = lucid.compile(model)
    x = np.random.default_rng(2).standard_normal((1, 1, 10, 10, 10)).astype(np.float32)
    fast(lucid.Tensor(x)).sum().backward()
    training, = fast.variants.values()
    monkeypatch.setenv("LUCID_CACHE_DIR", str(fresh_cache / "alone"))
    forward_alone, backward_alone = (Executable(graph) for graph in (training.split.forward, training.split.backward))
    forward = training.forward(x)
    for got, expected in zip(forward, forward_alone(x), strict=True):
        np.testing.assert_array_equal(got, expected)
    count = len(training.graph.outputs)
    inputs = [x for _ in training.split.forward_inputs]                  # the graph's one input
    arguments = forward[count:] + inputs + [np.ones_like(output) for output in forward[:count]]
    for got, expected in zip(training.backward(*arguments), backward_alone(*arguments), strict=True):
        np.testing.assert_array_equal(got, expected)


def test_a_staged_backward_and_its_forward_compile_in_one_compilation(fresh_cache, compilations):
    model, eager = small_model(), small_model()
    fast = lucid.compile(model)
    reported = []
    groups = [[model[2].weight, model[2].bias], [model[0].weight, model[0].bias]]
    fast.stage_backward(groups, lambda k, pairs: reported.append(k))
    x = np.random.default_rng(3).standard_normal((1, 1, 10, 10, 10)).astype(np.float32)
    fast(lucid.Tensor(x)).sum().backward()
    eager(lucid.Tensor(x)).sum().backward()
    training, = fast.variants.values()
    assert len(compilations) == 1 and len(training.backward.stages) >= 2
    assert reported == [0, 1]
    for name, parameter in model.named_parameters():
        np.testing.assert_allclose(parameter.grad.numpy(), dict(eager.named_parameters())[name].grad.numpy(),
                                   rtol=1e-4, atol=1e-5, err_msg=name)


def sized_modules() -> list[str]:
    """Modules of growing length: f_k adds 1 k + 1 times."""
    texts = []
    for k in range(4):
        body = "".join(f"  %v{i + 1} = add i64 %v{i}, 1\n" for i in range(k + 1))
        texts.append(f"define i64 @f{k}(i64 %v0) {{\n{body}  ret i64 %v{k + 1}\n}}\n")
    return texts


def test_the_costliest_module_is_compiled_first_and_a_module_added_twice_once(fresh_cache, monkeypatch):
    monkeypatch.setenv("LUCID_COMPILE_JOBS", "1")
    order = []
    monkeypatch.setattr(jit, "compile_module", lambda text, target, level: order.append((text, level)) or
                        compile_module(text, target, level))
    small, medium, large, largest = sized_modules()
    added = [(small, 3), (largest, 2), (medium, 3), (large, 0), (small, 3), (large, 3)]
    with jit.Compilation(host()) as compilation:
        names = [compilation.add(text, level) for text, level in added]
        results = compilation.results()
    assert order == [(large, 3), (medium, 3), (small, 3), (largest, 2), (large, 0)]
    assert [name for name, _ in results] == names and names[0] == names[4]
    assert [code for _, code in results] == [compile_module(text, host(), level) for text, level in added]


def test_the_switch_interval_is_short_while_workers_are_fed_and_restored_after(fresh_cache, monkeypatch):
    monkeypatch.setenv("LUCID_COMPILE_JOBS", "2")
    before = sys.getswitchinterval()
    texts = sized_modules()
    with jit.Compilation(host()) as compilation:
        for text in texts:
            compilation.add(text, 2)
        assert sys.getswitchinterval() == min(before, jit.FEEDING_SWITCH_INTERVAL)
        results = compilation.results()
    assert sys.getswitchinterval() == before
    assert [code for _, code in results] == [compile_module(text, host(), 2) for text in texts]


def test_the_parameters_that_change_between_calls_are_part_of_the_cache_key(fresh_cache):
    """A training graph compiled for weights that change on every call (no weight checks) and the
    same graph compiled for kept weights are two cache entries, each loaded as it was built."""
    forward, _ = training_graphs(small_model())
    plan = memory_plan_of(forward)
    changing = frozenset({"0.weight", "2.weight"})
    built = [graph_code(forward, plan, host(), changing), graph_code(forward, plan, host())]
    assert built[0].objects != built[1].objects and all(code.kernels is not None for code in built)
    labels = [[kernel.label for kernel, _ in code.kernels] for code in built]
    assert labels[0].count("weights_check") == 0 and labels[1].count("weights_check") == 2
    loaded = [graph_code(forward, plan, host(), changing), graph_code(forward, plan, host())]
    assert [code.objects for code in loaded] == [code.objects for code in built]
    assert all(code.kernels is None for code in loaded)
