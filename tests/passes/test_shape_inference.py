"""The shape-inference pass (lucid/passes/shape_inference.py): types computed afresh, error messages
of failing shape rules, and the initialisation of lazy modules."""

import math
import re

import numpy as np
import pytest

import lucid
import lucid.nn as nn
from lucid.errors import DTypeError, GraphError, ShapeError
from lucid.ir import Builder, Graph, Node, TensorType, building
from lucid.passes import PassManager, shape_inference
from models import ConvAutoencoder3D, UNet3D, VideoClassifier

RNG = np.random.default_rng(7)
F32 = lucid.float32


def arr(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def tiny_unet(seed=0):
    lucid.manual_seed(seed)
    model = UNet3D(base=2, depth=1)
    model.eval()
    return model


def types_of(g):
    return ([(v.name, v.type) for v in g.inputs], [(v.name, v.type) for v in g.params],
            [(n.op, n.output.type) for n in g.nodes], [v.type for v in g.outputs],
            {k: v.type for k, v in g.state_updates.items()})


# ============================================================================== re-inference
def _traced_graphs():
    unet = tiny_unet()
    lucid.manual_seed(1)
    video = VideoClassifier(width=2)
    video.train()
    lucid.manual_seed(2)
    auto = ConvAutoencoder3D(base=2, latent=2)
    return {
        "unet": lucid.trace(unet, lucid.spec(1, 1, 4, 4, 4)),
        "video-train": lucid.trace(video, lucid.spec(2, 3, 2, 8, 8)),
        "autoencoder": lucid.trace(auto, lucid.spec(1, 1, 4, 4, 4)),
        "function": lucid.trace(lambda x, i: ((x > 0).sum(axis=1) + i, (x * 2.0).double().mean()),
                                lucid.spec(2, 3), lucid.spec(2, dtype=lucid.int64)),
    }


@pytest.mark.parametrize("name", ["unet", "video-train", "autoencoder", "function"])
def test_reinferring_a_traced_graph_reproduces_every_type(name):
    g = _traced_graphs()[name]
    text = str(g)
    again = shape_inference.run(g)
    assert str(g) == text, "shape_inference modified its input graph"
    assert again is not g
    assert types_of(again) == types_of(g)
    assert str(again) == text
    assert again.verify() is again


def test_types_are_computed_afresh_not_copied():
    """A node recorded with a wrong type (a malformed graph) gets its rule's type back."""
    g = Graph("wrong")
    x = g.add_input("x", TensorType((2, 3), F32))
    with building(Builder(g)):
        s = x.sum(axis=1)
    node = Node("exp", [s], {})
    wrong = g._append(node, TensorType((7,), lucid.float64))
    g.set_outputs([wrong], False)
    with pytest.raises(GraphError, match="rule gives float32"):
        g.verify()
    fixed = shape_inference.run(g)
    assert fixed.outputs[0].type == TensorType((2,), F32)
    assert g.outputs[0].type == TensorType((7,), lucid.float64)       # input untouched
    x_data = arr(2, 3)
    np.testing.assert_allclose(lucid.ir.run(fixed, x_data), np.exp(x_data.sum(axis=1)), rtol=1e-6)


# ============================================================================== errors of failing rules
# Graphs are specialised to their traced shapes (there is no way to re-type inputs: traced code bakes
# shape-derived constants in), so a failing rule is met while tracing, through the same infer_type.


def _error(model, shape, dtype=F32, cls=ShapeError):
    with pytest.raises(cls) as info:
        lucid.trace(model, lucid.spec(*shape, dtype=dtype))
    return str(info.value)


def test_wrong_channel_count_in_a_functional_conv_names_the_op_and_types():
    weight = lucid.randn(2, 1, 3, 3, 3)
    message = _error(lambda x: lucid.nn.functional.conv3d(x, weight), (1, 2, 4, 4, 4))
    assert re.match(r"conv\(float32\[1, 2, 4, 4, 4\], float32\[2, 1, 3, 3, 3\]\): conv3d: ", message), message
    assert "channels" in message and "(1, 2, 4, 4, 4)" in message


def test_too_small_for_a_pool_names_module_op_and_types():
    model = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.Sequential(nn.ReLU(), nn.MaxPool3d(2)))
    message = _error(model, (1, 1, 1, 1, 1))
    assert re.match(r"MaxPool3d '1\.1': max_pool\(float32\[1, 2, 1, 1, 1\]\): ", message), message
    assert "too small" in message


def test_shape_error_at_the_root_module_names_its_class():
    model = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1))
    root = _Concat(model)
    message = _error(root, (1, 1, 3, 4, 4))
    assert message.startswith("_Concat: concat(float32[1, 2, 3, 4, 4], float32[1, 1, 4, 4, 4]): "), message


class _Concat(nn.Module):
    """Concatenates its child's output with a slice of its input that has the wrong depth."""

    def __init__(self, child):
        super().__init__()
        self.child = child

    def forward(self, x):
        return lucid.cat([self.child(x), lucid.cat([x, x], dim=2)[:, :, :4]], dim=1)


def test_wrong_dtype_raises_a_dtype_error_naming_both_dtypes():
    weight = lucid.randn(2, 1, 3, 3, 3)
    message = _error(lambda x: lucid.nn.functional.conv3d(x, weight), (1, 1, 4, 4, 4), lucid.float64, DTypeError)
    assert message.startswith("conv(float64[1, 1, 4, 4, 4], float32[2, 1, 3, 3, 3]): "), message
    assert "float64" in message and "float32" in message


def test_shape_error_in_a_traced_function_has_no_module():
    with pytest.raises(ShapeError) as info:
        lucid.trace(lambda x, y: x + y, lucid.spec(2, 3), lucid.spec(4))
    assert str(info.value).startswith("add(float32[2, 3], float32[4]): add: cannot broadcast"), str(info.value)


def test_a_graph_for_new_shapes_is_traced_again_and_train_mode_batchnorm_matches_eager():
    """A train-mode BatchNorm graph holds shape-derived constants (the variance's count); tracing the
    new shape gives a graph that matches eager, statistics included."""
    lucid.manual_seed(5)
    model = nn.BatchNorm3d(2)
    model.train()
    lucid.trace(model, lucid.spec(1, 2, 2, 2, 2))
    g = lucid.trace(model, lucid.spec(1, 2, 4, 4, 4))
    x = arr(1, 2, 4, 4, 4)
    params = {k: np.asarray(v).copy() for k, v in g.bindings.items()}
    out = lucid.ir.run(g, x, params=params)
    np.testing.assert_allclose(out, model(lucid.Tensor(x)).data, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(params["running_var"], model.running_var.data, rtol=1e-5)


# ============================================================================== lazy modules
def traced_autoencoder(seed):
    """A ConvAutoencoder3D (lazy transposed convs) traced from a spec after lucid.manual_seed(seed)."""
    lucid.manual_seed(seed)
    model = ConvAutoencoder3D(base=2, latent=2)
    return model, lucid.trace(model, lucid.spec(1, 1, 4, 4, 4))


def modules_held(graph) -> list:
    """The nn modules a graph object reaches through its attributes and their containers."""
    found, pending = [], list(vars(graph).values())
    while pending:
        item = pending.pop()
        if isinstance(item, nn.Module):
            found.append(item)
        elif isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple, set)):
            pending += list(item)
    return found


def lazy_layers(model):
    return [m for m in model.modules() if type(m).__name__.startswith("Lazy")]


def test_lazy_layers_take_in_channels_from_the_inferred_type_and_are_initialised():
    model, g = traced_autoencoder(3)
    layers = lazy_layers(model)
    assert len(layers) == 2 and [m.in_channels for m in layers] == [2, 2]
    for m in layers:
        weight = m.weight.numpy()
        bound = 1 / math.sqrt(weight.shape[1] * math.prod(weight.shape[2:]))
        assert np.all(weight != 0) and np.all(np.abs(weight) <= bound)
        assert np.all(np.abs(m.bias.numpy()) <= bound) and np.any(m.bias.numpy() != 0)
    bound = {name: g.bindings[name] for name in g.bindings}
    for name, tensor in model.named_parameters():
        assert bound[name] is tensor
    x = arr(1, 1, 4, 4, 4)
    np.testing.assert_allclose(lucid.ir.run(g, x), model(lucid.Tensor(x)).numpy(), rtol=1e-6, atol=1e-7)
    assert modules_held(g) == []                   # the tracer initialised them: the graph holds no module
    probe = g.copy()
    probe.pending = [(0, layers[0])]
    assert modules_held(probe) == [layers[0]]      # (the check finds a module when one is held)


def test_the_same_seed_gives_the_same_lazy_weights_and_another_seed_others():
    first, _ = traced_autoencoder(11)
    again, _ = traced_autoencoder(11)
    other, _ = traced_autoencoder(12)
    for (name, a), (_, b), (_, c) in zip(first.named_parameters(), again.named_parameters(),
                                         other.named_parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
        if name.startswith("decoder"):
            assert not np.array_equal(a.numpy(), c.numpy()), name


def test_running_shape_inference_again_initialises_nothing():
    model, g = traced_autoencoder(3)
    weights = {k: np.asarray(v).copy() for k, v in model.state_dict().items()}
    lucid.manual_seed(99)
    expected_next_draw = lucid.randn(4).data
    lucid.manual_seed(99)
    again = shape_inference.run(g)
    twice = shape_inference.run(again)
    PassManager("inference").run(twice)
    np.testing.assert_array_equal(lucid.randn(4).data, expected_next_draw)   # no random draw happened
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v), weights[k], err_msg=k)
    assert modules_held(g) == modules_held(again) == modules_held(twice) == []
    x = arr(1, 1, 4, 4, 4)
    np.testing.assert_array_equal(lucid.ir.run(twice, x), lucid.ir.run(g, x))


def test_a_second_trace_keeps_the_weights_of_the_first():
    model, g = traced_autoencoder(4)
    weights = {k: np.asarray(v).copy() for k, v in model.state_dict().items()}
    g2 = lucid.trace(model, lucid.spec(1, 1, 8, 8, 8))
    assert modules_held(g2) == []
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v), weights[k], err_msg=k)


def test_a_failed_trace_does_not_leave_zero_lazy_parameters():
    """A trace that fails after a lazy layer materialised leaves it initialised, as eager would."""
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.lazy = nn.LazyLinear(3)
            self.fixed = nn.Linear(5, 2)                      # expects 5 features, gets 3

        def forward(self, x):
            return self.fixed(self.lazy(x))

    lucid.manual_seed(6)
    eager = Broken()
    with pytest.raises(ShapeError):
        eager(lucid.Tensor(arr(2, 4)))
    lucid.manual_seed(6)
    model = Broken()
    with pytest.raises(ShapeError):
        lucid.trace(model, lucid.spec(2, 4))
    w = np.asarray(model.lazy.weight)
    assert w.shape == (3, 4) and np.all(w != 0) and np.all(np.abs(w) <= 0.5)
    for name, p in eager.state_dict().items():
        np.testing.assert_array_equal(np.asarray(model.state_dict()[name]), np.asarray(p), err_msg=name)
