"""`size`: a size as a number the graph computes with, evaluated per call when it is symbolic.

Gradient rules and layers divide by counts of elements: a mean's gradient by the elements it
averaged, moments' gradient likewise, batch norm's running variance by n - 1. With concrete sizes
the count is a Python number (a constant of the graph). With symbolic sizes (`lucid.ir.symbolic`)
it has no value while the graph is built, so it becomes a `size` node: a 0-d tensor holding the
size, computed from the call's dims by the compiled code (and by the interpreter once the graph is
specialised). Its one input only gives the result's dtype (and the value kind: eager or graph); its
values are not read.
"""
from __future__ import annotations

import numpy as np

from .. import symbolic
from ..types import TensorType
from .attributes import Int
from .registry import OpDef, emit, register


@register
class Size(OpDef):
    name = "size"
    differentiable = False
    attributes = {"size": Int(symbolic=True)}      # a count, or a count minus one (n / (n - 1))

    def infer(self, attrs, like):
        self.require_float(like)
        return TensorType((), like.dtype)

    def compute(self, attrs, like):
        return np.asarray(attrs["size"], like.dtype)


def size_value(like, size):
    """`size` (an int or a symbolic size) as a 0-d tensor of `like`'s dtype."""
    return emit("size", like, size=symbolic.as_size(size))


def count_operand(like, count):
    """A count of elements as an operand of arithmetic: a Python float when it is an int (a constant:
    the graph is what it always was), else its `size` node (dtype and kind of `like`: give a small
    value, since an extra reader keeps a large one from fusing with its other reader)."""
    return size_value(like, count) if symbolic.is_symbolic(count) else float(count)
