"""Randomised parity of lucid's convolutions against the independent NumPy oracle.

A fixed-seed generator draws CONFIG_COUNT configurations (1-D/2-D/3-D, conv and transposed
conv, per-dim kernel/stride/dilation, int/tuple/'same'/'valid' padding, output_padding, groups,
bias on/off, batched and unbatched). Each configuration is checked

* through the functional API (``F.conv{n}d`` / ``F.conv_transpose{n}d``) and
* through the modules (``nn.Conv{n}d`` / ``nn.ConvTranspose{n}d``),

forward output and the input, weight and bias gradients of ``y.backward(g)`` for a random
upstream gradient ``g``, in float32 against the float64 oracle. When PyTorch is installed the
same configurations are also compared with ``torch.nn.functional`` directly. A few float64
finite-difference checks of lucid's own gradients close the file.
"""
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pytest

import oracle

import lucid
import lucid.nn as nn
import lucid.nn.functional as F

MASTER_SEED = 20240611
CONFIG_COUNT = 240
MAX_SPATIAL = {1: 7, 2: 7, 3: 5}


# ----------------------------------------------------------------------------- configurations

@dataclass(frozen=True)
class Cfg:
    idx: int
    nd: int
    transposed: bool
    batch: int | None          # None: unbatched input (C, *spatial)
    cin: int
    cout: int
    groups: int
    k: tuple
    stride: tuple
    dilation: tuple
    in_spatial: tuple
    kernel_arg: object         # what is passed to lucid: int or tuple
    stride_arg: object
    dilation_arg: object
    padding_arg: object        # int, tuple, 'same' or 'valid'
    output_padding_arg: object  # int or tuple (transposed only)
    bias: bool

    @property
    def pads(self):
        """(lo, hi) per dim as the oracle wants them."""
        if self.transposed:
            return oracle.resolve_conv_transpose_padding(
                self.padding_arg, self.output_padding_arg, self.in_spatial, self.k, self.stride, self.dilation)[0]
        return oracle.resolve_conv_padding(self.padding_arg, self.in_spatial, self.k, self.stride, self.dilation)

    @property
    def output_padding(self):
        return oracle.resolve_conv_transpose_padding(
            self.padding_arg, self.output_padding_arg, self.in_spatial, self.k, self.stride, self.dilation)[1]

    @property
    def out_spatial(self):
        if self.transposed:
            return oracle.conv_transpose_output_shape(self.in_spatial, self.k, self.stride, self.pads,
                                                      self.output_padding, self.dilation)
        return oracle.conv_output_shape(self.in_spatial, self.k, self.stride, self.pads, self.dilation)

    @property
    def weight_shape(self):
        if self.transposed:
            return (self.cin, self.cout // self.groups) + self.k
        return (self.cout, self.cin // self.groups) + self.k

    @property
    def id(self):
        def f(v):
            return "x".join(map(str, v)) if isinstance(v, tuple) else str(v)
        kind = f"convT{self.nd}d" if self.transposed else f"conv{self.nd}d"
        parts = [f"{self.idx:03d}", kind, f"N{self.batch}" if self.batch else "unb",
                 f"c{self.cin}-{self.cout}", f"g{self.groups}", f"k{f(self.kernel_arg)}",
                 f"s{f(self.stride_arg)}", f"p{f(self.padding_arg)}", f"d{f(self.dilation_arg)}"]
        if self.transposed:
            parts.append(f"op{f(self.output_padding_arg)}")
        parts.append("b" if self.bias else "nob")
        parts.append("sp" + "x".join(map(str, self.in_spatial)))
        return "-".join(parts)


def _arg(rng, values, p_int=0.5):
    """Pass a per-dim tuple, or an int when all entries agree and a coin says so."""
    values = tuple(int(v) for v in values)
    if len(set(values)) == 1 and rng.random() < p_int:
        return values[0]
    return values


def _make_config(rng, idx, nd, transposed):
    while True:
        groups = int(rng.integers(1, 4))
        cin = groups * int(rng.integers(1, 6 // groups + 1))
        cout = groups * int(rng.integers(1, 6 // groups + 1))
        same_k = rng.random() < 0.4
        k = (int(rng.integers(1, 5)),) * nd if same_k else tuple(int(v) for v in rng.integers(1, 5, nd))
        s = (int(rng.integers(1, 4)),) * nd if rng.random() < 0.4 else tuple(int(v) for v in rng.integers(1, 4, nd))
        d = tuple(int(v) for v in rng.choice([1, 1, 2, 3], nd))
        if rng.random() < 0.3:
            d = (d[0],) * nd
        kernel_arg, stride_arg, dilation_arg = _arg(rng, k), _arg(rng, s), _arg(rng, d)
        op_arg = 0
        maxsp = MAX_SPATIAL[nd]
        if not transposed:
            mode = rng.choice(["int", "tuple", "same", "valid"], p=[0.3, 0.3, 0.25, 0.15])
            if mode == "int":
                padding_arg = int(rng.integers(0, 3))
                p = (padding_arg,) * nd
            elif mode == "tuple":
                p = tuple(int(v) for v in rng.integers(0, 3, nd))
                padding_arg = p
            else:
                padding_arg = str(mode)
                p = None
            # smallest input for which the output is non-empty
            if mode == "same":
                need = [1] * nd
            elif mode == "valid":
                need = [dd * (kk - 1) + 1 for kk, dd in zip(k, d)]
            else:
                need = [max(1, dd * (kk - 1) + 1 - 2 * pp) for kk, dd, pp in zip(k, d, p)]
            if max(need) > maxsp:
                continue
            in_sp = tuple(int(rng.integers(n, maxsp + 1)) for n in need)
        else:
            mode = rng.choice(["int", "tuple", "same"], p=[0.4, 0.4, 0.2])
            in_sp = tuple(int(v) for v in rng.integers(1, maxsp + 1, nd))
            if mode == "same":
                padding_arg = "same"
            else:
                p = tuple(int(v) for v in rng.integers(0, 4, nd))
                if mode == "int":
                    p = (p[0],) * nd
                    padding_arg = p[0]
                else:
                    padding_arg = p
                if rng.random() < 0.5:
                    op = tuple(int(rng.integers(0, max(ss, dd))) for ss, dd in zip(s, d))
                    op_arg = _arg(rng, op, p_int=0.7)
                out = oracle.conv_transpose_output_shape(
                    in_sp, k, s, oracle.normalize_padding(p, nd),
                    (op_arg,) * nd if isinstance(op_arg, int) else op_arg, d)
                if min(out) < 1:
                    continue
        batch = None if rng.random() < 0.3 else int(rng.integers(1, 3))
        cfg = Cfg(idx=idx, nd=nd, transposed=transposed, batch=batch, cin=cin, cout=cout, groups=groups,
                  k=k, stride=s, dilation=d, in_spatial=in_sp, kernel_arg=kernel_arg, stride_arg=stride_arg,
                  dilation_arg=dilation_arg, padding_arg=padding_arg, output_padding_arg=op_arg,
                  bias=bool(rng.random() < 0.6))
        # keep the direct-loop oracle cheap on 3-D cases
        work = np.prod(cfg.out_spatial if not transposed else in_sp) * np.prod(k)
        if work > 4000:
            continue
        assert min(cfg.out_spatial) >= 1
        return cfg


def _make_configs():
    rng = np.random.default_rng(MASTER_SEED)
    cfgs = []
    for idx in range(CONFIG_COUNT):
        nd = 1 + idx % 3
        transposed = bool((idx // 3) % 2)
        cfgs.append(_make_config(rng, idx, nd, transposed))
    return cfgs


CONFIGS = _make_configs()
IDS = [c.id for c in CONFIGS]


def test_config_set_covers_the_space():
    """The generated set is large and exercises every feature the brief asks for."""
    assert len(CONFIGS) >= 200
    assert len(set(IDS)) == len(IDS)
    conv = [c for c in CONFIGS if not c.transposed]
    convt = [c for c in CONFIGS if c.transposed]
    for group in (conv, convt):
        assert {c.nd for c in group} == {1, 2, 3}
        assert {c.groups for c in group} == {1, 2, 3}
        assert {c.bias for c in group} == {True, False}
        assert any(c.batch is None for c in group) and any(c.batch == 2 for c in group)
        assert {kk for c in group for kk in c.k} == {1, 2, 3, 4}
        assert {ss for c in group for ss in c.stride} == {1, 2, 3}
        assert {dd for c in group for dd in c.dilation} == {1, 2, 3}
        assert any(isinstance(c.padding_arg, int) for c in group)
        assert any(isinstance(c.padding_arg, tuple) for c in group)
        assert any(c.padding_arg == "same" for c in group)
        assert any(isinstance(c.kernel_arg, tuple) and len(set(c.kernel_arg)) > 1 for c in group)
        assert any(c.nd > 1 and len(set(c.stride)) > 1 for c in group)
    assert any(c.padding_arg == "valid" for c in conv)
    assert any(c.padding_arg == "same" and max(c.stride) > 1 for c in conv)
    assert any(c.padding_arg == "same" and max(c.stride) > 1 for c in convt)
    assert sum(1 for c in convt if max(c.output_padding) > 0 and c.padding_arg != "same") >= 20
    assert any(oo >= ss for c in convt for oo, ss in zip(c.output_padding, c.stride))  # op < dilation case


# ----------------------------------------------------------------------------- data & reference

@lru_cache(maxsize=None)
def _data(idx):
    c = CONFIGS[idx]
    rng = np.random.default_rng(MASTER_SEED + 1 + idx)
    n = c.batch or 1
    x = rng.standard_normal((n, c.cin) + c.in_spatial).astype(np.float32)
    w = rng.standard_normal(c.weight_shape).astype(np.float32)
    b = rng.standard_normal(c.cout).astype(np.float32) if c.bias else None
    g = rng.standard_normal((n, c.cout) + c.out_spatial).astype(np.float32)
    if c.batch is None:
        x, g = x[0], g[0]
    return x, w, b, g


@lru_cache(maxsize=None)
def _reference(idx):
    """Oracle forward and VJP in float64 for configuration idx (batched or not, as the config)."""
    c = CONFIGS[idx]
    x, w, b, g = _data(idx)
    xb = x if c.batch else x[None]
    gb_ = g if c.batch else g[None]
    if c.transposed:
        kw = dict(stride=c.stride, padding=c.pads, output_padding=c.output_padding,
                  dilation=c.dilation, groups=c.groups)
        y = oracle.conv_transpose_nd(xb, w, b, **kw)
        gx, gw, gbias = oracle.conv_transpose_nd_vjp(gb_, xb, w, b, **kw)
    else:
        kw = dict(stride=c.stride, padding=c.pads, dilation=c.dilation, groups=c.groups)
        y = oracle.conv_nd(xb, w, b, **kw)
        gx, gw, gbias = oracle.conv_nd_vjp(gb_, xb, w, b, **kw)
    if not c.batch:
        y, gx = y[0], gx[0]
    return y, gx, gw, gbias


def _np(t):
    return np.asarray(t.data if hasattr(t, "data") else t)


def _close(actual, expected, what, cfg, rtol=1e-4):
    actual = _np(actual)
    assert actual.shape == expected.shape, f"{cfg.id}: {what} shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=f"{cfg.id}: {what}")


def _functional_kwargs(c):
    kw = dict(stride=c.stride_arg, padding=c.padding_arg, dilation=c.dilation_arg, groups=c.groups)
    if c.transposed:
        kw["output_padding"] = c.output_padding_arg
    return kw


def _run_functional(c, x, w, b, g, seed_as_tensor=False):
    xt = lucid.Tensor(x, requires_grad=True)
    wt = lucid.Tensor(w, requires_grad=True)
    bt = lucid.Tensor(b, requires_grad=True) if b is not None else None
    fn = getattr(F, f"conv_transpose{c.nd}d" if c.transposed else f"conv{c.nd}d")
    y = fn(xt, wt, bt, **_functional_kwargs(c))
    y.backward(lucid.Tensor(g) if seed_as_tensor else g)
    return y, xt.grad, wt.grad, (bt.grad if bt is not None else None)


def _make_module(c):
    cls = getattr(nn, f"ConvTranspose{c.nd}d" if c.transposed else f"Conv{c.nd}d")
    kw = dict(stride=c.stride_arg, padding=c.padding_arg, dilation=c.dilation_arg, groups=c.groups, bias=c.bias)
    if c.transposed:
        kw["output_padding"] = c.output_padding_arg
    return cls(c.cin, c.cout, c.kernel_arg, **kw)


def _run_module(c, x, w, b, g):
    m = _make_module(c)
    assert tuple(m.weight.shape) == c.weight_shape, f"{c.id}: module weight shape"
    m.weight.data[...] = w
    if c.bias:
        assert m.bias is not None and tuple(m.bias.shape) == (c.cout,)
        m.bias.data[...] = b
    else:
        assert m.bias is None
    xt = lucid.Tensor(x, requires_grad=True)
    y = m(xt)
    y.backward(lucid.Tensor(g))
    return y, xt.grad, m.weight.grad, (m.bias.grad if c.bias else None)


def _check_against_oracle(c, result):
    y, gx, gw, gb = result
    ry, rgx, rgw, rgb = _reference(c.idx)
    assert _np(y).dtype == np.float32, f"{c.id}: output dtype {_np(y).dtype}"
    _close(y, ry, "forward", c)
    assert gx is not None and gw is not None, f"{c.id}: missing grads"
    assert _np(gx).dtype == np.float32 and _np(gw).dtype == np.float32, f"{c.id}: grad dtype"
    _close(gx, rgx, "grad input", c)
    _close(gw, rgw, "grad weight", c)
    if c.bias:
        assert gb is not None, f"{c.id}: missing bias grad"
        _close(gb, rgb, "grad bias", c)


# ----------------------------------------------------------------------------- lucid vs oracle

@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_functional_matches_oracle(cfg):
    x, w, b, g = _data(cfg.idx)
    _check_against_oracle(cfg, _run_functional(cfg, x, w, b, g, seed_as_tensor=bool(cfg.idx % 2)))


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_module_matches_oracle(cfg):
    x, w, b, g = _data(cfg.idx)
    _check_against_oracle(cfg, _run_module(cfg, x, w, b, g))


# ----------------------------------------------------------------------------- lucid vs torch

def _torch_reference(torch, c, x, w, b, g):
    """PyTorch result for config c, computed in float64 from the same float32 values.

    Padding torch accepts natively (symmetric ints; 'same' / 'valid' at stride 1 for conv) is
    passed straight through; lucid's extensions ('same' with stride > 1 for conv, 'same' for
    transposed conv) are emulated with F.pad, which crops when given negative amounts.
    """
    TF = torch.nn.functional
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    wt = torch.tensor(w.astype(np.float64), requires_grad=True)
    bt = torch.tensor(b.astype(np.float64), requires_grad=True) if b is not None else None
    sp_axes = (1,) * c.nd
    bshape = (-1,) + sp_axes if c.batch is None else (1, -1) + sp_axes
    if not c.transposed:
        conv = getattr(TF, f"conv{c.nd}d")
        native = not (c.padding_arg == "same" and max(c.stride) > 1)
        if native:
            y = conv(xt, wt, bt, stride=c.stride, padding=c.padding_arg, dilation=c.dilation, groups=c.groups)
        else:
            flat = [v for lo_hi in reversed(c.pads) for v in lo_hi]
            y = conv(TF.pad(xt, flat), wt, bt, stride=c.stride, dilation=c.dilation, groups=c.groups)
    else:
        convt = getattr(TF, f"conv_transpose{c.nd}d")
        if c.padding_arg != "same":
            y = convt(xt, wt, bt, stride=c.stride, padding=c.padding_arg, output_padding=c.output_padding_arg,
                      groups=c.groups, dilation=c.dilation)
        else:
            full = convt(xt, wt, None, stride=c.stride, padding=0, groups=c.groups, dilation=c.dilation)
            flat = []
            for (lo, hi), op in zip(reversed(c.pads), reversed(c.output_padding)):
                flat += [-lo, op - hi]
            y = TF.pad(full, flat)
            if bt is not None:
                y = y + bt.reshape(bshape)
    y.backward(torch.tensor(g.astype(np.float64)))
    return (y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(),
            bt.grad.numpy() if bt is not None else None)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_matches_torch(cfg):
    torch = pytest.importorskip("torch")
    x, w, b, g = _data(cfg.idx)
    ty, tgx, tgw, tgb = _torch_reference(torch, cfg, x, w, b, g)
    runner = _run_module if cfg.idx % 2 else _run_functional
    y, gx, gw, gb = runner(cfg, x, w, b, g)
    _close(y, ty, "forward vs torch", cfg)
    _close(gx, tgx, "grad input vs torch", cfg)
    _close(gw, tgw, "grad weight vs torch", cfg)
    if cfg.bias:
        _close(gb, tgb, "grad bias vs torch", cfg)


# ----------------------------------------------------------------------------- misc API checks

def test_module_positional_argument_order():
    """SPEC §3 argument order, all positional."""
    x = lucid.Tensor(np.zeros((1, 2, 4, 4), np.float32))
    # Conv2d(in, out, kernel_size, stride, padding, dilation, groups, bias)
    m = nn.Conv2d(2, 4, 3, 2, 1, 1, 2, False)
    assert m.bias is None and tuple(m.weight.shape) == (4, 1, 3, 3)
    assert tuple(m(x).shape) == (1, 4, 2, 2)
    # ConvTranspose2d(in, out, kernel_size, stride, padding, output_padding, dilation, groups, bias)
    mt = nn.ConvTranspose2d(2, 4, 3, 2, 1, 1, 1, 2, True)
    assert tuple(mt.weight.shape) == (2, 2, 3, 3) and tuple(mt.bias.shape) == (4,)
    assert tuple(mt(x).shape) == (1, 4, 8, 8)
    # dilation comes before groups for ConvTranspose: dilation=2 -> (4-1)*1 + 2*(3-1) + 1 + 1 = 9
    mt2 = nn.ConvTranspose2d(2, 2, 3, 1, 0, 1, 2, 1, True)
    assert tuple(mt2(x).shape) == (1, 2, 9, 9)
    # LazyConvTranspose3d(out, kernel_size, stride, padding, output_padding, groups, bias, dilation)
    lz = nn.LazyConvTranspose3d(4, 3, 2, 1, 1, 2, False, 1)
    assert lz.in_channels is None
    y = lz(lucid.Tensor(np.zeros((1, 2, 3, 3, 3), np.float32)))
    assert tuple(y.shape) == (1, 4, 6, 6, 6)
    assert lz.in_channels == 2 and tuple(lz.weight.shape) == (2, 2, 3, 3, 3) and lz.bias is None
    # LazyConv3d(out, kernel_size, stride, padding, dilation, groups, bias)
    lc = nn.LazyConv3d(4, 3, 1, 2, 2, 2, True)
    y = lc(lucid.Tensor(np.zeros((2, 3, 3, 3), np.float32)))  # unbatched
    assert tuple(y.shape) == (4, 3, 3, 3) and tuple(lc.weight.shape) == (4, 1, 3, 3, 3)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_seed_shape_examples(nd):
    """The seeds' documented output shapes (ConvTranspose2d/3d examples), generalised to nd."""
    lucid.manual_seed(0)
    cls = getattr(nn, f"ConvTranspose{nd}d")
    m = cls(3, 2, kernel_size=3, stride=2, padding=1, output_padding=1)
    x = lucid.Tensor(np.ones((1, 3) + (6,) * nd, np.float32), requires_grad=True)
    y = m(x)
    assert tuple(y.shape) == (1, 2) + (12,) * nd
    y.backward()
    assert tuple(x.grad.shape) == tuple(x.shape)
    # and the value equals the oracle's (weights from lucid's own initialisation)
    ref = oracle.conv_transpose_nd(x.numpy(), m.weight.numpy(), m.bias.numpy(), stride=2, padding=1,
                                   output_padding=1)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("transposed", [False, True])
def test_default_init_range(transposed):
    """Init uniform in +-1/sqrt(fan_in), fan_in = weight.shape[1] * prod(k); reproducible by seed."""
    cls = nn.ConvTranspose3d if transposed else nn.Conv3d
    lucid.manual_seed(123)
    m = cls(4, 6, (2, 3, 2), groups=2)
    bound = 1.0 / np.sqrt(m.weight.shape[1] * 12)
    w = m.weight.numpy()
    assert np.abs(w).max() <= bound + 1e-7
    assert np.abs(w).max() > 0.5 * bound            # actually spread over the range
    assert np.abs(m.bias.numpy()).max() <= bound + 1e-7
    lucid.manual_seed(123)
    m2 = cls(4, 6, (2, 3, 2), groups=2)
    np.testing.assert_array_equal(m2.weight.numpy(), w)


# ----------------------------------------------------------------------------- float64 finite differences

FD_CASES = [
    # (transposed, nd, cin, cout, groups, k, stride, padding, output_padding, dilation, in_spatial, batch)
    (False, 1, 2, 4, 2, (3,), (2,), 1, 0, (2,), (7,), 2),
    (False, 2, 3, 3, 3, (2, 3), (1, 2), "same", 0, (2, 1), (4, 5), None),
    (False, 3, 2, 2, 1, (2, 1, 2), (2, 1, 1), (1, 0, 0), 0, (1, 1, 2), (3, 2, 3), 1),
    (True, 1, 4, 2, 2, (3,), (3,), 1, 2, (1,), (3,), 2),
    (True, 2, 2, 3, 1, (2, 3), (2, 1), (0, 1), (1, 0), (1, 2), (3, 3), None),
    (True, 3, 2, 2, 2, (2, 2, 1), (2, 1, 2), 0, (1, 0, 1), (1, 1, 1), (2, 2, 2), 1),
    (True, 2, 3, 2, 1, (3, 2), (2, 3), "same", 0, (1, 1), (3, 2), 1),
]


@pytest.mark.parametrize("case", FD_CASES, ids=[f"fd{i}" for i in range(len(FD_CASES))])
def test_float64_finite_differences(case):
    transposed, nd, cin, cout, groups, k, s, p, op, d, insp, batch = case
    rng = np.random.default_rng(99)
    xs = ((batch,) if batch else ()) + (cin,) + insp
    ws = ((cin, cout // groups) if transposed else (cout, cin // groups)) + k
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(cout)
    fn = getattr(F, f"conv_transpose{nd}d" if transposed else f"conv{nd}d")
    kw = dict(stride=s, padding=p, dilation=d, groups=groups)
    if transposed:
        kw["output_padding"] = op

    def forward(xa, wa, ba, requires_grad=False):
        ts = [lucid.Tensor(a, requires_grad=requires_grad, dtype=lucid.float64) for a in (xa, wa, ba)]
        return ts, fn(*ts, **kw)

    ts, y = forward(x, w, b, requires_grad=True)
    assert _np(y).dtype == np.float64
    g = rng.standard_normal(_np(y).shape)
    y.backward(g)
    eps = 1e-6
    arrays = [x, w, b]
    for which, (a, t) in enumerate(zip(arrays, ts)):
        analytic = _np(t.grad)
        assert analytic.dtype == np.float64
        numeric = np.zeros_like(a)
        for i in np.ndindex(*a.shape):
            old = a[i]
            a[i] = old + eps
            lp = np.vdot(_np(forward(*arrays)[1]), g)
            a[i] = old - eps
            lm = np.vdot(_np(forward(*arrays)[1]), g)
            a[i] = old
            numeric[i] = (lp - lm) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-6, err_msg=f"grad {['x', 'w', 'b'][which]}")
