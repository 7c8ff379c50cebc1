"""The Winograd F(2x2, 3x3) path (lucid/codegen/kernels/conv/winograd.py) against the plain-loop oracle.

Every case checks first that the compiled graph really runs the Winograd kernel (or, for the cases
it must not take, that it does not), then compares with `oracle.py`'s loops in float64."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import lucid
import lucid.nn.functional as F
import oracle
from lucid.runtime.executable import Executable
from lucid.codegen.kernels.conv import winograd
from lucid.codegen.target import Target, host
from lucid.ir import ops
from lucid.passes import autodiff, dead_code, fusion, memory_planning
from model_helpers import kernel_labels

TOL = {"float32": 1e-4, "float64": 1e-10}


@pytest.fixture(autouse=True)
def few_items_suffice(monkeypatch):
    """The shapes here are small (cheap to compile and check): let them take the Winograd path,
    which needs MIN_ITEMS_PER_CORE work items per core, and enough tiles to repay its weight
    transform (WEIGHT_TRANSFORM_CYCLES), for speed, not for correctness."""
    monkeypatch.setattr(winograd, "MIN_ITEMS_PER_CORE", 0)
    monkeypatch.setattr(winograd, "WEIGHT_TRANSFORM_CYCLES", 0)


def assert_close(actual, expected, tol, what):
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    error = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    assert error <= tol * scale, f"{what}: max error {error:.3g} > {tol:g} x max magnitude {scale:.3g}"


def _spec(a):
    return lucid.spec(a.shape, dtype=lucid.ir.types.as_dtype(a.dtype))


def _case(kind, x_shape, out_channels, kernel, rng, dtype="float32", bias=True, **attrs):
    """(function, arrays, reference output) of one conv or stride-1 conv_transpose."""
    rank = len(x_shape) - 2
    x = rng.standard_normal(x_shape).astype(dtype)
    groups = attrs.get("groups", 1)
    w_shape = ((out_channels, x_shape[1] // groups) if kind == "conv" else (x_shape[1], out_channels // groups)) + kernel
    w = (rng.standard_normal(w_shape) * 0.2).astype(dtype)
    b = rng.standard_normal(out_channels).astype(dtype)
    fn = getattr(F, f"{kind}{rank}d")
    reference = oracle.conv_nd if kind == "conv" else oracle.conv_transpose_nd
    arrays = [x, w, b] if bias else [x, w]
    expected = reference(*(a.astype(np.float64) for a in arrays), **attrs)
    return (lambda *a: fn(*a, **attrs)), arrays, expected


# kind, input shape, out channels, kernel, attributes
APPLIES = [
    ("conv", (1, 32, 6, 7), 32, (3, 3), dict(padding=1)),                       # odd width: half tiles
    ("conv", (2, 32, 7, 6), 40, (3, 3), dict(padding=0)),                       # odd height, oc not a vector
    ("conv", (1, 32, 5, 5), 32, (3, 3), dict(padding=2)),
    ("conv", (1, 32, 4, 9), 33, (3, 3), dict(padding=(1, 0))),
    ("conv", (1, 32, 3, 5, 6), 32, (3, 3, 3), dict(padding=1)),
    ("conv", (1, 32, 5, 4, 5), 48, (3, 3, 3), dict(padding=(2, 1, 1), stride=(2, 1, 1), dilation=(2, 1, 1))),
    ("conv", (1, 32, 3, 4, 4), 32, (1, 3, 3), dict(padding=(0, 1, 1))),
    ("conv", (1, 16, 5, 6), 16, (3, 3), dict(padding=1)),                       # one vector of channels
    ("conv", (1, 16, 3, 27), 16, (3, 3), dict(padding=1)),                      # rows long enough alone
    ("conv", (1, 32, 8, 10), 32, (4, 4), dict(stride=2, padding=1)),           # even and odd taps: 4 terms
    ("conv", (2, 32, 5, 9, 11), 48, (4, 4, 4), dict(stride=2, padding=1)),
    ("conv", (1, 32, 13, 14), 32, (6, 6), dict(stride=2, padding=2)),          # F(2x2, 3x3) per class
    ("conv", (1, 32, 6, 7), 40, (2, 2), dict(padding=0)),                       # F(2x2, 2x2) at stride 1
    ("conv_transpose", (1, 32, 6, 7), 32, (3, 3), dict(padding=1)),             # an input gradient's form
    ("conv_transpose", (1, 32, 3, 5, 6), 32, (3, 3, 3), dict(padding=0)),
    ("conv_transpose", (2, 32, 2, 5, 6), 40, (2, 3, 3), dict(padding=(1, 2, 1))),
    ("conv_transpose", (1, 32, 4, 5), 32, (4, 4), dict(stride=2, padding=1)),        # 4 phases of 2 x 2 taps
    ("conv_transpose", (2, 32, 3, 4, 5), 16, (4, 4, 4), dict(stride=2, padding=1)),  # 8 phases, F(2x2, 2x2)
    ("conv_transpose", (1, 32, 5, 6), 32, (6, 6), dict(stride=2, padding=2)),        # 3 x 3 taps per phase
    ("conv_transpose", (1, 32, 4, 5), 24, (4, 4), dict(stride=2, padding=1, output_padding=1)),
    ("conv_transpose", (1, 32, 2, 3, 4), 32, (1, 4, 4), dict(stride=2, padding=(0, 1, 1))),  # odd depths: no taps
]


@pytest.mark.parametrize("index", range(len(APPLIES)))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_the_oracle(index, dtype):
    kind, x_shape, oc, kernel, attrs = APPLIES[index]
    fn, arrays, expected = _case(kind, x_shape, oc, kernel, np.random.default_rng(index), dtype, bias=index % 3 != 2, **attrs)
    executable = Executable(memory_planning.run(lucid.trace(fn, *map(_spec, arrays), name=f"wino_{index}")))
    assert "wino_conv" in kernel_labels(executable)
    got = executable(*arrays, threads=2)[0]
    assert got.dtype == np.dtype(dtype) and got.shape == expected.shape
    assert_close(got, expected, TOL[dtype], f"{kind} {x_shape} -> {oc} {kernel} {attrs}")
    np.testing.assert_array_equal(got, executable(*arrays, threads=1)[0], err_msg="1 vs 2 threads")


NOT_APPLIED = [
    ("conv", (1, 32, 6, 6), 32, (3, 3), dict(padding=1, stride=2)),
    ("conv", (1, 32, 6, 6), 32, (3, 3), dict(padding=2, dilation=2)),
    ("conv", (1, 32, 6, 6), 32, (5, 5), dict(padding=2)),
    ("conv", (1, 8, 6, 6), 32, (3, 3), dict(padding=1)),                        # too few input channels
    ("conv", (1, 32, 6, 6), 8, (3, 3), dict(padding=1)),                        # too few output channels
    ("conv", (1, 64, 6, 6), 64, (3, 3), dict(padding=1, groups=2)),
    ("conv_transpose", (1, 32, 4, 4), 32, (3, 3), dict(padding=1, stride=2)),
]


@pytest.mark.parametrize("index", range(len(NOT_APPLIED)))
def test_other_convolutions_stay_direct(index):
    kind, x_shape, oc, kernel, attrs = NOT_APPLIED[index]
    fn, arrays, expected = _case(kind, x_shape, oc, kernel, np.random.default_rng(index), **attrs)
    executable = Executable(memory_planning.run(lucid.trace(fn, *map(_spec, arrays), name=f"direct_{index}")))
    assert not any(label.startswith("wino") for label in kernel_labels(executable))
    assert_close(executable(*arrays)[0], expected, TOL["float32"], f"{kind} {attrs}")


@pytest.mark.parametrize("cores, applies", [(1, True), (6, True), (7, False), (64, False)])
def test_too_little_work_for_the_cores_stays_direct(cores, applies, monkeypatch):
    """This layer gives Winograd at most 24 work items (8 depths x 3 rows of 2 x 2 tiles): enough
    for MIN_ITEMS_PER_CORE = 4 per core on up to 6 cores, too few on more; the result is the
    oracle's either way."""
    monkeypatch.setattr(winograd, "MIN_ITEMS_PER_CORE", 4)
    fn, arrays, expected = _case("conv", (1, 32, 8, 6, 7), 32, (3, 3, 3), np.random.default_rng(1), padding=1)
    target = dataclasses.replace(host(), cores=cores)
    executable = Executable(memory_planning.run(lucid.trace(fn, *map(_spec, arrays), name="wino_few_items")), target)
    assert ("wino_conv" in kernel_labels(executable)) == applies
    assert_close(executable(*arrays)[0], expected, TOL["float32"], f"{cores} cores")


@pytest.mark.parametrize("kind", ["conv", "conv_transpose"])
def test_gradient_graph_uses_it_for_the_input_gradient(kind):
    """The input gradient of a 3x3 stride-1 conv is a stride-1 conv_transpose, that of a 4x4
    stride-2 conv_transpose a 4x4 stride-2 conv: Winograd both ways."""
    rng = np.random.default_rng(11)
    attrs = dict(padding=1) if kind == "conv" else dict(stride=2, padding=1)
    fn, arrays, _ = _case(kind, (2, 32, 5, 6), 32, (3, 3) if kind == "conv" else (4, 4), rng, **attrs)
    graph = lucid.trace(fn, *map(_spec, arrays), name=f"wino_grad_{kind}")
    grad = autodiff.run(graph, wrt=[v.name for v in graph.inputs])
    seed = rng.standard_normal(grad.inputs[-1].shape).astype("float32")
    executable = Executable(memory_planning.run(grad))
    assert kernel_labels(executable).count("wino_conv") == 2
    outputs = executable(*arrays, seed, threads=2)
    vjp = oracle.conv_nd_vjp if kind == "conv" else oracle.conv_transpose_nd_vjp
    wanted = vjp(seed.astype(np.float64), *(a.astype(np.float64) for a in arrays), **attrs)
    for name, got, ref in zip(("input", "weight", "bias"), outputs[1:], wanted):
        assert_close(got, ref, TOL["float32"], f"gradient of the {name}")


def test_fused_epilogue():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 32, 5, 6)).astype("float32")
    w = (rng.standard_normal((32, 32, 3, 3)) * 0.2).astype("float32")
    b, r = rng.standard_normal(32).astype("float32"), rng.standard_normal((1, 32, 5, 6)).astype("float32")
    graph = lucid.trace(lambda x, w, b, r: ops.relu(F.conv2d(x, w, b, padding=1)) + r, *map(_spec, (x, w, b, r)))
    fused = dead_code.run(fusion.run(graph))
    assert [n.op for n in fused.nodes if not n.is_constant] == ["fused"]
    executable = Executable(memory_planning.run(fused))
    assert "wino_conv" in kernel_labels(executable)
    expected = np.maximum(oracle.conv_nd(x.astype(np.float64), w, b, padding=1), 0) + r
    assert_close(executable(x, w, b, r)[0], expected, TOL["float32"], "conv + bias + relu + residual")


# Rows of tiles longer than a chunk (concrete sizes): kind, input shape, out channels, kernel, attributes
LONG_ROWS = [
    ("conv", (1, 16, 3, 67), 16, (3, 3), dict(padding=1)),                       # 34 tiles: chunks of 12, 11, 11
    ("conv", (2, 16, 3, 4, 41), 24, (3, 3, 3), dict(padding=1)),                 # 21 tiles, oc not a vector
    ("conv", (1, 32, 6, 70), 32, (4, 4), dict(stride=2, padding=1)),             # two classes per axis
    ("conv_transpose", (1, 16, 3, 40), 16, (3, 3), dict(padding=1)),             # an input gradient's form
    ("conv_transpose", (1, 32, 3, 37), 16, (4, 4), dict(stride=2, padding=1)),   # phases of 2 x 2 taps
]


def _chunked_plans(monkeypatch) -> list:
    """The plans `winograd.plan` gives the lowering from now on (None where Winograd declined)."""
    plans, original = [], winograd.plan

    def recording(*args):
        plans.append(original(*args))
        return plans[-1]
    monkeypatch.setattr(winograd, "plan", recording)
    return plans


def _chunked(plans: list) -> int:
    """How many of `plans` take rows longer than their chunk in chunks."""
    return sum(p is not None and 0 < p.chunk < max(c.tiles[1] for c in p.correlations) for p in plans)


@pytest.mark.parametrize("index", range(len(LONG_ROWS)))
def test_rows_longer_than_a_chunk_go_in_chunks(index, monkeypatch):
    """A row of more tiles than a chunk holds is taken in chunks (unequal ones here), as rows of
    symbolic length are: the oracle's result at 1 and 2 threads, float32 and float64."""
    plans = _chunked_plans(monkeypatch)
    kind, x_shape, oc, kernel, attrs = LONG_ROWS[index]
    for dtype in ("float32", "float64"):
        plans.clear()
        fn, arrays, expected = _case(kind, x_shape, oc, kernel, np.random.default_rng(30 + index), dtype, **attrs)
        graph = lucid.trace(fn, *map(_spec, arrays), name=f"wino_long_{index}_{dtype}")
        executable = Executable(memory_planning.run(graph))
        assert "wino_conv" in kernel_labels(executable) and _chunked(plans) == 1
        got = executable(*arrays, threads=2)[0]
        assert_close(got, expected, TOL[dtype], f"{kind} {x_shape} -> {oc} {kernel} {attrs}, {dtype}")
        np.testing.assert_array_equal(got, executable(*arrays, threads=1)[0], err_msg="1 vs 2 threads")


def test_long_rows_gradients_and_non_finite_inputs(monkeypatch):
    """A conv of long rows in a gradient graph (its input gradient is a transposed conv of long rows
    too): every gradient is the oracle's; NaN and infinities in the input land where the direct
    sums put them."""
    plans = _chunked_plans(monkeypatch)
    rng = np.random.default_rng(40)
    fn, arrays, _ = _case("conv", (1, 16, 4, 45), 16, (3, 3), rng, padding=1)
    graph = lucid.trace(fn, *map(_spec, arrays), name="wino_long_grad")
    grad = autodiff.run(graph, wrt=[v.name for v in graph.inputs])
    seed = rng.standard_normal(grad.inputs[-1].shape).astype("float32")
    executable = Executable(memory_planning.run(grad))
    assert kernel_labels(executable).count("wino_conv") == 2 and _chunked(plans) == 2     # forward and input gradient
    wanted = oracle.conv_nd_vjp(seed.astype(np.float64), *(a.astype(np.float64) for a in arrays), padding=1)
    for name, got, ref in zip(("input", "weight", "bias"), executable(*arrays, seed, threads=2)[1:], wanted):
        assert_close(got, ref, TOL["float32"], f"gradient of the {name}")
    x, w = _non_finite_case(np.random.default_rng(41), "input", (1, 32, 3, 50))
    _check_non_finite(_non_finite_executable("conv", dict(padding=1), x, w), "conv", "input", dict(padding=1), x, w)


def _non_finite_case(rng, what, x_shape):
    x = rng.standard_normal(x_shape).astype("float32")
    w = (rng.standard_normal((32, 32, 3, 3)) * 0.2).astype("float32")
    if what == "input":
        flat = x.reshape(-1)
        flat[rng.choice(flat.size, 6, replace=False)] = [np.nan, np.inf, -np.inf, np.inf, -np.inf, np.nan]
    elif what == "weight":
        w[3, 5, 1, 2] = np.inf
    else:          # huge but finite: the transforms overflow where the direct sums do not
        x[0, :, 2:4, 2:4] = np.float32(3e38) * np.sign(rng.standard_normal((32, 2, 2))).astype("float32")
        w *= np.float32(1e-4)
    return x, w


@pytest.mark.parametrize("kind", ["conv", "conv_transpose", "strided conv"])
def test_non_finite_values_are_the_direct_convolutions(kind):
    """NaN and infinities land where the direct sums put them (an item whose weights are not all
    finite runs directly, one with any non-finite transformed value is computed again directly; a
    transposed conv with a non-finite weight unpacks the exact sums), and large finite inputs stay
    finite: for a conv (F(2x2, 3x3)) and the phases of a stride-2 transposed conv (F(2x2, 2x2)).
    An input, a weight and an overflow in turn; each graph compiled once (a conv's with an infinite
    weight has no padding, below)."""
    executables = {}
    for what in ("input", "weight", "overflow"):
        x, w = _non_finite_case(np.random.default_rng(13), what, (1, 32, 8, 10) if kind == "strided conv" else (1, 32, 6, 7))
        # no conv padding with an infinite weight: a conv multiplies its zero padding by it (as PyTorch
        # does), which the oracle's sum over real inputs never does; a transposed conv does not
        attrs = dict(padding=0 if what == "weight" else 1)
        if kind != "conv":             # 4 x 4 kernels of stride 2
            w = np.ascontiguousarray(np.pad(w, ((0, 0), (0, 0), (0, 1), (0, 1))))
            attrs["stride"] = 2
            if kind == "conv_transpose":
                attrs["padding"] = 1
        key = tuple(sorted(attrs.items()))
        if key not in executables:
            executables[key] = _non_finite_executable(kind, attrs, x, w)
        _check_non_finite(executables[key], kind, what, attrs, x, w)


def _non_finite_executable(kind, attrs, x, w) -> Executable:
    fn = getattr(F, "conv_transpose2d" if kind == "conv_transpose" else "conv2d")
    executable = Executable(memory_planning.run(lucid.trace(lambda x, w: fn(x, w, **attrs), _spec(x), _spec(w),
                                                            name=f"wino_nan_{kind.replace(' ', '_')}")))
    assert "wino_conv" in kernel_labels(executable)
    return executable


def _check_non_finite(executable, kind, what, attrs, x, w) -> None:
    reference = oracle.conv_transpose_nd if kind == "conv_transpose" else oracle.conv_nd
    got = executable(x, w, threads=2)[0]
    with np.errstate(invalid="ignore", over="ignore"):
        expected = reference(x.astype(np.float64), w.astype(np.float64), **attrs).astype(np.float32)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{what}: NaN positions")
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(expected), err_msg=f"{what}: +inf positions")
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected), err_msg=f"{what}: -inf positions")
    finite = np.isfinite(expected)
    if what == "overflow":
        assert finite.all()
    assert_close(got[finite], expected[finite].astype(np.float64), TOL["float32"], f"{what}: finite values")


@pytest.mark.parametrize("cpu", ["x86-64-v2", "x86-64-v3"])
def test_narrower_vector_targets(cpu):
    here = host()
    if not here.triple.startswith("x86_64") or (cpu == "x86-64-v3" and "+avx2" not in here.features.split(",")):
        pytest.skip(f"the host cannot run {cpu} code")
    fn, arrays, expected = _case("conv", (1, 32, 3, 5, 7), 36, (3, 3, 3), np.random.default_rng(14), padding=1)
    executable = Executable(memory_planning.run(lucid.trace(fn, *map(_spec, arrays), name=f"wino_{cpu}")), Target(here.triple, cpu, ""))
    assert "wino_conv" in kernel_labels(executable)
    assert_close(executable(*arrays, threads=2)[0], expected, TOL["float32"], cpu)
