"""Native lowerings of the data-movement, reduction, matmul and softmax operators against the NumPy
reference (`lucid.ir.run`): exact for copies, integers and booleans, rtol 1e-5 for float arithmetic,
each run with 1 and 2 threads. Graphs bundle many cases as a tuple of outputs to keep the number
of LLVM compilations (one per graph) small. `test_no_out_of_bounds_access` runs small odd shapes
in a subprocess with every input, output and the arena placed against a PROT_NONE page."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import lucid
from lucid.runtime.executable import Executable
from lucid.ir import ops
from lucid.passes import memory_planning

FLOATS = (np.float32, np.float64)
ALL = (np.float32, np.float64, np.int64, np.bool_)


def data(rng, shape, dtype, nan: float = 0.0) -> np.ndarray:
    """Random data of a dtype: normals (a fraction `nan` of them NaN), small ints (many ties), bools."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype == np.int64:
        return rng.integers(-4, 5, shape).astype(np.int64)
    x = rng.standard_normal(shape).astype(dtype)
    if nan:
        x[rng.random(shape) < nan] = np.nan
    return x


def check(fn, *arrays, rtol: float = 1e-5, atol: float = 1e-6) -> list:
    """Trace fn on specs of `arrays`, compile, and compare every output with the reference."""
    graph = lucid.trace(fn, *(lucid.spec(a.shape, dtype=a.dtype) for a in arrays))
    expected = lucid.ir.run(graph, *arrays)
    expected = list(expected) if graph.returns_tuple else [expected]
    executable = Executable(memory_planning.run(graph))
    for threads in (1, 2):
        got = executable(*arrays, threads=threads)
        assert len(got) == len(expected)
        for position, (g, e) in enumerate(zip(got, expected)):
            e = np.asarray(e)
            where = f"output {position} ({graph.outputs[position].node.op}), threads={threads}"
            assert g.dtype == e.dtype and g.shape == e.shape, (where, g.dtype, e.dtype, g.shape, e.shape)
            if e.dtype.kind == "f":
                np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=where)
            else:
                np.testing.assert_array_equal(g, e, err_msg=where)
    return expected


def random_shape(rng, rank: int, high: int = 6) -> tuple:
    """A shape with some size-1 axes and odd sizes."""
    return tuple(int(n) for n in np.where(rng.random(rank) < 0.3, 1, rng.integers(2, high, rank)))


# ---------------------------------------------------------------------------------------------
# Data movement


@pytest.mark.parametrize("dtype", ALL)
def test_reshape(dtype):
    rng = np.random.default_rng(1)
    x = data(rng, (3, 5, 2), dtype)

    def fn(x, s, e):
        return (ops.reshape(x, (5, 6)),                              # a graph output: a copy kernel
                ops.reshape(x, (30,)),
                ops.permute(ops.reshape(x, (6, 5)), (1, 0)),         # an alias read by permute
                ops.reshape(ops.permute(x, (2, 0, 1)), (2, 15)),     # a copy out of the arena
                ops.reshape(s, (1, 1)), ops.reshape(s, (1,)), ops.reshape(e, (3, 0)))

    check(fn, x, data(rng, (), dtype), data(rng, (0, 2, 3), dtype))


@pytest.mark.parametrize("dtype", ALL)
def test_permute(dtype):
    rng = np.random.default_rng(0)
    inputs, perms = [], []
    for rank in (2, 2, 3, 3, 4, 4):
        inputs.append(data(rng, random_shape(rng, rank), dtype))
        every = [p for p in itertools.permutations(range(rank)) if p != tuple(range(rank))]
        perms.append(every if rank <= 3 else [every[int(i)] for i in rng.choice(len(every), 5, replace=False)])

    def fn(*xs):
        return tuple(ops.permute(x, p) for x, ps in zip(xs, perms) for p in ps)

    check(fn, *inputs)


@pytest.mark.parametrize("dtype", ALL)
def test_permute_tiled(dtype):
    """Transposes large enough for the tiled copy, with partial tiles."""
    rng = np.random.default_rng(2)

    def fn(a, b):
        return (ops.permute(a, (1, 0)), ops.permute(b, (0, 2, 1)), ops.permute(b, (2, 1, 0)),
                ops.permute(b, (1, 2, 0)), ops.permute(ops.slice_(a, (1, 0), (70, 33), (2, 1)), (1, 0)))

    check(fn, data(rng, (71, 33), dtype), data(rng, (3, 37, 65), dtype))


@pytest.mark.parametrize("dtype", ALL)
def test_broadcast_to(dtype):
    rng = np.random.default_rng(3)
    cases = []
    for rank in (0, 1, 2, 3) * 3:
        target = tuple(int(n) for n in rng.integers(1, 5, rank + 1))
        shape = tuple(1 if rng.random() < 0.5 else n for n in target[1 + int(rng.integers(0, 2)):])
        cases.append((shape, target))
    cases.append(((1, 3, 1), (2, 3, 2049)))             # a long inner axis: several chunks

    def fn(*xs):
        return tuple(ops.broadcast_to(x, target) for x, (_, target) in zip(xs, cases))

    check(fn, *(data(rng, shape, dtype) for shape, _ in cases))


@pytest.mark.parametrize("dtype", ALL)
def test_slice(dtype):
    rng = np.random.default_rng(4)
    shapes = [random_shape(rng, 3, 9) for _ in range(3)] + [(2100, 3)]

    def bounds(shape):
        starts = tuple(int(rng.integers(0, n + 1)) for n in shape)
        stops = tuple(int(rng.integers(a, n + 1)) for a, n in zip(starts, shape))
        steps = tuple(int(rng.integers(1, 4)) for _ in shape)
        return starts, stops, steps

    def fn(*xs):
        outs = []
        for x, shape in zip(xs, shapes):
            rank = len(shape)
            outs += [ops.slice_(x, *bounds(shape)) for _ in range(4)]
            outs.append(ops.slice_(x, (0,) * rank, shape, (1,) * rank))                  # everything
            outs.append(ops.slice_(x, (0,) * rank, shape, tuple(n + 1 for n in shape)))   # one element
            outs.append(ops.slice_(x, (0,) * (rank - 1) + (shape[-1],), shape, (1,) * rank))   # empty
        return tuple(outs)

    check(fn, *(data(rng, shape, dtype) for shape in shapes))


@pytest.mark.parametrize("dtype", ALL)
def test_pad(dtype):
    rng = np.random.default_rng(5)
    shapes = [random_shape(rng, 3, 5) for _ in range(3)]
    values = [0.0, 2.7, -1.5, float(rng.standard_normal()), float("nan") if np.dtype(dtype).kind == "f" else 7.0,
              -float("inf") if np.dtype(dtype).kind == "f" else -3.0]

    def fn(empty, *xs):
        outs = []
        for x in xs:
            for value in values:
                lo, hi, interior = (tuple(int(v) for v in rng.integers(0, 3, 3)) for _ in range(3))
                outs.append(ops.pad(x, lo, hi, interior, value))
        x = xs[0]
        outs.append(ops.pad(x, (0, 0, 0), (0, 0, 0), (0, 0, 0), 1.0))          # no padding at all
        outs.append(ops.pad(x, (0, 0, 0), (0, 0, 0), (2, 2, 2), 0.5))          # interior only
        outs.append(ops.pad(empty, (1, 0, 1), (0, 2, 1), (1, 1, 1), 3.0))      # padding of nothing
        return tuple(outs)

    check(fn, data(rng, (2, 0, 3), dtype), *(data(rng, shape, dtype) for shape in shapes))


def test_concat():
    """Each dtype alone, and mixed dtypes (promoted), along every axis, with empty pieces."""
    rng = np.random.default_rng(6)
    pieces, plan = [], []
    for base in [random_shape(rng, 3, 5) for _ in range(2)]:
        for axis in range(3):
            for dtypes in [(np.float32,) * 3, (np.float64, np.float64), (np.int64,) * 2, (np.bool_,) * 3,
                           (np.bool_, np.int64, np.float32), (np.float32, np.float64), (np.int64, np.float64)]:
                first = len(pieces)
                for dtype in dtypes:
                    shape = list(base)
                    shape[axis] = int(rng.integers(0, 4))
                    pieces.append(data(rng, tuple(shape), dtype))
                plan.append((axis, first, len(pieces)))
    pieces.append(data(rng, (2, 3), np.float32))
    plan.append((1, len(pieces) - 1, len(pieces)))                 # a single input

    def fn(*xs):
        return tuple(ops.concat(list(xs[a:b]), axis) for axis, a, b in plan)

    check(fn, *pieces)


def test_one_hot():
    rng = np.random.default_rng(7)
    shapes = [(), (7,), random_shape(rng, 2), random_shape(rng, 3), (3, 1)]
    classes = [1, 5, 3, 4, 2100]

    def fn(*xs):
        return tuple(ops.one_hot(x, n) for x, n in zip(xs, classes))

    check(fn, *(rng.integers(0, n, s).astype(np.int64) for s, n in zip(shapes, classes)))


def test_one_hot_out_of_range_gives_zero_rows():
    """The reference raises on indices outside [0, num_classes); native code writes zeros."""
    x = np.array([[0, -1, 3], [4, 2, 10**12]], np.int64)
    graph = lucid.trace(lambda x: ops.one_hot(x, 4), lucid.spec(x.shape, dtype=lucid.int64))
    with pytest.raises(lucid.LucidError):
        lucid.ir.run(graph, x)
    expected = (x[..., None] == np.arange(4)).astype(np.float32)
    for threads in (1, 2):
        np.testing.assert_array_equal(Executable(memory_planning.run(graph))(x, threads=threads)[0], expected)


# ---------------------------------------------------------------------------------------------
# Reductions


def all_axis_sets(rank: int):
    return [axes for r in range(rank + 1) for axes in itertools.combinations(range(rank), r)]


REDUCTIONS = [(op, dtype) for op in ("sum", "max", "min") for dtype in ALL] + [("mean", d) for d in FLOATS]
REDUCE_FN = {"sum": ops.sum_, "mean": ops.mean, "max": ops.max_, "min": ops.min_}


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("shape", [(3, 1, 5), (2, 3, 1, 4)])
def test_reduction_every_axis_set(op, shape):
    """Every set of axes of a rank-3 and a rank-4 input (the loop structure depends on nothing
    else); keepdims on every third set (it only changes the output's shape)."""
    rng = np.random.default_rng(len(shape))
    x = data(rng, shape, np.float32, nan=0.05 if op in ("max", "min") else 0.0)
    cases = [(axes, i % 3 == 1) for i, axes in enumerate(all_axis_sets(len(shape)))]

    def fn(x):
        return tuple(REDUCE_FN[op](x, axes, keepdims=keep) for axes, keep in cases)

    check(fn, x, atol=1e-5)


@pytest.mark.parametrize("op, dtype", [c for c in REDUCTIONS if c[1] != np.float32])
def test_reduction_dtypes(op, dtype):
    """The other dtypes, on axis sets covering each loop order (none, inner, outer, mixed, all), a
    0-d input, and few long rows (split in parallel pieces)."""
    rng = np.random.default_rng(8)
    nan = 0.05 if op in ("max", "min") else 0.0
    reduce = REDUCE_FN[op]
    cases = [((), False), ((2,), False), ((0,), True), ((1,), False), ((0, 2), False), ((1, 2), True),
             ((0, 1), False), ((0, 1, 2), False)]

    def fn(x, s, long):
        outs = [reduce(x, axes, keepdims=keep) for axes, keep in cases]
        return tuple(outs + [reduce(s), reduce(long, 1), reduce(long, 0)])

    check(fn, data(rng, (4, 3, 5), dtype, nan), data(rng, (), dtype), data(rng, (2, 17000), dtype, nan / 100),
          atol=1e-5)
    if op == "sum":
        check(lambda e: (reduce(e, 1), reduce(e, (0, 1)), reduce(e, 0), reduce(e, 1, keepdims=True)),
              data(rng, (3, 0), dtype))


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
def test_reduction_shapes(op):
    """float32: 0-d and 1-d inputs, long rows and columns (chunked), few long outputs (split in
    parallel pieces), and, for sum, empty reduced axes."""
    rng = np.random.default_rng(9)
    reduce = REDUCE_FN[op]
    nan = 0.001 if op in ("max", "min") else 0.0
    inputs = [data(rng, s, np.float32, nan) for s in [(), (7,), (3, 5000), (5000, 3), (2, 17000), (40001,), (9, 2100)]]

    def fn(s, v, rows, cols, few, flat, wide):
        return (reduce(s), reduce(s, keepdims=True), reduce(v), reduce(v, 0, keepdims=True),
                reduce(rows, 1), reduce(cols, 0), reduce(cols, 1), reduce(few, 1), reduce(few, (0, 1)),
                reduce(flat), reduce(wide, 0), reduce(wide, 1, keepdims=True))

    check(fn, *inputs, rtol=1e-4, atol=1e-4)           # float32 sums of 5000+ terms round apart
    if op == "sum":
        check(lambda e: (reduce(e, 1), reduce(e, (0, 1)), reduce(e, 0), reduce(e, 1, keepdims=True)),
              data(rng, (3, 0), np.float32))


@pytest.mark.parametrize("dtype", ALL)
def test_argmax(dtype):
    """Every axis, keepdims, and the flattened argmax; ties (ints, bools) and NaN (the first)."""
    rng = np.random.default_rng(10)
    shapes = [(3, 1, 5), (2, 4, 1, 3), (6, 2100), (2100, 5)]

    def fn(*xs):
        outs = []
        for x in xs:
            outs += [ops.argmax(x, a, keepdims=a % 2 == 1) for a in range(len(x.shape))] + [ops.argmax(x)]
        return tuple(outs)

    check(fn, *(data(rng, shape, dtype, nan=0.1) for shape in shapes))


def test_argmax_special_values():
    x = np.array([[-np.inf, -np.inf, -np.inf], [1.0, np.nan, np.nan], [np.inf, 2.0, np.inf],
                  [-0.0, 0.0, -1.0]], np.float32)
    check(lambda x: (ops.argmax(x, 1), ops.argmax(x, 0), ops.max_(x, 1), ops.min_(x, 0)), x)


# ---------------------------------------------------------------------------------------------
# Matmul and softmax


MATMULS = [((3, 4), (4, 5)), ((1, 1), (1, 1)), ((5, 1), (1, 3)), ((2, 1, 3, 4), (5, 4, 6)),
           ((3, 7, 2), (2, 9)), ((2, 3), (4, 3, 300)), ((1, 3, 5), (2, 1, 5, 2)), ((3, 0), (0, 4)),
           ((2, 0, 3), (3, 2))]


@pytest.mark.parametrize("dtypes", [(np.float32, np.float32), (np.float64, np.float64),
                                    (np.float32, np.float64), (np.float64, np.float32)])
def test_matmul(dtypes):
    rng = np.random.default_rng(5)
    arrays = [data(rng, shape, dtype) for pair in MATMULS for shape, dtype in zip(pair, dtypes)]

    def fn(*xs):
        return tuple(ops.matmul(xs[i], xs[i + 1]) for i in range(0, len(xs), 2))

    check(fn, *arrays, atol=1e-5)


@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax(dtype):
    rng = np.random.default_rng(11)
    inputs = [data(rng, shape, dtype) * 4 for shape in [(3, 1, 5), (2, 3, 1, 4), (4, 2100), (2100, 3)]]
    for x in inputs:
        x.flat[0] = -np.inf                                 # one -inf entry

    def fn(*xs):
        return tuple(f(x, a) for x in xs for a in range(len(x.shape)) for f in (ops.softmax, ops.log_softmax))

    check(fn, *inputs)


def test_softmax_special_values():
    x = np.array([[-np.inf, -np.inf, -np.inf], [1.0, np.nan, 0.0], [np.inf, 2.0, 0.0],
                  [1000.0, 1000.0, -1000.0]], np.float32)
    check(lambda x: tuple(f(x, a) for a in (0, 1) for f in (ops.softmax, ops.log_softmax)), x)
    check(lambda s: (ops.softmax(s, 0), ops.log_softmax(s, 0)), np.array(3.5, np.float64))
    check(lambda e: (ops.softmax(e, 1), ops.log_softmax(e, 1)), np.zeros((0, 3), np.float32))


# ---------------------------------------------------------------------------------------------
# Bounds

GUARDED_SCRIPT = r'''
import ctypes, mmap, sys
import numpy as np
import lucid
from lucid.ir import ops
from lucid.passes import memory_planning
from lucid.runtime import executable

PAGE = mmap.PAGESIZE
libc = ctypes.CDLL(None)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
keep = []

def guarded(shape, dtype, before):
    """An uninitialised array that ends at (or starts right after) a PROT_NONE page."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0:
        return np.zeros(shape, dtype)
    pages = -(-nbytes // PAGE)
    buffer = mmap.mmap(-1, (pages + 1) * PAGE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    keep.append(buffer)
    if before:
        assert libc.mprotect(address, PAGE, 0) == 0
        offset = PAGE
    else:
        assert libc.mprotect(address + pages * PAGE, PAGE, 0) == 0
        offset = pages * PAGE - nbytes
    return np.frombuffer(buffer, np.uint8, nbytes, offset).view(dtype).reshape(shape)

class GuardedNumpy:
    """numpy, except that `empty` (outputs) and `zeros` (arena, table) hand out guarded arrays."""
    before = False
    def __getattr__(self, name):
        return getattr(np, name)
    def empty(self, shape, dtype=float):
        return guarded(tuple(shape) if isinstance(shape, tuple) else (int(shape),), dtype, self.before)
    def zeros(self, shape, dtype=float):
        a = self.empty(shape, dtype)
        a[...] = 0
        return a

executable.np = GuardedNumpy()

def place(array, before):
    a = guarded(array.shape, array.dtype, before)
    a[...] = array
    return a

rng = np.random.default_rng(7)
f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
CASES = [
    (lambda x: (ops.permute(x, (2, 0, 1)), ops.reshape(x, (15, 7)), ops.broadcast_to(x, (2, 3, 5, 7)),
                ops.slice_(x, (1, 0, 2), (3, 5, 7), (1, 2, 3)), ops.pad(x, (1, 0, 2), (2, 1, 0), (1, 2, 0), 1.0)),
     [f32(3, 5, 7)]),
    (lambda a, b: (ops.concat([a, b], 1), ops.permute(a, (1, 0)), ops.permute(b, (1, 0))), [f32(33, 35), f32(33, 37)]),
    (lambda x: ops.one_hot(x, 7), [rng.integers(-2, 9, (5, 3)).astype(np.int64)]),
    (lambda x: tuple(f(x, axes, keepdims=k) for f in (ops.sum_, ops.mean, ops.max_, ops.min_)
                     for axes in [(0,), (1,), (2,), (0, 2), (1, 2), (0, 1, 2)] for k in (False, True))
               + tuple(ops.argmax(x, a) for a in range(3)), [f32(3, 5, 7)]),
    (lambda x: (ops.sum_(x, 1), ops.max_(x, (0, 1))), [f32(3, 16385)]),
    (lambda x: (ops.sum_(x, 1), ops.max_(x, 0), ops.argmax(x, 1)), [rng.integers(0, 9, (5, 3)).astype(np.int64)]),
    (lambda x: (ops.sum_(x, 0), ops.max_(x, 1), ops.argmax(x, 0)), [rng.random((5, 3)) < 0.5]),
    (lambda a, b: (ops.matmul(a, b), ops.matmul(b, ops.permute(b, (0, 2, 1)))), [f32(5, 3), rng.standard_normal((2, 3, 7))]),
    (lambda x: tuple(f(x, a) for a in range(3) for f in (ops.softmax, ops.log_softmax)), [f32(3, 5, 7)]),
]
for fn, arrays in CASES:
    graph = lucid.trace(fn, *(lucid.spec(a.shape, dtype=a.dtype) for a in arrays))
    if graph.nodes[-1].op == "one_hot":           # out-of-range indices: rows of zeros
        expected = [(arrays[0][..., None] == np.arange(7)).astype(np.float32)]
    else:
        expected = lucid.ir.run(graph, *arrays)
        expected = list(expected) if graph.returns_tuple else [expected]
    for before in (False, True):
        GuardedNumpy.before = before
        compiled = executable.Executable(memory_planning.run(graph))
        for threads in (1, 2):
            got = compiled(*[place(a, before) for a in arrays], threads=threads)
            for g, e in zip(got, expected):
                np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
print("guarded ok")
'''


@pytest.mark.long_running
def test_no_out_of_bounds_access():
    """Any access past either end of an input, output or the arena would fault (in a subprocess)."""
    root = str(Path(lucid.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + sys.path))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(GUARDED_SCRIPT)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"exit status {result.returncode} (-11: an access hit a guard page)\n" \
        + result.stdout + result.stderr
    assert "guarded ok" in result.stdout
