"""Operator traits (`OpDef.kind`, `fusion_anchor`, `aliases_input`, `flops`) against the code that reads them.

- every operator declared elementwise has a scalar rule (`codegen/kernels/scalar.py`) and every scalar
  rule belongs to an operator declared elementwise, and each is lowered by the elementwise lowering;
- every fusion anchor has a lowering that takes an epilogue, and nothing else has one;
- an operator declaring `aliases_input` returns its input's elements in order (a reshape: sharing the
  buffer is correct), checked on its reference kernel;
- FLOP counts: hand counts for a conv, a transposed conv, a weight gradient, a matmul, an elementwise
  op (one per element) and a fused node (the sum of its body).
"""
from __future__ import annotations

import math

import numpy as np

import lucid
from lucid.codegen.kernels.elementwise import lower_elementwise
from lucid.codegen.kernels.fused import EPILOGUE_LOWERINGS
from lucid.codegen.kernels.scalar import SCALAR
from lucid.codegen.lowering import LOWERINGS
from lucid.ir import Builder, Graph, TensorType, building, ops
from lucid.ir.cost import estimated_flops, node_flops
from lucid.passes import dead_code, fusion

F32 = lucid.float32


def declared(predicate) -> set:
    return {name for name, op in ops.all_ops().items() if predicate(op)}


def test_elementwise_ops_and_scalar_rules_agree():
    elementwise = declared(lambda op: op.kind is ops.OpKind.ELEMENTWISE)
    assert elementwise, "no operator is declared elementwise"
    assert sorted(elementwise - set(SCALAR)) == [], "elementwise operators without a scalar rule"
    assert sorted(set(SCALAR) - elementwise) == [], "scalar rules of operators not declared elementwise"
    assert all(LOWERINGS[name] is lower_elementwise for name in elementwise)


def test_fusion_anchors_and_epilogue_lowerings_agree():
    anchors = declared(lambda op: op.fusion_anchor)
    assert anchors == set(EPILOGUE_LOWERINGS) == {"conv", "conv_transpose"}
    assert all(ops.get(name).kind is ops.OpKind.CONTRACTION for name in anchors)


def test_aliasing_ops_keep_their_input_elements_in_order():
    aliasing = declared(lambda op: op.aliases_input)
    assert aliasing == {"reshape"}
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    y = ops.get("reshape").compute({"shape": (4, 6)}, x)
    np.testing.assert_array_equal(y.ravel(), x.ravel())


def one_node_graph(build, *types):
    g = Graph("g")
    values = [g.add_input(f"x{k}", t) for k, t in enumerate(types)]
    with building(Builder(g)):
        g.set_outputs([build(*values)], False)
    return g.verify()


def flops_of_last(build, *shapes):
    g = one_node_graph(build, *(TensorType(s, F32) for s in shapes))
    return node_flops(g.outputs[0].node)


def test_flops_of_contractions_are_two_per_multiply_add():
    attrs = dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1)
    # conv: every one of 1 x 8 x 6 x 6 outputs sums 3 channels x 3 x 3 taps
    assert flops_of_last(lambda x, w: ops.conv(x, w, None, **attrs), (1, 3, 6, 6), (8, 3, 3, 3)) \
        == 2 * (8 * 6 * 6) * (3 * 3 * 3)
    # transposed conv: every one of 1 x 4 x 5 x 5 input elements meets 2 output channels x 2 x 2 taps
    assert flops_of_last(lambda x, w: ops.conv_transpose(x, w, None, stride=(2, 2), padding=((0, 0), (0, 0)),
                                                         output_padding=(0, 0), dilation=(1, 1), groups=1),
                         (1, 4, 5, 5), (4, 2, 2, 2)) == 2 * (4 * 5 * 5) * (2 * 2 * 2)
    # weight gradient: every one of 8 x 3 x 3 x 3 weights meets 1 x 6 x 6 positions
    assert flops_of_last(lambda x, gy: ops.emit("conv_weight_grad", x, gy, kernel_size=(3, 3), **attrs),
                         (1, 3, 6, 6), (1, 8, 6, 6)) == 2 * (8 * 3 * 3 * 3) * (6 * 6)
    assert flops_of_last(ops.matmul, (5, 2, 3), (3, 4)) == 2 * (5 * 2 * 4) * 3


def test_flops_default_to_one_per_output_element_and_a_fused_node_counts_its_body():
    assert flops_of_last(ops.exp, (4, 5)) == 20
    assert flops_of_last(lambda x: ops.sum_(x, (1,)), (4, 5)) == 4
    g = one_node_graph(lambda x: ops.relu(ops.exp(x) * 2.0 + x), TensorType((3, 7), F32))
    f = dead_code.run(fusion.run(g))
    (node,) = [n for n in f.nodes if n.op == "fused"]
    assert node_flops(node) == 4 * 21 == estimated_flops(g)
    assert math.prod(node.output.shape) == 21
