"""`fused`: a group of operators that codegen computes as one kernel (made by the fusion pass).

Attribute `body` is the group as a `Graph`: inputs `in0`, `in1`, ... (the fused node's inputs, in
order), the group's nodes (their scopes kept), one output. The text form writes it as its own text
and the parser reads it back (`graph_attributes`). The shape rule reads the body's types, FLOPs are
the body's, and the reference kernel runs the body, so a fused graph means exactly what the unfused
one did.
"""
from __future__ import annotations

from ..cost import estimated_flops
from ..evaluate import evaluate
from ..types import TensorType
from .attributes import GraphBody
from .registry import OpDef, register


@register
class Fused(OpDef):
    name = "fused"
    differentiable = False
    attributes = {"body": GraphBody()}

    def infer(self, attrs, *types: TensorType) -> TensorType:
        body = attrs["body"]
        expected = [v.type for v in body.inputs]
        if list(types) != expected:
            raise self.error(f"expected inputs {expected}, got {list(types)}")
        return body.outputs[0].type

    def flops(self, attrs, input_types, output_type):
        return estimated_flops(attrs["body"])

    def compute(self, attrs, *arrays):
        body = attrs["body"]
        env = evaluate(body, dict(zip(body.inputs, arrays)))
        return env[body.outputs[0]]
