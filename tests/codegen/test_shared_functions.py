"""Functions kernels share (`Lowering.shared_function`): a conv's register tile is compiled once, in a
module of its own named by its code's hash, and every kernel calling it (in this graph, another
graph or another process) links to that object instead of inlining its own copy.

The oracle of the results is the NumPy reference (`lucid.ir.run`); what is shared is read from the
modules lowering hands on and from the modules actually compiled.
"""
from __future__ import annotations

import numpy as np

import lucid
import lucid.nn.functional as F
from lucid.codegen import compile_worker, jit
from lucid.codegen.build import memory_plan_of
from lucid.codegen.lowering import Lowering
from lucid.codegen.target import host
from lucid.passes import memory_planning
from lucid.runtime.executable import Executable

WEIGHT = (16, 8, 3, 3, 3)


def conv(x, w):
    return F.conv3d(x, w, padding=1, stride=2)


def planned(batch: int, height: int = 9):
    return memory_planning.run(lucid.trace(conv, lucid.spec(batch, 8, 9, height, 9), lucid.spec(*WEIGHT)))


def lowered(graph) -> Lowering:
    lowering = Lowering(graph, memory_plan_of(graph), host())
    lowering.lower()
    return lowering


def shared(lowering: Lowering) -> set:
    return {name for name in lowering.modules if name.startswith("lucid_f_")}


def test_graphs_whose_convs_share_a_tile_share_its_module():
    one, two = lowered(planned(1)), lowered(planned(2, height=11))
    assert shared(one) and shared(one) == shared(two)
    kernels = lambda lowering: {k.name for k in lowering.kernels if k.label == "conv_direct"}   # noqa: E731
    assert kernels(one) and kernels(one).isdisjoint(kernels(two))          # the kernels differ by their sizes
    for name in shared(one):
        module = one.modules[name]
        assert f'define void @"{name}"' in module.text and module.text.count("define ") == 1
        assert any(f'declare void @"{name}"' in one.modules[k].text for k in kernels(one))


def test_a_shared_tile_is_compiled_once_and_every_graph_calling_it_is_right(monkeypatch, tmp_path):
    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LUCID_COMPILE_JOBS", "1")
    compiled = []

    def spy(text, target, level=3):
        compiled.append(compile_worker.module_texts(text)[0])
        return compile_worker.compile_module(text, target, level)

    monkeypatch.setattr(jit, "compile_module", spy)
    rng = np.random.default_rng(0)
    w = rng.standard_normal(WEIGHT).astype(np.float32)
    for batch in (1, 2):
        graph = planned(batch)
        x = rng.standard_normal((batch, 8, 9, 9, 9)).astype(np.float32)
        before = len(compiled)
        (got,) = Executable(graph)(x, w)
        np.testing.assert_allclose(got, lucid.ir.run(graph, x, w), rtol=1e-4, atol=1e-4)
        tiles = [text for text in compiled[before:] if 'define void @"lucid_f_' in text]
        assert (len(tiles) > 0) == (batch == 1), f"batch {batch} compiled {len(tiles)} shared modules"
