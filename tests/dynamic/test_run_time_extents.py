"""Kernels with run-time extents (issue 21, stage 2): one compile serves every size.

Oracles: eager lucid (NumPy kernels), a NumPy forward written here, Python's own integer arithmetic
for the sizes the kernels compute, and an overlap check of the arena written here."""
import ctypes

import llvmlite.ir as ir
import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
from lucid.errors import CompileError, ShapeError
from lucid.ir import symbolic
from lucid.passes import pipeline


class NormNet(nn.Module):
    """Norms, activations, concat, pad, slices, reductions, pooling and softmax over (N, C, D, H, W)."""

    def __init__(self):
        super().__init__()
        self.groups = nn.GroupNorm(2, 4)
        self.instances = nn.GroupNorm(4, 4)

    def forward(self, x):
        a = F.silu(self.groups(x))
        b = self.instances(x * 0.5).relu()
        c = F.pad(lucid.cat([a, b], dim=1), (1, 1, 0, 0, 2, 0))
        e = c[:, :, 2:, :, 1:-1]
        return (e.mean(dim=(2, 3, 4), keepdim=True) + e * e.amax(dim=4, keepdim=True), e[:, :, :, ::2].sum(dim=(3, 4)),
                (F.max_pool3d(b, 2) + F.avg_pool3d(x, 2)).softmax(dim=1),
                F.avg_pool3d(x, 3, stride=2, padding=1, count_include_pad=False).log_softmax(dim=4))


def numpy_forward(net: NormNet, x: np.ndarray):
    def group_norm(v, norm):
        n, c = v.shape[:2]
        rows = v.reshape(n, norm.num_groups, -1).astype(np.float64)
        normed = (rows - rows.mean(-1, keepdims=True)) / np.sqrt(rows.var(-1, keepdims=True) + norm.eps)
        shape = (1, c, 1, 1, 1)
        return normed.reshape(v.shape) * norm.weight.numpy().reshape(shape) + norm.bias.numpy().reshape(shape)

    a = group_norm(x, net.groups)
    a = a / (1 + np.exp(-a))
    b = np.maximum(group_norm(x * 0.5, net.instances), 0)
    c = np.pad(np.concatenate([a, b], axis=1), ((0, 0), (0, 0), (2, 0), (0, 0), (1, 1)))
    e = c[:, :, 2:, :, 1:-1]
    n, c, d, h, w = b.shape
    def halves(v):
        return v[:, :, :d // 2 * 2, :h // 2 * 2, :w // 2 * 2].reshape(n, c, d // 2, 2, h // 2, 2, w // 2, 2)

    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (1, 1)), constant_values=np.nan)
    out = [(size + 1) // 2 for size in (d, h, w)]
    windows = [padded[:, :, i:i + 2 * out[0]:2, j:j + 2 * out[1]:2, k:k + 2 * out[2]:2]
               for i in range(3) for j in range(3) for k in range(3)]
    return (e.mean(axis=(2, 3, 4), keepdims=True) + e * e.max(axis=4, keepdims=True), e[:, :, :, ::2].sum(axis=(3, 4)),
            softmax(halves(b).max(axis=(3, 5, 7)) + halves(x).mean(axis=(3, 5, 7)), 1),
            np.log(softmax(np.nanmean(np.stack(windows), axis=0), 4)))


def softmax(v, axis):
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


#: (batch, (D, H, W)): batches 1..8, volumes 16..48 in steps of 8, and odd sizes
SIZES = [(1, (16, 16, 16)), (2, (24, 17, 32)), (5, (32, 40, 23)), (8, (48, 16, 31)), (3, (17, 33, 48)),
         (7, (40, 24, 16)), (4, (31, 48, 40))]


def built(compiled) -> int:
    stats = compiled.stats()
    return stats["native_compiles"] + stats["cache_loads"]


def test_one_compile_serves_every_batch_and_volume_size():
    lucid.manual_seed(0)
    net = NormNet()
    compiled = lucid.compile(net, dynamic=True)
    modules = None
    with lucid.no_grad():
        for n, volume in SIZES:
            x = lucid.randn(n, 4, *volume)
            outputs = compiled(x)
            if modules is None:
                modules = built(compiled)
            for got, eager, oracle in zip(outputs, net(x), numpy_forward(net, x.numpy()), strict=True):
                assert got.shape == eager.shape == oracle.shape
                np.testing.assert_allclose(got.numpy(), eager.numpy(), rtol=1e-4, atol=1e-4)
                np.testing.assert_allclose(got.numpy(), oracle, rtol=1e-3, atol=1e-3)
    stats = compiled.stats()
    assert stats["traces"] == 1 and stats["variants"] == stats["dynamic_variants"] == 1
    assert built(compiled) == modules                      # no module compiled or loaded after the first call


def test_automatic_dynamic_after_a_second_size():
    def f(x, y):
        return (x * y).relu().sum(dim=2, keepdim=True) + x
    compiled = lucid.compile(f)
    shapes = [(2, 3, 16), (2, 3, 24), (5, 3, 24), (2, 3, 40), (2, 3, 17)]
    for k, shape in enumerate(shapes):
        x, y = lucid.randn(*shape), lucid.randn(1, 3, 1)
        np.testing.assert_allclose(compiled(x, y).numpy(), f(x, y).numpy(), rtol=1e-5, atol=1e-5)
        if k == 1:                 # the second size made L symbolic: traced once more, compiled once more
            assert compiled.stats()["dynamic_variants"] == 1 and compiled.stats()["traces"] == 2
            after_second = built(compiled)
    # the batch varied later (5): N became symbolic too, once; then nothing more
    stats = compiled.stats()
    assert stats["traces"] == 3 and stats["dynamic_variants"] == 2 and stats["static_reason"] is None
    x = lucid.randn(7, 3, 45)
    y = lucid.randn(1, 3, 1)
    before = built(compiled)
    np.testing.assert_allclose(compiled(x, y).numpy(), f(x, y).numpy(), rtol=1e-5, atol=1e-5)
    assert built(compiled) == before > after_second


def test_repeated_calls_keep_no_history_beyond_the_distinct_sizes():
    """What a compiled object remembers of its calls grows with the distinct sizes it served, not
    with the number of calls (it once kept every call's types and scanned them on each call)."""
    compiled = lucid.compile(lambda x: (x * 2).relu())
    for shape in [(2, 3, 16)] * 50 + [(2, 3, 24)] * 50 + [(2, 3, 31)] * 50:
        x = lucid.randn(*shape)
        np.testing.assert_allclose(compiled(x).numpy(), np.maximum(x.numpy() * 2, 0), rtol=1e-6)
    assert len(compiled._seen) == 1 and len(compiled._served) == 3
    assert compiled.stats()["traces"] == 2 and compiled.stats()["dynamic_variants"] == 1


def dropout_net():
    """Dropout in training mode draws random numbers (the `random` operator)."""
    lucid.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 4), nn.Dropout(0.5)).train()


def test_an_operator_without_run_time_extents_keeps_static_variants_and_says_why_once(compile_log, monkeypatch,
                                                                                        tmp_path):
    """Every operator takes run-time sizes today: `random`'s lowering is made to refuse them here
    (with a cache of its own: a symbolic graph another test compiled would load without lowering)."""
    from lucid.codegen import kernels  # noqa: F401  (registers the lowerings)
    from lucid.codegen.lowering import RUN_TIME_EXTENTS

    monkeypatch.delitem(RUN_TIME_EXTENTS, "random")
    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path))
    net = dropout_net()
    compiled = lucid.compile(net)
    with lucid.no_grad():
        for n in (8, 10, 12):
            x = lucid.randn(n, 6)
            kept = net[0](x).numpy() * 2                 # a kept value is scaled by 1 / (1 - p)
            y = compiled(x).numpy()
            assert y.shape == (n, 4)
            assert np.all(np.isclose(y, 0) | np.isclose(y, kept, rtol=1e-4, atol=1e-5))
    said = [r.getMessage() for r in compile_log if "sizes vary, but" in r.getMessage()]
    assert len(said) == 1 and "random" in said[0]
    stats = compiled.stats()
    assert "random" in stats["static_reason"] and stats["variants"] == 3 and stats["dynamic_variants"] == 0
    with lucid.no_grad(), pytest.raises(CompileError, match=r"lowering of random .*symbolic sizes"):
        lucid.compile(dropout_net(), dynamic=True)(lucid.randn(2, 6))


def test_a_size_violating_a_constraint_is_a_shape_error_naming_dimension_and_constraint():
    def f(x):
        if x.shape[2] % 2 == 0:                # traced at L = 4 (the first call): records L % 2 == 0
            return x * 2
        return x
    compiled = lucid.compile(f, dynamic=True)
    np.testing.assert_allclose(compiled(lucid.ones(2, 3, 4)).numpy(), np.full((2, 3, 4), 2.0))
    (graph,) = compiled.graphs.values()
    assert [str(c) for c, _ in graph.constraints] == ["L % 2 == 0"]
    np.testing.assert_allclose(compiled(lucid.ones(3, 3, 10)).numpy(), np.full((3, 3, 10), 2.0))
    assert compiled.stats()["traces"] == 1
    with pytest.raises(ShapeError, match=r"L = 7 violates the constraint L % 2 == 0, required by the traced code"):
        compiled(lucid.ones(2, 3, 7))
    executable = next(iter(compiled.variants.values())).executable
    with pytest.raises(ShapeError, match=r"L = 9 violates the constraint L % 2 == 0"):
        executable(np.ones((2, 3, 9), np.float32))
    automatic = lucid.compile(f)                 # automatic: such a size gets a static variant instead
    for length in (4, 6, 7):
        np.testing.assert_allclose(automatic(lucid.ones(1, 3, length)).numpy(),
                                   np.full((1, 3, length), 2.0 if length % 2 == 0 else 1.0))
    assert automatic.stats()["dynamic_variants"] == 1 and automatic.stats()["variants"] == 3


def test_the_symbolic_arena_never_overlaps_live_values():
    lucid.manual_seed(0)
    graph = lucid.trace(NormNet(), lucid.spec(lucid.dim("N"), 4, lucid.dim("D", min=4), lucid.dim("H", min=2),
                                              lucid.dim("W", min=2)))
    planned = pipeline.for_inference(graph)
    plan = planned.memory_plan
    assert symbolic.is_symbolic(plan.arena_bytes)
    nodes = planned.nodes
    index = {node.output: i for i, node in enumerate(nodes)}
    last = {}
    for i, node in enumerate(nodes):
        for v in node.inputs:
            last[plan.root(v)] = i
    roots = [v for v in plan.offsets if plan.root(v) is v]
    for sizes in ({"N": 1, "D": 4, "H": 2, "W": 2}, {"N": 3, "D": 17, "H": 5, "W": 9}, {"N": 8, "D": 48, "H": 31, "W": 40}):
        arena = symbolic.evaluate(plan.arena_bytes, sizes)
        spans = []
        for v in roots:
            start = symbolic.evaluate(plan.offsets[v], sizes)
            nbytes = int(np.prod(symbolic.evaluate(v.shape, sizes))) * v.dtype.numpy.itemsize
            assert start % 64 == 0 and start + nbytes <= arena
            spans.append((index[v], last.get(v, index[v]), start, start + nbytes))
        for a in spans:
            for b in spans:
                if a is not b and a[0] <= b[1] and b[0] <= a[1]:         # live at once
                    assert a[3] <= b[2] or b[3] <= a[2], (a, b, sizes)


def test_sizes_computed_in_kernels_equal_python_arithmetic():
    from lucid.codegen.extents import emit_size
    from lucid.codegen.irgen import I64
    from lucid.codegen.jit import NativeCode, compile_module
    from lucid.codegen.target import host

    d, h = lucid.dim("D"), lucid.dim("H")
    sizes = [(d - 7) // 3, (d + 1) // 2 * h + 5, 2 * d * h - (h // 4), d % 5 - 3, ((d - 1) // 2 + 1) // 2]
    module = ir.Module("sizes")
    fn = ir.Function(module, ir.FunctionType(I64, [I64.as_pointer(), I64]), "size")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    blocks = [fn.append_basic_block(f"case{k}") for k in range(len(sizes))]
    switch = b.switch(fn.args[1], blocks[0])
    for k, (block, size) in enumerate(zip(blocks, sizes)):
        switch.add_case(ir.Constant(I64, k), block)
        b.position_at_end(block)
        b.ret(emit_size(b, size, fn.args[0], ("D", "H")))
    target = host()
    module.triple = target.triple
    native = NativeCode([compile_module(str(module), target)], target)
    run = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.POINTER(ctypes.c_int64), ctypes.c_int64)(native.address("size"))
    for values in [(1, 1), (2, 9), (6, 3), (7, 4), (33, 17), (100, 1)]:
        dims = (ctypes.c_int64 * 2)(*values)
        for k, size in enumerate(sizes):
            assert run(dims, k) == symbolic.evaluate(size, dict(zip(("D", "H"), values))), (str(size), values)


def test_specs_with_symbolic_sizes_compile_as_given():
    def f(x):
        return (x * x).sum(dim=1, keepdim=True) - x
    compiled = lucid.compile(f, lucid.spec(lucid.dim("N"), 5), dynamic=False)
    modules = built(compiled)
    for n in (1, 4, 9):
        x = lucid.randn(n, 5)
        np.testing.assert_allclose(compiled(x).numpy(), f(x).numpy(), rtol=1e-5, atol=1e-6)
    assert compiled.stats()["traces"] == 1 and built(compiled) == modules


def test_a_graph_with_symbolic_dimensions_compiles_once_for_every_size():
    graph = lucid.trace(lambda x: (x - x.mean(dim=2, keepdim=True)).relu(), lucid.spec(lucid.dim("N"), 2, lucid.dim("L")))
    compiled = lucid.compile(graph)
    for n, length in ((1, 3), (4, 10), (2, 33)):
        x = np.random.default_rng(n).standard_normal((n, 2, length)).astype(np.float32)
        expected = np.maximum(x - x.mean(axis=2, keepdims=True), 0)
        np.testing.assert_allclose(compiled(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert compiled.stats()["traces"] == 1 and compiled.stats()["dynamic_variants"] == 1
    with pytest.raises(ShapeError, match="float32"):
        compiled(np.ones((2, 3, 4), np.float32))           # a concrete size that differs: refused as before


def test_dropout_in_training_draws_the_same_numbers_at_every_size_compiled_once():
    """`random` with symbolic sizes: the compiled dropout keeps what eager keeps (the same seeded
    stream: element i's number does not depend on the size), at sizes around a vector group's edge."""
    net = dropout_net()
    compiled = lucid.compile(net, dynamic=True)
    for n in (1, 8, 3, 33, 129):
        x = lucid.randn(n, 6)
        lucid.manual_seed(7)
        with lucid.no_grad():
            got = compiled(x).numpy()
        lucid.manual_seed(7)
        with lucid.no_grad():
            expected = net(x).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"batch {n}")
        assert 0 < np.count_nonzero(got) < got.size or n == 1
    assert compiled.stats()["traces"] == 1 and compiled.stats()["dynamic_variants"] == 1
