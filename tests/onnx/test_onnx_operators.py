"""Every imported operator and attribute combination: a one-node ONNX model built with onnx.helper,
imported, run with `lucid.ir.run` and compiled, against ONNX Runtime (an independent implementation)
and, for convolutions, against tests/oracle.py's direct-loop NumPy convolution."""
import numpy as np
import pytest

from onnx_helpers import check, helper, model, single
from onnx import TensorProto, numpy_helper

import oracle

import lucid.onnx
from lucid.errors import OnnxError

RNG = np.random.default_rng(1)


def w(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def ints(*values):
    return np.array(values, dtype=np.int64)


def f32(*values):
    return np.array(values, dtype=np.float32)


CASES = {
    # convolutions
    "conv2d_pads": ("Conv", [(1, 2, 6, 6), w(3, 2, 3, 3), w(3)], dict(pads=[1, 1, 1, 1])),
    "conv3d_stride_dilation_group": ("Conv", [(1, 4, 7, 7, 7), w(4, 2, 3, 3, 3)],
                                     dict(strides=[2, 1, 2], dilations=[1, 2, 1], group=2)),
    "conv2d_same_upper": ("Conv", [(1, 2, 7, 6), w(2, 2, 2, 3)], dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    "conv2d_same_lower": ("Conv", [(1, 2, 7, 6), w(2, 2, 2, 3)], dict(auto_pad="SAME_LOWER", strides=[2, 2])),
    "conv2d_valid": ("Conv", [(1, 2, 7, 6), w(2, 2, 3, 3)], dict(auto_pad="VALID", kernel_shape=[3, 3])),
    "conv1d_uneven_pads": ("Conv", [(2, 3, 9), w(4, 3, 3), w(4)], dict(pads=[2, 0])),
    "conv_transpose2d_stride": ("ConvTranspose", [(1, 3, 4, 5), w(3, 2, 3, 3), w(2)], dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    "conv_transpose2d_output_padding": ("ConvTranspose", [(1, 2, 4, 4), w(2, 3, 3, 3)],
                                        dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
    "conv_transpose3d_group_dilation": ("ConvTranspose", [(1, 4, 3, 3, 3), w(4, 1, 2, 2, 2)],
                                        dict(group=2, dilations=[2, 2, 2], strides=[2, 1, 2])),
    "conv_transpose2d_output_shape": ("ConvTranspose", [(1, 2, 4, 4), w(2, 2, 3, 3)],
                                      dict(strides=[2, 2], output_shape=[9, 8])),
    "conv_transpose2d_same_upper": ("ConvTranspose", [(1, 2, 4, 5), w(2, 2, 3, 3)],
                                    dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    "conv_transpose2d_same_lower": ("ConvTranspose", [(1, 2, 4, 5), w(2, 2, 3, 3)],
                                    dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    # pooling
    "max_pool2d_pads": ("MaxPool", [(1, 2, 7, 7)], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    "max_pool3d_ceil": ("MaxPool", [(1, 2, 6, 7, 5)], dict(kernel_shape=[2, 2, 2], strides=[2, 2, 2], ceil_mode=1)),
    "max_pool2d_dilation": ("MaxPool", [(1, 1, 9, 9)], dict(kernel_shape=[2, 3], dilations=[2, 2])),
    "max_pool2d_uneven_pads": ("MaxPool", [(1, 1, 6, 6)], dict(kernel_shape=[3, 3], pads=[0, 2, 1, 0])),
    "max_pool2d_same_upper": ("MaxPool", [(1, 1, 7, 6)], dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    "avg_pool2d_exclude_pad": ("AveragePool", [(1, 2, 6, 6)], dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    "avg_pool2d_include_pad": ("AveragePool", [(1, 2, 6, 6)],
                               dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)),
    "avg_pool3d_ceil": ("AveragePool", [(1, 1, 5, 5, 5)], dict(kernel_shape=[2, 2, 2], strides=[2, 2, 2], ceil_mode=1)),
    "avg_pool2d_uneven_pads_include": ("AveragePool", [(1, 1, 6, 6)],
                                       dict(kernel_shape=[3, 3], pads=[0, 1, 2, 1], count_include_pad=1)),
    "global_average_pool": ("GlobalAveragePool", [(2, 3, 4, 5, 3)], {}),
    "global_max_pool": ("GlobalMaxPool", [(2, 3, 4, 5)], {}),
    # normalisation
    "batch_norm": ("BatchNormalization", [(2, 3, 4, 4), w(3), w(3), w(3), np.abs(w(3)) + 0.5], dict(epsilon=1e-3)),
    "instance_norm": ("InstanceNormalization", [(2, 3, 4, 5), w(3), w(3)], dict(epsilon=1e-4)),
    "group_norm_opset21": ("GroupNormalization", [(2, 4, 3, 5), w(4), w(4)], dict(num_groups=2, _opset=21)),
    "group_norm_opset18_per_group": ("GroupNormalization", [(2, 6, 3, 5), w(3), w(3)], dict(num_groups=3, _opset=18)),
    "layer_norm_last": ("LayerNormalization", [(2, 3, 6), w(6), w(6)], {}),
    "layer_norm_axis1": ("LayerNormalization", [(2, 3, 4, 2), w(3, 4, 2)], dict(axis=1, epsilon=1e-3)),
    "softmax": ("Softmax", [(2, 3, 5)], dict(axis=1)),
    "log_softmax": ("LogSoftmax", [(2, 3, 5)], {}),
    # activations
    "relu": ("Relu", [(2, 3, 4)], {}),
    "leaky_relu": ("LeakyRelu", [(2, 3, 4)], dict(alpha=0.2)),
    "prelu_channel": ("PRelu", [(2, 3, 4, 4), w(3, 1, 1)], {}),
    "prelu_single": ("PRelu", [(2, 3, 4), f32(0.3)], {}),
    "elu": ("Elu", [(2, 3, 4)], dict(alpha=0.7)),
    "selu": ("Selu", [(2, 3, 4)], {}),
    "selu_custom": ("Selu", [(2, 3, 4)], dict(alpha=1.5, gamma=1.2)),
    "celu": ("Celu", [(2, 3, 4)], dict(alpha=2.0)),
    "sigmoid": ("Sigmoid", [(2, 3, 4)], {}),
    "tanh": ("Tanh", [(2, 3, 4)], {}),
    "softplus": ("Softplus", [(2, 3, 4)], {}),
    "hard_sigmoid_default": ("HardSigmoid", [(2, 3, 4)], {}),
    "hard_sigmoid_torch": ("HardSigmoid", [(2, 3, 4)], dict(alpha=1 / 6)),
    "hard_swish": ("HardSwish", [(2, 3, 4)], {}),
    "mish": ("Mish", [(2, 3, 4)], {"_opset": 18}),
    "gelu": ("Gelu", [(2, 3, 4)], {"_opset": 20}),
    "gelu_tanh": ("Gelu", [(2, 3, 4)], {"approximate": "tanh", "_opset": 20}),
    "clip_both": ("Clip", [(2, 3, 4), f32(-0.5), f32(0.7)], {}),
    "clip_max_only": ("Clip", [(2, 3, 4), None, f32(0.2)], {}),
    # arithmetic
    "add_broadcast": ("Add", [(2, 3, 4), (3, 1)], {}),
    "sub_initialiser": ("Sub", [(2, 3, 4), w(4)], {}),
    "mul": ("Mul", [(2, 3, 4), (2, 3, 4)], {}),
    "div": ("Div", [(2, 3, 4), np.abs(w(1, 3, 1)) + 1], {}),
    "pow_square": ("Pow", [(2, 3, 4), f32(2.0)], {}),
    "exp": ("Exp", [(2, 3, 4)], {}),
    "erf": ("Erf", [(2, 3, 4)], {}),
    "abs": ("Abs", [(2, 3, 4)], {}),
    "neg": ("Neg", [(2, 3, 4)], {}),
    "where": ("Where", [RNG.standard_normal((3, 4)) > 0, (2, 3, 4), (4,)], {}),
    "matmul_batched": ("MatMul", [(2, 3, 4), (2, 4, 5)], {}),
    "matmul_weight": ("MatMul", [(2, 3, 4), w(4, 6)], {}),
    "gemm_plain": ("Gemm", [(3, 4), w(4, 5), w(5)], {}),
    "gemm_transposed_scaled": ("Gemm", [(4, 3), w(5, 4), w(3, 5)], dict(transA=1, transB=1, alpha=0.5, beta=2.0)),
    # shapes
    "flatten": ("Flatten", [(2, 3, 4, 5)], dict(axis=2)),
    "flatten_negative": ("Flatten", [(2, 3, 4, 5)], dict(axis=-1)),
    "reshape_zero_minus_one": ("Reshape", [(2, 3, 4, 5), ints(0, -1, 5)], {}),
    "transpose": ("Transpose", [(2, 3, 4)], dict(perm=[2, 0, 1])),
    "transpose_default": ("Transpose", [(2, 3, 4)], {}),
    "concat": ("Concat", [(2, 3, 4), (2, 1, 4), w(2, 2, 4)], dict(axis=1)),
    "split_equal": ("Split", [(2, 6, 4)], dict(axis=1, _outputs=3)),
    "split_sizes": ("Split", [(2, 6, 4), ints(1, 2, 3)], dict(axis=1, _outputs=3)),
    "split_uneven_num_outputs": ("Split", [(7, 2)], dict(num_outputs=3, _outputs=3, _opset=18)),
    "slice_negative": ("Slice", [(5, 6, 7), ints(1, -4), ints(-1, 100), ints(0, 2)], {}),
    "slice_steps": ("Slice", [(5, 6, 7), ints(0, 1), ints(5, 7), ints(1, 2), ints(2, 3)], {}),
    "gather_scalar": ("Gather", [(3, 4, 5), np.array(1, np.int64)], dict(axis=1)),
    "gather_indices": ("Gather", [(3, 4, 5), ints(2, 0, -1)], dict(axis=2)),
    "expand": ("Expand", [(3, 1), ints(2, 3, 4)], {}),
    "squeeze_axes": ("Squeeze", [(2, 1, 3, 1), ints(1)], {}),
    "squeeze_all": ("Squeeze", [(1, 3, 1, 2)], {}),
    "unsqueeze": ("Unsqueeze", [(2, 3), ints(0, -1)], {}),
    "pad_constant": ("Pad", [(1, 2, 3, 4), ints(0, 0, 1, 2, 0, 0, 2, 1), f32(1.5)], {}),
    "pad_negative": ("Pad", [(1, 2, 5, 4), ints(0, 0, -1, 2, 0, 0, 1, -2)], {}),
    "pad_reflect": ("Pad", [(1, 2, 5, 6), ints(0, 0, 2, 1, 0, 0, 1, 3)], dict(mode="reflect")),
    "pad_edge_3d": ("Pad", [(1, 2, 3, 4, 5), ints(0, 0, 1, 2, 0, 0, 0, 2, 1, 1)], dict(mode="edge")),
    "pad_wrap": ("Pad", [(1, 2, 5, 6), ints(0, 0, 2, 1, 0, 0, 1, 3)], dict(mode="wrap", _opset=19)),
    "pad_axes": ("Pad", [(1, 2, 5, 6), ints(1, 2, 3, 0), None, ints(2, 3)], dict(_opset=18)),
    # resizing, as PyTorch exports F.interpolate
    "resize_nearest_asymmetric_floor": ("Resize", [(1, 2, 3, 4, 2), None, f32(1, 1, 2, 2, 3)],
                                        dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                                             nearest_mode="floor")),
    "resize_nearest_exact": ("Resize", [(1, 2, 5, 7), None, None, ints(1, 2, 3, 4)],
                             dict(mode="nearest", coordinate_transformation_mode="half_pixel",
                                  nearest_mode="round_prefer_ceil")),
    "resize_linear_half_pixel": ("Resize", [(1, 2, 4, 5), None, f32(1, 1, 2, 1.5)],
                                 dict(mode="linear", coordinate_transformation_mode="half_pixel")),
    "resize_linear_pytorch_half_pixel_sizes": ("Resize", [(1, 2, 4, 5), None, None, ints(1, 2, 7, 3)],
                                               dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel")),
    "resize_trilinear_align_corners": ("Resize", [(1, 1, 3, 4, 2), None, f32(1, 1, 2, 2, 2)],
                                       dict(mode="linear", coordinate_transformation_mode="align_corners")),
    "resize_default_upscale": ("Resize", [(1, 1, 3, 4), None, f32(1, 1, 2, 2)], {}),
    "resize_linear_asymmetric_scales": ("Resize", [(1, 2, 4, 5), None, f32(1, 1, 2, 1.5)],
                                        dict(mode="linear", coordinate_transformation_mode="asymmetric")),
    "resize_trilinear_asymmetric_sizes": ("Resize", [(1, 1, 3, 4, 6), None, None, ints(1, 1, 7, 8, 4)],
                                          dict(mode="linear", coordinate_transformation_mode="asymmetric")),
    # reductions
    "reduce_mean_attr": ("ReduceMean", [(2, 3, 4)], dict(axes=[1, 2], _opset=17)),
    "reduce_mean_input": ("ReduceMean", [(2, 3, 4), ints(-1)], dict(keepdims=0, _opset=18)),
    "reduce_sum_input": ("ReduceSum", [(2, 3, 4), ints(0, 2)], dict(keepdims=0)),
    "reduce_sum_all": ("ReduceSum", [(2, 3, 4)], {}),
    "reduce_sum_noop": ("ReduceSum", [(2, 3, 4)], dict(noop_with_empty_axes=1)),
    "reduce_max_attr": ("ReduceMax", [(2, 3, 4)], dict(axes=[0], keepdims=0)),
    # inference plumbing
    "identity": ("Identity", [(2, 3)], {}),
    "dropout": ("Dropout", [(2, 3)], {}),
    "dropout_ratio_and_mode": ("Dropout", [(2, 3), np.array(0.3, np.float32), np.array(False)], {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_operator_matches_onnxruntime(name):
    op, args, attrs = CASES[name]
    attrs = dict(attrs)
    opset, outputs = attrs.pop("_opset", 17), attrs.pop("_outputs", 1)
    model_bytes, arrays = single(op, args, outputs, opset, **attrs)
    check(model_bytes, arrays)


@pytest.mark.parametrize("op", ["Sqrt", "Log"])
def test_positive_domain_operators(op):
    model_bytes, _ = single(op, [(2, 3, 4)])
    check(model_bytes, [np.abs(w(2, 3, 4)) + 0.1])


@pytest.mark.parametrize("attrs, oracle_padding", [
    (dict(pads=[1, 0, 2, 1]), ((1, 2), (0, 1))),
    (dict(strides=[2, 1], dilations=[1, 2]), 0),
    (dict(auto_pad="SAME_UPPER", strides=[2, 2]), ((1, 1), (0, 1))),
])
def test_conv_matches_numpy_oracle(attrs, oracle_padding):
    x, weight = w(1, 2, 7, 6), w(3, 2, 3, 3)
    model_bytes, _ = single("Conv", [x.shape, weight], **attrs)
    expected = oracle.conv_nd(x, weight, stride=attrs.get("strides", 1), padding=oracle_padding,
                              dilation=attrs.get("dilations", 1))
    check(model_bytes, [x], expected=[expected.astype(np.float32)])


def test_conv_transpose_matches_numpy_oracle():
    x, weight = w(1, 2, 4, 3, 3), w(2, 3, 3, 3, 3)
    model_bytes, _ = single("ConvTranspose", [x.shape, weight], strides=[2, 2, 1], pads=[1, 0, 1, 1, 1, 1],
                            output_padding=[1, 0, 0])
    expected = oracle.conv_transpose_nd(x, weight, stride=(2, 2, 1), padding=((1, 1), (0, 1), (1, 1)),
                                        output_padding=(1, 0, 0))
    check(model_bytes, [x], expected=[expected.astype(np.float32)])


def asymmetric_linear(x: np.ndarray, axis: int, factor: float) -> np.ndarray:
    """x upsampled along `axis` by ONNX's linear mode with asymmetric coordinates, by loops: output o
    reads source o / factor, clamped to the last element, blending its two neighbours."""
    n = x.shape[axis]
    rows = []
    for o in range(int(n * factor)):
        source = min(o / factor, n - 1)
        low = int(source)
        high = min(low + 1, n - 1)
        rows.append(np.take(x, low, axis) * (1 - (source - low)) + np.take(x, high, axis) * (source - low))
    return np.stack(rows, axis)


def test_upsample_against_numpy():
    """The opset-9 Upsample (asymmetric coordinates), which ONNX Runtime no longer runs at opset 13+."""
    x = w(1, 2, 2, 3)
    model_bytes, _ = single("Upsample", [x.shape, f32(1, 1, 2, 3)], mode="nearest")
    check(model_bytes, [x], expected=[x.repeat(2, axis=2).repeat(3, axis=3)])
    model_bytes, _ = single("Upsample", [x.shape, f32(1, 1, 2, 2)], mode="linear")
    check(model_bytes, [x], expected=[asymmetric_linear(asymmetric_linear(x, 2, 2.0), 3, 2.0)])


def test_cast_round_trip_truncates_like_onnxruntime():
    nodes = [helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT64),
             helper.make_node("Cast", ["i"], ["y"], to=TensorProto.FLOAT)]
    check(model(nodes, {"x": (2, 5)}, ["y"]), [w(2, 5) * 3])


def test_constants_range_and_equal():
    """Constant (each attribute kind) and Range folded at import, Equal and Where on graph values."""
    nodes = [helper.make_node("Constant", [], ["start"], value_int=0),
             helper.make_node("Constant", [], ["limit"], value=numpy_helper.from_array(np.array(4, np.int64))),
             helper.make_node("Constant", [], ["steps"], value_ints=[1]),
             helper.make_node("Squeeze", ["steps"], ["step"]),
             helper.make_node("Range", ["start", "limit", "step"], ["r"]),
             helper.make_node("Cast", ["r"], ["positions"], to=TensorProto.FLOAT),
             helper.make_node("Constant", [], ["fill"], value_float=-1.5),
             helper.make_node("Constant", [], ["scales"], value_floats=[2.0, 0.5, 1.0, 3.0]),
             helper.make_node("Equal", ["x", "positions"], ["same"]),
             helper.make_node("Mul", ["x", "scales"], ["scaled"]),
             helper.make_node("Where", ["same", "scaled", "fill"], ["y"])]
    x = np.array([[0, 1, 5, 3], [2, 1, 2, 7]], np.float32)
    check(model(nodes, {"x": (2, 4)}, ["y"]), [x])
