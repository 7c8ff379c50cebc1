"""Bad convolution input (SPEC §5): every user mistake raises ValueError/TypeError whose message
names the layer (module class name, or the functional op's name) and shows the expected and the
received values.

Numbers in the cases are chosen so that they cannot appear in the message by accident (e.g. the
input spatial sizes avoid the channel counts being checked), and number matching is done on
whole numbers (``7`` does not match inside ``17`` or ``0.7``).
"""
import re

import numpy as np
import pytest

import oracle

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
from seeds import Conv3dModel  # examples/seeds.py


def T(*shape, dtype=np.float32, requires_grad=False):
    rng = np.random.default_rng(sum(shape))
    arr = rng.standard_normal(shape).astype(dtype) if np.dtype(dtype).kind == "f" else \
        rng.integers(-3, 4, shape).astype(dtype)
    kw = {"dtype": lucid.int64} if np.dtype(dtype) == np.int64 else {}
    return lucid.Tensor(arr, requires_grad=requires_grad, **kw)


def _mentions(msg, needle):
    if isinstance(needle, bool):
        raise TypeError(needle)
    if isinstance(needle, int):
        return re.search(rf"(?<![\d.]){re.escape(str(needle))}(?![\d.]|\.\d)", msg) is not None
    if isinstance(needle, re.Pattern):
        return needle.search(msg) is not None
    return needle in msg


def assert_mentions(msg, *needles):
    """Each needle (or, for a tuple, at least one of its alternatives) occurs in msg."""
    for needle in needles:
        alts = needle if isinstance(needle, tuple) else (needle,)
        assert any(_mentions(msg, a) for a in alts), f"error message {msg!r} should mention {' or '.join(map(repr, alts))}"


def _ci(name):
    """Case-insensitive match of a functional op's name (conv3d / Conv3d / conv_transpose2d)."""
    return re.compile(re.escape(name), re.IGNORECASE)


def _raises(fn):
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    return str(info.value)


# Each case: (id, thunk, needles). Module errors must name the module class exactly
# (e.g. "ConvTranspose2d"; "LazyConv3d" also contains "Conv3d"); functional ones the op.
CASES = [
    # --- wrong channel count --------------------------------------------------------------
    ("chan-conv1d", lambda: nn.Conv1d(5, 4, 3)(T(2, 7, 6)), ["Conv1d", 5, 7]),
    ("chan-conv3d", lambda: nn.Conv3d(5, 4, 3)(T(1, 7, 4, 4, 4)), ["Conv3d", 5, 7]),
    ("chan-conv2d-unbatched", lambda: nn.Conv2d(5, 4, 3)(T(7, 6, 6)), ["Conv2d", 5, 7]),
    ("chan-convT2d", lambda: nn.ConvTranspose2d(5, 4, 3)(T(1, 7, 4, 4)), ["ConvTranspose2d", 5, 7]),
    ("chan-convT3d-groups", lambda: nn.ConvTranspose3d(6, 4, 3, groups=2)(T(1, 8, 4, 4, 4)),
     ["ConvTranspose3d", 6, 8]),
    ("chan-F.conv2d", lambda: F.conv2d(T(1, 7, 6, 6), T(4, 5, 3, 3)), [_ci("conv2d"), 7, 5]),
    ("chan-F.conv2d-groups", lambda: F.conv2d(T(1, 7, 6, 6), T(4, 3, 3, 3), groups=2),
     [_ci("conv2d"), 7, (6, 3)]),
    ("chan-F.conv_transpose3d", lambda: F.conv_transpose3d(T(1, 7, 4, 4, 4), T(5, 2, 3, 3, 3)),
     [_ci("conv_transpose3d"), 7, 5]),
    # --- wrong input rank -------------------------------------------------------------------
    ("rank-conv2d-5d", lambda: nn.Conv2d(6, 4, 3)(T(1, 6, 6, 6, 6)), ["Conv2d", 4, (5, "(1, 6, 6, 6, 6)")]),
    ("rank-conv3d-2d", lambda: nn.Conv3d(6, 4, 3)(T(6, 6)), ["Conv3d", (4, 5), (2, "(6, 6)")]),
    ("rank-convT1d-4d", lambda: nn.ConvTranspose1d(6, 4, 3)(T(1, 6, 6, 6)),
     ["ConvTranspose1d", (2, 3), (4, "(1, 6, 6, 6)")]),
    ("rank-F.conv1d", lambda: F.conv1d(T(1, 6, 6, 6), T(4, 6, 3)), [_ci("conv1d"), (4, "(1, 6, 6, 6)")]),
    ("rank-F.conv3d-weight", lambda: F.conv3d(T(1, 6, 6, 6, 6), T(7, 6, 5, 5)),
     [_ci("conv3d"), "weight", (4, "(7, 6, 5, 5)")]),
    # --- kernel_size / stride / dilation <= 0 -------------------------------------------------
    ("kernel-zero", lambda: nn.Conv2d(2, 4, kernel_size=0), ["Conv2d", "kernel_size", 0]),
    ("kernel-negative", lambda: nn.Conv3d(2, 4, kernel_size=(3, -5, 3)), ["Conv3d", "kernel_size", -5]),
    ("kernel-zero-convT", lambda: nn.ConvTranspose1d(2, 4, kernel_size=0), ["ConvTranspose1d", "kernel_size", 0]),
    ("kernel-float", lambda: nn.Conv2d(2, 4, kernel_size=2.5), ["Conv2d", "kernel_size", "2.5"]),
    ("stride-zero-convT", lambda: nn.ConvTranspose2d(2, 4, 3, stride=0), ["ConvTranspose2d", "stride", 0]),
    ("stride-negative", lambda: nn.Conv1d(2, 4, 3, stride=-7), ["Conv1d", "stride", -7]),
    ("dilation-zero", lambda: nn.Conv2d(2, 4, 3, dilation=0), ["Conv2d", "dilation", 0]),
    ("dilation-zero-tuple-convT", lambda: nn.ConvTranspose3d(2, 4, 3, dilation=(1, 0, 1)),
     ["ConvTranspose3d", "dilation", 0]),
    ("stride-zero-F.conv2d", lambda: F.conv2d(T(1, 2, 5, 5), T(4, 2, 3, 3), stride=0), [_ci("conv2d"), "stride", 0]),
    ("dilation-zero-F.conv_transpose1d", lambda: F.conv_transpose1d(T(1, 2, 5), T(2, 4, 3), dilation=0),
     [_ci("conv_transpose1d"), "dilation", 0]),
    ("lazy-kernel-zero", lambda: nn.LazyConv3d(4, 0)(T(1, 2, 5, 5, 5)), ["Conv3d", "kernel_size", 0]),
    # --- negative padding ----------------------------------------------------------------------
    ("padding-negative", lambda: nn.Conv2d(2, 4, 3, padding=-2), ["Conv2d", "padding", -2]),
    ("padding-negative-convT", lambda: nn.ConvTranspose3d(2, 4, 3, padding=(0, -2, 0)),
     ["ConvTranspose3d", "padding", -2]),
    ("padding-negative-F.conv1d", lambda: F.conv1d(T(1, 2, 6), T(4, 2, 3), padding=-2),
     [_ci("conv1d"), "padding", -2]),
    # --- unknown padding string ---------------------------------------------------------------
    ("padding-string", lambda: nn.Conv2d(2, 4, 3, padding="full"), ["Conv2d", "full", "same", "valid"]),
    ("padding-string-convT", lambda: nn.ConvTranspose2d(2, 4, 3, padding="full"), ["ConvTranspose2d", "full"]),
    ("padding-string-F.conv3d", lambda: F.conv3d(T(1, 2, 4, 4, 4), T(4, 2, 3, 3, 3), padding="circular"),
     [_ci("conv3d"), "circular", "same"]),
    # --- wrong-length tuples ---------------------------------------------------------------------
    ("tuple-kernel", lambda: nn.Conv3d(2, 4, kernel_size=(3, 3)), ["Conv3d", "kernel_size", ("(3, 3)", "[3, 3]", 2)]),
    ("tuple-stride", lambda: nn.Conv2d(2, 4, 3, stride=(1, 2, 1)), ["Conv2d", "stride", ("(1, 2, 1)", "[1, 2, 1]", 3)]),
    ("tuple-padding", lambda: nn.Conv2d(2, 4, 3, padding=(1, 1, 1)), ["Conv2d", "padding", ("(1, 1, 1)", "[1, 1, 1]", 3)]),
    ("tuple-dilation", lambda: nn.Conv3d(2, 4, 3, dilation=(1, 2)), ["Conv3d", "dilation", ("(1, 2)", "[1, 2]", 2)]),
    ("tuple-output_padding", lambda: nn.ConvTranspose2d(2, 4, 3, stride=2, output_padding=(1, 1, 1)),
     ["ConvTranspose2d", "output_padding", ("(1, 1, 1)", "[1, 1, 1]", 3)]),
    ("tuple-F.conv2d-stride", lambda: F.conv2d(T(1, 2, 5, 5), T(4, 2, 3, 3), stride=(1, 1, 1)),
     [_ci("conv2d"), "stride", ("(1, 1, 1)", "[1, 1, 1]", 3)]),
    # --- output_padding not smaller than stride or dilation ------------------------------------
    ("op-too-big-2d", lambda: nn.ConvTranspose2d(2, 4, 3, stride=5, output_padding=7, dilation=4)(T(1, 2, 4, 4)),
     ["ConvTranspose2d", "output_padding", 7, 5]),
    ("op-equal-stride-1d", lambda: nn.ConvTranspose1d(2, 4, 3, stride=5, output_padding=5)(T(1, 2, 4)),
     ["ConvTranspose1d", "output_padding", 5]),
    ("op-too-big-3d-tuple",
     lambda: nn.ConvTranspose3d(2, 4, 3, stride=(1, 5, 1), output_padding=(0, 6, 0))(T(1, 2, 4, 4, 4)),
     ["ConvTranspose3d", "output_padding", 6, 5]),
    ("op-equal-dilation", lambda: nn.ConvTranspose2d(2, 4, 3, stride=1, dilation=6, output_padding=6)(T(1, 2, 4, 4)),
     ["ConvTranspose2d", "output_padding", 6]),
    ("op-negative", lambda: nn.ConvTranspose2d(2, 4, 3, stride=2, output_padding=-1)(T(1, 2, 4, 4)),
     ["ConvTranspose2d", "output_padding", -1]),
    ("op-F.conv_transpose2d",
     lambda: F.conv_transpose2d(T(1, 2, 4, 4), T(2, 4, 3, 3), stride=5, output_padding=7, dilation=4),
     [_ci("conv_transpose2d"), "output_padding", 7, 5]),
    ("op-lazy", lambda: nn.LazyConvTranspose3d(4, 3, stride=5, output_padding=7)(T(1, 2, 4, 4, 4)),
     ["ConvTranspose3d", "output_padding", 7, 5]),
    # --- groups -------------------------------------------------------------------------------
    ("groups-in", lambda: nn.Conv2d(10, 8, 3, groups=4), ["Conv2d", "groups", 4, 10]),
    ("groups-out", lambda: nn.Conv2d(8, 6, 3, groups=4), ["Conv2d", "groups", 4, 6]),
    ("groups-in-convT", lambda: nn.ConvTranspose3d(10, 8, 3, groups=4), ["ConvTranspose3d", "groups", 4, 10]),
    ("groups-out-convT", lambda: nn.ConvTranspose1d(8, 6, 3, groups=4), ["ConvTranspose1d", "groups", 4, 6]),
    ("groups-zero", lambda: nn.Conv1d(4, 4, 3, groups=0), ["Conv1d", "groups", 0]),
    ("groups-negative-convT", lambda: nn.ConvTranspose2d(4, 4, 3, groups=-3), ["ConvTranspose2d", "groups", -3]),
    ("groups-F.conv2d", lambda: F.conv2d(T(1, 8, 5, 5), T(6, 2, 3, 3), groups=4), [_ci("conv2d"), "groups", 4, 6]),
    ("groups-F.conv2d-zero", lambda: F.conv2d(T(1, 8, 5, 5), T(6, 8, 3, 3), groups=0), [_ci("conv2d"), "groups", 0]),
    ("groups-lazy", lambda: nn.LazyConv3d(4, 3, groups=4)(T(1, 5, 6, 6, 6)), ["Conv3d", "groups", 4, 5]),
    # --- input too small for the kernel -------------------------------------------------------
    ("small-conv3d", lambda: nn.Conv3d(2, 4, kernel_size=5)(T(1, 2, 4, 4, 4)), ["Conv3d", 5, 4]),
    ("small-conv2d-padded", lambda: nn.Conv2d(2, 4, 7, padding=1)(T(1, 2, 4, 4)), ["Conv2d", 7, (4, 6)]),
    ("small-conv1d-dilated", lambda: nn.Conv1d(2, 4, 3, dilation=4)(T(1, 2, 6)), ["Conv1d", 6, (9, 4)]),
    ("small-convT1d", lambda: nn.ConvTranspose1d(2, 2, 1, padding=5)(T(1, 2, 3)), ["ConvTranspose1d", (-7, 3)]),
    ("small-F.conv2d", lambda: F.conv2d(T(1, 2, 4, 4), T(4, 2, 5, 5)), [_ci("conv2d"), 5, 4]),
    # --- non-float dtypes -----------------------------------------------------------------------
    ("dtype-conv2d", lambda: nn.Conv2d(2, 4, 3)(T(1, 2, 5, 5, dtype=np.int64)), ["Conv2d", "int64", "float"]),
    ("dtype-convT2d", lambda: nn.ConvTranspose2d(2, 4, 3)(T(1, 2, 5, 5, dtype=np.int64)),
     ["ConvTranspose2d", "int64"]),
    ("dtype-F.conv3d-input", lambda: F.conv3d(T(1, 2, 4, 4, 4, dtype=np.int64), T(4, 2, 3, 3, 3)),
     [_ci("conv3d"), "int64"]),
    ("dtype-F.conv2d-weight", lambda: F.conv2d(T(1, 2, 5, 5), T(4, 2, 3, 3, dtype=np.int64)),
     [_ci("conv2d"), "int64"]),
    # --- bias / weight of the wrong shape (functional) -----------------------------------------
    ("bias-F.conv2d", lambda: F.conv2d(T(1, 2, 6, 6), T(4, 2, 3, 3), T(5)), [_ci("conv2d"), "bias", 5, 4]),
    ("bias-2d-F.conv1d", lambda: F.conv1d(T(1, 2, 6), T(4, 2, 3), T(4, 1)), [_ci("conv1d"), "bias", ("(4, 1)", "2-D", 2)]),
    ("bias-F.conv_transpose2d", lambda: F.conv_transpose2d(T(1, 2, 6, 6), T(2, 3, 3, 3), T(5)),
     [_ci("conv_transpose2d"), "bias", 5, 3]),
    ("bias-F.conv_transpose3d-groups",
     lambda: F.conv_transpose3d(T(1, 4, 4, 4, 4), T(4, 3, 3, 3, 3), T(5), groups=2),
     [_ci("conv_transpose3d"), "bias", 5, 6]),
    ("weight-rank-F.conv2d", lambda: F.conv2d(T(1, 2, 6, 6), T(7, 2, 3)), [_ci("conv2d"), "weight", ("(7, 2, 3)", 3)]),
    ("weight-rank-F.conv_transpose1d", lambda: F.conv_transpose1d(T(1, 2, 6), T(2, 7, 3, 3)),
     [_ci("conv_transpose1d"), "weight", ("(2, 7, 3, 3)", 4)]),
    ("weight-empty-kernel-F.conv2d", lambda: F.conv2d(T(1, 2, 6, 6), T(4, 2, 0, 3)),
     [_ci("conv2d"), ("(4, 2, 0, 3)", 0)]),
]


@pytest.mark.parametrize("thunk,needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_conv_input(thunk, needles):
    msg = _raises(thunk)
    assert_mentions(msg, *needles)


def test_case_ids_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


# ----------------------------------------------------------------------------- things that must work

def test_valid_counterparts_of_error_cases_work():
    """Guards against validation that is too eager: the same layers with legal arguments run."""
    assert tuple(nn.Conv3d(5, 4, 3)(T(1, 5, 4, 4, 4)).shape) == (1, 4, 2, 2, 2)
    assert tuple(nn.Conv2d(5, 4, 3)(T(5, 6, 6)).shape) == (4, 4, 4)
    assert tuple(nn.ConvTranspose3d(6, 4, 3, groups=2)(T(1, 6, 4, 4, 4)).shape) == (1, 4, 6, 6, 6)
    # output_padding smaller than dilation (though not than stride) is legal, as in PyTorch
    assert tuple(nn.ConvTranspose2d(2, 4, 3, stride=1, dilation=6, output_padding=5)(T(1, 2, 4, 4)).shape) == \
        (1, 4, 3 + 12 + 5 + 1, 3 + 12 + 5 + 1)
    assert tuple(nn.ConvTranspose1d(2, 4, 3, stride=5, output_padding=4)(T(1, 2, 4)).shape) == (1, 4, 15 + 2 + 4 + 1)
    assert tuple(nn.Conv2d(8, 8, 3, groups=4)(T(1, 8, 5, 5)).shape) == (1, 8, 3, 3)
    assert tuple(nn.Conv3d(2, 4, kernel_size=4)(T(1, 2, 4, 4, 4)).shape) == (1, 4, 1, 1, 1)  # exactly fits
    assert tuple(nn.ConvTranspose1d(2, 2, 1, padding=1)(T(1, 2, 3)).shape) == (1, 2, 1)
    assert tuple(nn.Conv2d(2, 4, 3, padding="valid")(T(1, 2, 5, 5)).shape) == (1, 4, 3, 3)
    y = nn.Conv2d(2, 4, 3, padding="same")(T(1, 2, 5, 6))
    assert tuple(y.shape) == (1, 4, 5, 6)


@pytest.mark.parametrize("nd,stride", [(1, 3), (2, 2), (3, 2), (2, (2, 3))])
def test_same_padding_with_stride_is_allowed(nd, stride):
    """SPEC §3: unlike PyTorch, lucid's 'same' works with stride > 1: ceil(in/stride) outputs,
    extra padding element on the high side."""
    insp = (7, 5, 4)[:nd]
    k = 3 if nd != 2 else (4, 3)
    s = stride if isinstance(stride, tuple) else (stride,) * nd
    ks = k if isinstance(k, tuple) else (k,) * nd
    cls = getattr(nn, f"Conv{nd}d")
    m = cls(2, 3, k, stride=stride, padding="same")
    x = T(1, 2, *insp)
    y = m(x)
    expected_sp = tuple(-(-i // ss) for i, ss in zip(insp, s))
    assert tuple(y.shape) == (1, 3) + expected_sp
    pads = oracle.resolve_conv_padding("same", insp, ks, s, 1)
    ref = oracle.conv_nd(x.numpy(), m.weight.numpy(), m.bias.numpy(), stride=s, padding=pads)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-4, atol=1e-5)
    fn = getattr(F, f"conv{nd}d")
    y2 = fn(x, m.weight, m.bias, stride=stride, padding="same")
    np.testing.assert_allclose(np.asarray(y2.data), ref, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- lazy modules

@pytest.mark.parametrize("kind", ["LazyConv3d", "LazyConvTranspose3d", "LazyConv1d", "LazyConvTranspose2d"])
def test_lazy_refuses_other_channel_count_after_materialisation(kind):
    nd = int(kind[-2])
    layer = getattr(nn, kind)(4, 3)
    assert layer.in_channels is None
    y = layer(T(1, 5, *(4,) * nd))
    assert layer.in_channels == 5
    transposed = "Transpose" in kind
    assert tuple(layer.weight.shape) == ((5, 4) if transposed else (4, 5)) + (3,) * nd
    assert tuple(y.shape)[:2] == (1, 4)
    # same count again (also unbatched) is fine
    assert tuple(layer(T(5, *(4,) * nd)).shape)[0] == 4
    msg = _raises(lambda: layer(T(1, 7, *(4,) * nd)))
    assert_mentions(msg, kind[len("Lazy"):], 5, 7)
    msg = _raises(lambda: layer(T(7, *(4,) * nd)))  # unbatched, wrong channels
    assert_mentions(msg, kind[len("Lazy"):], 5, 7)
    assert layer.in_channels == 5 and tuple(layer.weight.shape)[:2] == ((5, 4) if transposed else (4, 5))


# ----------------------------------------------------------------------------- the seeds' Conv3dModel

def test_seed_conv3d_model_gives_clear_pool_error():
    """SPEC §3 correction: a (1, 1, 3, 3, 3) input reaches the pool as a 1x1x1 map, which a 2x2x2
    window cannot cover; lucid must say so, naming the pooling layer and the shapes."""
    lucid.manual_seed(0)
    model = Conv3dModel()
    x = lucid.Tensor(np.random.default_rng(0).standard_normal((1, 1, 3, 3, 3)).astype(np.float32),
                     requires_grad=True)
    msg = _raises(lambda: model(x))
    assert re.search(r"maxpool3d", msg, re.IGNORECASE), f"{msg!r} should name the pooling layer"
    one_cube = re.compile(r"1\s*[,x×]\s*1\s*[,x×]\s*1")
    window = re.compile(r"2\s*[,x×]\s*2\s*[,x×]\s*2|kernel[ _]size\D{0,4}2")
    assert_mentions(msg, one_cube, window)


def test_seed_conv3d_model_runs_on_the_size_it_was_built_for():
    """The model's Linear expects 16*4*4*4 features: a 10x10x10 volume gives exactly that."""
    lucid.manual_seed(0)
    model = Conv3dModel()
    x = lucid.Tensor(np.random.default_rng(1).standard_normal((1, 1, 10, 10, 10)).astype(np.float32),
                     requires_grad=True)
    out = model(x)
    assert tuple(out.shape) == (1, 10)
    out.backward()
    assert x.grad is not None and tuple(x.grad.shape) == (1, 1, 10, 10, 10)
    assert np.isfinite(np.asarray(x.grad.data)).all() and np.abs(np.asarray(x.grad.data)).sum() > 0
