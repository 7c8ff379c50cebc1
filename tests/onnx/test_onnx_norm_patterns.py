"""Decomposed norms (lucid/onnx/norm_patterns.py): the chains PyTorch's exporter and onnx.helper write
for group, layer and instance norm are imported as the norm itself, which the test sees as the same
computation (operator counts, reshapes aside) as the import of the one-node ONNX norm, and the outputs
equal PyTorch's or ONNX Runtime's. Near misses are imported node by node and still equal ONNX Runtime."""
import io
import warnings
from collections import Counter

import numpy as np
import pytest

from onnx_helpers import check, helper, model

import lucid.onnx

RNG = np.random.default_rng(7)
X3D = (1, 4, 3, 3, 3)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def scalar(value):
    return np.array(value, dtype=np.float32)


def computation(graph) -> Counter:
    """The graph's operators by count, reshapes aside (parameters are reshaped where they are lifted) and
    constants (a Constant node's array is a constant, an initialiser a parameter)."""
    return Counter(n.op for n in graph.nodes if n.op not in ("reshape", "constant"))


def native(op: str, args: dict, shape, **attrs) -> Counter:
    """The computation of the one-node ONNX norm `op` over an input of `shape`."""
    node = helper.make_node(op, ["x"] + list(args), ["y"], **attrs)
    return computation(lucid.onnx.load(model([node], {"x": shape}, ["y"], args, opset=18)))


def decomposed(axes, eps_inside_sqrt: bool = True, opset: int = 17) -> list:
    """The nodes of (x - mean) / sqrt(mean((x - mean)^2) + eps) over `axes`, output "n"."""
    reduce = (lambda i, o: helper.make_node("ReduceMean", [i, "axes"], [o])) if opset >= 18 else \
        (lambda i, o: helper.make_node("ReduceMean", [i], [o], axes=list(axes)))
    root = [helper.make_node("Add", ["var", "eps"], ["padded"]), helper.make_node("Sqrt", ["padded"], ["root"])] \
        if eps_inside_sqrt else \
        [helper.make_node("Sqrt", ["var"], ["unpadded"]), helper.make_node("Add", ["unpadded", "eps"], ["root"])]
    return [reduce("x", "mean"), helper.make_node("Sub", ["x", "mean"], ["d"]),
            helper.make_node("Pow", ["d", "two"], ["square"]), reduce("square", "var"), *root,
            helper.make_node("Div", ["d", "root"], ["n"])]


def affine(last: str = "n") -> list:
    return [helper.make_node("Mul", [last, "w"], ["scaled"]), helper.make_node("Add", ["scaled", "b"], ["y"])]


def constants(axes, opset: int = 17, **arrays) -> dict:
    found = dict(two=scalar(2.0), eps=scalar(1e-5), **arrays)
    return dict(found, axes=np.array(axes, np.int64)) if opset >= 18 else found


def exported(module, x: np.ndarray, opset: int) -> bytes:
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.from_numpy(x),), buffer, dynamo=False, opset_version=opset)
    return buffer.getvalue()


def torch_output(module, x):
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("affine_", [True, False])
def test_pytorch_group_norm_is_imported_as_group_norm(affine_):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.GroupNorm(2, 4, eps=1e-3, affine=affine_)
    if affine_:
        with torch.no_grad():
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.5, 0.5)
    x = f32(*X3D)
    graph = check(exported(module, x, 13), [x], expected=[torch_output(module, x)], compiled=affine_, atol=1e-4)
    params = dict(s=f32(4), b=f32(4)) if affine_ else dict(s=np.ones(4, np.float32), b=np.zeros(4, np.float32))
    # PyTorch scales and shifts by ones and zeros without affine parameters, as the native node does; those
    # are single numbers (shape (1, 1, 1, 1)), each broadcast to a per-channel vector when lifted
    lifted = Counter() if affine_ else Counter(broadcast_to=2)
    assert computation(graph) == native("GroupNormalization", params, X3D, num_groups=2, epsilon=1e-3) + lifted
    assert "InstanceNormalization" not in str(graph)


@pytest.mark.parametrize("shape", [(6,), (5, 6)])
def test_pytorch_layer_norm_at_opset_13_is_imported_as_layer_norm(shape):
    torch = pytest.importorskip("torch")
    module = torch.nn.LayerNorm(shape)
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.5, 0.5)
    x = f32(2, 5, 6)
    graph = check(exported(module, x, 13), [x], expected=[torch_output(module, x)], compiled=False)
    assert computation(graph) == native("LayerNormalization", dict(s=f32(*shape), b=f32(*shape)), (2, 5, 6),
                                        axis=-len(shape))


@pytest.mark.parametrize("opset", [17, 18])
def test_decomposed_instance_norm_is_imported_as_instance_norm(opset):
    nodes = decomposed((2, 3, 4), opset=opset) + affine()
    graph = check(model(nodes, {"x": X3D}, ["y"], constants((2, 3, 4), opset, w=f32(4, 1, 1, 1), b=f32(4, 1, 1, 1)),
                        opset), [f32(*X3D)], compiled=False)
    assert computation(graph) == native("InstanceNormalization", dict(s=f32(4), b=f32(4)), X3D)


def test_decomposed_layer_norm_with_a_broadcast_scale_is_imported_as_layer_norm():
    nodes = decomposed((1, 2)) + affine()
    graph = check(model(nodes, {"x": (2, 5, 6)}, ["y"], constants((1, 2), w=f32(1, 6), b=f32(5, 6))),
                  [f32(2, 5, 6)], compiled=False)
    assert computation(graph) == native("LayerNormalization", dict(s=f32(5, 6), b=f32(5, 6)), (2, 5, 6), axis=1) \
        + Counter(broadcast_to=1)


def test_eps_outside_the_square_root_is_not_fused():
    nodes = decomposed((2,), eps_inside_sqrt=False) + affine()
    graph = check(model(nodes, {"x": (2, 5, 6)}, ["y"], constants((2,), w=f32(6), b=f32(6))),
                  [f32(2, 5, 6)], compiled=False)
    assert computation(graph)["sqrt"] == 1


def test_a_reduction_over_other_axes_than_the_norm_is_not_fused():
    nodes = decomposed((1,)) + affine()          # normalised over axis 1, not the trailing axes
    graph = check(model(nodes, {"x": (2, 5, 6)}, ["y"], constants((1,), w=f32(6), b=f32(6))),
                  [f32(2, 5, 6)], compiled=False)
    assert computation(graph)["sqrt"] == 1


def group_norm_chain(scale, tail: list, **initialisers) -> bytes:
    nodes = [helper.make_node("Reshape", ["x", "grouped_shape"], ["g"]),
             helper.make_node("InstanceNormalization", ["g", "one", "zero"], ["gn"], epsilon=1e-5),
             helper.make_node("Shape", ["x"], ["x_shape"]),
             helper.make_node("Reshape", ["gn", "x_shape"], ["n"]), *tail]
    arrays = dict(grouped_shape=np.array([0, 2, -1], np.int64), one=scale, zero=np.zeros(2, np.float32),
                  **initialisers)
    return model(nodes, {"x": X3D}, ["y" if tail else "n"], arrays)


def test_a_group_norm_scaled_by_a_full_tensor_keeps_that_product_after_the_fused_norm():
    graph = check(group_norm_chain(np.ones(2, np.float32), affine(), w=f32(4, 3, 3, 3), b=f32(4, 1, 1, 1)),
                  [f32(*X3D)], compiled=False)
    ones, zeros = np.ones(4, np.float32), np.zeros(4, np.float32)
    # the native node's scale and shift are operands of its `normalize`, so they add no operator
    assert computation(graph) == native("GroupNormalization", dict(s=ones, b=zeros), X3D, num_groups=2) \
        + Counter(mul=1, add=1)


def test_a_group_norm_chain_whose_instance_norm_scales_is_not_fused():
    graph = check(group_norm_chain(np.array([1.0, 2.0], np.float32), []), [f32(*X3D)], compiled=False)
    ones, zeros = np.ones(4, np.float32), np.zeros(4, np.float32)
    assert computation(graph) != native("GroupNormalization", dict(s=ones, b=zeros), X3D, num_groups=2)
