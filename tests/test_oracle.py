"""Sanity tests of the NumPy convolution oracle (tests/oracle.py) itself.

The oracle is what lucid's convolutions are judged against, so it is checked here from
several independent directions: hand-computed cases, the SPEC's worked example, the
adjointness of convolution and transposed convolution, central finite differences of
its vector-Jacobian products, and (when installed) PyTorch.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oracle  # noqa: E402


# ----------------------------------------------------------------------------- hand-computed

def test_spec_conv3d_example_204():
    x = np.arange(1, 9, dtype=np.float64).reshape(1, 1, 2, 2, 2)
    w = np.arange(1, 9, dtype=np.float64).reshape(1, 1, 2, 2, 2)
    y = oracle.conv_nd(x, w)
    assert y.shape == (1, 1, 1, 1, 1)
    assert y.dtype == np.float64
    assert y.item() == 204.0
    gx, gw, gb = oracle.conv_nd_vjp(np.ones_like(y), x, w)
    np.testing.assert_array_equal(gx, w)  # input grad = weight values
    np.testing.assert_array_equal(gw, x)  # weight grad = input values
    assert gb is None
    _, _, gb = oracle.conv_nd_vjp(np.ones_like(y), x, w, b=np.array([3.0]))
    np.testing.assert_array_equal(gb, [1.0])
    assert oracle.conv_nd(x, w, b=np.array([0.5])).item() == 204.5


def _x1(vals):
    return np.asarray(vals, dtype=np.float64).reshape(1, 1, -1)


def test_conv1d_hand_cases():
    x = _x1([1, 2, 3, 4])
    w = _x1([1, -1])
    np.testing.assert_array_equal(oracle.conv_nd(x, w)[0, 0], [-1, -1, -1])
    np.testing.assert_array_equal(oracle.conv_nd(x, w, stride=2)[0, 0], [-1, -1])
    # zero padding: [0, 1, 2, 3, 4, 0]
    np.testing.assert_array_equal(oracle.conv_nd(x, w, padding=1)[0, 0], [-1, -1, -1, -1, 4])
    # dilation 2 taps x[i] and x[i+2]
    np.testing.assert_array_equal(oracle.conv_nd(x, w, dilation=2)[0, 0], [-2, -2])
    # asymmetric: pad 2 on the low side only -> [0, 0, 1, 2, 3, 4]
    np.testing.assert_array_equal(oracle.conv_nd(x, w, padding=[(2, 0)])[0, 0], [0, -1, -1, -1, -1])
    # stride 3 drops the tail: positions 0 and 3 of the padded input [0,1,2,3,4,0]
    np.testing.assert_array_equal(oracle.conv_nd(x, w, padding=1, stride=3)[0, 0], [-1, -1])
    # bias
    np.testing.assert_array_equal(oracle.conv_nd(x, w, b=[10.0])[0, 0], [9, 9, 9])


def test_conv_transpose1d_hand_cases():
    x = _x1([1, 2])
    w = _x1([1, 10, 100])
    # scatter: i=0 -> positions 0,1,2 get 1,10,100; i=1 (stride 2) -> 2,3,4 get 2,20,200
    np.testing.assert_array_equal(oracle.conv_transpose_nd(x, w, stride=2)[0, 0], [1, 10, 102, 20, 200])
    np.testing.assert_array_equal(oracle.conv_transpose_nd(x, w, stride=2, padding=1)[0, 0], [10, 102, 20])
    np.testing.assert_array_equal(
        oracle.conv_transpose_nd(x, w, stride=2, padding=1, output_padding=1)[0, 0], [10, 102, 20, 200])
    # output_padding beyond the last contribution adds zeros (then bias)
    np.testing.assert_array_equal(
        oracle.conv_transpose_nd(x, w, stride=2, output_padding=1, b=[0.5])[0, 0],
        [1.5, 10.5, 102.5, 20.5, 200.5, 0.5])
    # stride 1, dilation 2: i=0 -> 0,2,4 ; i=1 -> 1,3,5
    np.testing.assert_array_equal(oracle.conv_transpose_nd(x, w, dilation=2)[0, 0], [1, 2, 10, 20, 100, 200])
    # asymmetric crop
    np.testing.assert_array_equal(
        oracle.conv_transpose_nd(x, w, stride=2, padding=[(0, 2)])[0, 0], [1, 10, 102])


def test_groups_do_not_mix_channels():
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1, 1)
    # 4 in, 2 out, groups 2: out0 sees channels 0,1; out1 sees channels 2,3
    w = np.array([[1.0, 10.0], [100.0, 1000.0]]).reshape(2, 2, 1, 1)
    y = oracle.conv_nd(x, w, groups=2)
    np.testing.assert_array_equal(y.ravel(), [1 + 20, 300 + 4000])
    # transposed, groups 2: weight (Cin=4, Og=1, 1, 1); in ch 0,1 -> out 0; 2,3 -> out 1
    wt = np.array([1.0, 10.0, 100.0, 1000.0]).reshape(4, 1, 1, 1)
    yt = oracle.conv_transpose_nd(x, wt, groups=2)
    np.testing.assert_array_equal(yt.ravel(), [1 + 20, 300 + 4000])


def test_conv2d_hand_case_with_padding_and_stride():
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    w = np.ones((1, 1, 2, 2))
    y = oracle.conv_nd(x, w, padding=1, stride=2)
    # padded 5x5, windows at (0,0),(0,2),(2,0),(2,2)
    np.testing.assert_array_equal(y[0, 0], [[0, 1 + 2], [3 + 6, 4 + 5 + 7 + 8]])


def test_asymmetric_padding_equals_explicit_pad():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5))
    w = rng.standard_normal((2, 3, 2, 3))
    pads = [(0, 2), (3, 1)]
    y = oracle.conv_nd(x, w, padding=pads, stride=(2, 1), dilation=(1, 2))
    xp = np.pad(x, [(0, 0), (0, 0)] + pads)
    np.testing.assert_allclose(y, oracle.conv_nd(xp, w, stride=(2, 1), dilation=(1, 2)), rtol=1e-12)


def test_same_padding_helpers():
    assert oracle.same_padding(5, 3, 2, 1) == (1, 1)
    assert oracle.same_padding(4, 4, 1, 1) == (1, 2)      # odd total: extra on the high side
    assert oracle.same_padding(7, 1, 3, 1) == (0, 0)
    assert oracle.same_padding(2, 3, 3, 2) == (1, 2)
    assert oracle.same_padding(6, 2, 2, 1) == (0, 0)
    assert oracle.same_padding_transpose(4, 3, 2, 1) == ((0, 1), 0)
    assert oracle.same_padding_transpose(4, 1, 3, 1) == ((0, 0), 2)
    assert oracle.same_padding_transpose(4, 4, 2, 1) == ((1, 1), 0)
    assert oracle.same_padding_transpose(4, 4, 1, 1) == ((1, 2), 0)  # odd total: extra cropped high
    assert oracle.same_padding_transpose(4, 3, 1, 2) == ((2, 2), 0)


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("s", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_same_padding_output_sizes(k, s, d):
    rng = np.random.default_rng(k * 100 + s * 10 + d)
    for n in range(1, 8):
        x = rng.standard_normal((1, 1, n))
        w = rng.standard_normal((1, 1, k))
        pads = oracle.resolve_conv_padding("same", (n,), k, s, d)
        assert oracle.conv_nd(x, w, stride=s, padding=pads, dilation=d).shape[-1] == -(-n // s)
        pt, op = oracle.resolve_conv_transpose_padding("same", 0, (n,), k, s, d)
        assert 0 <= op[0] < max(s, d)  # a PyTorch-legal output_padding
        assert oracle.conv_transpose_nd(x, w, stride=s, padding=pt, output_padding=op,
                                        dilation=d).shape[-1] == n * s


# ----------------------------------------------------------------------------- random shapes

def _rand_case(rng, nd, transposed):
    while True:
        G = int(rng.integers(1, 4))
        C = G * int(rng.integers(1, 3))
        O = G * int(rng.integers(1, 3))
        k = tuple(int(v) for v in rng.integers(1, 4, nd))
        s = tuple(int(v) for v in rng.integers(1, 4, nd))
        d = tuple(int(v) for v in rng.integers(1, 3, nd))
        pads = tuple((int(a), int(b)) for a, b in rng.integers(0, 3, (nd, 2)))
        insp = tuple(int(v) for v in rng.integers(1, 6 if nd < 3 else 4, nd))
        N = int(rng.integers(1, 3))
        if not transposed:
            out = oracle.conv_output_shape(insp, k, s, pads, d)
            if min(out) < 1:
                continue
        else:
            op = tuple(int(rng.integers(0, max(ss, dd))) for ss, dd in zip(s, d))
            out = oracle.conv_transpose_output_shape(insp, k, s, pads, op, d)
            if min(out) < 1:
                continue
        case = dict(N=N, C=C, O=O, G=G, k=k, s=s, d=d, pads=pads, insp=insp, out=out)
        if transposed:
            case["op"] = op
        return case


@pytest.mark.parametrize("seed", range(12))
def test_adjointness_conv_vs_transpose(seed):
    """<conv(x, w), g> == <x, conv_transpose(g, w)> with the same weight array."""
    rng = np.random.default_rng(seed)
    nd = 1 + seed % 3
    c = _rand_case(rng, nd, transposed=False)
    x = rng.standard_normal((c["N"], c["C"]) + c["insp"])
    w = rng.standard_normal((c["O"], c["C"] // c["G"]) + c["k"])
    y = oracle.conv_nd(x, w, stride=c["s"], padding=c["pads"], dilation=c["d"], groups=c["G"])
    assert y.shape == (c["N"], c["O"]) + c["out"]
    g = rng.standard_normal(y.shape)
    # the transposed conv's output_padding restores exactly the conv input size
    # (this may exceed what PyTorch accepts; the oracle has no such limit)
    op = tuple(i - ((o - 1) * s - lo - hi + d * (k - 1) + 1)
               for i, o, s, (lo, hi), d, k in zip(c["insp"], c["out"], c["s"], c["pads"], c["d"], c["k"]))
    assert min(op) >= 0
    xt = oracle.conv_transpose_nd(g, w, stride=c["s"], padding=c["pads"], output_padding=op,
                                  dilation=c["d"], groups=c["G"])
    assert xt.shape == x.shape
    lhs = float(np.vdot(y, g))
    rhs = float(np.vdot(x, xt))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))
    # and the conv's input-gradient is that very transposed conv
    gx, _, _ = oracle.conv_nd_vjp(g, x, w, stride=c["s"], padding=c["pads"], dilation=c["d"], groups=c["G"])
    np.testing.assert_allclose(gx, xt, rtol=1e-12, atol=1e-12)


def _fd_check(f, vjp, args, g, eps=1e-6):
    """Central differences of L = <f(*args), g> wrt every element of every array in args."""
    grads = vjp(g, *args)
    for a, ga in zip(args, grads):
        if a is None:
            assert ga is None
            continue
        num = np.zeros_like(a)
        for idx in np.ndindex(*a.shape):
            old = a[idx]
            a[idx] = old + eps
            lp = np.vdot(f(*args), g)
            a[idx] = old - eps
            lm = np.vdot(f(*args), g)
            a[idx] = old
            num[idx] = (lp - lm) / (2 * eps)
        assert ga.shape == a.shape
        np.testing.assert_allclose(ga, num, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("seed", range(9))
def test_conv_vjp_finite_differences(seed):
    rng = np.random.default_rng(100 + seed)
    nd = 1 + seed % 3
    c = _rand_case(rng, nd, transposed=False)
    x = rng.standard_normal((c["N"], c["C"]) + c["insp"])
    w = rng.standard_normal((c["O"], c["C"] // c["G"]) + c["k"])
    b = rng.standard_normal(c["O"])
    kw = dict(stride=c["s"], padding=c["pads"], dilation=c["d"], groups=c["G"])
    g = rng.standard_normal((c["N"], c["O"]) + c["out"])
    _fd_check(lambda x, w, b: oracle.conv_nd(x, w, b, **kw),
              lambda g, x, w, b: oracle.conv_nd_vjp(g, x, w, b, **kw), [x, w, b], g)


@pytest.mark.parametrize("seed", range(9))
def test_conv_transpose_vjp_finite_differences(seed):
    rng = np.random.default_rng(200 + seed)
    nd = 1 + seed % 3
    c = _rand_case(rng, nd, transposed=True)
    x = rng.standard_normal((c["N"], c["C"]) + c["insp"])
    w = rng.standard_normal((c["C"], c["O"] // c["G"]) + c["k"])
    b = rng.standard_normal(c["O"])
    kw = dict(stride=c["s"], padding=c["pads"], output_padding=c["op"], dilation=c["d"], groups=c["G"])
    y = oracle.conv_transpose_nd(x, w, b, **kw)
    assert y.shape == (c["N"], c["O"]) + c["out"]
    g = rng.standard_normal(y.shape)
    _fd_check(lambda x, w, b: oracle.conv_transpose_nd(x, w, b, **kw),
              lambda g, x, w, b: oracle.conv_transpose_nd_vjp(g, x, w, b, **kw), [x, w, b], g)


def test_vjp_without_bias_returns_none():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 4))
    w = rng.standard_normal((3, 2, 2))
    g = rng.standard_normal((1, 3, 3))
    assert oracle.conv_nd_vjp(g, x, w)[2] is None
    wt = rng.standard_normal((2, 3, 2))
    gt = rng.standard_normal((1, 3, 5))
    assert oracle.conv_transpose_nd_vjp(gt, x, wt)[2] is None


def test_oracle_rejects_inconsistent_shapes():
    x = np.zeros((1, 4, 5))
    with pytest.raises(ValueError):
        oracle.conv_nd(x, np.zeros((2, 3, 2)))          # 3 != 4 channels
    with pytest.raises(ValueError):
        oracle.conv_nd(x, np.zeros((2, 4, 7)))          # output size < 1
    with pytest.raises(ValueError):
        oracle.conv_transpose_nd(x, np.zeros((3, 2, 2)))  # weight.shape[0] != 4


# ----------------------------------------------------------------------------- vs PyTorch

def _torch_conv(torch, x, w, b, nd, s, pads, d, G, grad_out):
    F = torch.nn.functional
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    flat = []
    for lo, hi in reversed(pads):  # F.pad lists the last dim first
        flat += [lo, hi]
    conv = getattr(F, f"conv{nd}d")
    y = conv(F.pad(xt, flat), wt, bt, stride=s, dilation=d, groups=G)
    y.backward(torch.tensor(grad_out))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def _torch_conv_transpose(torch, x, w, b, nd, s, pads, op, d, G, grad_out):
    """Asymmetric crop emulated as: transposed conv with padding 0, then F.pad with negative
    (crop) / positive (output_padding zeros) amounts, then bias."""
    F = torch.nn.functional
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    convt = getattr(F, f"conv_transpose{nd}d")
    full = convt(xt, wt, None, stride=s, padding=0, output_padding=0, groups=G, dilation=d)
    flat = []
    for (lo, hi), o in zip(reversed(pads), reversed(op)):
        flat += [-lo, o - hi]
    y = F.pad(full, flat) + bt.reshape((1, -1) + (1,) * nd)
    y.backward(torch.tensor(grad_out))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


@pytest.mark.parametrize("seed", range(15))
def test_oracle_matches_torch_conv(seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(300 + seed)
    nd = 1 + seed % 3
    c = _rand_case(rng, nd, transposed=False)
    x = rng.standard_normal((c["N"], c["C"]) + c["insp"])
    w = rng.standard_normal((c["O"], c["C"] // c["G"]) + c["k"])
    b = rng.standard_normal(c["O"])
    kw = dict(stride=c["s"], padding=c["pads"], dilation=c["d"], groups=c["G"])
    y = oracle.conv_nd(x, w, b, **kw)
    g = rng.standard_normal(y.shape)
    ty, tgx, tgw, tgb = _torch_conv(torch, x, w, b, nd, c["s"], c["pads"], c["d"], c["G"], g)
    np.testing.assert_allclose(y, ty, rtol=1e-10, atol=1e-10)
    for mine, theirs in zip(oracle.conv_nd_vjp(g, x, w, b, **kw), (tgx, tgw, tgb)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", range(15))
def test_oracle_matches_torch_conv_transpose(seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(400 + seed)
    nd = 1 + seed % 3
    c = _rand_case(rng, nd, transposed=True)
    x = rng.standard_normal((c["N"], c["C"]) + c["insp"])
    w = rng.standard_normal((c["C"], c["O"] // c["G"]) + c["k"])
    b = rng.standard_normal(c["O"])
    kw = dict(stride=c["s"], padding=c["pads"], output_padding=c["op"], dilation=c["d"], groups=c["G"])
    y = oracle.conv_transpose_nd(x, w, b, **kw)
    g = rng.standard_normal(y.shape)
    ty, tgx, tgw, tgb = _torch_conv_transpose(torch, x, w, b, nd, c["s"], c["pads"], c["op"], c["d"], c["G"], g)
    np.testing.assert_allclose(y, ty, rtol=1e-10, atol=1e-10)
    for mine, theirs in zip(oracle.conv_transpose_nd_vjp(g, x, w, b, **kw), (tgx, tgw, tgb)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_oracle_matches_torch_symmetric_native(nd):
    """Symmetric padding through torch's own padding/output_padding arguments (no emulation)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(500 + nd)
    x = rng.standard_normal((2, 4) + (5,) * nd)
    w = rng.standard_normal((6, 2) + (3,) * nd)
    b = rng.standard_normal(6)
    y = oracle.conv_nd(x, w, b, stride=2, padding=1, dilation=1, groups=2)
    ty = getattr(F, f"conv{nd}d")(torch.tensor(x), torch.tensor(w), torch.tensor(b),
                                  stride=2, padding=1, groups=2).numpy()
    np.testing.assert_allclose(y, ty, rtol=1e-10, atol=1e-10)
    wt = rng.standard_normal((4, 3) + (3,) * nd)
    bt = rng.standard_normal(6)
    y = oracle.conv_transpose_nd(x, wt, bt, stride=2, padding=1, output_padding=1, dilation=2, groups=2)
    ty = getattr(F, f"conv_transpose{nd}d")(torch.tensor(x), torch.tensor(wt), torch.tensor(bt), stride=2,
                                            padding=1, output_padding=1, groups=2, dilation=2).numpy()
    np.testing.assert_allclose(y, ty, rtol=1e-10, atol=1e-10)
    # torch's own 'same' (stride 1) agrees with SPEC's split (extra element on the high side)
    w2 = rng.standard_normal((3, 4) + (4,) * nd)
    pads = oracle.resolve_conv_padding("same", x.shape[2:], 4, 1, 3)
    y = oracle.conv_nd(x, w2, padding=pads, dilation=3)
    ty = getattr(F, f"conv{nd}d")(torch.tensor(x), torch.tensor(w2), padding="same", dilation=3).numpy()
    np.testing.assert_allclose(y, ty, rtol=1e-10, atol=1e-10)
