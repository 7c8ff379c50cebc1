"""Gradients of graphs with symbolic sizes (issue 21): autodiff of a symbolic graph gives, at every
size, the gradients autodiff gives of the graph specialised to that size.

Each case is a gradient rule that needed concrete numbers before (a count to divide by, a pad or an
output_padding computed from sizes, a resample_grad's or avg_pool_grad's input size, a broadcast of
symbolic shapes), run through the interpreter. Oracles: the specialised graph's autodiff (the rules'
concrete path), central finite differences in float64, and NumPy for the running variance."""
import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
from lucid.ir import symbolic
from lucid.passes import autodiff, pipeline

N, D, H, W = lucid.dim("N"), lucid.dim("D", min=4), lucid.dim("H", min=4), lucid.dim("W", min=4)
VOLUME = (N, 3, D, H, W)
#: sizes of (N, D, H, W): even, odd, and mixed
SIZES = [dict(N=1, D=4, H=4, W=4), dict(N=2, D=7, H=5, W=6), dict(N=3, D=9, H=8, W=5)]


def upsample_skip(x):
    """A UNet's decoder step: pool, upsample, pad to the skip's size (D % 2), concatenate."""
    up = F.interpolate(F.max_pool3d(x, 2), scale_factor=2, mode="nearest")
    up = F.pad(up, (0, x.shape[4] - up.shape[4], 0, x.shape[3] - up.shape[3], 0, x.shape[2] - up.shape[2]))
    return lucid.cat([x, up], dim=1)


CASES = {
    "mean": lambda x: x.mean(dim=(2, 4)) * x.mean(),
    "mse loss": lambda x: F.mse_loss(x * x, x + 1),
    "cross entropy": lambda x: F.cross_entropy(x, x.softmax(dim=1)),
    "adaptive avg pool": lambda x: F.adaptive_avg_pool3d(x, 1),
    "batch norm": lambda: nn.BatchNorm3d(3),
    "group norm": lambda: nn.GroupNorm(3, 3),
    "instance norm": lambda: nn.InstanceNorm3d(3, affine=True),
    "layer norm": lambda x: F.layer_norm(x, (x.shape[4],)),
    "biased variance": lambda x: x.var(dim=(2, 3), unbiased=False),
    "strided slice": lambda x: x[:, :, ::2, 1:, ::3],
    "avg pool": lambda x: F.avg_pool3d(x, 3, stride=2, padding=1, count_include_pad=False),
    "avg pool ceil": lambda x: F.avg_pool3d(x, 2, ceil_mode=True),
    "max pool": lambda x: F.max_pool3d(x, 3, stride=2, padding=1),
    "upsample nearest": lambda x: F.interpolate(x, scale_factor=2, mode="nearest"),
    "upsample trilinear": lambda x: F.interpolate(x, scale_factor=2, mode="trilinear"),
    "upsample trilinear, corners": lambda x: F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=True),
    "strided conv": lambda: nn.Conv3d(3, 2, 3, stride=2, padding=1),
    "strided conv, kernel 2": lambda: nn.Conv3d(3, 2, 2, stride=2),
    "pool, upsample, pad, concat": upsample_skip,
}


def float64_case(name):
    """The function of case `name`; a module (its entry a factory) made from a fixed seed, in float64."""
    fn = CASES[name]
    if fn.__code__.co_argcount == 0:
        lucid.manual_seed(3)
        return fn().double()
    return fn


def gradient_graph(graph):
    return autodiff.run(graph, [graph.inputs[0].name] + autodiff.default_wrt(graph))


def arrays_for(graph, sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(symbolic.evaluate(v.shape, sizes)) for v in graph.inputs]


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_of_a_symbolic_graph_equal_those_of_its_specialisations(name):
    fn = float64_case(name)
    graph = lucid.trace(fn, lucid.spec(*VOLUME, dtype=lucid.float64))
    assert graph.symbols()
    grads = gradient_graph(graph)
    assert grads.symbols() == graph.symbols()
    for sizes in SIZES:
        specialised = gradient_graph(graph.specialize(**sizes))
        arrays = arrays_for(grads, sizes)
        got, expected = lucid.ir.run(grads, *arrays), lucid.ir.run(specialised, *arrays)
        assert len(got) == len(expected) > len(graph.outputs)
        for a, b in zip(got, expected, strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=f"{name} at {sizes}")


@pytest.mark.parametrize("name", ["mean", "batch norm", "group norm", "strided slice", "avg pool",
                                  "upsample trilinear", "pool, upsample, pad, concat"])
def test_gradients_of_a_symbolic_graph_match_finite_differences(name):
    fn = float64_case(name)
    graph = lucid.trace(fn, lucid.spec(*VOLUME, dtype=lucid.float64))
    grads = autodiff.run(graph, [graph.inputs[0].name])
    sizes = dict(N=2, D=5, H=4, W=5)
    x = arrays_for(graph, sizes, seed=1)[0]
    seeds = [np.random.default_rng(2).standard_normal(symbolic.evaluate(v.shape, sizes)) for v in graph.outputs]

    def loss(array):
        outputs = lucid.ir.run(graph, array)
        outputs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
        return sum(float(np.sum(o * s)) for o, s in zip(outputs, seeds))

    gx = lucid.ir.run(grads, x, *seeds)[-1]
    rng, step = np.random.default_rng(3), 1e-6
    for index in [tuple(rng.integers(0, n) for n in x.shape) for _ in range(6)]:
        bump = np.zeros_like(x)
        bump[index] = step
        numeric = (loss(x + bump) - loss(x - bump)) / (2 * step)
        assert gx[index] == pytest.approx(numeric, rel=1e-5, abs=1e-6), (name, index)


def test_a_mean_divides_by_its_count_computed_per_call():
    graph = lucid.trace(lambda x: x.mean(dim=(1, 2)), lucid.spec(N, D, H))
    grads = autodiff.run(graph, ["x"])
    sizes = [n for n in grads.nodes if n.op == "size"]
    assert [str(n.attrs["size"]) for n in sizes] == ["D*H"]
    assert lucid.ir.parse(str(grads)) == grads                  # the text form keeps the symbolic count
    x = np.ones((2, 4, 5), np.float32)
    seed = np.arange(2, dtype=np.float32) + 1
    np.testing.assert_allclose(lucid.ir.run(grads, x, seed)[1], np.broadcast_to(seed[:, None, None] / 20, x.shape),
                               rtol=1e-7)
    # concrete graphs divide by a constant, as they always did
    concrete = autodiff.run(graph.specialize(N=2, D=4, H=5), ["x"])
    assert "size" not in {n.op for n in concrete.nodes}


def test_the_backward_of_a_symbolic_graph_takes_the_inputs_binding_its_sizes():
    """The gradient of x.mean() with respect to x reads only the seed, yet has x's symbolic shape:
    the backward graph takes x for its sizes."""
    graph = lucid.trace(lambda x: x.mean(), lucid.spec(N, D, 3))
    split = pipeline.for_training(graph, ["x"])
    assert split.forward_inputs == ["x"] and split.backward.symbols() == graph.symbols()
    x = np.zeros((4, 5, 3), np.float32)
    (gx,) = lucid.ir.run(split.backward, x, np.float32(6.0))
    np.testing.assert_allclose(gx, np.full(x.shape, 0.1), rtol=1e-6)
    compiled = lucid.compile(lambda x: x.mean() * 3, dynamic=True)
    for n, length in [(1, 2), (3, 7), (5, 4)]:
        x = lucid.Tensor(np.ones((n, 3, length), np.float32), requires_grad=True)
        compiled(x).backward()
        np.testing.assert_allclose(x.grad.numpy(), np.full(x.shape, 3 / (n * 3 * length)), rtol=1e-6)
    assert compiled.stats()["traces"] == 1


def test_the_running_variance_of_a_symbolic_batch_norm_is_unbiased_per_call():
    lucid.manual_seed(0)
    bn = nn.BatchNorm3d(2, momentum=1.0)
    graph = lucid.trace(bn, lucid.spec(N, 2, D, 3, 3))
    for n, d in ((1, 4), (3, 7)):
        x = np.random.default_rng(n).standard_normal((n, 2, d, 3, 3)).astype(np.float32)
        lucid.ir.run(graph, x)
        expected = x.transpose(1, 0, 2, 3, 4).reshape(2, -1).var(axis=1, ddof=1)
        np.testing.assert_allclose(bn.running_var.numpy(), expected, rtol=1e-5)


def test_a_remainder_plus_a_constant_has_the_remainders_range():
    """`(D + 1) % 2` (the rows a strided slice's gradient pads after its last element) is in [0, 1]:
    its range is what lets the pad's attribute schema accept it."""
    assert symbolic.bounds((D + 1) % 2) == (0, 1)
    assert symbolic.bounds((W + 2) % 3 + 4) == (4, 6)
    assert symbolic.bounds(D - 2 * (D // 2)) == (0, 1)


class EveryRule(nn.Module):
    """The conv-free cases above in one model: a loss summing each case's mean square."""

    def __init__(self):
        super().__init__()
        lucid.manual_seed(5)
        self.cases = {name: fn() if fn.__code__.co_argcount == 0 else fn for name, fn in CASES.items()
                      if "conv" not in name}
        for k, fn in enumerate(self.cases.values()):
            if isinstance(fn, nn.Module):
                self.add_module(f"case{k}", fn)

    def forward(self, x):
        return sum((fn(x) ** 2).mean() for fn in self.cases.values())


#: (batch, (D, H, W)): batches 1..8, volumes 16..48 in steps of 8, odd sizes; the first one the mins
COMPILED_SIZES = [(1, (16, 16, 16)), (8, (24, 17, 16)), (3, (48, 16, 17)), (5, (17, 16, 40))]


def test_compiled_gradients_of_every_rule_equal_eager_at_every_size():
    model, reference = EveryRule(), EveryRule()
    reference.load_state_dict(model.state_dict())
    compiled = lucid.compile(model, dynamic=True)
    modules = None
    for n, volume in COMPILED_SIZES:
        x = lucid.Tensor(np.random.default_rng(n).standard_normal((n, 3) + volume).astype(np.float32),
                         requires_grad=True)
        results = []
        for fn in (compiled, reference):
            x.grad = None
            loss = fn(x)
            loss.backward()
            results.append((loss.numpy(), x.grad.numpy()))
        stats = compiled.stats()
        modules = modules or stats["native_compiles"] + stats["cache_loads"]
        for got, expected in zip(*results):
            np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-6, err_msg=f"at {(n, volume)}")
    stats = compiled.stats()
    assert stats["traces"] == 1 and stats["dynamic_variants"] == 1
    assert stats["native_compiles"] + stats["cache_loads"] == modules
