"""Scalar code for every elementwise operator: how one output element is computed from its operands.

Which operators are elementwise is their definitions' declaration (`OpKind.ELEMENTWISE`); this module
holds each one's scalar rule, and a test checks that the two agree.
`SCALAR[op](s, node, *operands)` returns the LLVM value of one element of `node`'s output, given its
operands already converted to the node's computation type (see `operand_type`). Semantics follow
the NumPy reference kernels: NaN propagates through max/min/relu/clamp, comparisons with NaN are
false except `ne`, integer division is true division, bool is i1 in registers.

`evaluate(s, nodes, env)` runs a chain (or DAG) of elementwise nodes on scalars: this is how single
operators, fused groups and convolution epilogues share one code path.
"""
from __future__ import annotations

import math

import llvmlite.ir as ir

from ...ir.types import as_dtype, bool_
from ..irgen import F32, F64, I1, I64, float_suffix, intrinsic
from . import vector_math

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class Scalars:
    """An IR builder plus the module (for intrinsics); helpers for typed scalar constants."""

    def __init__(self, b: ir.IRBuilder, module: ir.Module):
        self.b, self.module = b, module

    def const(self, ty: ir.Type, value) -> ir.Constant:
        if isinstance(ty, ir.IntType):
            return ir.Constant(ty, int(value))
        return ir.Constant(ty, float(value))

    def call(self, name: str, ty: ir.Type, *args) -> ir.Value:
        return self.b.call(intrinsic(self.module, f"llvm.{name}.{float_suffix(ty)}", ty, [ty] * len(args)), list(args))

    def libm(self, name: str, ty: ir.Type, x: ir.Value) -> ir.Value:
        return self.b.call(intrinsic(self.module, name + ("f" if ty == F32 else ""), ty, [ty]), [x])

    def exp(self, x: ir.Value) -> ir.Value:
        """e^x: float32 in straight-line IR that vectorises (`vector_math`), float64 by the intrinsic."""
        return vector_math.exp(self.b, x) if x.type == F32 else self.call("exp", x.type, x)

    def expm1(self, x: ir.Value) -> ir.Value:
        """e^x - 1: float32 in straight-line IR that vectorises (`vector_math`), float64 by libm."""
        return vector_math.expm1(self.b, self.module, x) if x.type == F32 else self.libm("expm1", x.type, x)

    def tanh(self, x: ir.Value) -> ir.Value:
        """tanh x: float32 in straight-line IR that vectorises (`vector_math`), float64 by libm."""
        return vector_math.tanh(self.b, self.module, x) if x.type == F32 else self.libm("tanh", x.type, x)


def register_type(dtype) -> ir.Type:
    """The LLVM type of a value of this dtype in registers (bool: i1)."""
    return {"float32": F32, "float64": F64, "int64": I64, "bool": I1}[as_dtype(dtype).name]


def convert(s: Scalars, value: ir.Value, source, target) -> ir.Value:
    """Convert a register value between lucid dtypes (NumPy's astype rules; float -> int truncates)."""
    source, target = as_dtype(source), as_dtype(target)
    b, to = s.b, register_type(target)
    if source == target:
        return value
    if target == bool_:
        return b.fcmp_unordered("!=", value, s.const(value.type, 0)) if source.is_floating else \
            b.icmp_unsigned("!=", value, s.const(value.type, 0))
    if source == bool_:
        return b.uitofp(value, to) if target.is_floating else b.zext(value, to)
    if source.is_floating and target.is_floating:
        return b.fpext(value, to) if to == F64 else b.fptrunc(value, to)
    return b.sitofp(value, to) if target.is_floating else b.fptosi(value, to)


def operand_type(node):
    """The dtype operands are converted to before computing: the output's for arithmetic, the
    promoted input dtype for comparisons, bool for where's condition."""
    if node.op in _COMPARISONS:
        from ...ir.types import promote

        return promote(*(v.dtype for v in node.inputs))
    return node.output.dtype


def evaluate(s: Scalars, nodes: list, load) -> dict:
    """Compute every node's scalar, in order. Operands produced by earlier nodes come from those;
    any other operand k of a node comes from `load(node, k)` (an LLVM scalar in the value's dtype).
    Returns Value -> scalar for every node."""
    env: dict = {}
    for node in nodes:
        work = operand_type(node)
        operands = []
        for k, v in enumerate(node.inputs):
            value = env[v] if v in env else load(node, k)
            operands.append(value if (node.op == "where" and k == 0) else convert(s, value, v.dtype, work))
        env[node.output] = SCALAR[node.op](s, node, *operands)
    return env


# ---------------------------------------------------------------------------------------------
# The scalar rules


def _float(x) -> bool:
    return isinstance(x.type, (ir.FloatType, ir.DoubleType))


def _neg(s, node, x):
    return s.b.fneg(x) if _float(x) else s.b.neg(x)


def _abs(s, node, x):
    if _float(x):
        return s.call("fabs", x.type, x)
    return s.b.select(s.b.icmp_signed("<", x, s.const(x.type, 0)), s.b.neg(x), x)


def _sign(s, node, x):
    b, zero, one = s.b, s.const(x.type, 0), s.const(x.type, 1)
    if _float(x):
        positive = b.select(b.fcmp_ordered(">", x, zero), one, zero)
        signed = b.select(b.fcmp_ordered("<", x, zero), s.const(x.type, -1), positive)
        return b.select(b.fcmp_unordered("uno", x, x), x, signed)         # NaN stays NaN
    return b.select(b.icmp_signed("<", x, zero), s.const(x.type, -1), b.select(b.icmp_signed(">", x, zero), one, zero))


def _sigmoid(s, node, x):
    b, one = s.b, s.const(x.type, 1)
    e = s.exp(b.fneg(s.call("fabs", x.type, x)))
    denominator = b.fadd(one, e)
    return b.select(b.fcmp_ordered(">=", x, s.const(x.type, 0)), b.fdiv(one, denominator), b.fdiv(e, denominator))


def _relu(s, node, x):
    zero = s.const(x.type, 0)
    if _float(x):
        return s.b.select(s.b.fcmp_ordered("<", x, zero), zero, x)
    return s.b.select(s.b.icmp_signed("<", x, zero), zero, x)


def _leaky_relu(s, node, x):
    slope = s.const(x.type, node.attrs["negative_slope"])
    return s.b.select(s.b.fcmp_ordered(">", x, s.const(x.type, 0)), x, s.b.fmul(x, slope))


def _gelu(s, node, x):
    b, half, one = s.b, s.const(x.type, 0.5), s.const(x.type, 1)
    if node.attrs["approximate"] == "tanh":
        cube = b.fmul(b.fmul(x, x), x)
        inner = b.fmul(s.const(x.type, _SQRT_2_OVER_PI), b.fadd(x, b.fmul(s.const(x.type, 0.044715), cube)))
        return b.fmul(b.fmul(half, x), b.fadd(one, s.tanh(inner)))
    erf = s.libm("erf", x.type, b.fdiv(x, s.const(x.type, math.sqrt(2.0))))
    return b.fmul(b.fmul(half, x), b.fadd(one, erf))


def _pow(s, node, x):
    exponent = node.attrs["exponent"]
    if exponent == 2:
        return s.b.fmul(x, x)
    if exponent == 1:
        return x
    if exponent == 0.5:                  # NumPy's power takes sqrt here: pow(-inf, 0.5) is NaN, not inf
        return s.call("sqrt", x.type, x)
    return s.call("pow", x.type, x, s.const(x.type, exponent))


def _clamp(s, node, x):
    b = s.b
    less, greater = (b.fcmp_ordered, b.fcmp_ordered) if _float(x) else (b.icmp_signed, b.icmp_signed)
    if node.attrs["min"] is not None:
        low = s.const(x.type, node.attrs["min"])
        x = b.select(less("<", x, low), low, x)
    if node.attrs["max"] is not None:
        high = s.const(x.type, node.attrs["max"])
        x = b.select(greater(">", x, high), high, x)
    return x


def _binary(float_op: str, int_op: str, bool_op: str):
    def rule(s, node, x, y):
        return getattr(s.b, float_op if _float(x) else bool_op if x.type == I1 else int_op)(x, y)
    return rule


def _normalize(s, node, x, mean, rstd, weight, bias):
    b = s.b
    return b.fadd(b.fmul(b.fmul(b.fsub(x, mean), rstd), weight), bias)


def _extremum(name: str, predicate: str):
    def rule(s, node, x, y):
        if _float(x):
            return s.call(name, x.type, x, y)
        if x.type == I1:
            return s.b.or_(x, y) if name == "maximum" else s.b.and_(x, y)
        return s.b.select(s.b.icmp_signed(predicate, x, y), x, y)
    return rule


_COMPARISONS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _comparison(predicate: str):
    def rule(s, node, x, y):
        if _float(x):
            compare = s.b.fcmp_unordered if predicate == "!=" else s.b.fcmp_ordered
            return compare(predicate, x, y)
        return (s.b.icmp_unsigned if x.type == I1 else s.b.icmp_signed)(predicate, x, y)
    return rule


def _unary_float(name: str):
    return lambda s, node, x: s.call(name, x.type, x)


def _unary_libm(name: str):
    return lambda s, node, x: s.libm(name, x.type, x)


SCALAR = {
    "neg": _neg, "abs": _abs, "sign": _sign,
    "exp": lambda s, node, x: s.exp(x), "log": _unary_float("log"), "sqrt": _unary_float("sqrt"),
    "erf": _unary_libm("erf"), "tanh": lambda s, node, x: s.tanh(x),
    "sigmoid": _sigmoid, "relu": _relu, "leaky_relu": _leaky_relu, "gelu": _gelu,
    "pow_scalar": _pow, "clamp": _clamp,
    "cast": lambda s, node, x: x,          # operands arrive converted to the output dtype
    "add": _binary("fadd", "add", "or_"), "sub": _binary("fsub", "sub", "xor"),
    "mul": _binary("fmul", "mul", "and_"), "div": _binary("fdiv", "sdiv", "sdiv"),
    "normalize": _normalize,
    "maximum": _extremum("maximum", ">"), "minimum": _extremum("minimum", "<"),
    "where": lambda s, node, c, x, y: s.b.select(c, x, y),
    **{op: _comparison(p) for op, p in _COMPARISONS.items()},
}


# ---------------------------------------------------------------------------------------------
# Activations (`lucid/ir/ops/activation.py`): the same formulas as their reference kernels


def _elu(s, node, x):
    attrs, b = node.attrs, s.b
    negative = b.fmul(s.expm1(b.fmul(x, s.const(x.type, attrs["input_scale"]))),
                      s.const(x.type, attrs["alpha"] * attrs["scale"]))
    return b.select(b.fcmp_ordered(">", x, s.const(x.type, 0)), b.fmul(x, s.const(x.type, attrs["scale"])), negative)


def _log1p_exp(s, x):
    return s.libm("log1p", x.type, s.exp(x))


def _softplus(s, node, x):
    b, beta = s.b, s.const(x.type, node.attrs["beta"])
    scaled = b.fmul(x, beta)
    smooth = b.fdiv(_log1p_exp(s, scaled), beta)
    return b.select(b.fcmp_ordered(">", scaled, s.const(x.type, node.attrs["threshold"])), x, smooth)


def _silu(s, node, x):
    return s.b.fdiv(x, s.b.fadd(s.const(x.type, 1), s.exp(s.b.fneg(x))))


def _mish(s, node, x):
    return s.b.fmul(x, s.tanh(_log1p_exp(s, x)))


def _clip(s, x, low, high):
    """min(max(x, low), high) for constant bounds; NaN passes through."""
    return s.call("minimum", x.type, s.call("maximum", x.type, x, s.const(x.type, low)), s.const(x.type, high))


def _hardtanh(s, node, x):
    return _clip(s, x, node.attrs["min_val"], node.attrs["max_val"])


def _hardsigmoid(s, node, x):
    return s.b.fdiv(_clip(s, s.b.fadd(x, s.const(x.type, 3)), 0, 6), s.const(x.type, 6))


def _hardswish(s, node, x):
    return s.b.fdiv(s.b.fmul(x, _clip(s, s.b.fadd(x, s.const(x.type, 3)), 0, 6)), s.const(x.type, 6))


def _prelu(s, node, x, weight):
    return s.b.select(s.b.fcmp_ordered(">", x, s.const(x.type, 0)), x, s.b.fmul(weight, x))


SCALAR.update({"elu": _elu, "softplus": _softplus, "silu": _silu, "mish": _mish, "hardtanh": _hardtanh,
               "hardsigmoid": _hardsigmoid, "hardswish": _hardswish, "prelu": _prelu})
