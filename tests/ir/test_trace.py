"""`lucid.trace`: recording modules and plain functions into a `lucid.ir.Graph` (SPEC §4-5).

Covered here:
- a traced graph run by `lucid.ir.run` gives the eager output (the seeds' models, UNet3D,
  ConvAutoencoder3D, VideoClassifier; eval mode, and train mode with BatchNorm running statistics
  written back exactly as an eager call writes them);
- plain functions: several inputs named after the parameters, Python scalars, tuple outputs,
  `lucid.cat` and tensor methods; eager tensors become parameters or constants;
- every node's module scope (path, class); parameters named by state-dict path and bound to the
  module's own tensors (in-place edits are seen by `run`, `params=` overrides them);
- lazy modules resolved at trace time with no kernel running, reproducibly, in declaration order;
- trace-time refusals (TraceError) and shape errors naming the module path, class and shapes.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import lucid
import lucid.nn as nn
from lucid.errors import ShapeError, TraceError
from lucid.ir import Graph, Scope, ops
from model_helpers import randomise_batch_norm
from models import ConvAutoencoder3D, UNet3D, VideoClassifier
from seeds import Conv3dModel, Decoder, Decoder3D


def close(actual, expected):
    """Trace and eager share the NumPy reference kernels: results agree to rounding."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


def data(*shape, seed=1, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def boom(*args, **kwargs):
    raise AssertionError("a kernel ran")


def patch_kernels(monkeypatch, names=None):
    """Make the reference kernels of `names` (default: every operator) raise when called. The patch goes
    into the definition's own __dict__, so undoing it removes it and leaves the class's kernel in force."""
    for name in names or ops.all_ops():
        monkeypatch.setitem(vars(ops.get(name)), "compute", boom)


# ============================================================================ trace == eager

def _seed_lazy_decoder_block():
    return nn.LazyConvTranspose3d(out_channels=32, kernel_size=4, stride=2, padding=1)


def _seed_lazy_materialization():
    return nn.LazyConvTranspose3d(out_channels=16, kernel_size=3, padding=1)


CASES = {
    # name: (model factory, input shape)
    "Decoder3D": (Decoder3D, (2, 8, 4, 4, 4)),
    "Decoder2d": (Decoder, (1, 16, 8, 8)),
    "Conv3dModel_10x10x10": (Conv3dModel, (1, 1, 10, 10, 10)),
    "seed_lazy_decoder_block": (_seed_lazy_decoder_block, (2, 64, 4, 8, 8)),
    "seed_lazy_materialization": (_seed_lazy_materialization, (1, 8, 4, 4, 4)),
    "UNet3D": (lambda: UNet3D(base=2), (2, 1, 8, 8, 8)),
    "ConvAutoencoder3D": (lambda: ConvAutoencoder3D(base=2, latent=4), (2, 1, 8, 8, 8)),
    "ConvAutoencoder3D_default": (ConvAutoencoder3D, ConvAutoencoder3D.example_shape(1)),
    "VideoClassifier": (lambda: VideoClassifier(width=4), (2, 3, 2, 16, 16)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_traced_model_runs_like_eager_in_eval_mode(case):
    factory, shape = CASES[case]
    lucid.manual_seed(0)
    model = randomise_batch_norm(factory()).eval()
    graph = lucid.trace(model, lucid.spec(*shape))
    assert isinstance(graph, Graph)
    assert not graph.state_updates                   # eval mode: no running statistics change
    x = data(*shape)
    expected = model(lucid.Tensor(x)).numpy()
    got = lucid.ir.run(graph, x)
    assert isinstance(got, np.ndarray)
    close(got, expected)
    assert np.ptp(got) > 0                          # not a degenerate (constant) output
    # the graph's output type is the eager output's
    assert graph.outputs[0].shape == expected.shape


def test_trace_from_a_tensor_input_equals_trace_from_a_spec():
    lucid.manual_seed(0)
    model = UNet3D(base=2).eval()
    from_spec = lucid.trace(model, lucid.spec(1, 1, 8, 8, 8))
    from_tensor = lucid.trace(model, lucid.randn(1, 1, 8, 8, 8))
    assert from_spec == from_tensor
    assert from_spec != lucid.trace(model, lucid.spec(2, 1, 8, 8, 8))


@pytest.mark.parametrize("shape, layer, fragments", [
    # the seed's comment: a (1, 1, 3, 3, 3) clip leaves a 1x1x1 map for the 2x2x2 pool
    ((1, 1, 3, 3, 3), "MaxPool3d 'pool'", ["(1, 1, 1)", "(2, 2, 2)", "too small"]),
    # as printed: a 4-D (1, 1, 3, 3) input is unbatched (C=1, D=1, H=3, W=3); conv2's kernel does not fit
    ((1, 1, 3, 3), "Conv3d 'conv2'", ["(1, 3, 3)", "(3, 3, 3)"]),
])
def test_conv3d_model_as_printed_is_a_clear_shape_error_eagerly_and_traced(shape, layer, fragments):
    lucid.manual_seed(0)
    model = Conv3dModel()
    with pytest.raises(ShapeError) as eager:
        model(lucid.randn(*shape))
    with pytest.raises(ShapeError) as traced:
        lucid.trace(model, lucid.spec(*shape))
    for exc in (eager.value, traced.value):
        assert isinstance(exc, ValueError)
        message = str(exc)
        assert message.startswith(layer), message
        for fragment in fragments:
            assert fragment in message, message


@pytest.mark.parametrize("factory, shape", [
    (lambda: VideoClassifier(width=4), (2, 3, 2, 16, 16)),
    (lambda: UNet3D(base=2), (2, 1, 8, 8, 8)),
], ids=["VideoClassifier", "UNet3D"])
def test_train_mode_output_and_running_statistics_match_eager(factory, shape):
    lucid.manual_seed(5)
    traced_model = randomise_batch_norm(factory()).train()
    lucid.manual_seed(5)
    eager_model = randomise_batch_norm(factory()).train()
    start = {k: v.copy() for k, v in traced_model.state_dict().items()}
    assert all(np.array_equal(start[k], v) for k, v in eager_model.state_dict().items())

    graph = lucid.trace(traced_model, lucid.spec(*shape))
    buffers = dict(traced_model.named_buffers())
    assert set(graph.state_updates) == set(buffers)          # every running statistic is updated
    for name, tensor in buffers.items():
        assert graph.bindings[name] is tensor

    # tracing changed nothing
    assert all(np.array_equal(start[k], v) for k, v in traced_model.state_dict().items())

    for step in range(2):
        x = data(*shape, seed=10 + step)
        got = lucid.ir.run(graph, x)
        expected = eager_model(lucid.Tensor(x)).numpy()
        close(got, expected)

    after_graph, after_eager = traced_model.state_dict(), eager_model.state_dict()
    for name in buffers:
        if name.endswith("num_batches_tracked"):
            assert after_graph[name].dtype == np.int64
            assert after_graph[name] == after_eager[name] == start[name] + 2
        else:
            assert not np.allclose(after_graph[name], start[name]), name    # the statistics moved
            close(after_graph[name], after_eager[name])
    # the buffers were updated in place: the module still holds the tensors the graph is bound to
    for name, tensor in traced_model.named_buffers():
        assert graph.bindings[name] is tensor
    # parameters are not touched by a forward pass
    for name, _ in traced_model.named_parameters():
        assert np.array_equal(after_graph[name], start[name])


# ============================================================================ plain functions

def several(a, b, c):
    y = lucid.cat([a * 2.5 + 1, b.transpose(0, 1)], dim=1)        # (3, 2) ++ (3, 4) -> (3, 6)
    z = y.flatten().view(6, -1).mean(dim=0)                        # (3,)
    w = (c - 0.5) ** 2 / 3                                         # float64 stays float64
    return z, w.sum(), (3 - y).relu(), a.reshape(2, 3) @ b.T


def test_traced_function_with_several_inputs_runs_like_eager():
    shapes = [(3, 2), (4, 3), (5,)]
    graph = lucid.trace(several, lucid.spec(3, 2), lucid.spec(4, 3), lucid.spec(5, dtype=lucid.float64))
    assert [v.name for v in graph.inputs] == ["a", "b", "c"]
    assert [v.dtype for v in graph.inputs] == [lucid.float32, lucid.float32, lucid.float64]
    assert graph.returns_tuple and len(graph.outputs) == 4
    assert not graph.params                                      # nothing learnable
    arrays = [data(*shapes[0], seed=1), data(*shapes[1], seed=2), data(*shapes[2], seed=3, dtype=np.float64)]
    got = lucid.ir.run(graph, *arrays)
    expected = several(*(lucid.Tensor(a, dtype=lucid.float64 if a.dtype == np.float64 else None) for a in arrays))
    assert isinstance(got, tuple) and len(got) == 4
    for g, e in zip(got, expected):
        close(g, e.numpy())
    # and against plain NumPy
    a, b, c = arrays
    y = np.concatenate([a * 2.5 + 1, b.T], axis=1)
    close(got[0], y.reshape(6, 3).mean(axis=0))
    np.testing.assert_allclose(got[1], (((c - 0.5) ** 2) / 3).sum(), rtol=1e-12)
    close(got[2], np.maximum(3 - y, 0))
    np.testing.assert_allclose(got[3], a.reshape(2, 3) @ b.T, rtol=1e-5, atol=1e-6)


def test_traced_lambda_inputs_single_and_one_tuple_outputs():
    graph = lucid.trace(lambda x, y: (x @ y).mean(dim=1, keepdim=True) * 2, lucid.spec(2, 3), lucid.spec(3, 4))
    assert [v.name for v in graph.inputs] == ["x", "y"]
    assert graph.name == "lambda"
    assert not graph.returns_tuple
    x, y = data(2, 3, seed=1), data(3, 4, seed=2)
    got = lucid.ir.run(graph, x, y)
    assert isinstance(got, np.ndarray)
    close(got, (x @ y).mean(axis=1, keepdims=True) * 2)

    one = lucid.trace(lambda x: (x + 1,), lucid.spec(2))
    assert one.returns_tuple
    result = lucid.ir.run(one, np.array([1.0, 2.0], np.float32))
    assert isinstance(result, tuple) and len(result) == 1
    close(result[0], np.array([2.0, 3.0], np.float32))


def test_traced_function_inputs_past_the_named_parameters():
    def star(first, *rest):
        return first + rest[0] - rest[1]

    graph = lucid.trace(star, lucid.spec(2), lucid.spec(2), lucid.spec(2))
    assert [v.name for v in graph.inputs] == ["first", "input1", "input2"]
    a, b, c = data(2, seed=1), data(2, seed=2), data(2, seed=3)
    close(lucid.ir.run(graph, a, b, c), a + b - c)


def test_eager_tensors_in_a_traced_function_become_params_or_constants():
    lucid.manual_seed(0)
    weight = lucid.randn(3, requires_grad=True)       # learnable, in no module: a parameter
    offset = lucid.randn(3)                           # plain tensor: a constant (a copy)
    graph = lucid.trace(lambda x: x * weight + offset, lucid.spec(3))
    assert [v.name for v in graph.params] == ["param0"]
    assert graph.bindings["param0"] is weight
    constants = [n for n in graph.nodes if n.is_constant]
    assert len(constants) == 1
    np.testing.assert_array_equal(constants[0].value, offset.numpy())
    x = data(3)
    before = x * weight.numpy() + offset.numpy()
    close(lucid.ir.run(graph, x), before)
    weight.data[...] += 1.0                           # the parameter is followed...
    offset.data[...] += 100.0                         # ...the constant is not
    close(lucid.ir.run(graph, x), before + x)


def test_temporary_eager_tensors_stay_distinct_constants():
    """Each eager tensor a traced function creates becomes its own constant, even when Python frees it
    right after use and hands its id to the next temporary."""
    def fn(x):
        out = x
        for k in range(1, 6):
            out = out * lucid.Tensor(np.full(3, k, np.float32)) + lucid.Tensor(np.full(3, 10 * k, np.float32))
        return out

    x = data(3)
    reference = x.copy()
    for k in range(1, 6):
        reference = reference * k + 10 * k
    close(fn(lucid.Tensor(x)).numpy(), reference)
    graph = lucid.trace(fn, lucid.spec(3))
    constants = sorted(float(n.value[0]) for n in graph.nodes if n.is_constant)
    assert constants == [1, 2, 3, 4, 5, 10, 20, 30, 40, 50]
    close(lucid.ir.run(graph, x), reference)


# ============================================================================ scopes and params

def test_nodes_remember_module_path_and_class():
    lucid.manual_seed(0)
    model = UNet3D(base=2).eval()
    graph = lucid.trace(model, lucid.spec(1, 1, 8, 8, 8))
    convs = [n for n in graph.nodes if n.op == "conv"]
    assert convs[0].scope == Scope("down.0.block.0", "Conv3d")
    assert convs[0].scope.path == "down.0.block.0" and convs[0].scope.cls == "Conv3d"
    assert convs[-1].scope == Scope("head", "Conv3d")
    assert [n.scope for n in graph.nodes if n.op == "conv_transpose"] == [
        Scope("up.0", "ConvTranspose3d"), Scope("up.1", "ConvTranspose3d")]
    assert [n.scope for n in graph.nodes if n.op == "max_pool"] == [Scope("pool", "MaxPool3d")] * 2
    # the skip concatenations happen in UNet3D.forward itself: the root scope
    assert [n.scope for n in graph.nodes if n.op == "concat"] == [Scope("", "UNet3D")] * 2
    assert [n.scope for n in graph.nodes if n.op == "normalize"][0] == Scope("down.0.block.1", "BatchNorm3d")
    # every scope names a real module of the model, with its class
    modules = dict(model.named_modules())
    for node in graph.nodes:
        assert node.scope is not None, node
        assert type(modules[node.scope.path]).__name__ == node.scope.cls
    # each conv reads the weight of the module its scope names
    for node in convs:
        assert node.inputs[1].name == f"{node.scope.path}.weight"


def test_nodes_of_a_plain_function_have_no_scope_but_called_modules_do():
    lucid.manual_seed(0)
    layer = nn.Linear(3, 2)
    graph = lucid.trace(lambda x: layer(x * 2).sum(), lucid.spec(4, 3))
    scopes = [n.scope for n in graph.nodes]
    assert scopes[0] is None and scopes[1] is None       # the constant 2 and the mul
    assert scopes[-1] is None                            # sum
    assert Scope("", "Linear") in scopes
    assert {v.name for v in graph.params} == {"weight", "bias"}
    assert graph.bindings["weight"] is layer.weight


def test_params_are_named_by_state_dict_path_and_bound_to_the_modules_tensors():
    lucid.manual_seed(0)
    model = randomise_batch_norm(VideoClassifier(width=4)).eval()
    graph = lucid.trace(model, lucid.spec(1, 3, 2, 16, 16))
    names = [v.name for v in graph.params]
    assert len(names) == len(set(names))
    state = model.state_dict()
    assert set(names) <= set(state)
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    assert set(dict(model.named_parameters())) <= set(names)   # every weight is a graph param
    for value in graph.params:
        tensor = graph.bindings[value.name]
        assert tensor is own[value.name]                        # the very same object
        assert value.shape == tensor.shape and value.dtype == tensor.dtype
    assert "head.1.weight" in names and "stem.1.running_mean" in names
    # parameters are inputs of the graph, not constants holding their values
    constant_shapes = {n.output.shape for n in graph.nodes if n.is_constant}
    assert (5, 8) not in constant_shapes and (4, 3, 3, 7, 7) not in constant_shapes


def test_run_follows_in_place_weight_changes_and_params_override():
    lucid.manual_seed(0)
    model = UNet3D(base=2).eval()
    graph = lucid.trace(model, lucid.spec(1, 1, 8, 8, 8))
    x = data(1, 1, 8, 8, 8)
    before = lucid.ir.run(graph, x)
    close(before, model(lucid.Tensor(x)).numpy())

    model.head.bias.data[...] += np.array([1.0, -2.0], np.float32)      # head is a 1x1x1 conv
    after = lucid.ir.run(graph, x)
    close(after, model(lucid.Tensor(x)).numpy())
    close(after - before, np.broadcast_to(np.array([1.0, -2.0], np.float32).reshape(1, 2, 1, 1, 1), x.shape[:1] + (2, 8, 8, 8)))

    model.down[0].block[0].weight.data[...] *= 0.5
    changed = lucid.ir.run(graph, x)
    assert not np.allclose(changed, after)
    close(changed, model(lucid.Tensor(x)).numpy())

    # params= overrides the bindings for this call only, and does not touch the module
    new_weight = data(2, 2, 1, 1, 1, seed=3)
    saved = model.head.weight.numpy().copy()
    overridden = lucid.ir.run(graph, x, params={"head.weight": new_weight})
    np.testing.assert_array_equal(model.head.weight.numpy(), saved)
    model.head.weight.data[...] = new_weight
    close(overridden, model(lucid.Tensor(x)).numpy())
    model.head.weight.data[...] = saved
    close(lucid.ir.run(graph, x), changed)


# ============================================================================ lazy modules

def lazy_stack():
    return nn.Sequential(
        nn.LazyConv3d(4, kernel_size=3, padding=1), nn.ReLU(),
        nn.LazyConvTranspose3d(2, kernel_size=2, stride=2), nn.Flatten(),
        nn.LazyLinear(5),
    )


def check_init_bounds(layer):
    weight = layer.weight.numpy()
    fan_in = weight.shape[1] * math.prod(weight.shape[2:])
    bound = 1 / math.sqrt(fan_in)
    for tensor in (weight, layer.bias.numpy()):
        assert np.all(np.abs(tensor) <= bound)
        assert np.abs(tensor).max() > bound / 4            # drawn, not left at zero
        assert len(np.unique(tensor)) == tensor.size


def test_lazy_layers_are_resolved_by_trace_without_running_a_kernel(monkeypatch):
    lucid.manual_seed(3)
    model = lazy_stack()
    assert model[0].in_channels is None and model[0].weight is None
    assert model[2].in_channels is None and model[4].in_features is None
    patch_kernels(monkeypatch, ["conv", "conv_transpose", "matmul"])
    with pytest.raises(AssertionError, match="a kernel ran"):        # the patch is effective
        nn.Conv3d(1, 1, 1)(lucid.zeros(1, 1, 1, 1, 1))
    graph = lucid.trace(model, lucid.spec(1, 3, 2, 2, 2))
    monkeypatch.undo()

    assert model[0].in_channels == 3 and model[0].weight.shape == (4, 3, 3, 3, 3) and model[0].bias.shape == (4,)
    assert model[2].in_channels == 4 and model[2].weight.shape == (4, 2, 2, 2, 2) and model[2].bias.shape == (2,)
    assert model[4].in_features == 2 * 4 * 4 * 4 and model[4].weight.shape == (5, 128)
    for i in (0, 2, 4):
        check_init_bounds(model[i])
    assert {v.name: v.shape for v in graph.params} == {
        "0.weight": (4, 3, 3, 3, 3), "0.bias": (4,), "2.weight": (4, 2, 2, 2, 2), "2.bias": (2,),
        "4.weight": (5, 128), "4.bias": (5,)}
    for name, p in model.named_parameters():
        assert graph.bindings[name] is p
    x = data(1, 3, 2, 2, 2)
    close(lucid.ir.run(graph, x), model(lucid.Tensor(x)).numpy())


def test_no_kernel_at_all_runs_while_tracing(monkeypatch):
    lucid.manual_seed(0)
    models = [(UNet3D(base=2).train(), (2, 1, 8, 8, 8)),
              (ConvAutoencoder3D(base=2, latent=4), (1, 1, 8, 8, 8)),
              (VideoClassifier(width=4).eval(), (1, 3, 2, 16, 16))]
    patch_kernels(monkeypatch)
    for model, shape in models:
        lucid.trace(model, lucid.spec(*shape))
        lucid.trace(model, lucid.zeros(*shape))            # a tensor input: only its type is used
    lucid.trace(several, lucid.spec(3, 2), lucid.spec(4, 3), lucid.spec(5, dtype=lucid.float64))


def test_conv_autoencoder_lazy_decoder_is_resolved_from_the_spec():
    lucid.manual_seed(0)
    model = ConvAutoencoder3D(in_channels=2, base=3, latent=5)
    assert model.decoder[0].in_channels is None and model.decoder[2].in_channels is None
    graph = lucid.trace(model, lucid.spec(1, 2, 8, 8, 8))
    assert model.decoder[0].in_channels == 5 and model.decoder[0].weight.shape == (5, 3, 4, 4, 4)
    assert model.decoder[2].in_channels == 3 and model.decoder[2].weight.shape == (3, 2, 3, 3, 3)
    assert graph.outputs[0].shape == (1, 2, 8, 8, 8)
    assert {"decoder.0.weight", "decoder.2.weight", "decoder.2.bias"} <= {v.name for v in graph.params}
    # afterwards a different channel count is refused, traced or eager, naming the layer
    model2 = nn.Sequential(model.decoder)
    with pytest.raises(ShapeError, match=r"LazyConvTranspose3d '0\.0'.*5 channels.*got 4"):
        lucid.trace(model2, lucid.spec(1, 4, 2, 2, 2))
    with pytest.raises(ShapeError, match=r"LazyConvTranspose3d '0\.0'.*5 channels.*got 4"):
        model2(lucid.zeros(1, 4, 2, 2, 2))


def test_lazy_initialisation_is_reproducible():
    def traced_params(seed):
        lucid.manual_seed(seed)
        model = lazy_stack()
        lucid.trace(model, lucid.spec(1, 3, 2, 2, 2))
        return {k: v.numpy().copy() for k, v in model.named_parameters()}

    first, second, other = traced_params(11), traced_params(11), traced_params(12)
    assert first.keys() == second.keys() == other.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
        assert not np.array_equal(first[name], other[name])

    # declaration order == call order here, so an eager first call draws the same values
    lucid.manual_seed(11)
    eager = lazy_stack()
    eager(lucid.zeros(1, 3, 2, 2, 2))
    for name, p in eager.named_parameters():
        np.testing.assert_array_equal(p.numpy(), first[name])


class Reversed(nn.Module):
    """Two lazy convs whose forward runs them in the reverse of their declaration order."""

    def __init__(self):
        super().__init__()
        self.first = nn.LazyConv3d(3, kernel_size=1)      # declared first, called second
        self.second = nn.LazyConv3d(2, kernel_size=1)     # declared second, called first

    def forward(self, x):
        return self.first(self.second(x))


def test_lazy_initialisation_follows_declaration_order_not_call_order():
    lucid.manual_seed(21)
    traced = Reversed()
    lucid.trace(traced, lucid.spec(1, 4, 2, 2, 2))
    assert traced.second.in_channels == 4 and traced.first.in_channels == 2

    lucid.manual_seed(21)
    by_hand = Reversed()
    by_hand.first.materialize(2)           # declaration order
    by_hand.second.materialize(4)
    for (name, p), (name2, q) in zip(traced.named_parameters(), by_hand.named_parameters()):
        assert name == name2
        np.testing.assert_array_equal(p.numpy(), q.numpy())

    # the eager (call-order) draws differ, so the comparison above is not vacuous
    lucid.manual_seed(21)
    eager = Reversed()
    eager(lucid.zeros(1, 4, 2, 2, 2))
    assert not np.array_equal(eager.first.weight.numpy(), traced.first.weight.numpy())


# ============================================================================ trace refusals

def test_data_dependent_control_flow_is_a_trace_error():
    def branchy(x):
        if x.sum() > 0:
            return x
        return -x

    with pytest.raises(TraceError, match="bool") as info:
        lucid.trace(branchy, lucid.spec(2, 3))
    assert isinstance(info.value, TypeError)
    assert "control flow" in str(info.value)
    for fn in (lambda x: x * x.sum().item(), lambda x: x * float(x.max()), lambda x: np.asarray(x)):
        with pytest.raises(TraceError, match="no data while tracing"):
            lucid.trace(fn, lucid.spec(2, 3))
    # the same function runs eagerly
    assert branchy(lucid.ones(2, 3)).numpy().sum() == 6


def test_dropout_in_train_mode_traces_a_random_draw_and_in_eval_mode_nothing():
    lucid.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.ReLU(), nn.Dropout(0.2))
    graph = lucid.trace(model, lucid.spec(2, 3))
    draws = [n for n in graph.nodes if n.op == "random"]
    assert [n.attrs["draw"] for n in draws] == [0, 1] and all(n.inputs[0].name == "generator" for n in draws)
    assert list(graph.state_updates) == ["generator"]            # the graph advances the generator by 2
    assert lucid.ir.parse(str(graph)) == graph
    model.eval()
    graph = lucid.trace(model, lucid.spec(2, 3))
    assert "random" not in {n.op for n in graph.nodes} and not graph.state_updates
    x = data(2, 3)
    close(lucid.ir.run(graph, x), model(lucid.Tensor(x)).numpy())


@pytest.mark.parametrize("fn, kind", [
    (lambda x: 3, "int"),
    (lambda x: None, "NoneType"),
    (lambda x: (x, "label"), "str"),
    (lambda x: [x.sum(), 1.5], "float"),
])
def test_returning_a_non_tensor_is_a_trace_error(fn, kind):
    with pytest.raises(TraceError, match=f"must return tensors.*got {kind}"):
        lucid.trace(fn, lucid.spec(2))


@pytest.mark.parametrize("bad, kind", [([1, 2], "list"), (np.zeros(3), "ndarray"), ((2, 3), "tuple"), (3, "int")])
def test_a_bad_input_kind_is_a_trace_error(bad, kind):
    with pytest.raises(TraceError, match=f"input 'x' must be a lucid.spec or a Tensor, got {kind}"):
        lucid.trace(lambda x: x + 1, bad)


def test_tracing_a_non_callable_is_a_trace_error():
    with pytest.raises(TraceError, match="module or a function.*int"):
        lucid.trace(5, lucid.spec(2))


# ============================================================================ shape errors

def nested():
    return nn.Sequential(
        nn.Conv3d(1, 2, kernel_size=3), nn.ReLU(),
        nn.Sequential(nn.Conv3d(2, 2, kernel_size=1), nn.ReLU(), nn.MaxPool3d(2)),
    )


@pytest.mark.parametrize("make, shape, prefix, fragments", [
    # wrong channel count
    (lambda: UNet3D(base=2), (1, 3, 8, 8, 8), "Conv3d 'down.0.block.0'",
     ["1 channels", "got 3 channels", "(1, 3, 8, 8, 8)"]),
    (lambda: VideoClassifier(width=4), (1, 2, 2, 16, 16), "Conv3d 'stem.0'",
     ["3 channels", "got 2 channels", "(1, 2, 2, 16, 16)"]),
    # wrong rank
    (lambda: VideoClassifier(width=4), (3, 16, 16), "Conv3d 'stem.0'", ["4-D", "5-D", "3-D", "(3, 16, 16)"]),
    (nested, (1, 1, 4, 4, 4, 4), "Conv3d '0'", ["4-D", "5-D", "6-D", "(1, 1, 4, 4, 4, 4)"]),
    # too small, deep inside a Sequential inside a Sequential
    (nested, (1, 1, 3, 3, 3), "MaxPool3d '2.2'", ["[1, 2, 1, 1, 1]", "(1, 1, 1)", "(2, 2, 2)", "too small"]),
], ids=["unet_channels", "video_channels", "video_rank", "nested_rank", "nested_too_small"])
def test_shape_errors_name_module_path_class_and_shapes(make, shape, prefix, fragments):
    lucid.manual_seed(0)
    model = make().eval()
    with pytest.raises(ShapeError) as traced:
        lucid.trace(model, lucid.spec(*shape))
    message = str(traced.value)
    assert message.startswith(prefix), message
    for fragment in fragments:
        assert fragment in message, message
    # eager names the same layer
    with pytest.raises(ShapeError) as eager:
        model(lucid.zeros(*shape))
    assert str(eager.value).startswith(prefix), str(eager.value)


def test_a_shape_error_in_a_traced_function_names_the_module_it_reached():
    lucid.manual_seed(0)
    block = nested()
    with pytest.raises(ShapeError, match=r"^MaxPool3d '2\.2'.*too small"):
        lucid.trace(lambda x: block(x * 2) + 1, lucid.spec(1, 1, 3, 3, 3))
    with pytest.raises(ShapeError, match=r"concat.*\(2, 3\).*\(2, 4\)|\(2, 4\).*\(2, 3\)"):
        lucid.trace(lambda a, b: lucid.cat([a, b], dim=0), lucid.spec(2, 3), lucid.spec(2, 4))


def test_a_failed_trace_still_initialises_the_lazy_modules_it_materialised():
    """Eagerly, a lazy layer materialises (with random values) before a later layer fails; a failed
    trace must not leave it with all-zero parameters."""
    lucid.manual_seed(3)
    model = nn.Sequential(nn.LazyConv3d(2, 3), nn.MaxPool3d(4))
    with pytest.raises(lucid.ShapeError, match="MaxPool3d '1'"):
        lucid.trace(model, lucid.spec(1, 1, 3, 3, 3))
    weight = model[0].weight.numpy()
    bound = 1 / np.sqrt(27)
    assert model[0].in_channels == 1
    assert np.all(weight != 0) and np.all(np.abs(weight) <= bound)


def test_a_trace_stopped_by_any_exception_initialises_the_lazy_modules_and_gives_back_the_generator():
    """The tracer draws the deferred values itself however the call ends; the values are those an
    eager first call draws (one lazy layer: the same draw), and the next draw follows them."""
    class Stops(nn.Module):
        def __init__(self):
            super().__init__()
            self.lazy = nn.LazyConv3d(2, 3)

        def forward(self, x):
            self.lazy(x)
            raise KeyboardInterrupt        # not a lucid error, not even an Exception

    lucid.manual_seed(8)
    eager = nn.LazyConv3d(2, 3)
    eager(lucid.zeros(1, 1, 3, 3, 3))
    after_eager = lucid.randn(3).numpy()
    lucid.manual_seed(8)
    model = Stops()
    with pytest.raises(KeyboardInterrupt):
        lucid.trace(model, lucid.spec(1, 1, 3, 3, 3))
    np.testing.assert_array_equal(model.lazy.weight.numpy(), eager.weight.numpy())
    np.testing.assert_array_equal(model.lazy.bias.numpy(), eager.bias.numpy())
    np.testing.assert_array_equal(lucid.randn(3).numpy(), after_eager)


def test_numpy_array_of_a_tensor_copies_when_asked():
    t = lucid.tensor([1.0, 2.0])
    a = np.array(t)
    a[0] = 99.0
    assert t.numpy()[0] == 1.0
    assert np.asarray(t) is t.numpy()


def test_a_failed_trace_carries_its_partial_graph_and_the_refused_node():
    with pytest.raises(ShapeError) as raised:
        lucid.trace(Conv3dModel(), lucid.spec(1, 1, 3, 3, 3))
    error = raised.value
    partial = error.partial_graph
    assert [n.op for n in partial.nodes if not n.is_constant] == ["conv", "relu", "conv", "relu"]
    assert partial.nodes[-1].output.shape == (1, 16, 1, 1, 1)        # conv2 leaves a 1x1x1 map
    refused = error.failing_node
    assert refused.op == "max_pool" and refused.scope == Scope("pool", "MaxPool3d") and refused.output is None
    assert refused.inputs[0] is partial.nodes[-1].output and refused.attrs["kernel"] == (2, 2, 2)
    assert error.rule_message.startswith("max_pool3d: input spatial size (1, 1, 1) is too small")
    assert str(error).endswith(error.rule_message)


def test_a_trace_error_outside_a_shape_rule_still_carries_the_partial_graph():
    def branchy(x):
        if x.sum() > 0:
            return x
        return -x

    with pytest.raises(TraceError) as raised:
        lucid.trace(branchy, lucid.spec(2, 3))
    assert [n.op for n in raised.value.partial_graph.nodes] == ["sum", "constant", "gt"]     # x.sum() > 0
    assert getattr(raised.value, "failing_node", None) is None
