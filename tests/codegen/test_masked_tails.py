"""Loops whose last partial vector is masked (`irgen.vectorize_masked`, used by a conv's short output
rows): compiled by the JIT's pipeline, they compute every element of every trip count and write
nothing past it; LLVM masks the tail where the target has masked stores; and each loop keeps an
identifier of its own."""
from __future__ import annotations

import ctypes
import re

import llvmlite.ir as ir
import numpy as np
import pytest

from lucid.codegen.compile_worker import compile_module
from lucid.codegen.irgen import F32, counted_loop
from lucid.codegen.jit import NativeCode
from lucid.codegen.target import host
from optimised_ir import array_function, optimised_ir

_ROW = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def _row_module(count: int | None, masked: bool, loops: int = 1) -> ir.Module:
    """`void row(float* x, float* y, i64 n)`: y[i] = max(2.5 x[i] - 1, 0) for i < count (n when count
    is None), in `loops` loops one after the other (each writes the same)."""
    module, b, source, target, n = array_function("masked_row", "row")
    for _ in range(loops):
        with counted_loop(b, n if count is None else count, masked_tail=masked) as i:
            value = b.fsub(b.fmul(b.load(b.gep(source, [i])), ir.Constant(F32, 2.5)), ir.Constant(F32, 1.0))
            clamped = b.select(b.fcmp_ordered(">", value, ir.Constant(F32, 0.0)), value, ir.Constant(F32, 0.0))
            b.store(clamped, b.gep(target, [i]))
    b.ret_void()
    return module


def _run(code: NativeCode, x: np.ndarray, n: int) -> np.ndarray:
    y = np.full(x.size + 40, -7.0, np.float32)                    # a sentinel past every element written
    _ROW(code.address("row"))(x.ctypes.data, y.ctypes.data, n)
    return y


def _expected(x: np.ndarray, n: int) -> np.ndarray:
    expected = np.full(x.size + 40, -7.0, np.float32)
    expected[:n] = np.maximum(x[:n] * np.float32(2.5) - np.float32(1.0), np.float32(0.0))
    return expected


@pytest.mark.parametrize("count", [None, 28, 7, 64])
def test_every_trip_count_computes_every_element_and_nothing_past_it(count):
    target = host()
    code = NativeCode([compile_module(_row_module(count, masked=True), target, level=3)], target)
    x = np.random.default_rng(0).standard_normal(101).astype(np.float32)
    for n in ([0, 1, 5, 15, 16, 17, 28, 31, 33, 64, 100, 101] if count is None else [count]):
        np.testing.assert_array_equal(_run(code, x, n), _expected(x, n), err_msg=f"trip count {n}")


def test_a_short_row_ends_in_a_masked_store_instead_of_a_scalar_loop():
    if "+avx" not in host().features.split(","):
        pytest.skip("the host has no masked vector stores (AVX), so the tail stays scalar")
    masked, plain = (optimised_ir(_row_module(28, masked=flag)) for flag in (True, False))
    assert "llvm.masked.store" in masked and "llvm.masked.store" not in plain
    assert "store float" not in masked                             # no scalar iteration is left
    assert "store float" in plain


def test_each_loop_has_an_identifier_of_its_own():
    text = str(_row_module(None, masked=True, loops=2))
    used = re.findall(r"!llvm\.loop (!\d+)", text)
    assert len(used) == 2 and used[0] != used[1]
    for name in used:
        definition = re.search(rf"^{name} = !{{ ([^}}]*) }}", text, re.MULTILINE).group(1)
        assert definition.split(", ")[0] == name                    # self-referential, as LLVM requires
        hint = re.search(rf"^{definition.split(', ')[1]} = !{{ ([^}}]*) }}", text, re.MULTILINE).group(1)
        assert '"llvm.loop.vectorize.predicate.enable"' in hint
