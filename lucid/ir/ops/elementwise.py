"""Elementwise operators: unary maps, broadcasting binary maps, comparisons, `where` and `cast`."""
from __future__ import annotations

import math

import numpy as np

from .. import symbolic
from ..types import TensorType, as_dtype, bool_, float32, promote
from .attributes import AnyOf, Bool, OneOf, Optional, Real
from .registry import OpDef, OpKind, emit, register

_erf_object = np.frompyfunc(math.erf, 1, 1)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf elementwise (an object-array map of math.erf; an array even for 0-d input)."""
    return np.asarray(_erf_object(x))


def broadcast_shapes(opdef: OpDef, *shapes: tuple) -> tuple:
    """NumPy broadcasting of `shapes` (`symbolic.broadcast_shapes` where they hold symbolic sizes); a
    ShapeError naming `opdef` when they do not broadcast."""
    if symbolic.is_symbolic(shapes):
        return symbolic.broadcast_shapes(*shapes, what=opdef.name)
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise opdef.error("cannot broadcast shapes " + " and ".join(str(tuple(s)) for s in shapes)) from None


# ----------------------------------------------------------------------------------------------
# Unary maps


class Unary(OpDef):
    """y = f(x) elementwise; same shape and dtype. `float_only` ops refuse integer inputs."""

    kind = OpKind.ELEMENTWISE
    float_only = True

    def infer(self, attrs, x):
        if self.float_only:
            self.require_float(x)
        return x

    def compute(self, attrs, x):
        return self.fn(attrs, x)


@register
class Neg(Unary):
    name = "neg"
    float_only = False

    def infer(self, attrs, x):
        if x.dtype == bool_:
            raise self.dtype_error("negation of a bool tensor is not supported; use logical operations")
        return x

    def fn(self, attrs, x):
        return np.negative(x)

    def grad(self, attrs, inputs, y, g):
        return (neg(g),)


@register
class Abs(Unary):
    name = "abs"
    float_only = False

    def fn(self, attrs, x):
        return np.abs(x)

    def grad(self, attrs, inputs, y, g):
        x = inputs[0]          # PyTorch's rule: sign(x), 0 at 0 and at NaN
        return (where(gt(x, 0.0), g, where(lt(x, 0.0), neg(g), 0.0)),)


@register
class Sign(Unary):
    name = "sign"
    float_only = False
    differentiable = False

    def fn(self, attrs, x):
        return np.sign(x)


@register
class Exp(Unary):
    name = "exp"

    def fn(self, attrs, x):
        return np.exp(x)

    def grad(self, attrs, inputs, y, g):
        return (mul(g, y),)


@register
class Log(Unary):
    name = "log"

    def fn(self, attrs, x):
        return np.log(x)

    def grad(self, attrs, inputs, y, g):
        return (div(g, inputs[0]),)


@register
class Sqrt(Unary):
    name = "sqrt"

    def fn(self, attrs, x):
        return np.sqrt(x)

    def grad(self, attrs, inputs, y, g):
        return (div(g, mul(y, 2.0)),)


@register
class Erf(Unary):
    name = "erf"

    def fn(self, attrs, x):
        return _erf(x).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        x = inputs[0]
        return (mul(g, mul(exp(neg(mul(x, x))), 2.0 / math.sqrt(math.pi))),)


@register
class Tanh(Unary):
    name = "tanh"

    def fn(self, attrs, x):
        return np.tanh(x)

    def grad(self, attrs, inputs, y, g):
        return (mul(g, sub(1.0, mul(y, y))),)


@register
class Sigmoid(Unary):
    name = "sigmoid"

    def fn(self, attrs, x):
        # exp of a non-positive argument only, so large |x| neither overflows nor warns.
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        return (mul(g, mul(y, sub(1.0, y))),)


@register
class Relu(Unary):
    name = "relu"
    float_only = False

    def fn(self, attrs, x):
        return np.maximum(x, 0).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        return (where(le(y, 0.0), 0.0, g),)        # PyTorch's rule: a NaN passes the gradient


@register
class LeakyRelu(Unary):
    name = "leaky_relu"
    attributes = {"negative_slope": Real()}

    def fn(self, attrs, x):
        return np.where(x > 0, x, x * attrs["negative_slope"]).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        """PyTorch's rule, g where x > 0 else g * slope. With a slope >= 0, y > 0 exactly where x > 0
        (a NaN in both or neither), so the mask reads the output, which a following layer's
        gradient keeps anyway: the input need not be saved, and the partition recomputes the mask."""
        slope = attrs["negative_slope"]
        positive = gt(y, 0.0) if slope >= 0 else gt(inputs[0], 0.0)
        # g times exactly 1 or the slope (the 1 of g's dtype: a Python 1.0 beside a bool alone would
        # be float32), g and the mask each read once: fusion merges trees, so the product joins the
        # kernel making g (an input-gradient conv's epilogue)
        return (mul(g, where(positive, g.new_full((), 1.0), slope)),)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@register
class Gelu(Unary):
    """GELU; attribute `approximate` is 'none' (x * Phi(x), exact erf) or 'tanh' (PyTorch's formula)."""

    name = "gelu"
    attributes = {"approximate": OneOf("none", "tanh")}

    def infer(self, attrs, x):
        if attrs["approximate"] not in ("none", "tanh"):
            raise self.error(f"approximate must be 'none' or 'tanh', got {attrs['approximate']!r}")
        return super().infer(attrs, x)

    def fn(self, attrs, x):
        if attrs["approximate"] == "tanh":
            return (0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))).astype(x.dtype)
        return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(x.dtype))).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        x = inputs[0]
        if attrs["approximate"] == "tanh":
            inner = mul(add(x, mul(pow_scalar(x, 3.0), 0.044715)), _SQRT_2_OVER_PI)
            t = tanh(inner)
            d_inner = mul(add(mul(mul(x, x), 3 * 0.044715), 1.0), _SQRT_2_OVER_PI)
            dy = add(mul(add(t, 1.0), 0.5), mul(mul(mul(x, 0.5), sub(1.0, mul(t, t))), d_inner))
        else:
            cdf = mul(add(erf(mul(x, 1.0 / math.sqrt(2.0))), 1.0), 0.5)
            pdf = mul(exp(mul(mul(x, x), -0.5)), 1.0 / math.sqrt(2.0 * math.pi))
            dy = add(cdf, mul(x, pdf))
        return (mul(g, dy),)


@register
class PowScalar(Unary):
    """y = x ** exponent for a constant exponent."""

    name = "pow_scalar"
    attributes = {"exponent": Real()}

    def fn(self, attrs, x):
        return np.power(x, attrs["exponent"]).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        e = attrs["exponent"]
        return (mul(g, mul(pow_scalar(inputs[0], e - 1.0), e)),)


@register
class Clamp(Unary):
    """y = min(max(x, min), max); either bound may be None. The gradient passes where min <= x <= max."""

    name = "clamp"
    float_only = False
    attributes = {"min": Optional(AnyOf(Real(), Bool())), "max": Optional(AnyOf(Real(), Bool()))}

    def infer(self, attrs, x):
        float_bound = any(isinstance(attrs[b], float) for b in ("min", "max"))
        return TensorType(x.shape, float32) if float_bound and not x.dtype.is_floating else x

    def fn(self, attrs, x):
        x = x.astype(self.infer(attrs, TensorType(x.shape, x.dtype)).dtype.numpy, copy=False)
        return np.clip(x, attrs["min"], attrs["max"]).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        x, low, high = inputs[0], attrs["min"], attrs["max"]      # PyTorch's rule: 0 at NaN
        if high is not None:
            g = where(le(x, high), g, 0.0)
        return (g if low is None else where(ge(x, low), g, 0.0),)


@register
class Cast(OpDef):
    """Convert to attribute `dtype` (a dtype name)."""

    name = "cast"
    kind = OpKind.ELEMENTWISE
    attributes = {"dtype": OneOf("float32", "float64", "int64", "bool")}

    def infer(self, attrs, x):
        return TensorType(x.shape, as_dtype(attrs["dtype"]))

    def compute(self, attrs, x):
        return x.astype(as_dtype(attrs["dtype"]).numpy)

    def grad(self, attrs, inputs, y, g):
        x = inputs[0]
        return (cast(g, x.dtype) if x.dtype.is_floating else None,)


# ----------------------------------------------------------------------------------------------
# Broadcasting binary maps


def sum_to_shape(g, shape: tuple):
    """Sum a broadcast gradient `g` back down to `shape` (the inverse of broadcasting)."""
    from .reduction import sum_
    from .shape import reshape

    shape = tuple(shape)
    if symbolic.same(tuple(g.shape), shape):
        return g
    lead = len(g.shape) - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if symbolic.same(n, 1) and not symbolic.same(g.shape[lead + i], 1))
    return reshape(sum_(g, axes, keepdims=False), shape)


class Binary(OpDef):
    """z = f(x, y) with NumPy broadcasting; the dtype is the promoted input dtype."""

    kind = OpKind.ELEMENTWISE

    def infer(self, attrs, x, y):
        return TensorType(broadcast_shapes(self, x.shape, y.shape), promote(x.dtype, y.dtype))

    def compute(self, attrs, x, y):
        return self.fn(x, y)

    def grad(self, attrs, inputs, z, g):
        x, y = inputs
        gx, gy = self.local_grads(x, y, z, g)
        return (None if gx is None else sum_to_shape(gx, x.shape),
                None if gy is None else sum_to_shape(gy, y.shape))


@register
class Add(Binary):
    name = "add"
    fn = staticmethod(np.add)

    def local_grads(self, x, y, z, g):
        return g, g


@register
class Sub(Binary):
    name = "sub"
    fn = staticmethod(np.subtract)

    def local_grads(self, x, y, z, g):
        return g, neg(g)


@register
class Mul(Binary):
    name = "mul"
    fn = staticmethod(np.multiply)

    def local_grads(self, x, y, z, g):
        return mul(g, y), mul(g, x)


@register
class Div(Binary):
    name = "div"

    def infer(self, attrs, x, y):
        out = super().infer(attrs, x, y)
        return out if out.dtype.is_floating else TensorType(out.shape, float32)   # true division

    def fn(self, x, y):
        return np.divide(x, y)

    def local_grads(self, x, y, z, g):
        gx = div(g, y)
        return gx, neg(mul(gx, z))


class Extremum(Binary):
    """Elementwise max/min; on ties the gradient is split evenly between the two inputs. An input
    gets the whole gradient unless it loses (`loses(it, other)`): where either is NaN, both get it
    (PyTorch's rule)."""

    def local_grads(self, x, y, z, g):
        half = mul(g, 0.5)
        gx = where(eq(x, y), half, where(self.loses(x, y), 0.0, g))
        gy = where(eq(x, y), half, where(self.loses(y, x), 0.0, g))
        return gx, gy


@register
class Maximum(Extremum):
    name = "maximum"
    fn = staticmethod(np.maximum)

    def loses(self, a, b):
        return lt(a, b)


@register
class Minimum(Extremum):
    name = "minimum"
    fn = staticmethod(np.minimum)

    def loses(self, a, b):
        return gt(a, b)


class Compare(Binary):
    """Comparisons: boolean result, no gradient."""

    differentiable = False

    def infer(self, attrs, x, y):
        return TensorType(broadcast_shapes(self, x.shape, y.shape), bool_)


def _comparison(op_name: str, numpy_fn):
    cls = type(op_name.capitalize(), (Compare,), {"name": op_name, "fn": staticmethod(numpy_fn)})
    register(cls)
    return lambda x, y: emit(op_name, x, y)


eq = _comparison("eq", np.equal)
ne = _comparison("ne", np.not_equal)
lt = _comparison("lt", np.less)
le = _comparison("le", np.less_equal)
gt = _comparison("gt", np.greater)
ge = _comparison("ge", np.greater_equal)


@register
class Where(OpDef):
    """z = cond ? x : y with broadcasting; cond is boolean."""

    name = "where"
    kind = OpKind.ELEMENTWISE

    def infer(self, attrs, cond, x, y):
        if cond.dtype != bool_:
            raise self.dtype_error(f"expected a bool condition, got {cond.dtype}")
        return TensorType(broadcast_shapes(self, cond.shape, x.shape, y.shape), promote(x.dtype, y.dtype))

    def compute(self, attrs, cond, x, y):
        return np.where(cond, x, y)

    def grad(self, attrs, inputs, z, g):
        cond, x, y = inputs
        return (None, sum_to_shape(where(cond, g, 0.0), x.shape), sum_to_shape(where(cond, 0.0, g), y.shape))


# ----------------------------------------------------------------------------------------------
# Public operator functions


def neg(x): return emit("neg", x)
def abs_(x): return emit("abs", x)
def sign(x): return emit("sign", x)
def exp(x): return emit("exp", x)
def log(x): return emit("log", x)
def sqrt(x): return emit("sqrt", x)
def erf(x): return emit("erf", x)
def tanh(x): return emit("tanh", x)
def sigmoid(x): return emit("sigmoid", x)
def relu(x): return emit("relu", x)
def leaky_relu(x, negative_slope=0.01): return emit("leaky_relu", x, negative_slope=float(negative_slope))
def gelu(x, approximate="none"): return emit("gelu", x, approximate=approximate)
def pow_scalar(x, exponent): return emit("pow_scalar", x, exponent=float(exponent))
def cast(x, dtype): return emit("cast", x, dtype=as_dtype(dtype).name)
def add(x, y): return emit("add", x, y)
def sub(x, y): return emit("sub", x, y)
def mul(x, y): return emit("mul", x, y)
def div(x, y): return emit("div", x, y)
def maximum(x, y): return emit("maximum", x, y)
def minimum(x, y): return emit("minimum", x, y)
def where(cond, x, y): return emit("where", cond, x, y)


def clamp(x, min=None, max=None):
    """Bounds keep their Python type: a float bound makes an integer tensor's result float32."""
    return emit("clamp", x, min=_bound(min), max=_bound(max))


def _bound(value):
    if value is None or isinstance(value, float):
        return value
    return int(value) if float(value).is_integer() and not isinstance(value, np.floating) else float(value)
