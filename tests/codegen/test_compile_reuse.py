"""Nodes lowered once per process (`lowering.node_key`, `NodeKernels`, `LOWERED`): a node whose key an
earlier node had, in the same graph or in an earlier one, gets that node's kernels without being
lowered again; the code generator's constants are part of the key (`codegen_settings`). A kernel's
code holds no offset of the memory its node keeps between calls (`KeptStart`), so the same conv in an
inference and a training graph is one kernel.

The oracle is each graph lowered with every node lowered on its own (keys that never repeat): the
kernels (names, that is their code's hash, work items, buffers, barriers, the node each is for),
the modules handed on and the workspace must be the same, on graphs holding many repeated nodes (a UNet's training
graphs, whose weight gradients read what the conv before them left packed; a graph of symbolic
sizes). The key must change with each thing the kernels read: the target, the symbols' order, the
operator, the attributes, each operand's dtype and shape, which operands share storage, a constant
input's data, and an input left packed in the workspace.
"""
from __future__ import annotations

import dataclasses

import pytest

import lucid
import lucid.nn as nn
from lucid.codegen import lowering as lowering_module
from lucid.codegen.build import memory_plan_of
from lucid.codegen.kernels.conv import winograd
from lucid.codegen.lowering import LOWERED, KernelModule, LoweredNodes, Lowering, NodeKernels, node_key
from lucid.codegen.target import host
from lucid.passes import memory_planning, pipeline
from models import UNet3D


def lowered(graph, reuse: bool, monkeypatch) -> Lowering:
    with monkeypatch.context() as patch:
        if not reuse:
            patch.setattr(lowering_module, "node_key", lambda lowering, node: object())   # never repeats
        handed_on = []
        lowering = Lowering(graph, memory_plan_of(graph, dynamic=True), host(), on_module=handed_on.append)
        lowering.lower()
    assert [module.name for module in handed_on] == list(lowering.modules)
    return lowering


def unet_graphs():
    lucid.manual_seed(0)
    model = UNet3D(in_channels=1, out_channels=2, base=4, depth=1)
    graph = lucid.trace(model, lucid.spec(1, 1, 8, 8, 8))
    split = pipeline.for_training(graph, wrt=["x"] + [name for name, _ in model.named_parameters()])
    return [split.forward, split.backward]


class Norms(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.GroupNorm(2, 4), nn.GroupNorm(2, 4)

    def forward(self, x):
        return self.b(self.a(x).relu()).relu() + self.a(x * 2.0).relu()


def symbolic_graph():
    graph = lucid.trace(Norms(), lucid.spec(lucid.dim("N"), 4, lucid.dim("L", min=2)))
    return pipeline.for_inference(graph)


def kernel_facts(lowering: Lowering):
    assert len(lowering.kernel_nodes) == len(lowering.kernels)
    return ([(k.name, str(k.items), k.slots, k.waits, k.label) for k in lowering.kernels],
            [id(node) for node in lowering.kernel_nodes],                 # the node each kernel is for
            {name: module.text for name, module in lowering.modules.items()},
            lowering.workspace_bytes, [str(size) for size in lowering.symbolic_workspace])


def counting(lower, calls: list):
    """`lower`, noting each node it lowers in `calls`."""
    def counted(lowering, node):
        calls.append(node)
        lower(lowering, node)
    return counted


@pytest.mark.parametrize("graphs", [unet_graphs, lambda: [symbolic_graph()]], ids=["unet", "symbolic"])
def test_reusing_a_node_s_kernels_changes_nothing(graphs, monkeypatch):
    calls = []
    for graph in graphs():
        alone = lowered(graph, reuse=False, monkeypatch=monkeypatch)
        with monkeypatch.context() as patch:
            for op, lower in lowering_module.LOWERINGS.items():
                patch.setitem(lowering_module.LOWERINGS, op, counting(lower, calls))
            reused = lowered(graph, reuse=True, monkeypatch=monkeypatch)
        assert kernel_facts(reused) == kernel_facts(alone)
        nodes = [n for n in graph.nodes if not n.is_constant and n.output not in graph.memory_plan.aliases]
        assert len(calls) < len(nodes)            # some nodes were not lowered again
        calls.clear()


def conv_graphs():
    """A conv net's inference graph, then its training graphs (forward, backward)."""
    lucid.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(4, 16, 3, padding=1), nn.ReLU(), nn.Conv3d(16, 16, 3, padding=1))
    graph = lucid.trace(model, lucid.spec(1, 4, 6, 6, 6))
    split = pipeline.for_training(graph, wrt=["x"] + [name for name, _ in model.named_parameters()])
    return [pipeline.for_inference(graph), split.forward, split.backward]


def test_nodes_an_earlier_graph_lowered_are_replayed_as_lowering_them_again_would(monkeypatch):
    """The oracle is each graph lowered alone, every node lowered on its own. The training forward
    graph lowers none of the convs the inference graph lowered, fused with a ReLU or not (they keep
    memory between calls: their packed weights)."""
    graphs = conv_graphs()
    alone = [kernel_facts(lowered(graph, reuse=False, monkeypatch=monkeypatch)) for graph in graphs]
    LOWERED.clear()
    calls = []
    with monkeypatch.context() as patch:
        for op, lower in lowering_module.LOWERINGS.items():
            patch.setitem(lowering_module.LOWERINGS, op, counting(lower, calls))
        lowered_ops = []
        for graph, expected in zip(graphs, alone):
            calls.clear()
            assert kernel_facts(lowered(graph, reuse=True, monkeypatch=monkeypatch)) == expected
            lowered_ops.append([node.op for node in calls])
    assert "conv" in lowered_ops[0] and not {"conv", "fused"} & set(lowered_ops[1])
    assert lowered_ops[2]                          # the backward's nodes are new


def test_a_kept_memory_offset_is_not_in_the_code(monkeypatch):
    """The same conv first in one graph and second in another, its kept memory at other offsets:
    the same kernels (the offsets are `KeptStart` words of the kernels' slots)."""
    conv = nn.Conv3d(8, 8, 3, padding=1)
    spec = lucid.spec(1, 8, 5, 5, 5)
    one = memory_planning.run(lucid.trace(conv, spec))
    two = memory_planning.run(lucid.trace(lambda x: conv(conv(x) + 1.0), spec))
    last = []
    for graph in (one, two):
        lowering = lowered(graph, reuse=False, monkeypatch=monkeypatch)
        conv_node = [node for node in graph.nodes if node.op == "conv"][-1]
        last.append([(kernel.name, kernel.slot_words()) for kernel, node in lowering.kernels_and_nodes()
                     if node is conv_node])
    assert [name for name, _ in last[0]] == [name for name, _ in last[1]]
    assert [words for _, words in last[0]] != [words for _, words in last[1]]      # other offsets


def test_a_changed_codegen_constant_lowers_the_node_again(monkeypatch):
    """Winograd forced by the constants the tests set, then not: each time the kernels lowering
    with those constants gives, never the other's."""
    graph = pipeline.for_inference(lucid.trace(nn.Conv3d(16, 16, 3, padding=1), lucid.spec(1, 16, 4, 4, 4)))
    labels = lambda: {kernel.label for kernel in lowered(graph, reuse=True, monkeypatch=monkeypatch).kernels}
    plain = labels()
    with monkeypatch.context() as patch:
        patch.setattr(winograd, "WEIGHT_TRANSFORM_CYCLES", 0)
        patch.setattr(winograd, "MIN_ITEMS_PER_CORE", 0)
        forced = labels()
    assert "wino_conv" in forced and "wino_conv" not in plain
    assert labels() == plain


def test_graphs_lowered_in_several_threads_at_once_get_the_kernels_they_get_alone(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    graphs = conv_graphs() * 2
    alone = [kernel_facts(lowered(graph, reuse=False, monkeypatch=monkeypatch)) for graph in graphs]
    for _ in range(3):
        LOWERED.clear()
        with ThreadPoolExecutor(max_workers=4) as pool:
            together = list(pool.map(lambda graph: kernel_facts(lowered(graph, reuse=True, monkeypatch=monkeypatch)),
                                     graphs))
        assert together == alone


def test_the_process_keeps_the_latest_records_within_its_limit():
    def record(size: int) -> NodeKernels:
        return NodeKernels([], (KernelModule("m", "x" * size),), 0, 0, [], 0, None)
    nodes = LoweredNodes(limit=250)
    for key in "abc":
        nodes.put(key, record(100))
    assert nodes.get("a") is None and nodes.get("b") is not None and nodes.size == 200
    nodes.put("d", record(100))                    # "b" was used last: "c" goes
    assert nodes.get("c") is None and nodes.get("b") is not None and nodes.get("d") is not None
    nodes.put("e", None)                           # a node that cannot be replayed is not kept
    assert nodes.get("e") is None and nodes.size == 200


# ------------------------------------------------------------------------------------------ the key
def keys(fn, *specs):
    """node_key of each node of fn's planned graph (in order), in a fresh Lowering of it."""
    graph = memory_planning.run(lucid.trace(fn, *specs))
    lowering = Lowering(graph, graph.memory_plan, host())
    return [node_key(lowering, node) for node in graph.nodes if not node.is_constant]


def key(fn, *specs):
    return keys(fn, *specs)[-1]


F32 = lucid.spec(4, 6)


def test_equal_nodes_have_equal_keys():
    first, second = keys(lambda x, y: (x.relu(), y.relu()), F32, F32)
    assert first == second


def test_the_key_changes_with_the_target_and_the_symbols():
    graph = memory_planning.run(lucid.trace(lambda x: x.relu(), F32))
    lowering = Lowering(graph, graph.memory_plan, host())
    node = graph.nodes[-1]
    plain = node_key(lowering, node)
    lowering.target = dataclasses.replace(host(), cpu="x86-64-v3", features="")
    other_cpu = node_key(lowering, node)
    lowering.target = host()
    lowering.table.symbols = ("M", "N")
    assert len({plain, other_cpu, node_key(lowering, node)}) == 3


def test_the_key_changes_with_the_operator_and_the_attributes():
    assert key(lambda x, y: x + y, F32, F32) != key(lambda x, y: x * y, F32, F32)
    cube = lucid.spec(4, 4, 4)
    assert key(lambda x: x.sum(dim=1), cube) != key(lambda x: x.sum(dim=2), cube)


def test_the_key_changes_with_each_operand_s_type():
    assert key(lambda x: x.relu(), F32) != key(lambda x: x.relu(), lucid.spec(4, 6, dtype=lucid.float64))
    assert key(lambda x: x.relu(), F32) != key(lambda x: x.relu(), lucid.spec(6, 4))
    assert key(lambda x, y: x + y, F32, F32) != key(lambda x, y: x + y, F32, lucid.spec(6))     # broadcast
    assert key(lambda x: x.reshape(24) + 1.0, F32) != key(lambda x: x.reshape(2, 12) + 1.0, F32)


def test_the_key_changes_with_shared_storage():
    assert key(lambda x, y: x + y, F32, F32) != key(lambda x, y: x + x, F32, F32)


def test_the_key_changes_with_a_constant_input_s_data():
    assert key(lambda x: x * 2.0, F32) != key(lambda x: x * 3.0, F32)
    assert key(lambda x: x * 2.0, F32) == key(lambda x: x * 2.0, F32)


def test_the_key_changes_with_an_input_left_packed():
    graph = memory_planning.run(lucid.trace(lambda x: x.relu(), F32))
    lowering = Lowering(graph, graph.memory_plan, host())
    node = graph.nodes[-1]
    plain = node_key(lowering, node)
    lowering._left = (node.inputs[0], "layout A")
    packed = node_key(lowering, node)
    lowering._left = (node.inputs[0], "layout B")
    assert len({plain, packed, node_key(lowering, node)}) == 3
    lowering._left = (node.output, "layout A")        # a value that is not one of its inputs
    assert node_key(lowering, node) == plain


def test_an_executable_s_kernels_are_the_same_whether_compiled_or_loaded(tmp_path, monkeypatch):
    """`Executable.kernels()`: kept from the compile, lowered again when the code came from the disk
    cache; both give each kernel (name, items, buffers, barrier, label) and the node it is for."""
    from lucid.runtime.executable import Executable

    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path))
    graph = unet_graphs()[1]
    compiled, loaded = Executable(graph), Executable(graph)
    assert compiled._kernels is not None and loaded._kernels is None      # the second came from the cache
    facts = [[(kernel, id(node)) for kernel, node in executable.kernels()] for executable in (compiled, loaded)]
    assert facts[0] == facts[1] and len(facts[0]) > 20
    alone = lowered(graph, reuse=False, monkeypatch=monkeypatch)
    assert facts[0] == [(kernel, id(node)) for kernel, node in zip(alone.kernels, alone.kernel_nodes)]
