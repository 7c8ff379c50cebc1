"""Malformed and hostile ONNX input: each gets an `OnnxError` (a ValueError) naming the file and,
where there is one, the node; never a crash, and never a read outside the model's folder."""
import os

import numpy as np
import pytest

from onnx_helpers import helper, model, single

import onnx
from onnx import TensorProto

import lucid
import lucid.onnx
from lucid.errors import OnnxError


def conv_model() -> bytes:
    weight = np.ones((2, 1, 3, 3), np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    return model(nodes, {"x": (1, 1, 4, 4)}, ["y"], {"w": weight})


def proto(model_bytes: bytes):
    return onnx.ModelProto.FromString(model_bytes)


def refused(source, *messages, **kwargs):
    with pytest.raises(OnnxError) as info:
        lucid.onnx.load(source, **kwargs)
    for message in messages:
        assert message in str(info.value), str(info.value)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_truncated_and_mutated_protobufs_load_or_are_refused():
    data = conv_model()
    rng = np.random.default_rng(0)
    mutants = [data[:n] for n in range(0, len(data), 3)]
    for _ in range(300):
        mutant = bytearray(data)
        for position in rng.integers(0, len(data), size=rng.integers(1, 4)):
            mutant[position] ^= 1 << int(rng.integers(0, 8))
        mutants.append(bytes(mutant))
    for mutant in mutants:
        try:
            graph = lucid.onnx.load(mutant)
        except OnnxError as error:
            assert str(error).startswith("ONNX model (bytes): ")
        else:
            graph.verify()


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(conv_model()[:-9])
    refused(str(path), "broken.onnx")
    refused(str(tmp_path / "missing.onnx"), "missing.onnx", "cannot read")
    refused(b"\x00\x01garbage", "not")


def test_old_opset_is_refused_naming_it():
    m = proto(conv_model())
    m.opset_import[0].version = 11
    refused(m.SerializeToString(), "opset 11", "13")


def test_every_unsupported_operator_is_listed_at_once():
    nodes = [helper.make_node("NonMaxSuppression", ["x"], ["a"]), helper.make_node("Loop", ["a"], ["b"]),
             helper.make_node("Custom", ["b"], ["y"], domain="com.example"), helper.make_node("Relu", ["x"], ["z"])]
    message = refused(model(nodes, {"x": (2,)}, ["y"]), "unsupported ONNX operators")
    for op in ("NonMaxSuppression", "Loop", "com.example.Custom"):
        assert op in message
    assert "Relu," not in message.split("(lucid imports")[0]


@pytest.mark.parametrize("dims, fill, message", [
    ((2, 1, 3, 3), lambda t: t.raw_data[:-4], "raw_data holds"),
    ((2, 1, 3, 4), None, "raw_data holds"),
    ((1 << 20, 1 << 20, 1 << 10), None, "more than lucid reads"),
    ((-1, 3), None, "negative dimension"),
])
def test_wrong_initialiser_sizes_are_refused_before_allocating(dims, fill, message):
    m = proto(conv_model())
    tensor = m.graph.initializer[0]
    if fill is not None:
        tensor.raw_data = fill(tensor)
    else:
        del tensor.dims[:]
        tensor.dims.extend(dims)
    refused(m.SerializeToString(), "'w'", message)


def test_typed_initialiser_field_of_the_wrong_length():
    m = proto(conv_model())
    tensor = m.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.float_data.extend([1.0] * 17)
    refused(m.SerializeToString(), "'w'", "needs 18 values, it holds 17")


def test_cycles_undefined_inputs_and_undefined_outputs():
    cycle = [helper.make_node("Relu", ["b"], ["a"], name="first"), helper.make_node("Relu", ["a"], ["b"], name="second"),
             helper.make_node("Add", ["a", "x"], ["y"], name="out")]
    refused(model(cycle, {"x": (2,)}, ["y"]), "cycle", "first", "second")
    undefined = [helper.make_node("Add", ["x", "nowhere"], ["y"], name="adder")]
    refused(model(undefined, {"x": (2,)}, ["y"]), "'adder'", "'nowhere'")
    refused(model([helper.make_node("Relu", ["x"], ["y"])], {"x": (2,)}, ["z"]), "graph output 'z'")
    twice = [helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Relu", ["x"], ["y"], name="b")]
    refused(model(twice, {"x": (2,)}, ["y"]), "already defined")


def test_nodes_out_of_order_are_imported_in_dependency_order():
    nodes = [helper.make_node("Relu", ["a"], ["y"]), helper.make_node("Neg", ["x"], ["a"])]
    graph = lucid.onnx.load(model(nodes, {"x": (3,)}, ["y"]))
    x = np.array([1.0, -2.0, 3.0], np.float32)
    np.testing.assert_array_equal(lucid.ir.run(graph, x), np.maximum(-x, 0))


def test_symbolic_and_missing_input_shapes():
    m = proto(conv_model())
    dim = m.graph.input[0].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_value")
    dim.dim_param = "batch"
    data = m.SerializeToString()
    refused(data, "input 'x'", "symbolic", "batch", "input_shapes")
    graph = lucid.onnx.load(data, input_shapes={"x": (3, 1, 4, 4)})
    assert graph.inputs[0].shape == (3, 1, 4, 4)
    assert lucid.onnx.load(data, input_shapes=[(2, 1, 4, 4)]).inputs[0].shape == (2, 1, 4, 4)
    refused(data, "declared", input_shapes={"x": (3, 1, 5, 4)})
    refused(data, "not inputs", input_shapes={"y": (1,)})
    refused(data, "more than lucid reads", input_shapes={"x": (1 << 40, 1, 4, 4)})
    m.graph.input[0].type.tensor_type.ClearField("shape")
    refused(m.SerializeToString(), "input 'x'", "no declared shape")


def test_huge_declared_shapes_in_shape_arithmetic():
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["big"], name="filler"),
             helper.make_node("Add", ["x", "big"], ["y"])]
    refused(model(nodes, {"x": (2,)}, ["y"], {"s": np.array([1 << 30, 1 << 30], np.int64)}), "'filler'", "more than")


@pytest.mark.parametrize("op", ["Add", "Div", "Where", "Expand"])
def test_folds_that_would_broadcast_to_huge_arrays_are_refused(op):
    column, row = np.ones((1 << 17, 1), np.float32), np.ones((1, 1 << 17), np.float32)
    inputs = {"Where": ["cond", "a", "b"], "Expand": ["a", "shape"]}.get(op, ["a", "b"])
    nodes = [helper.make_node(op, inputs, ["folded"], name="grows"), helper.make_node("Add", ["x", "folded"], ["y"])]
    constants = {"a": column, "b": row, "cond": np.ones((1, 1), bool), "shape": np.array([1 << 17, 1 << 17])}
    refused(model(nodes, {"x": (1,)}, ["y"], {k: constants[k] for k in inputs}), "'grows'", "more than lucid reads")


def test_initialisers_listed_as_graph_inputs_are_parameters_not_inputs():
    m = proto(conv_model())
    m.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 1, 3, 3]))
    graph = lucid.onnx.load(m.SerializeToString())
    assert [v.name for v in graph.inputs] == ["x"] and [v.name for v in graph.params] == ["w"]


def test_unsupported_attribute_values_name_the_node_and_attribute():
    data, _ = single("Resize", [(1, 1, 2, 2), None, np.array([1, 1, 2, 2], np.float32)], mode="cubic")
    refused(data, "/block/Resize", "mode='cubic'")
    data, _ = single("Conv", [(1, 1, 4, 4), np.ones((1, 1, 3, 3), np.float32)], unknown_flag=1)
    refused(data, "/block/Conv", "unknown_flag")
    data, _ = single("Pad", [(1, 1, 4, 4), np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)], mode="mirror")
    refused(data, "mode='mirror'")
    data, _ = single("Resize", [(1, 1, 2, 2), None, np.array([1, 1, 2, 2], np.float32)], mode="nearest",
                     coordinate_transformation_mode="asymmetric", nearest_mode="round_prefer_ceil")
    refused(data, "/block/Resize", "'asymmetric'", "'round_prefer_ceil'", "matches no resampling")


def test_shape_arithmetic_on_data_is_an_error_naming_the_node():
    nodes = [helper.make_node("Cast", ["x"], ["shape"], to=TensorProto.INT64, name="as_shape"),
             helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshaper")]
    refused(model(nodes, {"x": (2,)}, ["y"]), "'reshaper'", "must be a constant")


def external_model(tmp_path, location: str, offset: int = 0, length: int | None = None):
    """conv_model with its weight stored externally at `location`."""
    m = proto(conv_model())
    tensor = m.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in [("location", location), ("offset", str(offset))] + (
            [("length", str(length))] if length is not None else []):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    path = tmp_path / "model" / "m.onnx"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(m.SerializeToString())
    return path


def test_external_data_inside_the_folder_is_read(tmp_path):
    weight = np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3)
    path = external_model(tmp_path, "weights.bin", offset=8, length=72)
    (path.parent / "weights.bin").write_bytes(b"\0" * 8 + weight.tobytes() + b"\0" * 4)
    graph = lucid.onnx.load(str(path))
    np.testing.assert_array_equal(np.asarray(graph.bindings["w"]), weight)


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin", "link.bin", "", "."])
def test_external_data_outside_the_folder_is_never_read(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(b"\1" * 72)
    path = external_model(tmp_path, location)
    os.symlink(tmp_path / "secret.bin", path.parent / "link.bin")
    refused(str(path), "outside", "m.onnx")


def test_external_data_bounds_and_bytes_models(tmp_path):
    path = external_model(tmp_path, "weights.bin", offset=40)
    (path.parent / "weights.bin").write_bytes(b"\0" * 100)
    refused(str(path), "at offset 40")
    refused(path.read_bytes(), "external data", "file path")
    path = external_model(tmp_path, "weights.bin", length=8)
    refused(str(path), "declares 8 bytes")
