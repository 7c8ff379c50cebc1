"""F.pad in its four modes, the padding modules and the conv layers' padding_mode=: values against
np.pad, gradients against finite differences, PyTorch when installed, compiled training steps."""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
from lucid import ShapeError

F64 = lucid.float64
NUMPY_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}

# (mode, input shape, pad): 1-3 padded axes, batched and unbatched, odd sizes, uneven sides
CASES = [(mode, shape, pad) for mode in NUMPY_MODES for shape, pad in [
    ((2, 5), (1, 2)),
    ((2, 3, 5), (2, 0)),
    ((3, 4, 5), (1, 2, 3, 0)),
    ((1, 2, 3, 4, 5), (1, 2, 0, 1, 2, 1)),
    ((2, 3, 3, 4), (2, 1, 2, 2, 1, 0)),
]] + [
    ("constant", (2, 3, 4), (-1, 2, 1, -2)),
    ("constant", (2, 3), (1, 1, 1, 1)),           # constant pads any axis, even the batch
    ("reflect", (2, 4, 5), (-1, 3, 2, -1)),
    ("reflect", (1, 2, 5), (-2, 4)),              # mirrors elements that are then cropped
    ("circular", (1, 2, 5), (-2, 3)),
    ("replicate", (1, 2, 5, 3), (-1, 2, 3, -2)),
]
IDS = [f"{m}-{'x'.join(map(str, s))}-{','.join(map(str, p))}" for m, s, p in CASES]


def oracle(x: np.ndarray, pad: tuple, mode: str, value: float = 0.0) -> np.ndarray:
    """np.pad, and cropping what negative padding removes: PyTorch crops first, but reflects first."""
    pairs = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        pairs[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    widths = [(max(a, 0), max(b, 0)) for a, b in pairs]
    crop = lambda a: a[tuple(slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(pairs, a.shape))]
    if mode == "constant":
        return np.pad(crop(x), widths, constant_values=value)
    if mode == "reflect":
        return crop(np.pad(x, widths, mode="reflect"))
    return np.pad(crop(x), widths, mode=NUMPY_MODES[mode])


def sample(shape: tuple, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("mode,shape,pad", CASES, ids=IDS)
def test_pad_matches_numpy(mode, shape, pad):
    x = sample(shape)
    y = F.pad(lucid.tensor(x, dtype=F64), pad, mode=mode)
    np.testing.assert_array_equal(y.numpy(), oracle(x, pad, mode))


def test_constant_value():
    x = sample((2, 3))
    np.testing.assert_array_equal(F.pad(lucid.tensor(x, dtype=F64), (2, 1), value=-1.5).numpy(),
                                  oracle(x, (2, 1), "constant", -1.5))


@pytest.mark.parametrize("mode,shape,pad", CASES, ids=IDS)
def test_gradient_matches_finite_differences(mode, shape, pad):
    x = sample(shape, 1)
    seed = sample(oracle(x, pad, mode).shape, 2)
    xt = lucid.tensor(x, dtype=F64, requires_grad=True)
    (F.pad(xt, pad, mode=mode) * lucid.tensor(seed, dtype=F64)).sum().backward()
    expected, step = np.zeros_like(x), 1e-6
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += step
        down[i] -= step
        expected[i] = np.sum(seed * (oracle(up, pad, mode) - oracle(down, pad, mode))) / (2 * step)
    np.testing.assert_allclose(xt.grad.numpy(), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("mode,shape,pad", CASES, ids=IDS)
def test_pad_matches_pytorch(mode, shape, pad):
    torch = pytest.importorskip("torch")
    x = sample(shape, 3)
    xt, tx = lucid.tensor(x, dtype=F64, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = F.pad(xt, pad, mode=mode), torch.nn.functional.pad(tx, pad, mode=mode)
    np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
    seed = sample(y.shape, 4)
    (y * lucid.tensor(seed, dtype=F64)).sum().backward()
    (ty * torch.tensor(seed)).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-13)


MODULES = [("ConstantPad", "constant"), ("ZeroPad", "constant"), ("ReflectionPad", "reflect"),
           ("ReplicationPad", "replicate"), ("CircularPad", "circular")]


@pytest.mark.parametrize("family,mode", MODULES)
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_modules_match_numpy_and_pytorch_repr(family, mode, rank):
    padding = (1, 2, 2, 0, 1, 1)[:2 * rank]
    args = (padding, 2.5) if family == "ConstantPad" else (padding,)
    layer = getattr(nn, f"{family}{rank}d")(*args)
    x = sample((2, 3) + (4, 3, 5)[:rank])
    value = 2.5 if family == "ConstantPad" else 0.0
    np.testing.assert_array_equal(layer(lucid.tensor(x, dtype=F64)).numpy(), oracle(x, padding, mode, value))
    assert getattr(nn, f"{family}{rank}d")(*((1,) + args[1:])).padding == (1,) * (2 * rank)
    expected = f"padding={padding}, value=2.5" if family == "ConstantPad" else f"{padding}"
    assert repr(layer) == f"{family}{rank}d({expected})"
    assert layer.state_dict() == {}


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding,stride", [(1, 1), ((1, 2, 0), 1), ("same", 1), ("same", 2), ("valid", 1)])
def test_conv_padding_mode_matches_padding_then_conv(mode, padding, stride):
    conv = nn.Conv3d(2, 3, (3, 4, 2), stride=stride, padding=padding, padding_mode=mode, dtype=F64)
    x = lucid.tensor(sample((1, 2, 4, 6, 5), 6), dtype=F64)
    pairs = F.conv_padding(padding, 3, "test", x.shape[2:], (3, 4, 2), (stride,) * 3, (1, 1, 1))
    flat = [p for pair in reversed(pairs) for p in pair]
    padded = oracle(x.numpy(), flat, "constant" if mode == "zeros" else mode)
    expected = F.conv3d(lucid.tensor(padded, dtype=F64), conv.weight, conv.bias, stride=stride)
    np.testing.assert_allclose(conv(x).numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv_padding_mode_matches_pytorch(mode):
    torch = pytest.importorskip("torch")
    conv = nn.Conv2d(2, 3, 3, padding=(1, 2), padding_mode=mode, dtype=F64)
    reference = torch.nn.Conv2d(2, 3, 3, padding=(1, 2), padding_mode=mode).double()
    reference.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in conv.state_dict().items()})
    assert list(conv.state_dict()) == list(reference.state_dict())
    assert repr(conv) == repr(reference)
    x = sample((2, 2, 5, 4), 7)
    xt, tx = lucid.tensor(x, dtype=F64, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = conv(xt), reference(tx)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.weight.grad.numpy(), reference.weight.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_compiled_training_step_gradients_equal_eager(mode):
    lucid.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1, padding_mode=mode), nn.ReLU(),
                          getattr(nn, {"reflect": "ReflectionPad3d", "replicate": "ReplicationPad3d",
                                       "circular": "CircularPad3d"}[mode])((1, 0, 2, 1, 0, 1)),
                          nn.Conv3d(3, 2, 2))
    x = lucid.tensor(sample((2, 2, 4, 5, 3), 8), dtype=lucid.float32, requires_grad=True)
    loss = lambda inp: (model(inp) ** 2).mean()
    results = []
    for fn in (lucid.compile(loss), loss):
        model.zero_grad()
        x.grad = None
        value = fn(x)
        value.backward()
        results.append((value.numpy(), [x.grad.numpy().copy()] + [p.grad.numpy().copy() for p in model.parameters()]))
    (compiled, compiled_grads), (eager, eager_grads) = results
    np.testing.assert_allclose(compiled, eager, rtol=1e-5)
    for c, e in zip(compiled_grads, eager_grads):
        np.testing.assert_allclose(c, e, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("call,words", [
    (lambda: F.pad(lucid.zeros(1, 2, 3), (3, 0), mode="reflect"), "pad: mode='reflect' needs padding smaller"),
    (lambda: F.pad(lucid.zeros(1, 2, 3), (0, 4), mode="circular"), "pad: mode='circular' needs padding at most"),
    (lambda: F.pad(lucid.zeros(3), (1, 1), mode="reflect"), "last 1, 2 or 3 axes"),
    (lambda: F.pad(lucid.zeros(1, 2, 3, 4), (1, 1), mode="replicate"), "last 1, 2 or 3 axes"),
    (lambda: F.pad(lucid.zeros(1, 2, 3), (1, 1), mode="reflect", value=2.0), "takes no fill value"),
    (lambda: F.pad(lucid.zeros(1, 2, 3), (1, 1), mode="symmetric"), "mode must be one of"),
    (lambda: F.pad(lucid.zeros(1, 2, 3), (1, 1, 1)), "even number of ints"),
    (lambda: F.pad(lucid.zeros(1, 2, 3), (-2, -2)), "removes more than the whole input"),
    (lambda: nn.ReflectionPad2d((1, 1, 1)), "tuple of 4 ints"),
    (lambda: nn.Conv2d(1, 2, 3, padding_mode="reflection"), "padding_mode must be one of"),
    (lambda: nn.ConvTranspose3d(1, 2, 3, padding_mode="reflect"), "only padding_mode='zeros'"),
    (lambda: nn.LazyConvTranspose1d(2, 3, padding_mode="circular"), "only padding_mode='zeros'"),
])
def test_bad_arguments_raise_clear_errors(call, words):
    with pytest.raises(ShapeError, match=words):
        call()
