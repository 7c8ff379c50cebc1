"""float32 exp, expm1 and tanh in straight-line IR (`lucid/codegen/kernels/vector_math.py`).

- Accuracy through compiled kernels (`lucid.compile` of lucid.exp / tanh / sigmoid / silu / elu
  (expm1) / softmax on a big array): max error in float32 ulps against float64 NumPy, over every 211th bit
  pattern of the float32 values in [-105, 105] (beyond, exp is 0 or inf and tanh ±1), plus edge
  values: ±0, denormals, ±inf, NaN, the overflow and underflow thresholds, values near 0 and near
  tanh's switch from its series to exp.
- Vectorisation: a loop applying the scalar sigmoid / tanh rule, optimised by the same pass
  pipeline as the JIT's (`compile_worker.compile_module`), holds float vectors of the width LLVM's
  tuning for the host prefers (8 floats on AVX2 and on Intel's AVX-512 cores) and calls no
  exp, expm1 or tanh function.
"""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

import lucid

from optimised_ir import array_function, optimised_ir

TINY = float(np.finfo(np.float32).smallest_subnormal)
EDGES = np.array([0.0, -0.0, TINY, -TINY, 1e-40, -1e-40, 1e-38, -1e-38, 1e-30, -1e-20, 1e-10, 1e-7, -1e-7,
                  1e-4, -1e-4, 0.125, 0.549, 0.55, 0.551, -0.55, 0.34657, -0.34657, 1.0, -1.0, 9.0, 9.1, 10.0,
                  -9.1, 20.0, -20.0, 88.72, 88.7228, 88.7229, 88.73, 89.0, 89.5, 100.0, -87.33, -87.34, -100.0,
                  -103.27, -103.28, -103.5, -103.98, -104.0, -104.1, -200.0, 3e38, -3e38,
                  np.inf, -np.inf, np.nan, -np.nan], dtype=np.float32)


def _sweep() -> np.ndarray:
    magnitudes = np.arange(0, np.float32(105.0).view(np.uint32), 211, dtype=np.uint32).view(np.float32)
    return np.concatenate([magnitudes, -magnitudes, EDGES])


def ulp_errors(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units of the float32 spacing at the float32-rounded exact value; 0 where
    got equals that rounding (so infinities and NaN compare by identity)."""
    rounded = exact.astype(np.float32)
    spacing = np.maximum(np.spacing(np.abs(rounded)).astype(np.float64), TINY)
    same = (got == rounded) | (np.isnan(got) & np.isnan(rounded))
    with np.errstate(invalid="ignore"):
        return np.where(same, 0.0, np.abs(got.astype(np.float64) - exact) / spacing)


def _sigmoid(x):
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def _silu(x):
    """silu's definition x / (1 + exp(-x)) gives -0 (NaN at -inf) once exp(-x) overflows float32
    (x < -88.7228): the reference there is that, not x·sigmoid(x)."""
    return np.where(x < -np.log(np.finfo(np.float32).max), np.where(np.isinf(x), np.nan, -0.0), x * _sigmoid(x))


CASES = {                    # function, float64 reference, max ulps allowed (measured max in brackets)
    "exp": (lucid.exp, np.exp, 1.0),                                  # (0.93)
    "tanh": (lucid.tanh, np.tanh, 1.5),                               # (1.39; libm tanhf: 2.12)
    "sigmoid": (lucid.sigmoid, _sigmoid, 2.5),                        # (2.22, as with libm expf)
    "silu": (lucid.nn.functional.silu, _silu, 3.0),                   # (2.19)
    "elu": (lucid.nn.functional.elu, lambda x: np.where(x > 0, x, np.expm1(x)), 1.5),   # (0.83: expm1 of x < 0)
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_max_ulp_error_against_float64(name):
    function, reference, allowed = CASES[name]
    x = _sweep()
    got = lucid.compile(function)(lucid.tensor(x)).numpy()
    with np.errstate(over="ignore", invalid="ignore"):
        errors = ulp_errors(got, reference(x.astype(np.float64)))
    worst = int(np.argmax(errors))
    assert errors[worst] <= allowed, f"{name}({x[worst]!r}) = {got[worst]!r}: {errors[worst]:.2f} ulp"


def test_edge_values_exactly():
    got = lucid.compile(lambda t: (lucid.exp(t), lucid.tanh(t), lucid.nn.functional.elu(-t)))(lucid.tensor(EDGES))
    exp, tanh, elu = (g.numpy() for g in got)
    assert np.array_equal(np.signbit(elu[EDGES == 0]), [True, False])      # elu(-0) = expm1(-0) = -0
    assert elu[EDGES == np.inf].tolist() == [-1.0] and np.isnan(elu[np.isnan(EDGES)]).all()
    positive = EDGES > 0                                                  # elu(-x) = expm1(-x) there
    assert np.array_equal(elu[positive], np.expm1(-EDGES[positive].astype(np.float64)).astype(np.float32))
    with np.errstate(over="ignore"):
        assert np.array_equal(np.isinf(exp), EDGES.astype(np.float64) > np.log(np.finfo(np.float32).max))
    assert exp[EDGES < -104].tolist() == [0.0] * int((EDGES < -104).sum())
    assert exp[EDGES == np.float32(-103.5)].tolist() == [TINY]           # e^-103.5 = 0.8 of the least denormal
    assert exp[EDGES == np.float32(-103.98)].tolist() == [0.0]            # 0.497 of it
    assert np.isnan(exp[np.isnan(EDGES)]).all() and np.isnan(tanh[np.isnan(EDGES)]).all()
    assert tanh[np.isinf(EDGES)].tolist() == np.sign(EDGES[np.isinf(EDGES)]).tolist()
    assert np.array_equal(np.signbit(tanh[EDGES == 0]), np.signbit(EDGES[EDGES == 0]))
    assert exp[EDGES == 0].tolist() == [1.0, 1.0]


def test_softmax_rows_against_float64():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 1000)) * 30).astype(np.float32)
    got = lucid.compile(lambda t: lucid.nn.functional.softmax(t, dim=1))(lucid.tensor(x)).numpy()
    shifted = np.exp((x - x.max(axis=1, keepdims=True)).astype(np.float64))    # the kernel's float32 x - max
    np.testing.assert_allclose(got, shifted / shifted.sum(axis=1, keepdims=True), rtol=2e-6, atol=1e-38)


@pytest.mark.parametrize("rule", ["sigmoid", "tanh", "silu", "elu"])
def test_loops_using_them_vectorise(rule):
    from lucid.codegen.irgen import counted_loop
    from lucid.codegen.kernels.scalar import SCALAR, Scalars
    from lucid.codegen.target import host

    module, b, source, target, n = array_function("vector_math_loop", "apply")
    with counted_loop(b, n) as i:
        node = SimpleNamespace(attrs={"alpha": 1.0, "scale": 1.0, "input_scale": 1.0})
        value = SCALAR[rule](Scalars(b, module), node, b.load(b.gep(source, [i])))
        b.store(value, b.gep(target, [i]))
    b.ret_void()

    optimised = optimised_ir(module)
    # The loop vectoriser picks its width from the host's tuning: all of an AVX2 register, and half
    # of an AVX-512 one on Intel cores, whose LLVM tuning prefers 256-bit loops (8 floats).
    widths = [int(w) for w in re.findall(r"fmul (?:fast )?<(\d+) x float>", optimised)]
    assert widths and max(widths) >= min(host().vector_floats, 8), f"not vectorised: widths {widths}"
    assert not any(f"@{name}" in optimised for name in ("llvm.exp", "expf", "expm1f", "tanhf"))
