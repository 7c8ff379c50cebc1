"""`fused`: a group of operators that codegen computes as one kernel (made by the fusion pass).

Attribute `body` is the text form of the group as a graph: inputs `in0`, `in1`, ... (the fused node's
inputs, in order), the group's nodes (their scopes kept), one output. The shape rule and reference
kernel run that body, so a fused graph means exactly what the unfused one did.
"""
from __future__ import annotations

import functools

from ..types import TensorType
from .registry import OpDef, register


@functools.lru_cache(maxsize=512)
def body_graph(text: str):
    from ..text import parse

    return parse(text)


@register
class Fused(OpDef):
    name = "fused"
    differentiable = False

    def infer(self, attrs, *types: TensorType) -> TensorType:
        body = body_graph(attrs["body"])
        expected = [v.type for v in body.inputs]
        if list(types) != expected:
            raise self.error(f"expected inputs {expected}, got {list(types)}")
        return body.outputs[0].type

    def compute(self, attrs, *arrays):
        from ..interpreter import run

        return run(body_graph(attrs["body"]), *arrays)
