"""GroupNorm, InstanceNorm1d/2d/3d, LayerNorm and LocalResponseNorm (modules and functional forms),
eager and compiled, against an independent float64 NumPy oracle (below), finite differences and PyTorch.

- Forward in float32 and float64 on odd sizes (3 or 5 channels per group, 1-D/2-D/3-D) against the
  oracle; input, weight and bias gradients by central finite differences in float64.
- Against PyTorch where installed (skipped without it): forward and every gradient, InstanceNorm's
  running statistics over several training steps and its eval mode, state-dict keys.
- Compiled: a `lucid.compile` training step of Conv3d + norm + activation gives eager's gradients
  (and InstanceNorm's running statistics); GroupNorm's normalise-scale-shift and the activation
  are one fused loop; its float32 gradients stay within 3x PyTorch's own error of a float64 run; an
  exported library of them all runs through `lucid.runtime`.
- Bad input is a ShapeError naming the layer or function.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
from lucid.errors import ShapeError
from lucid.passes.pipeline import for_inference

RNG = np.random.default_rng(1918)


# ----------------------------------------------------------------------------------------------
# The oracle: straight from the definitions, float64, loops over channels where it matters.

def ref_group_norm(x, groups, w=None, b=None, eps=1e-5):
    n, c = x.shape[:2]
    y = np.empty_like(x, dtype=np.float64)
    size = c // groups
    for i in range(n):
        for g in range(groups):
            block = x[i, g * size:(g + 1) * size].astype(np.float64)
            mean = block.sum() / block.size
            var = ((block - mean) ** 2).sum() / block.size
            y[i, g * size:(g + 1) * size] = (block - mean) / np.sqrt(var + eps)
    channel = (1, c) + (1,) * (x.ndim - 2)
    y = y if w is None else y * np.asarray(w, np.float64).reshape(channel)
    return y if b is None else y + np.asarray(b, np.float64).reshape(channel)


def ref_instance_norm(x, w=None, b=None, eps=1e-5):
    return ref_group_norm(x, x.shape[1], w, b, eps)


def ref_layer_norm(x, shape, w=None, b=None, eps=1e-5):
    lead = x.shape[:x.ndim - len(shape)]
    flat = x.astype(np.float64).reshape(lead + (-1,))
    mean = flat.sum(-1, keepdims=True) / flat.shape[-1]
    var = ((flat - mean) ** 2).sum(-1, keepdims=True) / flat.shape[-1]
    y = ((flat - mean) / np.sqrt(var + eps)).reshape(x.shape)
    y = y if w is None else y * np.asarray(w, np.float64)
    return y if b is None else y + np.asarray(b, np.float64)


def ref_local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    x = x.astype(np.float64)
    c = x.shape[1]
    y = np.empty_like(x)
    for ch in range(c):
        window = x[:, max(ch - size // 2, 0):min(ch + (size - 1) // 2 + 1, c)]
        y[:, ch] = x[:, ch] / (k + alpha * (window ** 2).sum(1) / size) ** beta
    return y


# ----------------------------------------------------------------------------------------------
# Cases: each calls lucid's or PyTorch's functional module the same way.

@dataclass
class Case:
    name: str
    shape: tuple
    params: tuple                  # shapes of weight-like arguments
    call: Callable                 # call(F, x, *params)
    oracle: Callable               # oracle(x, *params) in float64

    def arrays(self, dtype):
        x = RNG.normal(1.5, 2.0, self.shape).astype(dtype)
        return x, [RNG.normal(1.0, 0.5, s).astype(dtype) for s in self.params]


def _gn(groups, affine=True):
    return (lambda F, x, w=None, b=None: F.group_norm(x, groups, w, b, 1e-5),
            lambda x, w=None, b=None: ref_group_norm(x, groups, w, b))


def _ln(shape):
    return (lambda F, x, w=None, b=None: F.layer_norm(x, shape, w, b, 1e-5),
            lambda x, w=None, b=None: ref_layer_norm(x, shape, w, b))


def _lrn(size):
    return (lambda F, x: F.local_response_norm(x, size, 0.3, 0.75, 1.5),
            lambda x: ref_local_response_norm(x, size, 0.3, 0.75, 1.5))


CASES = [
    Case("group_norm_1d_3_per_group", (2, 6, 5), ((6,), (6,)), *_gn(2)),
    Case("group_norm_2d_5_per_group", (2, 15, 3, 2), ((15,), (15,)), *_gn(3)),
    Case("group_norm_3d", (2, 6, 3, 2, 3), ((6,), (6,)), *_gn(3)),
    Case("group_norm_one_group_no_affine", (3, 5, 4), (), *_gn(1)),
    Case("group_norm_rank2", (4, 6), ((6,), (6,)), *_gn(2)),
    Case("instance_norm_1d", (2, 3, 5),  ((3,), (3,)),
         lambda F, x, w, b: F.instance_norm(x, weight=w, bias=b), ref_instance_norm),
    Case("instance_norm_2d", (2, 3, 3, 4), ((3,), (3,)),
         lambda F, x, w, b: F.instance_norm(x, weight=w, bias=b), ref_instance_norm),
    Case("instance_norm_3d_no_affine", (2, 5, 2, 3, 2), (), lambda F, x: F.instance_norm(x), ref_instance_norm),
    Case("layer_norm_last_axis", (3, 7), ((7,), (7,)), *_ln((7,))),
    Case("layer_norm_two_axes", (2, 3, 4, 5), ((4, 5), (4, 5)), *_ln((4, 5))),
    Case("layer_norm_no_affine", (2, 3, 5), (), *_ln((3, 5))),
    Case("lrn_size1_1d", (2, 5, 4), (), *_lrn(1)),
    Case("lrn_size2_2d", (2, 5, 3, 2), (), *_lrn(2)),
    Case("lrn_size3_3d", (1, 6, 2, 3, 2), (), *_lrn(3)),
    Case("lrn_size4_1d", (2, 7, 3), (), *_lrn(4)),
]
IDS = [c.name for c in CASES]


def T(a, requires_grad=False):
    return lucid.Tensor(a, dtype=a.dtype.name, requires_grad=requires_grad)


def torch_or_skip():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-5), (np.float64, 1e-11)])
def test_forward_matches_oracle(case, dtype, tol):
    x, params = case.arrays(dtype)
    y = case.call(F, T(x), *map(T, params)).numpy()
    assert y.dtype == dtype
    np.testing.assert_allclose(y, case.oracle(x, *params), rtol=tol, atol=tol)


def _finite_differences(fn, arrays, index, weights, eps=1e-6):
    a = arrays[index]
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        saved = a[i]
        a[i] = saved + eps
        up = (fn(*arrays) * weights).sum()
        a[i] = saved - eps
        down = (fn(*arrays) * weights).sum()
        a[i] = saved
        grad[i] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradients_match_finite_differences(case):
    x, params = case.arrays(np.float64)
    arrays = [x] + params
    tensors = [T(a, requires_grad=True) for a in arrays]
    y = case.call(F, *tensors)
    weights = RNG.normal(size=y.shape)
    (y * T(weights)).sum().backward()
    for i, t in enumerate(tensors):
        expected = _finite_differences(case.oracle, arrays, i, weights)
        np.testing.assert_allclose(t.grad.numpy(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_and_gradients_match_pytorch(case):
    torch = torch_or_skip()
    x, params = case.arrays(np.float32)
    ours = [T(a, requires_grad=True) for a in [x] + params]
    theirs = [torch.tensor(a, requires_grad=True) for a in [x] + params]
    y, yt = case.call(F, *ours), case.call(torch.nn.functional, *theirs)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    weights = RNG.normal(size=y.shape).astype(np.float32)
    (y * T(weights)).sum().backward()
    (yt * torch.tensor(weights)).sum().backward()
    for t, tt in zip(ours, theirs):
        np.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy(), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Modules: InstanceNorm's running statistics, eval mode, state-dict keys, PyTorch's defaults.

def test_instance_norm_running_statistics_and_eval_mode():
    norm = nn.InstanceNorm3d(3, momentum=0.2, affine=True, track_running_stats=True)
    norm.weight.data[...] = [0.5, 1.0, 2.0]
    batches = [RNG.normal(i, 1.0 + i, (2, 3, 2, 3, 2)).astype(np.float32) for i in range(3)]
    mean, var = np.zeros(3), np.ones(3)
    for x in batches:
        np.testing.assert_allclose(norm(T(x)).numpy(), ref_instance_norm(x, norm.weight.numpy(), norm.bias.numpy()),
                                   rtol=2e-5, atol=2e-5)
        flat = x.astype(np.float64).reshape(2, 3, -1)
        mean = 0.8 * mean + 0.2 * flat.mean(2).mean(0)
        var = 0.8 * var + 0.2 * flat.var(2, ddof=1).mean(0)
    np.testing.assert_allclose(norm.running_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(norm.running_var.numpy(), var, rtol=1e-5)
    assert int(norm.num_batches_tracked.numpy()) == 0          # PyTorch does not count them either
    norm.eval()
    x = batches[0]
    expected = (x - mean.reshape(1, 3, 1, 1, 1)) / np.sqrt(var.reshape(1, 3, 1, 1, 1) + 1e-5) \
        * norm.weight.numpy().reshape(1, 3, 1, 1, 1)
    np.testing.assert_allclose(norm(T(x)).numpy(), expected, rtol=2e-5, atol=2e-5)


def test_instance_norm_without_tracking_uses_input_statistics_in_eval():
    norm = nn.InstanceNorm2d(4).eval()
    x = RNG.normal(size=(4, 3, 5)).astype(np.float32)          # unbatched (C, H, W)
    np.testing.assert_allclose(norm(T(x)).numpy(), ref_instance_norm(x[None])[0], rtol=2e-5, atol=2e-5)
    assert norm.weight is None and norm.running_mean is None


@pytest.mark.parametrize("momentum", [0.1, None])
def test_instance_norm_matches_pytorch_over_steps(momentum):
    torch = torch_or_skip()
    ours = nn.InstanceNorm1d(3, momentum=momentum, affine=True, track_running_stats=True)
    theirs = torch.nn.InstanceNorm1d(3, momentum=momentum, affine=True, track_running_stats=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for i in range(3):
        x = RNG.normal(i, 2.0, (2, 3, 6)).astype(np.float32)
        np.testing.assert_allclose(ours(T(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-5)
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(np.asarray(ours.state_dict()[key]), value.numpy(), rtol=1e-5, atol=1e-6)
    ours.eval(), theirs.eval()
    x = RNG.normal(size=(2, 3, 6)).astype(np.float32)
    np.testing.assert_allclose(ours(T(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda nn: nn.GroupNorm(3, 6), lambda nn: nn.GroupNorm(2, 4, affine=False, eps=1e-3),
    lambda nn: nn.LayerNorm((3, 4)), lambda nn: nn.LayerNorm(5, elementwise_affine=False),
    lambda nn: nn.LayerNorm(5, bias=False), lambda nn: nn.InstanceNorm3d(4),
    lambda nn: nn.InstanceNorm2d(4, affine=True, track_running_stats=True), lambda nn: nn.LocalResponseNorm(3)])
def test_modules_have_pytorch_state_dicts(make):
    torch = torch_or_skip()
    ours, theirs = make(nn), make(torch.nn)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        np.testing.assert_array_equal(np.asarray(ours.state_dict()[key]), value.numpy())
    ours.load_state_dict({k: lucid.Tensor(v.numpy()) for k, v in theirs.state_dict().items()})


def test_namespaces():
    for name in ("GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LayerNorm", "LocalResponseNorm"):
        assert getattr(nn, name) is getattr(nn.modules, name)
    model = nn.Sequential(nn.InstanceNorm2d(3, affine=True), nn.BatchNorm2d(3))
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert type(converted[0]) is nn.InstanceNorm2d and type(converted[1]) is nn.SyncBatchNorm


# ----------------------------------------------------------------------------------------------
# Compiled

COMPILED = {
    "group_norm": lambda: nn.GroupNorm(3, 6),
    "instance_norm": lambda: nn.InstanceNorm3d(6, affine=True, track_running_stats=True),
    "layer_norm": lambda: nn.LayerNorm((3, 4, 3)),
    "local_response_norm": lambda: nn.LocalResponseNorm(3, alpha=0.5),
}


def _model(norm):
    lucid.manual_seed(5)
    model = nn.Sequential(nn.Conv3d(2, 6, 3, padding=1), norm(), nn.SiLU())
    values = np.random.default_rng(5)
    for p in model.parameters():
        if p.ndim == 1:
            p.data[...] = values.normal(0.5, 0.5, p.shape)
    return model


@pytest.mark.parametrize("name", list(COMPILED))
def test_compiled_training_step_matches_eager(name):
    x = RNG.normal(1.0, 1.0, (2, 2, 3, 4, 3)).astype(np.float32)
    weights = T(RNG.normal(size=(2, 6, 3, 4, 3)).astype(np.float32))
    eager, compiled = _model(COMPILED[name]), _model(COMPILED[name])
    step = lucid.compile(compiled)
    for _ in range(2):
        y_eager, y = eager(T(x)), step(T(x))
        (y_eager * weights).sum().backward()
        (y * weights).sum().backward()
        np.testing.assert_allclose(y.numpy(), y_eager.numpy(), rtol=1e-4, atol=1e-4)
    for (key, p), q in zip(eager.named_parameters(), compiled.parameters()):
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-4, atol=1e-4, err_msg=key)
    for (key, b), c in zip(eager.named_buffers(), compiled.buffers()):
        np.testing.assert_allclose(c.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=key)


def test_compiled_eval_instance_norm_uses_running_statistics():
    model = _model(COMPILED["instance_norm"])
    model[1].running_mean.data[...] = RNG.normal(size=6)
    model[1].running_var.data[...] = RNG.uniform(0.5, 2.0, 6)
    model.eval()
    x = T(RNG.normal(size=(2, 2, 3, 4, 3)).astype(np.float32))
    np.testing.assert_allclose(lucid.compile(model)(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_group_norm_normalise_scale_shift_and_activation_are_one_loop():
    model = nn.Sequential(nn.Conv3d(2, 6, 3, padding=1), nn.GroupNorm(3, 6), nn.ReLU())
    graph = for_inference(lucid.trace(model, lucid.spec(2, 2, 4, 4, 4)))
    full = [n for n in graph.nodes if not n.is_constant and n.output.shape == (2, 6, 4, 4, 4)]
    assert [n.op for n in full] == ["conv", "fused"]
    body = [n.op for n in full[1].attrs["body"].nodes if not n.is_constant]
    assert body == ["normalize", "relu"]


# ----------------------------------------------------------------------------------------------
# Bad input

@pytest.mark.parametrize("build,shape,owner", [
    (lambda: nn.GroupNorm(4, 6), None, "GroupNorm"),
    (lambda: nn.GroupNorm(2, 6), (2, 4, 3), "GroupNorm"),
    (lambda: nn.LayerNorm((4, 5)), (2, 3, 5, 4), "LayerNorm"),
    (lambda: nn.LayerNorm(()), None, "LayerNorm"),
    (lambda: nn.InstanceNorm3d(4, affine=True), (2, 3, 2, 2, 2), "InstanceNorm3d"),
    (lambda: nn.InstanceNorm2d(3), (3, 4), "InstanceNorm2d"),
    (lambda: nn.LocalResponseNorm(2), (3, 4), "LocalResponseNorm"),
    (lambda: (lambda x: F.group_norm(x, 4)), (2, 6, 3), "group_norm"),
    (lambda: (lambda x: F.layer_norm(x, (3,))), (2, 4), "layer_norm"),
    (lambda: (lambda x: F.instance_norm(x)), (2, 3, 1), "instance_norm"),
])
def test_bad_input_is_a_shape_error_naming_the_layer(build, shape, owner):
    with pytest.raises(ShapeError, match=owner):
        layer = build()
        layer(T(np.zeros(shape, np.float32)))


def test_compiled_gradients_keep_pytorch_accuracy():
    """A compiled float32 training step of conv + GroupNorm + conv + InstanceNorm against the same
    model in float64: every parameter gradient within 3x PyTorch float32's own error (relative to the
    gradient's largest magnitude). The second conv's bias is left out: a norm follows it, so its
    exact gradient is 0."""
    torch = torch_or_skip()

    def build(nn):
        return nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
                             nn.Conv3d(8, 8, 3, padding=1), nn.InstanceNorm3d(8, affine=True), nn.SiLU())

    rng = np.random.default_rng(18)
    x, w = rng.normal(2.0, 1.0, (2, 3, 6, 6, 6)), rng.normal(size=(2, 8, 6, 6, 6))
    state = {k: np.asarray(v) for k, v in build(nn).state_dict().items()}

    def lucid_gradients(dtype, compiled):
        model = build(nn)
        model.load_state_dict(state)
        model.to(dtype)
        run = lucid.compile(model) if compiled else model
        (run(lucid.Tensor(x, dtype=dtype)) * lucid.Tensor(w, dtype=dtype)).sum().backward()
        return {k: p.grad.numpy().astype(np.float64) for k, p in model.named_parameters()}

    exact, ours = lucid_gradients("float64", False), lucid_gradients("float32", True)
    theirs = build(torch.nn)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    (theirs(torch.tensor(x, dtype=torch.float32)) * torch.tensor(w, dtype=torch.float32)).sum().backward()
    for key, p in theirs.named_parameters():
        if key == "3.bias":
            continue
        scale = np.abs(exact[key]).max()
        torch_error = np.abs(p.grad.numpy() - exact[key]).max() / scale
        assert np.abs(ours[key] - exact[key]).max() / scale <= 3 * torch_error + 1e-6, key


def test_exported_library_runs_the_norms(tmp_path):
    import lucid.runtime

    model = nn.Sequential(nn.Conv3d(2, 6, 3, padding=1), nn.GroupNorm(3, 6), nn.ReLU(),
                          nn.InstanceNorm3d(6, affine=True, track_running_stats=True), nn.LocalResponseNorm(2),
                          nn.LayerNorm((3, 4, 5)), nn.SiLU())
    model[3].running_mean.data[...] = RNG.normal(size=6)
    model[3].running_var.data[...] = RNG.uniform(0.5, 2.0, 6)
    x = RNG.normal(size=(1, 2, 3, 4, 5)).astype(np.float32)
    files = lucid.export(model, lucid.spec(*x.shape), path=tmp_path / "norms.so")
    got = lucid.runtime.load(files.library)(x)
    with lucid.no_grad():
        np.testing.assert_allclose(got, model.eval()(T(x)).numpy(), rtol=1e-5, atol=1e-5)
