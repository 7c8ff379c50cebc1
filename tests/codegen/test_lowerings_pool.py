"""The compiled pooling kernels (lucid/codegen/kernels/pool.py) against the NumPy reference.

Each case traces one pooling operator, differentiates it with respect to its input (so one compiled
graph checks the forward operator and its gradient operator) and compares `Executable` at 1 and 2
threads with `lucid.ir.run`. Inputs are read from inside a larger buffer filled with a huge sentinel,
so any read out of bounds would show up in the results (and writes into the inputs are checked).

Data on a grid (small multiples of 1/4, many ties, sometimes NaN and infinities) makes every sum exact,
so those cases must match bit for bit; normal data is compared with rtol 1e-6 (float32) / 1e-12
(float64), plus an absolute tolerance on the scale of a window sum for avg_pool's forward sums, whose
order NumPy does not fix.
"""
from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest

import lucid
import lucid.nn.functional as F
from lucid.runtime.executable import Executable
from lucid.ir import ops
from lucid.ir.ops.pool import pool_output_size
from lucid.passes import autodiff, memory_planning

SENTINEL = 1e30
RTOL = {"float32": 1e-6, "float64": 1e-12}


# ---------------------------------------------------------------------------------------------
# Helpers


def pool_fn(op: str, attrs: dict):
    if op == "max_pool":
        return lambda x: ops.max_pool(x, **attrs)
    return lambda x: ops.avg_pool(x, **attrs)


def grad_graph(fn, shape: tuple, dtype: str, grad_op: str):
    graph = lucid.trace(fn, lucid.spec(*shape, dtype=getattr(lucid, dtype)))
    grad = autodiff.run(graph, wrt=["x"])
    assert any(node.op == grad_op for node in grad.nodes), str(grad)
    return grad


def embedded(array: np.ndarray, margin: int = 37) -> tuple[np.ndarray, np.ndarray]:
    """`array` copied into the middle of a contiguous buffer of sentinels: (view, whole buffer)."""
    whole = np.full(array.size + 2 * margin, SENTINEL, array.dtype)
    view = whole[margin:margin + array.size].reshape(array.shape)
    view[...] = array
    return view, whole


def grid_data(rng: np.random.Generator, shape: tuple, dtype: str, specials: bool) -> np.ndarray:
    data = rng.integers(-6, 7, size=shape).astype(dtype) / 4
    if specials and data.size > 2:
        flat = data.reshape(-1)
        picks = rng.choice(flat.size, size=max(1, flat.size // 12), replace=False)
        flat[picks] = rng.choice([np.nan, -np.inf, np.inf], size=picks.size)
    return data


def check_graph(graph, x: np.ndarray, gy: np.ndarray, *, exact: bool, atol=(0.0, 0.0)):
    """Compare the compiled graph (threads 1 and 2) with the interpreter on (x, gy)."""
    expected = lucid.ir.run(graph, x, gy)
    rtol = RTOL[x.dtype.name]
    executable = Executable(memory_planning.run(graph))
    xv, x_buffer = embedded(x)
    gv, g_buffer = embedded(gy)
    before = (x_buffer.copy(), g_buffer.copy())
    for threads in (1, 2):
        got = executable(xv, gv, threads=threads)
        assert len(got) == len(expected) == 2
        for what, actual, reference, tolerance in zip(("forward", "gradient"), got, expected, atol):
            assert actual.shape == reference.shape and actual.dtype == reference.dtype
            if exact:
                np.testing.assert_array_equal(actual, reference, err_msg=f"{what}, threads={threads}")
            else:
                np.testing.assert_allclose(actual, reference, rtol=rtol, atol=tolerance,
                                           err_msg=f"{what}, threads={threads}")
    np.testing.assert_array_equal(x_buffer, before[0])
    np.testing.assert_array_equal(g_buffer, before[1])


# ---------------------------------------------------------------------------------------------
# Randomised configurations


def random_config(rng: random.Random, op: str, rank: int) -> tuple[dict, tuple]:
    """Attributes and an input shape (small, odd sizes likely) for which the output is non-empty."""
    max_k = 4 if rank < 3 else 3
    kernel = tuple(rng.randint(1, max_k) for _ in range(rank))
    stride = tuple(rng.randint(1, 3) for _ in range(rank))
    padding = tuple(rng.randint(0, k // 2) for k in kernel)
    dilation = tuple(rng.choice([1, 1, 2, 3]) for _ in range(rank)) if op == "max_pool" else (1,) * rank
    ceil_mode = rng.random() < 0.5
    spatial = []
    for k, s, p, d in zip(kernel, stride, padding, dilation):
        smallest = next(n for n in range(1, 64) if pool_output_size(n, k, s, p, d, ceil_mode) >= 1)
        spatial.append(rng.randint(smallest, smallest + (6 if rank < 3 else 3)))
    shape = (rng.randint(1, 2), rng.randint(1, 3)) + tuple(spatial)
    attrs = dict(kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode)
    if op == "max_pool":
        attrs["dilation"] = dilation
    else:
        attrs["count_include_pad"] = rng.random() < 0.5
        attrs["divisor_override"] = rng.randint(1, 7) if rng.random() < 0.25 else None
    return attrs, shape


CASES_PER_GROUP = 6
CASES = [(op, rank, dtype, index)
         for op in ("max_pool", "avg_pool") for rank in (1, 2, 3) for dtype in ("float32", "float64")
         for index in range(CASES_PER_GROUP)]


@pytest.mark.parametrize("op, rank, dtype, index", CASES)
def test_random_configuration(op, rank, dtype, index):
    seed = f"{op}-{rank}-{dtype}-{index}"
    attrs, shape = random_config(random.Random(seed), op, rank)
    rng = np.random.default_rng(list(seed.encode()))
    graph = grad_graph(pool_fn(op, attrs), shape, dtype, op + "_grad")
    y_shape = graph.inputs[1].shape
    if index % 2 == 0:                            # grid data: exact sums, ties, specials half the time
        x = grid_data(rng, shape, dtype, specials=index % 4 == 0)
        gy = grid_data(rng, y_shape, dtype, specials=False)
        check_graph(graph, x, gy, exact=True)
    else:
        x = rng.standard_normal(shape).astype(dtype)
        gy = rng.standard_normal(y_shape).astype(dtype)
        window_sum = math.prod(attrs["kernel"]) * float(np.abs(x).max()) * RTOL[dtype]
        check_graph(graph, x, gy, exact=False, atol=(window_sum, 0.0))


# rank's input shape, kernel, stride, padding, ceil_mode: rows long enough for several vectors of
# outputs (16 float32 or 8 float64 lanes with AVX-512, fewer elsewhere), then single positions and
# the clipped windows at the border.
VECTOR_ROWS = [
    ((2, 3, 77), (2,), (2,), (0,), False),
    ((1, 2, 70), (3,), (1,), (1,), False),
    ((1, 3, 5, 67), (2, 2), (2, 2), (0, 1), True),
    ((2, 2, 4, 41), (3, 3), (1, 1), (1, 1), False),
    ((1, 2, 4, 5, 66), (2, 2, 2), (2, 2, 2), (0, 0, 0), False),
    ((1, 2, 3, 4, 35), (1, 1, 1), (2, 2, 2), (0, 0, 0), True),      # reads of 2 per output end inside the row
    ((1, 1, 2, 3, 64), (2, 2, 2), (2, 2, 2), (1, 1, 1), False),     # a padded window at each end of the row
    ((1, 2, 4, 6, 16), (2, 2, 2), (2, 2, 2), (0, 0, 0), False),     # rows of 8 outputs: narrower vectors
    ((2, 3, 11), (3,), (1,), (1,), True),                            # an interior of 9: 8 lanes, then one
]


@pytest.mark.parametrize("index", range(len(VECTOR_ROWS)))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_max_pool_by_vectors_of_outputs(index, dtype):
    """max_pool's rows by vectors of outputs (stride 1, or stride 2 with windows of at most 2 along
    w): exactly the reference's values, NaN and infinities included, on data inside a buffer of
    sentinels (a read past the input would show)."""
    shape, kernel, stride, padding, ceil_mode = VECTOR_ROWS[index]
    attrs = dict(kernel=kernel, stride=stride, padding=padding, dilation=(1,) * len(kernel), ceil_mode=ceil_mode)
    graph = grad_graph(pool_fn("max_pool", attrs), shape, dtype, "max_pool_grad")
    rng = np.random.default_rng(index)
    x = grid_data(rng, shape, dtype, specials=True)
    check_graph(graph, x, grid_data(rng, graph.inputs[1].shape, dtype, specials=False), exact=True)


# input shapes of 2 x ... x 2 pools of stride 2 whose windows tile the input: max_pool_grad writes each
# window's inputs directly (vectors of outputs along w, then single outputs at the row's end)
TILING = [(2, 3, 4, 6, 74), (1, 2, 2, 2, 16), (2, 5, 8, 34), (3, 2, 6), (1, 1, 2, 4, 2)]


@pytest.mark.parametrize("shape", TILING)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_max_pool_grad_of_windows_that_tile_the_input(shape, dtype):
    """Ties to the first maximum, NaN to the last NaN, an all -inf window to its first tap, exactly
    the reference's bits (grid data with NaN and infinities, inside a buffer of sentinels)."""
    rank = len(shape) - 2
    attrs = dict(kernel=(2,) * rank, stride=(2,) * rank, padding=(0,) * rank, dilation=(1,) * rank, ceil_mode=False)
    graph = grad_graph(pool_fn("max_pool", attrs), shape, dtype, "max_pool_grad")
    rng = np.random.default_rng(len(shape))
    x = grid_data(rng, shape, dtype, specials=True)
    x.reshape(-1)[:8] = -np.inf                             # a window of -inf only (or mostly)
    check_graph(graph, x, grid_data(rng, graph.inputs[1].shape, dtype, specials=True), exact=True)


# ---------------------------------------------------------------------------------------------
# Edge cases


def test_window_wholly_in_padding():
    """Dilation puts both taps of the window in the padding: the maximum is -inf, no gradient."""
    attrs = dict(kernel=(2, 3), stride=(1, 2), padding=(1, 1), dilation=(4, 1), ceil_mode=False)
    graph = grad_graph(pool_fn("max_pool", attrs), (1, 2, 3, 5), "float32", "max_pool_grad")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 3, 5)).astype(np.float32)
    gy = rng.standard_normal(graph.inputs[1].shape).astype(np.float32)
    y, dx = Executable(memory_planning.run(graph))(x, gy, threads=2)
    assert np.all(y == -np.inf) and np.all(dx == 0)
    check_graph(graph, x, gy, exact=True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ties_minus_infinity_and_nan(dtype):
    """Ties go to the first maximum in window order; an all -inf window passes its gradient to its
    first tap inside the input (PyTorch's rule); a NaN is the maximum and takes the gradient."""
    attrs = dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), ceil_mode=True)
    shape = (2, 2, 4, 5)
    graph = grad_graph(pool_fn("max_pool", attrs), shape, dtype, "max_pool_grad")
    x = np.zeros(shape, dtype)
    x[0, 0] = -np.inf
    x[0, 1, 1, 2] = np.nan
    x[1, 0, ::2, ::2] = 1.0
    gy = (np.arange(math.prod(graph.inputs[1].shape)).reshape(graph.inputs[1].shape) % 7 + 1).astype(dtype)
    check_graph(graph, x, gy, exact=True)
    _, dx = Executable(memory_planning.run(graph))(x, gy, threads=1)
    assert dx[0, 0].sum() == gy[0, 0].sum()                   # every window passes its gradient
    assert dx[0, 0, 0, 0] == gy[0, 0, :2, :2].sum()           # to its first tap inside the input
    assert dx[0, 1, 1, 2] == gy[0, 1, 0:3, 1:4].sum()          # every window holding the NaN


@pytest.mark.parametrize("op", ["max_pool", "avg_pool"])
def test_large_window(op):
    """A window of more taps than the max_pool_grad kernel unrolls (64), inside and across the borders."""
    attrs = dict(kernel=(9, 8), stride=(1, 2), padding=(4, 3), ceil_mode=True)
    if op == "max_pool":
        attrs["dilation"] = (1, 1)
    else:
        attrs.update(count_include_pad=False, divisor_override=None)
    shape = (1, 2, 12, 13)
    graph = grad_graph(pool_fn(op, attrs), shape, "float32", op + "_grad")
    rng = np.random.default_rng(7)
    check_graph(graph, grid_data(rng, shape, "float32", specials=True),
                grid_data(rng, graph.inputs[1].shape, "float32", specials=False), exact=True)


def test_avg_divisors_with_ceil_overhang():
    """count_include_pad counts the padding inside the padded extent, not the ceil_mode overhang."""
    for include in (True, False):
        attrs = dict(kernel=(3,), stride=(2,), padding=(1,), ceil_mode=True, count_include_pad=include,
                     divisor_override=None)
        graph = grad_graph(pool_fn("avg_pool", attrs), (1, 1, 6), "float64", "avg_pool_grad")
        x = np.arange(1.0, 7.0).reshape(1, 1, 6)
        gy = np.ones(graph.inputs[1].shape)
        y, dx = Executable(memory_planning.run(graph))(x, gy, threads=2)
        # windows start at -1, 1, 3, 5: with padding counted 3, 3, 3, 2 (the overhang is not), else 2, 3, 3, 1
        divisors = [3, 3, 3, 2] if include else [2, 3, 3, 1]
        np.testing.assert_allclose(y[0, 0], [3 / divisors[0], 9 / divisors[1], 15 / divisors[2], 6 / divisors[3]])
        check_graph(graph, x, gy, exact=True)


def test_functional_pools_and_many_planes():
    """nn.functional entry points, and more planes than threads (work items spread over threads)."""
    rng = np.random.default_rng(5)
    shape = (3, 5, 9, 8)

    def f_max(x):
        return F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)

    def f_avg(x):
        return F.avg_pool2d(x, (2, 3), stride=(2, 2), padding=(1, 1), count_include_pad=False)

    for fn, grad_op in ((f_max, "max_pool_grad"), (f_avg, "avg_pool_grad")):
        graph = grad_graph(fn, shape, "float32", grad_op)
        x = grid_data(rng, shape, "float32", specials=False)
        gy = grid_data(rng, graph.inputs[1].shape, "float32", specials=False)
        check_graph(graph, x, gy, exact=True)


def test_compiled_graph_is_cached_and_fast(tmp_path, monkeypatch):
    """The cache lives where LUCID_CACHE_DIR says, and one compile stays well under a second."""
    from lucid.codegen import jit

    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path))
    attrs = dict(kernel=(3, 3, 3), stride=(2, 2, 2), padding=(1, 1, 1), dilation=(1, 1, 1), ceil_mode=True)
    graph = grad_graph(pool_fn("max_pool", attrs), (1, 2, 5, 6, 7), "float64", "max_pool_grad")
    compiled = jit.COUNTERS["compiled"]
    began = time.perf_counter()
    Executable(memory_planning.run(graph))
    assert time.perf_counter() - began < 5.0
    after_first = jit.COUNTERS["compiled"]
    assert after_first > compiled and list(tmp_path.glob("objects/*.o")) and list(tmp_path.glob("graphs/*.json"))
    Executable(memory_planning.run(graph))
    assert jit.COUNTERS["compiled"] == after_first
