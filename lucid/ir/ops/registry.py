"""The operator registry: one definition per operator, read by every stage of lucid.

An operator definition (an `OpDef` subclass registered with `@register`) holds:
- `infer(attrs, *input_types) -> TensorType`: the shape and dtype rule, which also validates inputs and
  raises ShapeError/DTypeError naming the operator, the expected and the received values;
- `compute(attrs, *arrays) -> ndarray`: the NumPy reference kernel;
- `grad(attrs, inputs, output, grad_output) -> tuple`: the gradient rule, one entry per input (None for
  "no gradient"), written with the public operator functions so that it works on any value kind;
- `attributes`: every attribute its nodes carry, name -> schema (the vocabulary of `attributes.py`:
  `Int(min=1)`, `IntTuple(min=0)`, `Bool()`...), checked on every graph node before the shape rule;
- its traits, which passes read instead of keeping lists of operator names: `kind` (an `OpKind`),
  `fusion_anchor`, `aliases_input`, `differentiable`, `graph_attributes` (derived from `attributes`),
  `flops(attrs, input_types, output_type)`, `takes_prologue(attrs, input_types)` and
  `joins_channels(attrs)`.

Values are polymorphic: eager `lucid.Tensor`s and (later) graph values both implement
`_lucid_apply(opdef, inputs, attrs)` and `_lucid_constant(array)`. `emit` hands an operator call to
the value kind with the highest `_lucid_priority` among the inputs, so the same operator functions
(and so the same gradient rules) run eagerly or build a graph.
"""
from __future__ import annotations

import enum
import functools
import inspect
import math
import numbers
import threading
from contextlib import contextmanager

import numpy as np

from ...errors import DTypeError, ShapeError
from .attributes import GraphBody, check_attributes
from ..types import DType, TensorType, bool_, float32, int64, promote

_REGISTRY: dict[str, "OpDef"] = {}


class OpKind(enum.Enum):
    """What an operator computes, as far as passes and the viewer care."""

    #: each output element from the elements at the same index of its operands (broadcast to the
    #: output): fusable, lowered by a scalar rule
    ELEMENTWISE = "elementwise"
    #: combines elements along axes (sums, extremes, argmax, softmax's normalisation)
    REDUCTION = "reduction"
    #: moves, selects or repeats elements without arithmetic (reshape, permute, pad, slice...)
    LAYOUT = "layout"
    #: multiply-accumulates over an inner axis or a window (matmul, convolutions)
    CONTRACTION = "contraction"
    #: pooling over windows, and its gradients
    POOLING = "pooling"
    OTHER = "other"


class OpDef:
    """Base class of operator definitions. Subclasses set `name`, override the three rules and
    declare the traits that differ from the defaults below."""

    name = ""
    #: Operators with no gradient rule (comparisons, argmax...) set this to False.
    differentiable = True
    kind = OpKind.OTHER
    #: The fusion pass may start a group with this operator and codegen applies the elementwise rest
    #: of the group in its epilogue (convolutions).
    fusion_anchor = False
    #: The output is the first input's storage read with another shape (no copy; memory planning
    #: shares the buffer).
    aliases_input = False
    #: Every attribute of the operator's nodes: name -> `attributes.Schema`.
    attributes: dict = {}

    @property
    def graph_attributes(self) -> tuple:
        """Attributes holding a `Graph` (a fused node's body); the text form writes them as graph text."""
        return tuple(name for name, schema in self.attributes.items() if isinstance(schema, GraphBody))

    def check_attributes(self, attrs: dict) -> None:
        """ShapeError naming the operator unless `attrs` are exactly its declared attributes, each valid."""
        check_attributes(self.name, self.attributes, attrs)

    def check_input_count(self, count: int) -> None:
        """ShapeError naming the operator unless its shape rule takes `count` inputs (read from the
        rule's signature: `infer(self, attrs, x, w, b=None)` takes 2 or 3, `infer(self, attrs, *xs)` any)."""
        low, high = _input_counts(type(self).infer)
        if not low <= count <= high:
            expected = f"{low}" if low == high else f"{low} to {high}" if high < math.inf else f"at least {low}"
            raise ShapeError(f"{self.name}: expected {expected} input{'s' * (high != 1)}, got {count}")

    def flops(self, attrs: dict, input_types: tuple, output_type: TensorType) -> int:
        """Floating-point operations of one application (an estimate from the types): one per output
        element unless the operator says otherwise."""
        return output_type.size

    def takes_prologue(self, attrs: dict, input_types: tuple) -> bool:
        """Whether the fusion pass may put the node computing this anchor's first input (an
        elementwise tree, a `joins_channels` node) in front of it, for codegen to compute as it
        copies that input. Asked of anchors only."""
        return False

    def joins_channels(self, attrs: dict) -> bool:
        """Whether a node's output is its inputs one after the other along axis 1 (the channels),
        which a convolution's input packing can read from the inputs themselves."""
        return False

    def infer(self, attrs: dict, *types: TensorType) -> TensorType:
        raise NotImplementedError

    def compute(self, attrs: dict, *arrays: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def grad(self, attrs: dict, inputs: tuple, output, grad_output) -> tuple:
        raise NotImplementedError(f"{self.name}: no gradient rule")

    def error(self, message: str) -> ShapeError:
        return ShapeError(f"{self.name}: {message}")

    def dtype_error(self, message: str) -> DTypeError:
        return DTypeError(f"{self.name}: {message}")

    def require_float(self, *types: TensorType) -> None:
        for t in types:
            if not t.dtype.is_floating:
                raise self.dtype_error(f"expected a floating-point input (float32 or float64), got {t.dtype}")

    def __repr__(self) -> str:
        return f"<op {self.name}>"


@functools.cache
def _input_counts(infer) -> tuple:
    """The fewest and most inputs a shape rule `infer(self, attrs, ...)` takes."""
    inputs = list(inspect.signature(infer).parameters.values())[2:]
    if any(p.kind is p.VAR_POSITIONAL for p in inputs):
        return sum(p.default is p.empty and p.kind is not p.VAR_POSITIONAL for p in inputs), math.inf
    return sum(p.default is p.empty for p in inputs), len(inputs)


def register(cls):
    """Class decorator: instantiate an OpDef subclass and add it to the registry under its name."""
    opdef = cls()
    if not opdef.name or opdef.name in _REGISTRY:
        raise RuntimeError(f"operator name {opdef.name!r} is empty or already registered")
    _REGISTRY[opdef.name] = opdef
    return cls


def get(name: str) -> OpDef:
    """The definition of operator `name`; ShapeError if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ShapeError(f"unknown operator {name!r}; known operators: {', '.join(sorted(_REGISTRY))}") from None


def all_ops() -> dict[str, OpDef]:
    """A copy of the registry: name -> definition."""
    return dict(_REGISTRY)


def is_value(obj) -> bool:
    return hasattr(type(obj), "_lucid_apply")


def _constant_dtype(kind: str, value_dtypes: list[DType]) -> DType:
    """The dtype a Python number or NumPy array of numpy kind `kind` takes next to tensors of
    `value_dtypes`: the tensors' dtype unless its category is lower (PyTorch's weak scalar typing)."""
    kind = bool_ if kind == "b" else int64 if kind in "iu" else float32
    widest = promote(*value_dtypes) if value_dtypes else kind
    return widest if widest.rank >= kind.rank else kind


_recording = threading.local()


@contextmanager
def recording(kind):
    """While active, every operator call goes to value kind `kind`, whatever its inputs' kinds (the
    tracer uses this so that operations on parameters alone are recorded too)."""
    stack = _recording.__dict__.setdefault("stack", [])
    stack.append(kind)
    try:
        yield
    finally:
        stack.pop()


def _recording_kind():
    stack = getattr(_recording, "stack", None)
    return stack[-1] if stack else None


def emit(name: str, *inputs, **attrs):
    """Apply operator `name` to `inputs` (values or Python scalars) with attributes `attrs`.

    The call goes to the recording kind if one is active, else to the value kind of highest priority
    among the inputs; Python scalars become constants of that kind with PyTorch's scalar typing.
    """
    opdef = get(name)
    values = [v for v in inputs if is_value(v)]
    if not values:
        raise DTypeError(f"{name}: expected at least one tensor input, got {[type(v).__name__ for v in inputs]}")
    kind = _recording_kind() or max((type(v) for v in values), key=lambda t: t._lucid_priority)
    dtypes = [v.dtype for v in values]
    converted = []
    for v in inputs:
        if is_value(v):
            converted.append(v)
        elif isinstance(v, (numbers.Number, np.bool_, np.ndarray)) and np.asarray(v).dtype.kind in "biuf":
            array = np.asarray(v)
            converted.append(kind._lucid_constant(array.astype(_constant_dtype(array.dtype.kind, dtypes).numpy)))
        else:
            raise DTypeError(f"{name}: expected a tensor, a real number or a NumPy array, got {type(v).__name__}")
    return kind._lucid_apply(opdef, tuple(converted), attrs)
