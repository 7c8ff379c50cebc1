"""The fusion pass (lucid/passes/fusion.py) and memory planning (lucid/passes/memory_planning.py).

Fusion: elementwise chains become one `fused` node; a conv / conv_transpose followed by a chain is one
fused node whose body starts with the convolution; values with two readers, graph outputs and state
updates are never fused away, nor values whose shape differs from their reader's; results under
`lucid.ir.run` are unchanged (hand graphs, random chains, the example models in eval and training
mode, and their gradient graphs); the text form of fused graphs round-trips through `lucid.ir.parse`;
the input graph is left alone.

Memory planning: for the example models (inference, fused, training forward/backward) and random
graphs with reshapes, no two arena values whose live ranges overlap share bytes (live ranges computed
here independently of the pass), reshapes alias their input's storage, offsets are aligned and inside
the arena, and the peak of simultaneously live bytes <= arena_bytes <= the sum of all sizes. Compiled
results of planned graphs (random graphs and the models) equal the interpreter's.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lucid
import lucid.nn.functional as F
from lucid.runtime.executable import Executable
from lucid.ir import Builder, Graph, TensorType, building, ops
from lucid.passes import (PassManager, autodiff, common_subexpressions, dead_code, fusion, memory_planning,
                          partition)
from model_helpers import param_copies, run_both, randomise_batch_norm
from models import ConvAutoencoder3D, UNet3D, VideoClassifier

F32 = lucid.float32
RNG = np.random.default_rng(2025)

MODELS = {
    "unet": (lambda: UNet3D(base=2, depth=1), (1, 1, 8, 8, 8)),
    "autoencoder": (lambda: ConvAutoencoder3D(base=2, latent=4), (1, 1, 8, 8, 8)),
    "video": (lambda: VideoClassifier(width=2), (2, 3, 2, 8, 8)),
}


# ============================================================================== helpers
def hand_graph(build, inputs: dict, params: dict | None = None, name="g"):
    """A graph with inputs {name: TensorType} and parameters {name: array} (bound to tensors);
    `build(*input values, *param values)` returns the output or a tuple of outputs."""
    g = Graph(name)
    values = [g.add_input(n, t) for n, t in inputs.items()]
    for n, array in (params or {}).items():
        tensor = lucid.Tensor(array, requires_grad=True)
        values.append(g.add_param(n, TensorType(tensor.shape, tensor.dtype), binding=tensor))
    with building(Builder(g)):
        result = build(*values)
    as_tuple = isinstance(result, tuple)
    g.set_outputs(list(result) if as_tuple else [result], as_tuple)
    return g.verify()


def arr(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def computing(g):
    """Ops of the non-constant nodes, in order."""
    return [n.op for n in g.nodes if not n.is_constant]


def body_ops(node):
    return computing(node.attrs["body"])


def is_elementwise(op: str) -> bool:
    return ops.get(op).kind is ops.OpKind.ELEMENTWISE


def fused(g):
    return [n for n in g.nodes if n.op == "fused"]


def op_census(g) -> Counter:
    """Non-constant operators of a graph, those inside fused bodies included."""
    counts = Counter()
    for n in g.nodes:
        if n.op == "fused":
            counts.update(body_ops(n))
        elif not n.is_constant:
            counts[n.op] += 1
    return counts


def check_fusion(g):
    """Fuse `g` and check the structural guarantees every fused graph has; returns the fused graph."""
    before = str(g)
    f = fusion.run(g)
    assert str(g) == before, "fusion modified its input graph"
    assert op_census(f) == op_census(g), "fusion lost or duplicated operators"
    assert len(f.outputs) == len(g.outputs) and set(f.state_updates) == set(g.state_updates)
    for node in fused(f):
        body = node.attrs["body"]
        ops_ = computing(body)
        assert len(ops_) > 1, "a group of one node was fused"
        anchors = [k for k, op in enumerate(ops_) if ops.get(op).fusion_anchor]
        assert len(anchors) <= 1, "two anchors in one group"
        summed = ops_[-1] == "sum"               # an elementwise chain may end with a sum
        joined = ops_[0] == "concat" and anchors == [1]       # a concatenation read by the conv's packing
        assert all(is_elementwise(op) for k, op in enumerate(ops_[:len(ops_) - summed])
                   if k not in anchors and not (joined and k == 0))
        assert not (summed and anchors)
        assert [v.type for v in body.inputs] == [v.type for v in node.inputs]
        assert [v.name for v in body.inputs] == [f"in{k}" for k in range(len(body.inputs))]
        assert all(c.output.type.size == 1 for c in body.nodes if c.is_constant)
        assert body.outputs[0].type == node.output.type
        assert node.output.type == body.nodes[-1].output.type
        # a tree: each member but the last is read once, by a later member of its shape (a sum: its input)
        body_users = body.users()
        members = [n for n in body.nodes if not n.is_constant]
        for k, member in enumerate(members[:-1]):
            (reader,) = body_users.get(member.output)
            assert reader in members[k + 1:]
            if reader.opdef.fusion_anchor:      # a prologue computes the anchor's input
                assert reader.inputs[0] is member.output
                continue
            assert member.output.shape == (reader.inputs[0].shape if reader.op == "sum" else reader.output.shape)
    return f


# ============================================================================== fusion: hand graphs
def test_elementwise_chain_is_one_fused_node():
    g = hand_graph(lambda x: (((x * 2.0 + 1.0).tanh().exp() - x).relu()), {"x": TensorType((2, 3, 4), F32)})
    f = dead_code.run(check_fusion(g))
    assert computing(f) == ["fused"] and len(f.nodes) == 1
    text = str(f)
    assert text.count("= fused(") == 1 and "= tanh(" not in text.replace("\\n", "\n").split("body=")[0]
    (node,) = fused(f)
    assert body_ops(node) == ["mul", "add", "tanh", "exp", "sub", "relu"]
    assert [v.name for v in node.inputs] == ["x"]                 # x read twice, passed once
    body = node.attrs["body"]
    assert sorted(float(c.value) for c in body.nodes if c.is_constant) == [1.0, 2.0]   # scalars copied in
    run_both(g, f, *[arr(2, 3, 4)])


def test_chain_with_comparisons_casts_and_broadcast_operands():
    def build(x, y, b):
        cond = (x * 0.5) > y
        picked = ops.where(cond, (x - b).sigmoid(), ops.cast(x < 0.25, F32))
        return ops.cast(ops.cast(picked, lucid.float64).clamp(0.1, 0.9) * 3.0, F32)

    g = hand_graph(build, {"x": TensorType((3, 5), F32), "y": TensorType((3, 5), F32), "b": TensorType((5,), F32)})
    f = dead_code.run(check_fusion(g))
    assert len(fused(f)) >= 1
    run_both(g, f, *[arr(3, 5), arr(3, 5), arr(5)])


def test_conv_with_bias_relu_and_residual_is_one_fused_node():
    weights = {"w": arr(4, 4, 3, 3, 3) * 0.2, "b": arr(4)}
    g = hand_graph(lambda x, w, b: (F.conv3d(x, w, b, padding=1).relu() + x) * 0.5,
                   {"x": TensorType((1, 4, 4, 4, 4), F32)}, weights)
    f = dead_code.run(check_fusion(g))
    assert computing(f) == ["fused"]
    (node,) = fused(f)
    assert body_ops(node) == ["conv", "relu", "add", "mul"]
    assert [v.name for v in node.inputs] == ["x", "w", "b"]
    assert "= fused(%x, %w, %b)" in str(f)
    x = arr(1, 4, 4, 4, 4)
    run_both(g, f, *[x])
    np.testing.assert_allclose(Executable(memory_planning.run(f))(x)[0], lucid.ir.run(g, x), rtol=1e-5, atol=1e-5)


def test_conv_transpose_epilogue_and_lone_convs():
    weights = {"w1": arr(2, 3, 2, 2, 2), "w2": arr(3, 3, 3, 3, 3) * 0.2, "w3": arr(2, 3, 1, 1, 1)}

    def build(x, w1, w2, w3):
        u = F.conv_transpose3d(x, w1, stride=2).sigmoid() * 2.0       # conv_transpose + epilogue
        v = F.conv3d(u, w2, padding=1)                                # conv read by two convs: alone
        return F.conv3d(v, w3) + F.conv3d(v, w3).tanh()

    g = hand_graph(build, {"x": TensorType((1, 2, 2, 3, 3), F32)}, weights)
    f = dead_code.run(check_fusion(g))
    bodies = [body_ops(n) for n in fused(f)]
    assert ["conv_transpose", "sigmoid", "mul"] in bodies
    assert computing(f).count("conv") >= 1                            # v: a conv with two readers
    x = arr(1, 2, 2, 3, 3)
    run_both(g, f, *[x])
    np.testing.assert_allclose(Executable(memory_planning.run(f))(x)[0], lucid.ir.run(g, x), rtol=1e-5, atol=1e-5)


def test_a_fused_conv_keeps_its_place_among_the_other_nodes():
    """A conv whose epilogue takes nodes that came after an unrelated node (as an input-gradient conv
    takes the activation gradient autodiff emits after the weight gradient) stands where the conv
    stood: the unrelated node still follows it."""
    def build(x, y, w):
        g = F.conv3d(x, w, padding=1)
        unrelated = (y * 3.0).exp()
        return g * ops.where(y > 0.0, 1.0, 0.1), unrelated

    shape = (1, 4, 3, 4, 5)
    g = hand_graph(build, {"x": TensorType(shape, F32), "y": TensorType(shape, F32)}, {"w": arr(4, 4, 3, 3, 3)})
    f = dead_code.run(check_fusion(g))
    assert [body_ops(n) for n in fused(f)] == [["conv", "gt", "where", "mul"], ["mul", "exp"]]
    assert computing(f) == ["fused", "fused"] and fused(f)[0].output is f.outputs[0]
    run_both(g, f, *[arr(*shape), arr(*shape)])


def test_instance_norm_gradient_makes_no_pass_of_its_own_for_the_moments():
    """InstanceNorm's statistics reduce x's own axes, so its backward's normalize (the moments'
    gradient) has x's shape and joins the input gradient's tree: no normalize of its own."""
    def layer(x, w):
        return F.instance_norm(x, weight=w) * 2.0

    graph = lucid.trace(layer, lucid.spec(2, 3, 4, 5, 6), lucid.spec(3))
    (moments,) = [n for n in graph.nodes if n.op == "moments"]
    assert moments.inputs[0] is graph.inputs[0] and moments.attrs["axes"] == (2, 3, 4)
    f = check_fusion(autodiff.run(graph, wrt=["x", "w"]))
    assert computing(f).count("normalize") == 1                  # the forward's (the weight gradient reads it)
    assert ["mul", "mul", "normalize", "add"] in [body_ops(n) for n in fused(f)]     # x's gradient, one loop
    assert ["normalize", "sum"] in [body_ops(n) for n in fused(f)]


def test_values_with_two_readers_are_not_fused_away():
    g = hand_graph(lambda x: (lambda h: h.tanh() + h.sigmoid())((x * 2.0).exp()), {"x": TensorType((4, 5), F32)})
    f = dead_code.run(check_fusion(g))
    producers = [n for n in f.nodes if n.op == "fused" and body_ops(n) == ["mul", "exp"]]
    assert len(producers) == 1
    h = producers[0].output
    (reader,) = f.users()[h]                                         # both readers, in one tree, read h
    assert [v is h for v in reader.inputs] == [True]
    assert sorted(body_ops(n) for n in fused(f)) == [["mul", "exp"], ["tanh", "sigmoid", "add"]]
    run_both(g, f, *[arr(4, 5)])


def test_chains_meeting_at_a_node_are_one_tree():
    """Two chains whose ends one node reads (each end read by it alone) and a third operand read
    from outside: one fused node, its members in graph order; a conv's epilogue takes the other
    chain in (the anchor first), a second conv's output stays outside."""
    def build(x, y, z):
        return ((x * 2.0).exp() + (y - 1.0).tanh()) * z
    g = hand_graph(build, {"x": TensorType((3, 5), F32), "y": TensorType((3, 5), F32), "z": TensorType((3, 5), F32)})
    f = dead_code.run(check_fusion(g))
    assert [body_ops(n) for n in fused(f)] == [["mul", "exp", "sub", "tanh", "add", "mul"]]
    assert len(computing(f)) == 1
    run_both(g, f, *[arr(3, 5), arr(3, 5), arr(3, 5)])

    def conv_plus_chain(x, w, y):
        return F.conv3d(x, w, padding=1) + (y * 3.0).exp()
    g = hand_graph(conv_plus_chain, {"x": TensorType((1, 2, 3, 4, 5), F32), "w": TensorType((2, 2, 3, 3, 3), F32),
                                     "y": TensorType((1, 2, 3, 4, 5), F32)})
    f = dead_code.run(check_fusion(g))
    assert [body_ops(n) for n in fused(f)] == [["conv", "mul", "exp", "add"]]
    run_both(g, f, *[arr(1, 2, 3, 4, 5), arr(2, 2, 3, 3, 3), arr(1, 2, 3, 4, 5)])

    def two_convs(x, w, y):
        return (F.conv3d(x, w, padding=1) + F.conv3d(y, w, padding=1)).relu()
    g = hand_graph(two_convs, {"x": TensorType((1, 2, 3, 4, 5), F32), "w": TensorType((2, 2, 3, 3, 3), F32),
                               "y": TensorType((1, 2, 3, 4, 5), F32)})
    f = dead_code.run(check_fusion(g))
    assert computing(f) == ["conv", "fused"] and [body_ops(n) for n in fused(f)] == [["conv", "add", "relu"]]
    run_both(g, f, *[arr(1, 2, 3, 4, 5), arr(2, 2, 3, 3, 3), arr(1, 2, 3, 4, 5)])


def test_a_value_read_twice_by_one_node_is_not_fused_away():
    g = hand_graph(lambda x: (lambda h: (h * h).relu())((x + 1.0).exp()), {"x": TensorType((6,), F32)})
    f = dead_code.run(check_fusion(g))
    assert sorted(body_ops(n) for n in fused(f)) == [["add", "exp"], ["mul", "relu"]]
    run_both(g, f, *[arr(6)])


def test_outputs_are_not_fused_away():
    g = hand_graph(lambda x: (lambda a: (a, a.exp().relu(), (a * 3.0).tanh()))((x + 2.0).abs()),
                   {"x": TensorType((2, 3), F32)})
    f = dead_code.run(check_fusion(g))
    assert f.outputs[0].node.op == "fused" and body_ops(f.outputs[0].node) == ["add", "abs"]
    assert body_ops(f.outputs[1].node) == ["exp", "relu"]
    assert body_ops(f.outputs[2].node) == ["mul", "tanh"]
    run_both(g, f, *[arr(2, 3)])
    # an output in the middle of a chain splits it
    g = hand_graph(lambda x: (lambda a: (a, a.exp()))(x * 2.0), {"x": TensorType((3,), F32)})
    f = dead_code.run(check_fusion(g))
    assert computing(f) == ["mul", "exp"] and not fused(f)


def test_shape_changes_stop_a_chain():
    def build(x, y):
        t = (y * 2.0).exp()                  # shape (3,), read by a (2, 3) add: not joined
        return (x + t).relu()

    g = hand_graph(build, {"x": TensorType((2, 3), F32), "y": TensorType((3,), F32)})
    f = dead_code.run(check_fusion(g))
    shapes = sorted(n.output.shape for n in fused(f))
    assert shapes == [(2, 3), (3,)]
    run_both(g, f, *[arr(2, 3), arr(3)])


def test_state_updates_are_not_fused_away():
    lucid.manual_seed(1)
    model = VideoClassifier(width=2).train()
    g = lucid.trace(model, lucid.spec(2, 3, 2, 8, 8))
    f = dead_code.run(check_fusion(g))
    assert set(f.state_updates) == set(g.state_updates) and len(g.state_updates) == 6
    produced = {n.output for n in f.nodes}
    assert all(v in produced for v in f.state_updates.values())
    run_both(g, f, *[arr(2, 3, 2, 8, 8)])


# ============================================================================== fusion: models
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", list(MODELS))
def test_fused_models_match_unfused(name, training):
    make, shape = MODELS[name]
    lucid.manual_seed(5)
    model = make().train(training)
    g = PassManager("inference").run(lucid.trace(model, lucid.spec(*shape)))
    randomise_batch_norm(model)
    f = dead_code.run(check_fusion(g))
    assert len(f.nodes) < len(g.nodes) and fused(f)
    anchored = [n for n in fused(f) if ops.get(body_ops(n)[0]).fusion_anchor]
    if not training or name == "autoencoder":
        assert anchored, "no convolution got an epilogue"
    x = arr(*shape)
    run_both(g, f, *[x])
    # the gradient graph fuses too, with the same results
    joint = PassManager("simplify").run(autodiff.run(g, wrt=[v.name for v in g.inputs] + autodiff.default_wrt(g)))
    seeds = [arr(*v.shape) for v in joint.inputs[len(g.inputs):]]
    run_both(joint, dead_code.run(check_fusion(joint)), *[x] + seeds)


@pytest.mark.parametrize("name", list(MODELS))
def test_fused_text_round_trips(name):
    make, shape = MODELS[name]
    lucid.manual_seed(6)
    model = make().train()
    g = lucid.trace(model, lucid.spec(*shape))
    for graph in (g, autodiff.run(g)):
        f = dead_code.run(fusion.run(graph))
        text = str(f)
        parsed = lucid.ir.parse(text)
        assert str(parsed) == text and parsed == f
        for node, again in zip(fused(f), fused(parsed), strict=True):
            assert isinstance(again.attrs["body"], Graph) and again.attrs["body"] == node.attrs["body"]
            assert lucid.ir.parse(str(node.attrs["body"])) == node.attrs["body"]
            assert again.output.type == node.output.type
        params = {k: np.array(v, copy=True) for k, v in f.bindings.items()}
        inputs = [arr(*v.shape) for v in f.inputs]
        expected = lucid.ir.run(f, *inputs, params=dict(param_copies(f)))
        got = lucid.ir.run(parsed, *inputs, params=params)
        for a, b in zip(expected if f.returns_tuple else [expected], got if f.returns_tuple else [got]):
            np.testing.assert_array_equal(a, b)


def test_fused_graph_file_round_trip(tmp_path):
    g = hand_graph(lambda x, w: ops.relu(ops.exp(x) * w + 1.0), {"x": TensorType((2, 5), F32)}, {"w": arr(5)})
    f = dead_code.run(check_fusion(g))
    f.save(tmp_path / "fused.lucid")
    loaded = lucid.ir.load(tmp_path / "fused.lucid")
    assert loaded == f and isinstance(fused(loaded)[0].attrs["body"], Graph)
    x = arr(2, 5)
    np.testing.assert_array_equal(lucid.ir.run(loaded, x), lucid.ir.run(g, x))


def test_common_subexpressions_tells_fused_bodies_apart():
    # Two fused nodes on the same input: bodies that differ stay two nodes, equal bodies become one.
    def build(x):
        return (x * 2.0).exp(), (x * 2.0).tanh(), (x * 3.0).exp(), (x * 3.0).exp()
    f = dead_code.run(check_fusion(hand_graph(build, {"x": TensorType((4,), F32)})))
    assert len(fused(f)) == 4
    merged = common_subexpressions.run(f)
    assert [body_ops(n) for n in fused(merged)] == [["mul", "exp"], ["mul", "tanh"], ["mul", "exp"]]
    x = arr(4)
    for a, b in zip(lucid.ir.run(merged, x), lucid.ir.run(f, x)):
        np.testing.assert_array_equal(a, b)


# ============================================================================== fusion: random chains
UNARY = ["neg", "abs", "exp", "tanh", "sigmoid", "relu", "gelu", "erf", "sign"]
BINARY = ["add", "sub", "mul", "maximum", "minimum"]


def random_chain_graph(choices: list, shape=(3, 4)):
    def build(x, y, z):
        pool = [x, y]
        for kind, pick, other in choices:
            source = pool[pick % len(pool)]
            if kind < len(UNARY):
                value = getattr(ops, {"neg": "neg", "abs": "abs_"}.get(UNARY[kind], UNARY[kind]))(source)
                if UNARY[kind] == "exp":
                    value = ops.exp(ops.tanh(source))
            elif kind < len(UNARY) + len(BINARY):
                partner = [pool[other % len(pool)], z, 0.5][other % 3]
                value = getattr(ops, BINARY[kind - len(UNARY)])(source, partner)
            else:
                value = ops.where(source > pool[other % len(pool)], source, z)
            pool.append(value)
        outputs = pool[2:][-2:] if len(pool) > 3 else pool[-1:]
        return tuple(outputs)

    return hand_graph(build, {"x": TensorType(shape, F32), "y": TensorType(shape, F32),
                              "z": TensorType(shape[-1:], F32)})


chain_steps = st.lists(st.tuples(st.integers(0, len(UNARY) + len(BINARY)), st.integers(0, 20), st.integers(0, 20)),
                       min_size=1, max_size=14)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(chain_steps)
def test_random_elementwise_graphs_fuse_without_changing_results(steps):
    g = random_chain_graph(steps)
    f = dead_code.run(check_fusion(g))
    assert len(f.nodes) <= len(g.nodes)
    run_both(g, f, *[arr(3, 4), arr(3, 4), arr(4)])


# ============================================================================== memory planning
def storage_root(graph, value):
    """The value whose storage `value` uses, by the documented rule (reshapes that are not graph
    outputs alias their input), computed without the pass."""
    outputs = set(graph.outputs)
    while value.node is not None and value.node.op == "reshape" and value not in outputs:
        value = value.node.inputs[0]
    return value


def nbytes(value) -> int:
    return value.type.size * value.dtype.numpy.itemsize


def check_plan(graph):
    """Check `memory_planning.plan(graph)` against its guarantees; returns the plan."""
    plan = memory_planning.plan(graph)
    outputs = set(graph.outputs)
    index = {n.output: i for i, n in enumerate(graph.nodes)}
    end = len(graph.nodes)
    # storage roots and aliases
    for node in graph.nodes:
        v = node.output
        assert plan.root(v) is storage_root(graph, v)
        if node.op == "reshape" and v not in outputs:
            assert plan.aliases[v] is node.inputs[0]
            if plan.root(v) in plan.offsets:
                assert plan.offsets[v] == plan.offsets[plan.root(v)]
        else:
            assert v not in plan.aliases
        if node.is_constant or v in outputs:
            assert v not in plan.offsets
        elif v not in plan.aliases:
            assert v in plan.offsets, f"intermediate %{index[v]} ({node.op}) has no storage"
    roots = [v for v in plan.offsets if v not in plan.aliases]
    assert all(v.node is not None and not v.node.is_constant and v not in outputs for v in roots)
    # live ranges: definition to last read of the root or any alias (outputs / state: to the end)
    last = {r: index[r] for r in roots}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            r = storage_root(graph, v)
            if r in last:
                last[r] = max(last[r], i)
    for v in list(graph.outputs) + list(graph.state_updates.values()):
        r = storage_root(graph, v)
        if r in last:
            last[r] = end
    for r in roots:
        offset = plan.offsets[r]
        assert offset % memory_planning.ALIGNMENT == 0
        assert 0 <= offset and offset + nbytes(r) <= plan.arena_bytes
    spans = sorted((plan.offsets[r], plan.offsets[r] + nbytes(r), index[r], last[r]) for r in roots)
    for a in range(len(spans)):
        start_a, stop_a, first_a, last_a = spans[a]
        for b in range(a + 1, len(spans)):
            start_b, stop_b, first_b, last_b = spans[b]
            if start_b >= stop_a:
                break                                  # sorted by offset: no later block overlaps a
            assert not (first_a <= last_b and first_b <= last_a), \
                f"values %{first_a} and %{first_b} share bytes while both live"
    # the arena: at least the peak of live bytes, at most everything at once
    padded = {r: -(-max(nbytes(r), 1) // memory_planning.ALIGNMENT) * memory_planning.ALIGNMENT for r in roots}
    peak = max((sum(nbytes(r) for r in roots if index[r] <= i <= last[r]) for i in range(end + 1)), default=0)
    assert peak <= plan.arena_bytes <= sum(padded.values())
    # run() attaches the same plan to a copy
    planned = memory_planning.run(graph)
    assert planned.memory_plan.arena_bytes == plan.arena_bytes
    return plan


def model_graphs(name):
    """The graphs lucid.compile makes for a model: inference (eval), and the training forward and
    backward executables' graphs, each unfused and fused."""
    make, shape = MODELS[name]
    lucid.manual_seed(9)
    model = make().eval()
    graphs = {"inference": PassManager("inference").run(lucid.trace(model, lucid.spec(*shape)))}
    model.train()
    g = lucid.trace(model, lucid.spec(*shape))
    joint = autodiff.run(g, wrt=["x"] + autodiff.default_wrt(g))
    split = partition.run(PassManager("simplify").run(joint), len(g.inputs), len(g.outputs))
    graphs.update(joint=joint, forward=split.forward, backward=split.backward)
    graphs.update({f"{k} fused": dead_code.run(fusion.run(v)) for k, v in list(graphs.items())})
    return model, graphs


@pytest.mark.parametrize("name", list(MODELS))
def test_plans_of_the_example_models(name):
    model, graphs = model_graphs(name)
    for label, graph in graphs.items():
        plan = check_plan(graph)
        roots = [v for v in plan.offsets if v not in plan.aliases]
        if len(roots) >= 8:                     # (each root alone would take a multiple of ALIGNMENT bytes)
            alone = sum(-(-max(nbytes(v), 1) // memory_planning.ALIGNMENT) * memory_planning.ALIGNMENT for v in roots)
            assert plan.arena_bytes < alone, f"{label}: no reuse at all"


def test_plan_with_reshape_aliases_outputs_and_state():
    def build(x, w):
        a = (x * 2.0).reshape(4, 6)             # alias of an arena value
        b = x.reshape(24)                      # alias of a graph input (caller storage)
        c = a.exp().reshape(2, 3, 4)           # alias of a value, read after its root's last direct use
        d = (c + 1.0).sum(axis=0)
        e = b.reshape(6, 4).tanh()             # alias of an alias
        return d.reshape(12), e, (c * w).relu().reshape(24)   # reshapes that are outputs copy

    g = hand_graph(build, {"x": TensorType((2, 3, 4), F32)}, {"w": arr(4)})
    plan = check_plan(g)
    assert sum(n.op == "reshape" for n in g.nodes) == 6 and len(plan.aliases) == 4
    x = arr(2, 3, 4)
    expected = lucid.ir.run(g, x)
    got = Executable(memory_planning.run(g))(x)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_plan_with_aliases_of_outputs_parameters_and_constants():
    table = np.arange(12, dtype=np.float32).reshape(3, 4) / 7

    def build(x, w):
        y = x.exp()                                           # an output...
        r = y.reshape(12)                                     # ...aliased by an intermediate
        k = Graph.add_constant(x.graph, table).reshape(12)    # alias of a constant
        v = w.reshape(12)                                     # alias of a parameter
        return y, (r * k + v).tanh(), y.reshape(4, 3)

    g = hand_graph(build, {"x": TensorType((3, 4), F32)}, {"w": arr(3, 4)})
    plan = check_plan(g)
    assert len(plan.aliases) == 3 and not [v for v in plan.aliases if v in plan.offsets]
    x = arr(3, 4)
    expected = lucid.ir.run(g, x)
    for graph in (g, dead_code.run(fusion.run(g))):
        got = Executable(memory_planning.run(graph))(x)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def random_planning_graph(seed: int, size: int = 16):
    """A random graph of elementwise ops, reshapes (chains of them, of inputs, as outputs),
    reductions and matmuls, with several outputs; deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    shapes = [(2, 3, 4), (24,), (6, 4), (4, 6), (3, 8)]

    def build(x, y):
        pool = [x, y, x.reshape(*shapes[1 + rng.integers(len(shapes) - 1)])]
        for _ in range(size):
            source = pool[rng.integers(len(pool))]
            kind = rng.integers(7)
            if kind == 0 and source.type.size == 24:
                value = source.reshape(*shapes[rng.integers(len(shapes))])
            elif kind == 1:
                value = source.sum(axis=int(rng.integers(source.ndim))) if source.ndim > 1 else source * 1.5
            elif kind == 2 and source.shape == (6, 4):
                value = source @ pool[1]
            elif kind == 3:
                partners = [v for v in pool if v.shape == source.shape]
                value = source + partners[rng.integers(len(partners))]
            else:
                value = [ops.exp, ops.tanh, ops.relu, ops.neg][kind % 4](source)
            pool.append(value)
        picks = rng.choice(np.arange(1, len(pool)), size=min(3, len(pool) - 1), replace=False)
        return tuple(pool[int(k)] for k in sorted(picks))

    return hand_graph(build, {"x": TensorType((2, 3, 4), F32), "y": TensorType((4, 6), F32)}, name=f"random{seed}")


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6), st.integers(4, 30))
def test_plans_of_random_graphs(seed, size):
    graph = random_planning_graph(seed, size)
    check_plan(graph)
    check_plan(dead_code.run(fusion.run(graph)))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_compiled_random_graphs_match_the_interpreter(seed):
    graph = random_planning_graph(seed, 24)
    assert any(n.op == "reshape" for n in graph.nodes)
    check_plan(graph)
    inputs = [arr(2, 3, 4) * 0.5, arr(4, 6) * 0.5]
    expected = lucid.ir.run(graph, *inputs)
    for g in (graph, dead_code.run(fusion.run(graph))):
        executable = Executable(memory_planning.run(g))
        for threads in (1, 2):
            got = executable(*inputs, threads=threads)
            for a, b in zip(got, expected, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_compiled_planned_models_match_the_interpreter(name):
    model, graphs = model_graphs(name)
    randomise_batch_norm(model)
    graph = graphs["inference fused"]
    shape = MODELS[name][1]
    x = arr(*shape)
    executable = Executable(memory_planning.run(graph))
    assert executable.plan.arena_bytes == memory_planning.plan(graph).arena_bytes
    np.testing.assert_allclose(executable(x)[0], lucid.ir.run(graph, x), rtol=1e-4, atol=1e-5)
