"""exp, expm1 and tanh for float32 as straight-line LLVM IR (no calls, no branches), so that LLVM's loop
vectoriser vectorises the elementwise, softmax and activation loops that use them.

A libm call or the `llvm.exp.f32` intrinsic runs one scalar call per element: LLVM has no vector
math library to widen them into. These versions use only arithmetic, integer bit operations,
compares and selects, each of which has a vector instruction.

`exp(b, x)`: x = k·ln2 + r with k = round(x / ln2) and |r| <= ln2/2 (ln2 split into a short high
part, so k·ln2_high is exact, and a low correction); e^r - 1 = q by its degree-8 Taylor polynomial
(truncation error below 0.05 ulp on that interval); 1 + q times 2^k built from exponent bits, as two
factors 2^(k//2)·2^(k - k//2) so that k = 128 (results near FLT_MAX) and k down to -150 (denormal
results, rounded once by the last multiply) stay in range. Inputs are first clamped to
[-104, 89], outside of which the float32 result is 0 or inf; NaN is passed through.

`expm1(b, module, x)`: the same reduction; 2^k·q + (2^k - 1) while |k| <= 24 (2^k - 1 exact, and
for k = 0 just q, accurate near 0), else e^x - 1 (-1 or ≈ e^x there); the sign of x (so -0 stays -0).

`tanh(b, x)`: sign(x) times, for |x| < 0.55, the odd Taylor series |x| + |x|³·Q(x²) to x^19 (terms shrink by
about (2x/π)² per step, so it is below 0.1 ulp there), else 1 - 2/(e^(2|x|) + 1),
which reaches 1 exactly once e^(2|x|) overflows. Both are within 2 ulp of the exact result
(tests/codegen/test_vector_math.py measures it). float64 keeps the libm / intrinsic calls.
"""
from __future__ import annotations

import math
from fractions import Fraction

import llvmlite.ir as ir

from ..irgen import F32, intrinsic

I32 = ir.IntType(32)

_LN2_HIGH = 0.693359375            # 355/512: k·_LN2_HIGH is exact for the |k| <= 150 used here
_LN2_LOW = math.log(2.0) - _LN2_HIGH
_ROUNDING = 12582912.0             # 1.5·2^23: adding it rounds a float32 of magnitude < 2^22 to an integer
_LOWEST_INPUT, _HIGHEST_INPUT = -104.0, 89.0
_EXP_TERMS = [1 / math.factorial(n) for n in range(2, 9)]          # e^r - 1 = r + r²·(1/2! + r/3! + ...)
_EXPM1_EXACT_SHIFT = 24            # 2^k - 1 is exact in float32 for |k| <= 24
_TANH_SERIES_BELOW = 0.55


def _bernoulli(count: int) -> list:
    """B_0 .. B_(count-1), exactly (B_1 = -1/2)."""
    numbers: list = []
    for m in range(count):
        numbers.append(Fraction(1) if m == 0 else
                       -sum(math.comb(m + 1, j) * numbers[j] for j in range(m)) / (m + 1))
    return numbers


def _tanh_series(terms: int) -> list:
    """Coefficients c_n of tanh x = Σ c_n·x^(2n-1), n = 1..terms: 2^2n·(2^2n - 1)·B_2n / (2n)!."""
    bernoulli = _bernoulli(2 * terms + 1)
    return [float(4 ** n * (4 ** n - 1) * bernoulli[2 * n] / math.factorial(2 * n)) for n in range(1, terms + 1)]


_TANH_TERMS = _tanh_series(10)[1:]     # after the leading 1·x


def _f32(value: float) -> ir.Constant:
    return ir.Constant(F32, value)


def _horner(b: ir.IRBuilder, z: ir.Value, coefficients: list) -> ir.Value:
    """c0 + z·(c1 + z·(c2 + ...))."""
    total = _f32(coefficients[-1])
    for c in reversed(coefficients[:-1]):
        total = b.fadd(_f32(c), b.fmul(z, total))
    return total


def _power_of_two(b: ir.IRBuilder, k: ir.Value) -> ir.Value:
    """2^k as a float32 for an i32 k in [-126, 127]: the biased exponent in the exponent field."""
    return b.bitcast(b.shl(b.add(k, ir.Constant(I32, 127)), ir.Constant(I32, 23)), F32)


class _Reduced:
    """x = k·ln2 + r with k = round(x / ln2), |r| <= ln2/2, and q = e^r - 1, for x clamped to
    [-104, 89] (NaN becomes -104: callers pass NaN through themselves)."""

    def __init__(self, b: ir.IRBuilder, x: ir.Value):
        low = b.select(b.fcmp_unordered("<", x, _f32(_LOWEST_INPUT)), _f32(_LOWEST_INPUT), x)
        clamped = b.select(b.fcmp_ordered(">", low, _f32(_HIGHEST_INPUT)), _f32(_HIGHEST_INPUT), low)
        shifted = b.fadd(b.fmul(clamped, _f32(1 / math.log(2.0))), _f32(_ROUNDING))
        self.k = b.fsub(shifted, _f32(_ROUNDING))
        r = b.fsub(b.fsub(clamped, b.fmul(self.k, _f32(_LN2_HIGH))), b.fmul(self.k, _f32(_LN2_LOW)))
        self.q = b.fadd(r, b.fmul(b.fmul(r, r), _horner(b, r, _EXP_TERMS)))
        self.whole = b.fptosi(self.k, I32)

    def exp(self, b: ir.IRBuilder) -> ir.Value:
        """(1 + q)·2^k, as two factors 2^(k//2)·2^(k - k//2) so every k in [-150, 128] is in range."""
        half = b.ashr(self.whole, ir.Constant(I32, 1))
        e_r = b.fadd(_f32(1.0), self.q)
        return b.fmul(b.fmul(e_r, _power_of_two(b, half)), _power_of_two(b, b.sub(self.whole, half)))


def _pass_nan(b: ir.IRBuilder, x: ir.Value, value: ir.Value) -> ir.Value:
    return b.select(b.fcmp_unordered("uno", x, x), x, value)


def exp(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """e^x for a float32 `x`, within 1 ulp (see the module docstring)."""
    return _pass_nan(b, x, _Reduced(b, x).exp(b))


def expm1(b: ir.IRBuilder, module: ir.Module, x: ir.Value) -> ir.Value:
    """e^x - 1 for a float32 `x`, within 2 ulp (see the module docstring)."""
    reduced = _Reduced(b, x)
    bound = ir.Constant(I32, _EXPM1_EXACT_SHIFT)
    below = b.select(b.icmp_signed(">", reduced.whole, bound), bound, reduced.whole)
    scale = _power_of_two(b, b.select(b.icmp_signed("<", below, b.neg(bound)), b.neg(bound), below))
    near = b.fadd(b.fmul(scale, reduced.q), b.fsub(scale, _f32(1.0)))
    far = b.fsub(reduced.exp(b), _f32(1.0))
    magnitude_k = b.call(intrinsic(module, "llvm.fabs.f32", F32, [F32]), [reduced.k])
    value = b.select(b.fcmp_ordered(">", magnitude_k, _f32(_EXPM1_EXACT_SHIFT)), far, near)
    signed = b.call(intrinsic(module, "llvm.copysign.f32", F32, [F32, F32]), [value, x])      # keeps -0
    return _pass_nan(b, x, signed)


def tanh(b: ir.IRBuilder, module: ir.Module, x: ir.Value) -> ir.Value:
    """tanh x for a float32 `x`, within 2 ulp (see the module docstring)."""
    magnitude = b.call(intrinsic(module, "llvm.fabs.f32", F32, [F32]), [x])
    square = b.fmul(x, x)
    series = b.fadd(magnitude, b.fmul(b.fmul(magnitude, square), _horner(b, square, _TANH_TERMS)))
    one = _f32(1.0)
    e = exp(b, b.fadd(magnitude, magnitude))
    saturating = b.fsub(one, b.fdiv(_f32(2.0), b.fadd(e, one)))
    unsigned = b.select(b.fcmp_ordered("<", magnitude, _f32(_TANH_SERIES_BELOW)), series, saturating)
    return b.call(intrinsic(module, "llvm.copysign.f32", F32, [F32, F32]), [unsigned, x])      # keeps -0
