"""The vocabulary operators declare their attributes with, and the check that applies it.

Each operator lists every attribute its nodes carry, once, on its definition:

    attributes = {"stride": IntTuple(min=1), "groups": Int(min=1), "ceil_mode": Bool()}

`check_attributes` refuses a node whose attributes are missing, unknown, of another Python type or
out of range, with a ShapeError naming the operator, the attribute, what it expects and what it got.
An attribute that is a size (a reshape's shape, slice bounds, a resample's output size) is declared
`Int(symbolic=True)` / `IntTuple(symbolic=True)`: it may also hold a symbolic size
(`lucid.ir.symbolic.Expr`) whose smallest value (over its symbols' ranges) is within the bounds.
Gradient rules compute such sizes from their inputs' shapes (a strided slice's gradient pads
`(D + 1) % 2` after the last element; a strided conv's input gradient has that output_padding):
those attributes are declared symbolic too, and a symbolic value's range (`symbolic.bounds`: a
remainder lies in [0, k - 1]) is what the minimum is checked on. A number computed from sizes for
arithmetic (a mean's 1 / count) is no attribute: it is a `size` node (`size.py`), so the operators
doing the arithmetic stay ordinary maps.
The graph checks every node this way before its shape rule runs (`lucid.ir.graph.infer_type`), so the
parser, the verifier and every pass see only attributes the operator means. Rules that relate several
attributes or the input types (a stride per spatial axis, output_padding below the stride) stay in
the operator's shape rule.
"""
from __future__ import annotations

import numbers

import numpy as np

from ...errors import ShapeError
from ..symbolic import Expr, bounds

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


class Schema:
    """What one attribute may hold; `description` completes "expected ..."."""

    description = "a value"

    def accepts(self, value) -> bool:
        raise NotImplementedError


class Int(Schema):
    """A Python (or NumPy) integer, not a bool, in [min, max] (int64 by default); with `symbolic`,
    also a symbolic size whose range starts within them (without a `min`, any symbolic size: the
    interval bounds of an expanded product such as `(D - 2)*(H - 2)` reach -inf)."""

    def __init__(self, min: int = INT64_MIN, max: int = INT64_MAX, symbolic: bool = False):
        self.min, self.max, self.symbolic = min, max, symbolic
        limits = [f">= {min}"] * (min != INT64_MIN) + [f"<= {max}"] * (max != INT64_MAX)
        self.description = " ".join(["an int" + " or a symbolic size" * symbolic] + limits)

    def accepts(self, value) -> bool:
        if isinstance(value, Expr):
            lowest = bounds(value)[0]
            return self.symbolic and (self.min == INT64_MIN or self.min <= lowest) and lowest <= self.max
        return (isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
                and self.min <= value <= self.max)


class Real(Schema):
    """An int in the int64 range or a float (inf and nan included unless `min` excludes them), not a bool."""

    def __init__(self, min: float | None = None):
        self.min = min
        self.description = "a number" + ("" if min is None else f" >= {min}")

    def accepts(self, value) -> bool:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            return False
        if isinstance(value, numbers.Integral) and not INT64_MIN <= value <= INT64_MAX:
            return False
        return self.min is None or value >= self.min


class Bool(Schema):
    description = "True or False"

    def accepts(self, value) -> bool:
        return isinstance(value, (bool, np.bool_))


class OneOf(Schema):
    """One of a fixed set of strings."""

    def __init__(self, *choices: str):
        self.choices = choices
        self.description = "one of " + ", ".join(map(repr, choices))

    def accepts(self, value) -> bool:
        return isinstance(value, str) and value in self.choices


class Optional(Schema):
    """None or what `schema` accepts."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.description = f"None or {schema.description}"

    def accepts(self, value) -> bool:
        return value is None or self.schema.accepts(value)


class AnyOf(Schema):
    """What any of `schemas` accepts."""

    def __init__(self, *schemas: Schema):
        self.schemas = schemas
        self.description = " or ".join(schema.description for schema in schemas)

    def accepts(self, value) -> bool:
        return any(schema.accepts(value) for schema in self.schemas)


class TupleOf(Schema):
    """A tuple whose items `item` accepts; `length` is an int or a range of allowed lengths;
    `distinct` items differ from each other (axes, permutations)."""

    def __init__(self, item: Schema, length: int | range | None = None, distinct: bool = False):
        self.item, self.length, self.distinct = item, length, distinct
        if isinstance(length, range):
            count = f"{length.start} to {length.stop - 1} "
        else:
            count = "" if length is None else f"{length} "
        self.description = f"a tuple of {count}{'distinct ' * distinct}items, each {item.description}"

    def accepts(self, value) -> bool:
        if not isinstance(value, tuple) or not all(self.item.accepts(v) for v in value):
            return False
        if isinstance(self.length, range) and len(value) not in self.length:
            return False
        if isinstance(self.length, int) and len(value) != self.length:
            return False
        return not self.distinct or len(set(value)) == len(value)


def IntTuple(min: int = INT64_MIN, length: int | range | None = None, distinct: bool = False,
             symbolic: bool = False) -> TupleOf:
    """A tuple of ints >= min (shapes, strides, axes...); with `symbolic`, sizes that may be symbolic."""
    return TupleOf(Int(min=min, symbolic=symbolic), length, distinct)


class GraphBody(Schema):
    """A graph with one output (a fused node's body; the text form writes it as graph text)."""

    description = "a graph with one output"

    def accepts(self, value) -> bool:
        # The ops package sits below lucid.ir.graph, so a graph is recognised by what the rules read.
        outputs, inputs = getattr(value, "outputs", None), getattr(value, "inputs", None)
        return (callable(getattr(value, "verify", None)) and isinstance(inputs, list)
                and isinstance(outputs, list) and len(outputs) == 1)


def check_attributes(op_name: str, schemas: dict, attrs: dict) -> None:
    """ShapeError naming `op_name` unless `attrs` has exactly the attributes of `schemas`, each accepted."""
    missing = [name for name in schemas if name not in attrs]
    unknown = [name for name in attrs if name not in schemas]
    if missing or unknown:
        expected = f"the attributes {', '.join(schemas)}" if schemas else "no attributes"
        problems = [f"missing {', '.join(missing)}"] * bool(missing) + [f"unknown {', '.join(map(str, unknown))}"] * bool(unknown)
        raise ShapeError(f"{op_name}: expected {expected}; {' and '.join(problems)}")
    for name, schema in schemas.items():
        if not schema.accepts(attrs[name]):
            raise ShapeError(f"{op_name}: attribute {name} must be {schema.description}, got {_shown(attrs[name])}")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
