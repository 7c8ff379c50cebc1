"""The compiled statistics of batch, group, instance and layer norm (`moments`, one pass, one kernel
per norm) and their normalise-scale-shift, against a float64 NumPy oracle written here.

- `moments` compiled (float32 and float64, odd and long rows, and over other axes: batch norm's
  (N, spatial), a strided axis) against float64 sums.
- Adversarial data, x = 1000 + N(0, 1e-2) in float32: the statistics (compiled and eager) stay
  float32-accurate against float64 ones, and so do the normalised outputs of the layers.
- Forward and input, weight and bias gradients of a compiled training step of each layer on odd
  sizes (C=6 in 3 groups, 5x7x3 spatial, LayerNorm over (7, 3)) against the oracle's closed-form
  backward (derived independently of lucid's rules), also on data far from zero for batch norm.
- Compiled graphs: one statistics kernel per norm and no other reduction in the forward; the
  normalise-scale-shift and a following activation are one fused loop; with running statistics
  (eval mode) the normalise joins the previous conv's epilogue; batch norm's training backward reads
  x in two loops (the sum of g (x - mean), the input gradient).
"""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn as nn
from lucid.codegen.build import memory_plan_of
from lucid.codegen.lowering import Lowering
from lucid.codegen.target import host
from lucid.ir import ops
from lucid.passes.pipeline import for_inference, for_training

RNG = np.random.default_rng(2026)


# ----------------------------------------------------------------------------------------------
# The oracle: float64, each normalised group a row of a (rows, K) view.

def ref_moments(rows):
    rows = np.asarray(rows, np.float64)
    mean = rows.sum(-1) / rows.shape[-1]
    return mean, ((rows - mean[..., None]) ** 2).sum(-1) / rows.shape[-1]


def ref_norm_and_grads(x, rows_shape, affine_shape, w, b, gy, eps=1e-5):
    """y = xhat * w + b per group of `rows_shape`, and (gx, gw, gb) for the output gradient gy: with
    xhat = (x - mean) * rstd and h = gy * w, gx = rstd * (h - mean(h) - xhat * mean(h * xhat)) per row."""
    x, gy = np.asarray(x, np.float64), np.asarray(gy, np.float64)
    w, b = np.asarray(w, np.float64).reshape(affine_shape), np.asarray(b, np.float64).reshape(affine_shape)
    mean, var = ref_moments(x.reshape(rows_shape))
    rstd = 1 / np.sqrt(var + eps)
    xhat = ((x.reshape(rows_shape) - mean[..., None]) * rstd[..., None]).reshape(x.shape)
    h = (gy * w).reshape(rows_shape)
    xhat_rows = xhat.reshape(rows_shape)
    gx = rstd[..., None] * (h - h.mean(-1, keepdims=True) - xhat_rows * (h * xhat_rows).mean(-1, keepdims=True))
    lead = x.ndim - len(affine_shape)
    broadcast_axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(affine_shape) if n == 1)
    reduce_to_affine = lambda t: t.sum(axis=broadcast_axes).reshape(-1)
    return xhat * w + b, gx.reshape(x.shape), reduce_to_affine(gy * xhat), reduce_to_affine(gy)


# ----------------------------------------------------------------------------------------------
# moments

@pytest.mark.parametrize("shape", [(1, 1), (7,), (3, 5), (2, 3, 210), (2, 100003)], ids=str)
@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-13)])
def test_compiled_moments_match_float64(shape, dtype, tol):
    x = (RNG.normal(size=shape) * 3 + 2).astype(dtype)
    stats = lucid.compile(ops.moments)(lucid.Tensor(x, dtype=lucid.ir.types.as_dtype(dtype))).numpy()
    mean, var = ref_moments(x)
    assert stats.shape == (2,) + shape[:-1] and stats.dtype == dtype
    np.testing.assert_allclose(stats[0], mean, rtol=tol, atol=tol)
    np.testing.assert_allclose(stats[1], var, rtol=10 * tol, atol=tol)


@pytest.mark.parametrize("shape,axes", [((2, 3, 5, 7), (0, 2, 3)), ((6, 4), (0,)), ((3, 4, 5), (1,)),
                                        ((4, 2, 3000), (0, 2)), ((2, 1, 3, 1), (0, 1, 3))], ids=str)
@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-13)])
def test_compiled_moments_over_axes_match_float64(shape, axes, dtype, tol):
    x = (RNG.normal(size=shape) * 3 + 2).astype(dtype)
    stats = lucid.compile(lambda t: ops.moments(t, axes))(lucid.Tensor(x, dtype=lucid.ir.types.as_dtype(dtype))).numpy()
    kept = [a for a in range(len(shape)) if a not in axes]
    mean, var = ref_moments(np.moveaxis(x, kept, range(len(kept))).reshape(*(shape[a] for a in kept), -1))
    assert stats.shape == (2,) + tuple(shape[a] for a in kept) and stats.dtype == dtype
    np.testing.assert_allclose(stats[0], mean, rtol=tol, atol=tol)
    np.testing.assert_allclose(stats[1], var, rtol=10 * tol, atol=tol)


@pytest.mark.parametrize("length", [210, 1 << 20])
def test_statistics_of_data_far_from_zero_stay_accurate(length):
    x = (1000 + RNG.normal(0, 1e-2, (3, length))).astype(np.float32)
    mean, var = ref_moments(x)
    for how, stats in (("eager", ops.moments(lucid.Tensor(x)).numpy()),
                       ("compiled", lucid.compile(ops.moments)(lucid.Tensor(x)).numpy())):
        np.testing.assert_allclose(stats[0], mean, rtol=0, atol=1e-4, err_msg=how)     # float32's step at 1000: 6e-5
        np.testing.assert_allclose(stats[1], var, rtol=1e-4, err_msg=how)


def ref_batch_norm_and_grads(x, w, b, gy, eps=1e-5):
    """`ref_norm_and_grads` with channels first: each channel's (N, spatial) values one row."""
    front = lambda t: np.moveaxis(np.asarray(t), 1, 0)
    y, gx, gw, gb = ref_norm_and_grads(front(x), (x.shape[1], -1), (x.shape[1],) + (1,) * (x.ndim - 1), w, b,
                                       front(gy), eps)
    return np.moveaxis(y, 0, 1), np.moveaxis(gx, 0, 1), gw, gb


@pytest.mark.parametrize("shape", [(2, 6, 5, 7, 3), (9, 4)], ids=str)
@pytest.mark.parametrize("centre", [0.5, 1000.0])
def test_compiled_batch_norm_training_step_matches_oracle(shape, centre):
    """Forward and input, weight and bias gradients (and the running statistics) against float64,
    also on x = 1000 + N(0, 1e-2): float32 holds x to 6e-5, so the normalised values and the gradient
    carry at most that over the standard deviation 1e-2 of error (in both lucid and PyTorch)."""
    layer = nn.BatchNorm3d(shape[1]) if len(shape) == 5 else nn.BatchNorm1d(shape[1])
    layer.weight.data[...] = RNG.normal(1.0, 0.5, shape[1])
    layer.bias.data[...] = RNG.normal(0.0, 0.5, shape[1])
    spread = 2.0 if centre < 1 else 1e-2
    x = RNG.normal(centre, spread, shape).astype(np.float32)
    gy = RNG.normal(size=shape).astype(np.float32)
    y_ref, gx_ref, gw_ref, gb_ref = ref_batch_norm_and_grads(x, layer.weight.numpy(), layer.bias.numpy(), gy)
    xt = lucid.Tensor(x, requires_grad=True)
    y = lucid.compile(layer)(xt)
    (y * lucid.Tensor(gy)).sum().backward()
    tol = 1e-4 if centre < 1 else 2e-2
    scale = np.abs(gx_ref).max()
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=0, atol=tol)
    np.testing.assert_allclose(xt.grad.numpy() / scale, gx_ref / scale, rtol=0, atol=tol)
    np.testing.assert_allclose(layer.weight.grad.numpy(), gw_ref, rtol=tol, atol=tol * np.abs(gw_ref).max())
    np.testing.assert_allclose(layer.bias.grad.numpy(), gb_ref, rtol=1e-4, atol=1e-4)
    axes = (0,) + tuple(range(2, len(shape)))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(layer.running_mean.numpy(), 0.1 * x64.mean(axes), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.running_var.numpy(), 0.9 + 0.1 * x64.var(axes, ddof=1), rtol=1e-5)


NORMS = {   # name: (layer, the (rows, K) view of a (2, 6, 5, 7, 3) input, the affine parameters' broadcast shape)
    "group_norm": (lambda: nn.GroupNorm(3, 6), (2 * 3, -1), (1, 6, 1, 1, 1)),
    "instance_norm": (lambda: nn.InstanceNorm3d(6, affine=True), (2 * 6, -1), (1, 6, 1, 1, 1)),
    "layer_norm": (lambda: nn.LayerNorm((7, 3)), (2 * 6 * 5, -1), (7, 3)),
}
SHAPE = (2, 6, 5, 7, 3)


def _layer(name):
    layer = NORMS[name][0]()
    layer.weight.data[...] = RNG.normal(1.0, 0.5, layer.weight.shape)
    layer.bias.data[...] = RNG.normal(0.0, 0.5, layer.bias.shape)
    return layer


@pytest.mark.parametrize("name", list(NORMS))
def test_layers_on_data_far_from_zero_match_float64(name):
    layer = _layer(name)
    x = (1000 + RNG.normal(0, 1e-2, SHAPE)).astype(np.float32)
    _, rows, affine = NORMS[name]
    expected = ref_norm_and_grads(x, rows, affine, layer.weight.numpy(), layer.bias.numpy(), np.zeros(SHAPE))[0]
    with lucid.no_grad():
        for how, fn in (("eager", layer), ("compiled", lucid.compile(layer))):
            # the float32 mean's rounding (3e-5 at 1000) over the standard deviation 1e-2 bounds the error
            np.testing.assert_allclose(fn(lucid.Tensor(x)).numpy(), expected, rtol=0, atol=2e-2, err_msg=how)


@pytest.mark.parametrize("name", list(NORMS))
def test_compiled_training_step_forward_and_gradients_match_oracle(name):
    layer = _layer(name)
    step = lucid.compile(layer)
    x = RNG.normal(0.5, 2.0, SHAPE).astype(np.float32)
    gy = RNG.normal(size=SHAPE).astype(np.float32)
    _, rows, affine = NORMS[name]
    y_ref, gx_ref, gw_ref, gb_ref = ref_norm_and_grads(x, rows, affine, layer.weight.numpy(), layer.bias.numpy(), gy)
    xt = lucid.Tensor(x, requires_grad=True)
    y = step(xt)
    (y * lucid.Tensor(gy)).sum().backward()
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xt.grad.numpy(), gx_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.weight.grad.numpy(), gw_ref.reshape(layer.weight.shape), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.bias.grad.numpy(), gb_ref.reshape(layer.bias.shape), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# What the compiled graphs hold

def kernel_labels(graph) -> list:
    lowering = Lowering(graph, memory_plan_of(graph), host())
    lowering.lower()
    return [k.label for k in lowering.kernels]


def test_one_statistics_kernel_per_norm_and_no_other_reduction():
    model = nn.Sequential(nn.GroupNorm(3, 6), nn.ReLU(), nn.InstanceNorm3d(6, affine=True), nn.LeakyReLU(0.1),
                          nn.LayerNorm((5, 7, 3)), nn.SiLU(), nn.BatchNorm3d(6))
    graph = lucid.trace(model.train(), lucid.spec(*SHAPE))
    partition = for_training(graph, [v.name for v in graph.params if v.dtype.is_floating])
    for stage, planned in (("inference", for_inference(graph)), ("training forward", partition.forward)):
        labels = kernel_labels(planned)
        assert labels.count("moments") == 4, (stage, labels)
        assert not {"sum", "mean", "var", "sum_partial", "mean_partial"} & set(labels), (stage, labels)


@pytest.mark.parametrize("activation,op", [(lambda: nn.ReLU(), "relu"), (lambda: nn.PReLU(), "prelu"),
                                           (lambda: nn.SiLU(), "silu"), (lambda: nn.LeakyReLU(0.2), "leaky_relu"),
                                           (lambda: nn.ELU(), "elu")], ids=["relu", "prelu", "silu", "leaky", "elu"])
@pytest.mark.parametrize("name", list(NORMS))
def test_normalise_scale_shift_and_activation_are_one_loop(name, activation, op):
    model = nn.Sequential(NORMS[name][0](), activation())
    graph = for_inference(lucid.trace(model, lucid.spec(*SHAPE)))
    full = [n for n in graph.nodes if not n.is_constant and n.output.shape == SHAPE]
    assert [n.op for n in full] == ["fused"]
    body = [n.op for n in full[0].attrs["body"].nodes if not n.is_constant]
    assert body == ["normalize", op]


def test_batch_norm_training_backward_reads_x_in_two_loops():
    """Batch norm's backward: the sums of g and of g (x - mean) per channel, and the input gradient,
    g rstd w + (x - mean) 2 g_var / K + g_mean / K: x is read by two full-size loops, no more, and
    g (x - mean) is summed where it is computed, never stored."""
    graph = lucid.trace(nn.BatchNorm3d(6).train(), lucid.spec(*SHAPE))
    backward = for_training(graph, ["x", "weight", "bias"]).backward
    x = next(v for v in backward.inputs if v.name == "x")
    readers = [n for n in backward.nodes if any(v is x for v in n.inputs)]
    assert [n.op for n in readers] == ["fused", "fused"], readers
    bodies = [[n.op for n in reader.attrs["body"].nodes if not n.is_constant] for reader in readers]
    assert bodies[0] == ["normalize", "sum"] and bodies[1].count("normalize") == 1, bodies


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_a_norm_with_running_statistics_joins_the_previous_convs_epilogue(norm):
    """Where it is legal (instance or batch norm in eval mode with running statistics: the normalise
    needs no statistics of the conv's output), conv, normalise and activation are one fused kernel,
    and the compiled output equals eager."""
    norm = nn.InstanceNorm3d(6, affine=True, track_running_stats=True) if norm == "instance" else nn.BatchNorm3d(6)
    norm.weight.data = RNG.normal(1.0, 0.5, 6).astype(np.float32)
    norm.running_mean.data = RNG.standard_normal(6).astype(np.float32)
    norm.running_var.data = RNG.uniform(0.5, 2.0, 6).astype(np.float32)
    model = nn.Sequential(nn.Conv3d(3, 6, 3, padding=1), norm, nn.ReLU()).eval()
    shape = (2, 3, 5, 7, 3)
    graph = for_inference(lucid.trace(model, lucid.spec(*shape)))
    fused = [n for n in graph.nodes if n.op == "fused" and n.output.shape == (2, 6, 5, 7, 3)]
    assert len(fused) == 1 and not [n for n in graph.nodes if n.op in ("conv", "normalize", "relu")]
    assert [n.op for n in fused[0].attrs["body"].nodes if not n.is_constant] == ["conv", "normalize", "relu"]
    x = lucid.Tensor(RNG.standard_normal(shape).astype(np.float32))
    with lucid.no_grad():
        np.testing.assert_allclose(lucid.compile(model)(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
