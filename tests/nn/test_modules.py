"""SPEC section 3 (except conv numerics, tested in test_conv_parity.py) and the layer errors of
section 5: the Module API, state dicts (including loading a PyTorch model's state dict), the
non-conv layers, containers, lazy modules and the messages of common user mistakes.
PyTorch comparisons use pytest.importorskip("torch") in separate test functions."""

import math
from collections import OrderedDict

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
from lucid import Tensor

RNG = np.random.default_rng(99)


def arr(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def close(a, b, tol=1e-5):
    a = a.data if isinstance(a, Tensor) else np.asarray(a)
    b = b.detach().numpy() if hasattr(b, "detach") else (b.data if isinstance(b, Tensor) else np.asarray(b))
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


class Net(nn.Module):
    """enc (Conv2d, BatchNorm2d, ReLU) -> global mean -> head (Linear)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU())
        self.head = nn.Linear(3, 4)

    def forward(self, x):
        return self.head(self.enc(x).mean(axis=(2, 3)))


# =========================================================================== Module API
def test_named_parameters_pytorch_names():
    m = Net()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["enc.0.weight", "enc.0.bias", "enc.1.weight", "enc.1.bias", "head.weight", "head.bias"]
    params = list(m.parameters())
    assert len(params) == 6
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in params)
    assert params[0] is m.enc[0].weight
    assert m.enc[0].weight.shape == (3, 2, 3, 3)
    assert m.head.weight.shape == (4, 3)


def test_state_dict_names_include_batchnorm_buffers():
    m = Net()
    sd = m.state_dict()
    assert list(sd) == ["enc.0.weight", "enc.0.bias", "enc.1.weight", "enc.1.bias", "enc.1.running_mean",
                        "enc.1.running_var", "enc.1.num_batches_tracked", "head.weight", "head.bias"]
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    np.testing.assert_array_equal(sd["enc.1.running_mean"], np.zeros(3))
    np.testing.assert_array_equal(sd["enc.1.running_var"], np.ones(3))
    assert sd["enc.1.num_batches_tracked"].shape == ()
    assert sd["enc.1.num_batches_tracked"].dtype.kind == "i"
    assert sd["enc.1.running_mean"].dtype == np.float32
    np.testing.assert_array_equal(sd["head.weight"], m.head.weight.data)


def test_children_modules_named_modules():
    m = Net()
    assert [type(c).__name__ for c in m.children()] == ["Sequential", "Linear"]
    assert [n for n, _ in m.named_modules()] == ["", "enc", "enc.0", "enc.1", "enc.2", "head"]
    mods = list(m.modules())
    assert mods[0] is m and len(mods) == 6
    assert [type(x).__name__ for x in mods] == ["Net", "Sequential", "Conv2d", "BatchNorm2d", "ReLU", "Linear"]


def test_shared_module_listed_once():
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(seq.parameters())) == 2
    assert len(list(seq.modules())) == 3


def test_train_eval_propagate():
    m = Net()
    assert m.training and all(x.training for x in m.modules())
    assert m.eval() is m
    assert not any(x.training for x in m.modules())
    assert m.train() is m
    assert all(x.training for x in m.modules())
    m.train(False)
    assert not m.enc[1].training


def test_module_zero_grad():
    m = Net()
    m(Tensor(arr(2, 2, 4, 4))).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None or not np.any(p.grad.data) for p in m.parameters())


def test_register_buffer_and_extra_repr():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(np.ones(2))
            self.register_buffer("scale", Tensor([2.0, 3.0]))
            self.register_buffer("tmp", Tensor([0.0]), persistent=False)

        def forward(self, x):
            return x * self.w * self.scale

        def extra_repr(self):
            return "features=2"

    s = Scale()
    assert isinstance(s.scale, Tensor) and not s.scale.requires_grad
    assert list(s.state_dict()) == ["w", "scale"]
    assert [n for n, _ in s.named_parameters()] == ["w"]
    assert [n for n, _ in s.named_buffers()] == ["scale", "tmp"]
    close(s(Tensor([1.0, 1.0])), [2.0, 3.0])
    s.load_state_dict({"w": np.array([1.0, 2.0]), "scale": np.array([5.0, 7.0])})
    close(s.scale, [5.0, 7.0])
    assert repr(s) == "Scale(features=2)"


def test_nested_repr():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    assert repr(seq) == ("Sequential(\n"
                         "  (0): Linear(in_features=2, out_features=3, bias=True)\n"
                         "  (1): ReLU()\n"
                         ")")
    r = repr(Net())
    assert r.startswith("Net(\n  (enc): Sequential(\n    (0): Conv2d(2, 3")
    assert "\n    (1): BatchNorm2d(3" in r
    assert "\n  (head): Linear(in_features=3, out_features=4, bias=True)\n)" in r


def test_parameter_basics():
    p = nn.Parameter(np.zeros((2, 3)))
    assert isinstance(p, Tensor) and p.requires_grad and p.is_leaf
    assert p.dtype == lucid.float32
    assert "Parameter" in repr(p)


def test_setattr_registration_rules():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.p = nn.Parameter(np.ones(1))
            self.plain = 3

    m = M()
    assert [n for n, _ in m.named_parameters()] == ["p", "lin.weight", "lin.bias"]   # own first, as PyTorch
    assert list(m.state_dict()) == ["p", "lin.weight", "lin.bias"]
    with pytest.raises(TypeError):
        m.p = Tensor([1.0])                 # a plain Tensor where a Parameter lives
    with pytest.raises(AttributeError):
        m.missing


def test_load_state_dict_roundtrip_and_values():
    lucid.manual_seed(0)
    a = Net()
    lucid.manual_seed(1)
    b = Net()
    x = Tensor(arr(2, 2, 4, 4))
    a.eval(), b.eval()
    assert not np.allclose(a(x).data, b(x).data)
    sd = a.state_dict()
    sd["enc.1.running_mean"] = arr(3)
    sd["enc.1.running_var"] = np.abs(arr(3)) + 0.5
    sd["enc.1.num_batches_tracked"] = np.array(5)
    result = b.load_state_dict(sd)
    missing, unexpected = result
    assert list(missing) == [] and list(unexpected) == []
    a.load_state_dict(sd)
    close(a(x), b(x).data)
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])
    # loading copies: changing the source afterwards does not touch the module
    sd["head.bias"][...] = 123.0
    assert not np.any(b.head.bias.data == 123.0)
    # Tensors are accepted as values too
    b.load_state_dict({k: Tensor(v, dtype=lucid.float64) if v.dtype.kind == "f" else v
                       for k, v in a.state_dict().items()})
    assert b.head.weight.dtype == lucid.float32
    close(b.head.weight, a.head.weight.data)


def test_load_state_dict_strict_missing_and_unexpected():
    m = Net()
    sd = m.state_dict()
    missing = dict(sd)
    del missing["head.bias"]
    with pytest.raises(ValueError) as info:
        m.load_state_dict(missing)
    assert "head.bias" in str(info.value)
    extra = dict(sd, **{"head.extra": np.zeros(2)})
    with pytest.raises(ValueError) as info:
        m.load_state_dict(extra)
    assert "head.extra" in str(info.value)
    # strict=False loads what it can and reports the rest
    before = m.head.weight.data.copy()
    missing["head.weight"] = np.full((4, 3), 0.5, np.float32)
    got_missing, got_unexpected = m.load_state_dict(dict(missing, **{"zzz": np.zeros(1)}), strict=False)
    assert list(got_missing) == ["head.bias"]
    assert list(got_unexpected) == ["zzz"]
    assert not np.array_equal(before, m.head.weight.data)
    assert np.all(m.head.weight.data == 0.5)


@pytest.mark.parametrize("strict", [True, False])
def test_load_state_dict_wrong_shape_names_key_and_shapes(strict):
    m = Net()
    sd = m.state_dict()
    sd["head.weight"] = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError) as info:
        m.load_state_dict(sd, strict=strict)
    msg = str(info.value)
    assert "head.weight" in msg and "(4, 3)" in msg and "(5, 3)" in msg


# =========================================================================== PyTorch state dict -> lucid model
def _torch_unet(torch):
    tnn = torch.nn

    class TUNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.enc1 = tnn.Sequential(tnn.Conv3d(2, 4, 3, padding=1), tnn.BatchNorm3d(4), tnn.ReLU())
            self.pool = tnn.MaxPool3d(2)
            self.enc2 = tnn.Sequential(tnn.Conv3d(4, 6, 3, padding=1), tnn.BatchNorm3d(6), tnn.ReLU())
            self.up = tnn.ConvTranspose3d(6, 4, 2, stride=2)
            self.dec = tnn.Sequential(tnn.Conv3d(8, 4, 3, padding=1), tnn.BatchNorm3d(4), tnn.ReLU())
            self.head = tnn.Linear(4, 3)

        def forward(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(self.pool(e1))
            d = self.dec(torch.cat([self.up(e2), e1], 1))
            return self.head(d.permute(0, 2, 3, 4, 1))

    return TUNet()


class LUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU())
        self.pool = nn.MaxPool3D(2)
        self.enc2 = nn.Sequential(nn.Conv3d(4, 6, 3, padding=1), nn.BatchNorm3d(6), nn.ReLU())
        self.up = nn.ConvTranspose3d(6, 4, 2, stride=2)
        self.dec = nn.Sequential(nn.Conv3d(8, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU())
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        d = self.dec(lucid.cat([self.up(e2), e1], dim=1))
        return self.head(d.permute(0, 2, 3, 4, 1))


def test_torch_unet_state_dict_loads_and_matches():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tm = _torch_unet(torch)
    # give the BatchNorms non-trivial running statistics
    with torch.no_grad():
        tm.train()
        for _ in range(2):
            tm(torch.randn(2, 2, 4, 4, 4))
    sd = {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}
    lm = LUNet()
    assert list(lm.state_dict()) == list(sd)
    lm.load_state_dict(sd)
    for k, v in lm.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])

    x = arr(2, 2, 4, 4, 4)
    # eval mode: running statistics
    tm.eval(), lm.eval()
    close(lm(Tensor(x)), tm(torch.tensor(x)), tol=1e-4)

    # train mode: batch statistics, running-stat updates and gradients
    tm.train(), lm.train()
    tx = torch.tensor(x, requires_grad=True)
    lx = Tensor(x, requires_grad=True)
    ty, ly = tm(tx), lm(lx)
    close(ly, ty, tol=1e-4)
    (ty * ty).sum().backward()
    (ly * ly).sum().backward()
    close(lx.grad, tx.grad, tol=1e-3)
    tparams = dict(tm.named_parameters())
    for name, p in lm.named_parameters():
        close(p.grad, tparams[name].grad, tol=1e-3)
    tsd = tm.state_dict()
    for k, v in lm.state_dict().items():
        np.testing.assert_allclose(v, tsd[k].numpy(), rtol=1e-4, atol=1e-5, err_msg=k)


def test_lucid_state_dict_loads_into_torch():
    torch = pytest.importorskip("torch")
    lm = LUNet().eval()
    tm = _torch_unet(torch).eval()
    tm.load_state_dict({k: torch.tensor(v) for k, v in lm.state_dict().items()})
    x = arr(1, 2, 4, 4, 4)
    close(lm(Tensor(x)), tm(torch.tensor(x)), tol=1e-4)


# =========================================================================== Linear / LazyLinear
def test_linear_forward_backward_numpy():
    lin = nn.Linear(3, 2)
    assert lin.weight.shape == (2, 3) and lin.bias.shape == (2,)
    bound = 1 / math.sqrt(3)
    assert np.all(np.abs(lin.weight.data) <= bound) and np.all(np.abs(lin.bias.data) <= bound)
    a = arr(4, 3)
    x = Tensor(a, requires_grad=True)
    y = lin(x)
    w, b = lin.weight.data, lin.bias.data
    close(y, a @ w.T + b)
    g = arr(4, 2)
    y.backward(Tensor(g))
    close(x.grad, g @ w)
    close(lin.weight.grad, g.T @ a)
    close(lin.bias.grad, g.sum(0))
    # 1-D and 3-D inputs
    close(lin(Tensor(a[0])), a[0] @ w.T + b)
    a3 = arr(2, 5, 3)
    close(lin(Tensor(a3)), a3 @ w.T + b)
    nobias = nn.Linear(3, 2, bias=False)
    assert nobias.bias is None and [n for n, _ in nobias.named_parameters()] == ["weight"]


def test_lazy_linear():
    lucid.manual_seed(5)
    lin = nn.LazyLinear(4)
    assert lin.in_features is None and lin.weight is None and lin.bias is None
    assert list(lin.parameters()) == []
    y = lin(Tensor(arr(2, 7)))
    assert y.shape == (2, 4) and lin.in_features == 7 and lin.weight.shape == (4, 7)
    w1 = lin.weight.data.copy()
    lucid.manual_seed(5)
    lin2 = nn.LazyLinear(4)
    lin2(Tensor(arr(3, 7)))
    np.testing.assert_array_equal(w1, lin2.weight.data)
    with pytest.raises(ValueError):
        lin(Tensor(arr(2, 6)))
    # materialise through load_state_dict
    lin3 = nn.LazyLinear(4)
    lin3.load_state_dict({"weight": np.ones((4, 5), np.float32), "bias": np.zeros(4, np.float32)})
    assert lin3.in_features == 5
    close(lin3(Tensor(np.ones((1, 5), np.float32))), np.full((1, 4), 5.0))


# =========================================================================== activations
def _gelu(a):
    from math import erf
    return a * 0.5 * (1 + np.vectorize(erf)(a / np.sqrt(2)))


@pytest.mark.parametrize("module, fn", [
    (nn.ReLU(), lambda a: np.maximum(a, 0)),
    (nn.LeakyReLU(), lambda a: np.where(a > 0, a, 0.01 * a)),
    (nn.LeakyReLU(0.2), lambda a: np.where(a > 0, a, 0.2 * a)),
    (nn.Sigmoid(), lambda a: 1 / (1 + np.exp(-a))),
    (nn.Tanh(), np.tanh),
    (nn.GELU(), _gelu),
    (nn.Softmax(dim=1), lambda a: np.exp(a) / np.exp(a).sum(1, keepdims=True)),
    (nn.Softmax(dim=-1), lambda a: np.exp(a) / np.exp(a).sum(-1, keepdims=True)),
    (nn.Identity(), lambda a: a),
    (nn.Flatten(), lambda a: a.reshape(a.shape[0], -1)),
    (nn.Flatten(0, 1), lambda a: a.reshape(-1, a.shape[2])),
])
def test_elementwise_layers(module, fn):
    a = arr(2, 3, 4)
    close(module(Tensor(a)), fn(a).astype(np.float32), tol=1e-5)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "softmax"])
def test_activation_grads_match_torch(name):
    torch = pytest.importorskip("torch")
    a, g = arr(3, 5), arr(3, 5)
    x = Tensor(a, requires_grad=True)
    tx = torch.tensor(a, requires_grad=True)
    lf, tf = getattr(F, name), getattr(torch.nn.functional, name)
    kw = {"dim": 1} if name == "softmax" else {}
    y, ty = lf(x, **kw), tf(tx, **kw)
    close(y, ty, tol=1e-5)
    y.backward(Tensor(g))
    ty.backward(torch.tensor(g))
    close(x.grad, tx.grad, tol=1e-5)


# =========================================================================== pooling
def test_maxpool_alias():
    assert nn.MaxPool3D is nn.MaxPool3d
    assert nn.MaxPool2D is nn.MaxPool2d and nn.MaxPool1D is nn.MaxPool1d
    assert nn.AvgPool3D is nn.AvgPool3d


def test_maxpool2d_numpy():
    a = arr(1, 2, 4, 6)
    y = nn.MaxPool2d(2)(Tensor(a))
    want = a.reshape(1, 2, 2, 2, 3, 2).max(axis=(3, 5))
    close(y, want)
    y2 = nn.AvgPool2d(2)(Tensor(a))
    close(y2, a.reshape(1, 2, 2, 2, 3, 2).mean(axis=(3, 5)))


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("kind", ["Max", "Avg"])
@pytest.mark.parametrize("cfg", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=2, stride=1),
])
def test_pools_match_torch(rank, kind, cfg):
    torch = pytest.importorskip("torch")
    shape = (2, 2) + (5, 4, 3)[:rank]
    a = arr(*shape)
    lm = getattr(nn, f"{kind}Pool{rank}d")(**cfg)
    tm = getattr(torch.nn, f"{kind}Pool{rank}d")(**cfg)
    x, tx = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    y, ty = lm(x), tm(tx)
    close(y, ty)
    g = arr(*ty.shape)
    y.backward(Tensor(g))
    ty.backward(torch.tensor(g))
    close(x.grad, tx.grad)
    # unbatched input
    close(lm(Tensor(a[0])), tm(torch.tensor(a[0])))


def test_pool_functional_forms():
    a = arr(1, 1, 4, 4, 4)
    close(F.max_pool3d(Tensor(a), 2), nn.MaxPool3d(2)(Tensor(a)).data)
    close(F.avg_pool1d(Tensor(a[0, 0, 0]), 2), a[0, 0, 0].reshape(4, 2, 2).mean(-1))


# =========================================================================== BatchNorm
@pytest.mark.parametrize("cls, shape", [
    ("BatchNorm1d", (4, 3)), ("BatchNorm1d", (2, 3, 5)), ("BatchNorm2d", (2, 3, 4, 4)),
    ("BatchNorm3d", (2, 3, 2, 3, 2)),
])
def test_batchnorm_train_numpy(cls, shape):
    bn = getattr(nn, cls)(3)
    a = arr(*shape)
    y = bn(Tensor(a))
    axes = (0,) + tuple(range(2, a.ndim))
    mean = a.mean(axes, keepdims=True)
    var = a.var(axes, keepdims=True)
    close(y, (a - mean) / np.sqrt(var + 1e-5), tol=1e-4)
    n = a.size // 3
    close(bn.running_mean, 0.1 * mean.reshape(3), tol=1e-5)
    close(bn.running_var, 0.9 + 0.1 * var.reshape(3) * n / (n - 1), tol=1e-5)
    assert int(bn.num_batches_tracked.item()) == 1
    # eval uses running statistics and does not update them
    bn.eval()
    rm, rv = bn.running_mean.data.copy(), bn.running_var.data.copy()
    bshape = (1, 3) + (1,) * (a.ndim - 2)
    close(bn(Tensor(a)), (a - rm.reshape(bshape)) / np.sqrt(rv.reshape(bshape) + 1e-5), tol=1e-4)
    np.testing.assert_array_equal(bn.running_mean.data, rm)
    assert int(bn.num_batches_tracked.item()) == 1


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
def test_batchnorm_matches_torch(rank, momentum):
    torch = pytest.importorskip("torch")
    shape = (3, 4) + (3, 2, 2)[:rank] if rank > 1 else (5, 4)
    lb = getattr(nn, f"BatchNorm{rank}d")(4, momentum=momentum)
    tb = getattr(torch.nn, f"BatchNorm{rank}d")(4, momentum=momentum)
    w, b = arr(4), arr(4)
    with torch.no_grad():
        tb.weight.copy_(torch.tensor(w))
        tb.bias.copy_(torch.tensor(b))
    lb.load_state_dict({k: v.numpy() for k, v in tb.state_dict().items()})
    for step in range(3):
        a = arr(*shape) * (step + 1) + step
        x, tx = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
        y, ty = lb(x), tb(tx)
        close(y, ty, tol=1e-4)
        g = arr(*shape)
        y.backward(Tensor(g))
        ty.backward(torch.tensor(g))
        close(x.grad, tx.grad, tol=1e-4)
        close(lb.weight.grad, tb.weight.grad, tol=1e-4)
        close(lb.bias.grad, tb.bias.grad, tol=1e-4)
        lb.zero_grad(), tb.zero_grad()
        close(lb.running_mean, tb.running_mean, tol=1e-5)
        close(lb.running_var, tb.running_var, tol=1e-5)
        assert int(lb.num_batches_tracked.item()) == int(tb.num_batches_tracked) == step + 1
    lb.eval(), tb.eval()
    a = arr(*shape)
    close(lb(Tensor(a)), tb(torch.tensor(a)), tol=1e-4)


def test_batchnorm_momentum_none_is_cumulative_average():
    bn = nn.BatchNorm1d(2, momentum=None)
    batches = [arr(6, 2) + i for i in range(3)]
    for b in batches:
        bn(Tensor(b))
    close(bn.running_mean, np.mean([b.mean(0) for b in batches], axis=0), tol=1e-5)
    close(bn.running_var, np.mean([b.var(0, ddof=1) for b in batches], axis=0), tol=1e-5)


def test_batchnorm_no_affine_no_tracking():
    bn = nn.BatchNorm2d(3, affine=False, track_running_stats=False)
    assert list(bn.parameters()) == [] and list(bn.state_dict()) == []
    a = arr(2, 3, 2, 2)
    bn.eval()
    mean = a.mean((0, 2, 3), keepdims=True)
    close(bn(Tensor(a)), (a - mean) / np.sqrt(a.var((0, 2, 3), keepdims=True) + 1e-5), tol=1e-4)


# =========================================================================== Dropout
def test_dropout_train_eval_and_seed():
    d = nn.Dropout(0.3)
    x = Tensor(np.ones((100, 100), np.float32), requires_grad=True)
    lucid.manual_seed(11)
    y = d(x)
    zeros = float(np.mean(y.data == 0))
    assert 0.26 < zeros < 0.34
    kept = y.data[y.data != 0]
    np.testing.assert_allclose(kept, 1 / 0.7, rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, y.data, rtol=1e-6)   # grad is mask / (1 - p)
    lucid.manual_seed(11)
    np.testing.assert_array_equal(d(x).data, y.data)
    lucid.manual_seed(12)
    assert not np.array_equal(d(x).data, y.data)
    d.eval()
    np.testing.assert_array_equal(d(x).data, x.data)
    d.train()
    assert np.all(nn.Dropout(1.0)(x).data == 0)
    np.testing.assert_array_equal(nn.Dropout(0.0)(x).data, x.data)
    with pytest.raises(ValueError):
        nn.Dropout(1.5)


# =========================================================================== containers
def test_sequential():
    l0, l1, l2 = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    s = nn.Sequential(l0, l1, l2)
    assert len(s) == 3
    assert s[0] is l0 and s[-1] is l2
    sub = s[:2]
    assert isinstance(sub, nn.Sequential) and len(sub) == 2 and sub[1] is l1
    assert list(s) == [l0, l1, l2]
    a = arr(4, 2)
    w0, b0, w2, b2 = l0.weight.data, l0.bias.data, l2.weight.data, l2.bias.data
    close(s(Tensor(a)), np.maximum(a @ w0.T + b0, 0) @ w2.T + b2, tol=1e-5)
    s.append(nn.Sigmoid())
    assert len(s) == 4 and [n for n, _ in s.named_children()] == ["0", "1", "2", "3"]
    assert [n for n, _ in s.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.Tanh())]))
    assert [n for n, _ in named.named_parameters()] == ["fc.weight", "fc.bias"]
    assert isinstance(named.fc, nn.Linear)
    with pytest.raises(TypeError):
        nn.Sequential(nn.ReLU(), "not a module")


def test_module_list():
    ml = nn.ModuleList([nn.Linear(1, 1), nn.Linear(1, 2)])
    ml.append(nn.ReLU())
    ml.extend([nn.Tanh(), nn.Linear(2, 2)])
    assert len(ml) == 5
    new = nn.Sigmoid()
    ml.insert(1, new)
    assert len(ml) == 6 and ml[1] is new
    assert isinstance(ml[0], nn.Linear) and isinstance(ml[-1], nn.Linear) and isinstance(ml[3], nn.ReLU)
    assert [n for n, _ in ml.named_children()] == [str(i) for i in range(6)]
    assert [n for n, _ in ml.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias",
                                                      "5.weight", "5.bias"]

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(2)])

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    h = Holder()
    assert list(h.state_dict()) == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]
    assert h(Tensor(arr(3, 2))).shape == (3, 2)


def test_module_dict():
    md = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.ReLU()})
    md["c"] = nn.Linear(2, 1)
    assert len(md) == 3 and "a" in md and "z" not in md
    assert list(md.keys()) == ["a", "b", "c"]
    assert isinstance(md["c"], nn.Linear)
    assert [n for n, _ in md.named_parameters()] == ["a.weight", "a.bias", "c.weight", "c.bias"]
    assert dict(md.items())["b"] is md["b"]


# =========================================================================== lazy modules
LAZY = [
    ("LazyConv1d", 1, False), ("LazyConv2d", 2, False), ("LazyConv3d", 3, False),
    ("LazyConvTranspose1d", 1, True), ("LazyConvTranspose2d", 2, True), ("LazyConvTranspose3d", 3, True),
]


@pytest.mark.parametrize("name, rank, transposed", LAZY)
def test_lazy_conv_materialises_on_forward(name, rank, transposed):
    m = getattr(nn, name)(4, 3, padding=1)
    assert m.in_channels is None and m.weight is None and m.bias is None
    assert list(m.parameters()) == []
    x = Tensor(arr(2, 6, *(4,) * rank))
    y = m(x)
    assert m.in_channels == 6
    want_w = (6, 4) + (3,) * rank if transposed else (4, 6) + (3,) * rank
    assert m.weight.shape == want_w and m.bias.shape == (4,)
    assert y.shape == (2, 4) + (4,) * rank
    eager = getattr(nn, name.replace("Lazy", ""))(6, 4, 3, padding=1)
    eager.load_state_dict(m.state_dict())
    close(eager(x), y.data)


@pytest.mark.parametrize("name, rank, transposed", LAZY)
def test_lazy_conv_unbatched_first_input(name, rank, transposed):
    m = getattr(nn, name)(2, 3)
    x = arr(5, *(4,) * rank)
    y = m(Tensor(x))
    assert m.in_channels == 5
    out_sp = 6 if transposed else 2
    assert y.shape == (2,) + (out_sp,) * rank
    close(m(Tensor(x[None])), y.data[None])


@pytest.mark.parametrize("name, rank, transposed", LAZY)
def test_lazy_conv_wrong_channels_after_materialisation(name, rank, transposed):
    m = getattr(nn, name)(2, 1)
    m(Tensor(arr(1, 4, *(2,) * rank)))
    with pytest.raises(ValueError) as info:
        m(Tensor(arr(1, 7, *(2,) * rank)))
    msg = str(info.value)
    assert name in msg and "4" in msg and "7" in msg


def test_lazy_init_reproducible_declaration_order():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.second = nn.LazyConv2d(3, 3)      # declared first, called second
            self.first = nn.LazyLinear(6)

        def forward(self, x):
            return self.second(self.first(x))

    x = Tensor(arr(1, 4, 5, 6))
    lucid.manual_seed(21)
    a = Two()
    a(x)
    lucid.manual_seed(21)
    b = Two()
    b(x)
    assert [n for n, _ in a.named_parameters()] == ["second.weight", "second.bias", "first.weight", "first.bias"]
    assert list(a.state_dict()) == list(b.state_dict())
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    lucid.manual_seed(22)
    c = Two()
    c(x)
    assert not np.array_equal(a.second.weight.data, c.second.weight.data)

    seq_a = nn.Sequential(nn.LazyConv3d(2, 1), nn.LazyConvTranspose3d(3, 2))
    seq_b = nn.Sequential(nn.LazyConv3d(2, 1), nn.LazyConvTranspose3d(3, 2))
    x3 = Tensor(arr(1, 3, 2, 2, 2))
    lucid.manual_seed(3)
    seq_a(x3)
    lucid.manual_seed(3)
    seq_b(x3)
    for k, v in seq_a.state_dict().items():
        np.testing.assert_array_equal(v, seq_b.state_dict()[k])


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("name, rank, transposed", LAZY)
def test_lazy_conv_materialise_via_load_state_dict(name, rank, transposed, groups):
    in_ch, out_ch = 4, 6
    k = (2,) * rank
    w_shape = (in_ch, out_ch // groups) + k if transposed else (out_ch, in_ch // groups) + k
    w = arr(*w_shape)
    b = arr(out_ch)
    m = getattr(nn, name)(out_ch, 2, groups=groups)
    m.load_state_dict({"weight": w, "bias": b})
    assert m.in_channels == in_ch
    np.testing.assert_array_equal(m.weight.data, w)
    np.testing.assert_array_equal(m.bias.data, b)
    x = arr(1, in_ch, *(3,) * rank)
    eager = getattr(nn, name.replace("Lazy", ""))(in_ch, out_ch, 2, groups=groups)
    eager.load_state_dict({"weight": w, "bias": b})
    close(m(Tensor(x)), eager(Tensor(x)).data)
    with pytest.raises(ValueError) as info:
        m(Tensor(arr(1, in_ch + 2, *(3,) * rank)))
    assert name in str(info.value) and str(in_ch) in str(info.value) and str(in_ch + 2) in str(info.value)


def test_lazy_inside_model_materialises_via_load_state_dict():
    torch = pytest.importorskip("torch")
    tm = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 2), torch.nn.ReLU(), torch.nn.ConvTranspose3d(4, 2, 2))
    lm = nn.Sequential(nn.LazyConv3d(4, 2), nn.ReLU(), nn.LazyConvTranspose3d(2, 2))
    lm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    assert lm[0].in_channels == 3 and lm[2].in_channels == 4
    x = arr(1, 3, 3, 3, 3)
    close(lm(Tensor(x)), tm(torch.tensor(x)), tol=1e-5)


def test_seed_lazy_conv_transpose3d_examples():
    up3d = nn.LazyConvTranspose3d(out_channels=32, kernel_size=4, stride=2, padding=1)
    x = lucid.zeros(2, 64, 4, 8, 8)
    y = up3d(x)
    assert y.shape == (2, 32, 8, 16, 16)
    assert up3d.in_channels == 64 and up3d.weight.shape == (64, 32, 4, 4, 4)

    lazy = nn.LazyConvTranspose3d(out_channels=16, kernel_size=3, padding=1)
    assert lazy.in_channels is None and lazy.weight is None and lazy.bias is None
    _ = lazy(lucid.zeros(1, 8, 4, 4, 4))
    assert lazy.in_channels == 8
    assert lazy.weight.shape == (8, 16, 3, 3, 3) and lazy.bias.shape == (16,)
    assert _.shape == (1, 16, 4, 4, 4)


def test_lazy_conv_transpose3d_signature_order():
    # LazyConvTranspose3d(out_channels, kernel_size, stride, padding, output_padding, groups, bias, dilation)
    m = nn.LazyConvTranspose3d(4, 3, 2, 1, 1, 2, False, 1)
    y = m(Tensor(arr(1, 2, 2, 2, 2)))
    assert m.groups == 2 and m.bias is None and m.weight.shape == (2, 2, 3, 3, 3)
    assert y.shape == (1, 4, 4, 4, 4)


# =========================================================================== error messages
def test_wrong_channels_deep_inside_sequential_names_layer_and_path():
    model = nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(),
        nn.Sequential(nn.Conv3d(4, 5, 1), nn.ReLU(), nn.Conv3d(6, 2, 1)),
    )
    with pytest.raises(ValueError) as info:
        model(Tensor(arr(1, 1, 2, 2, 2)))
    msg = str(info.value)
    assert "Conv3d" in msg
    assert "2.2" in msg            # the path of the failing layer inside the model
    assert "6" in msg and "5" in msg


def test_wrong_channels_top_level_sequential():
    model = nn.Sequential(nn.Conv3d(2, 3, 1), nn.ReLU(), nn.Conv3d(4, 1, 1))
    with pytest.raises(ValueError) as info:
        model(Tensor(arr(1, 2, 2, 2, 2)))
    msg = str(info.value)
    assert "Conv3d" in msg and "'2'" in msg and "4" in msg and "3" in msg


def test_linear_wrong_in_features():
    with pytest.raises(ValueError) as info:
        nn.Linear(3, 2)(Tensor(arr(4, 5)))
    msg = str(info.value)
    assert "Linear" in msg and "3" in msg and "5" in msg


def test_batchnorm_wrong_channels():
    with pytest.raises(ValueError) as info:
        nn.BatchNorm2d(3)(Tensor(arr(2, 4, 3, 3)))
    msg = str(info.value)
    assert "BatchNorm2d" in msg and "3" in msg and "4" in msg
    with pytest.raises(ValueError):
        nn.BatchNorm3d(3)(Tensor(arr(2, 3, 3, 3)))       # wrong rank


def test_batchnorm_single_value_per_channel_in_training():
    with pytest.raises(ValueError):
        nn.BatchNorm1d(3)(Tensor(arr(1, 3)))


def test_pool_input_too_small():
    pool_model = nn.Sequential(nn.Conv3d(1, 2, 2), nn.MaxPool3d(2))
    with pytest.raises(ValueError) as info:
        pool_model(Tensor(arr(1, 1, 2, 2, 2)))       # conv gives a 1x1x1 map into a 2x2x2 pool
    msg = str(info.value)
    assert "MaxPool3d" in msg or "max_pool3d" in msg
    assert "(1, 1, 1)" in msg and "(2, 2, 2)" in msg
    with pytest.raises(ValueError):
        nn.AvgPool2d(3)(Tensor(arr(1, 1, 2, 2)))


def test_seed_conv3d_model_example_is_a_clear_error():
    class Conv3dModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv3d(1, 4, kernel_size=2)
            self.pool = nn.MaxPool3d(kernel_size=2)

        def forward(self, x):
            return self.pool(self.conv1(x))

    with pytest.raises(ValueError) as info:
        Conv3dModel()(Tensor(arr(1, 1, 2, 2, 2)))
    assert "pool" in str(info.value)


def test_cross_entropy_out_of_range_class():
    logits = Tensor(arr(2, 3))
    with pytest.raises(ValueError) as info:
        F.cross_entropy(logits, Tensor([0, 3]))
    assert "3" in str(info.value)
    with pytest.raises(ValueError):
        F.cross_entropy(logits, Tensor([-1, 0]))


def test_cross_entropy_and_mse_match_torch():
    torch = pytest.importorskip("torch")
    a, t = arr(4, 3), np.array([0, 2, 1, 2])
    x, tx = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    y, ty = F.cross_entropy(x, Tensor(t)), torch.nn.functional.cross_entropy(tx, torch.tensor(t))
    close(y, ty, tol=1e-5)
    y.backward(), ty.backward()
    close(x.grad, tx.grad, tol=1e-5)
    b = arr(4, 3)
    close(F.mse_loss(Tensor(a), Tensor(b)), torch.nn.functional.mse_loss(torch.tensor(a), torch.tensor(b)))


def test_bad_layer_arguments():
    with pytest.raises(ValueError):
        nn.Linear(0, 2)
    with pytest.raises(ValueError):
        nn.MaxPool2d(0)
    with pytest.raises(ValueError):
        nn.BatchNorm1d(-1)
