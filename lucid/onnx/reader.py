"""Reading an ONNX file without trusting it: the protobuf, the opset, tensors and input types.

Everything the file declares is checked before it is used: a tensor's element count times its item
size must fit `MAX_TENSOR_BYTES` and equal the bytes it holds before NumPy reads them; external
data is read only from a regular file inside the model's own folder (symbolic links resolved), with
a read bounded by the checked offset and length; a graph input's dimensions must be known (from the
file or from `input_shapes`). Every refusal is an `OnnxError` naming the file (and the tensor or
input). The `onnx` package is an optional dependency: without it this module raises an ImportError
saying how to install it.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import OnnxError
from ..ir.types import TensorType

try:
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import TensorProto, helper
except ImportError as exc:        # pragma: no cover (tested in a subprocess without onnx on the path)
    raise ImportError("lucid.onnx needs the onnx package: pip install 'lucid[onnx]' (or pip install onnx)") from exc

#: The oldest default-domain opset read.
MIN_OPSET = 13
#: The most bytes one declared tensor (an initialiser, a constant, a graph input) may take: 16 GiB.
MAX_TENSOR_BYTES = 1 << 34

#: ONNX element types lucid holds, and the lucid dtype each becomes (narrow ints widen to int64).
DTYPES = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float32,
          TensorProto.INT64: np.int64, TensorProto.INT32: np.int64, TensorProto.INT16: np.int64,
          TensorProto.INT8: np.int64, TensorProto.UINT8: np.int64, TensorProto.UINT16: np.int64,
          TensorProto.UINT32: np.int64, TensorProto.BOOL: np.bool_}

#: The repeated field that holds a tensor's values when it has no raw_data, by element type.
_TYPED_FIELDS = {TensorProto.FLOAT: "float_data", TensorProto.DOUBLE: "double_data", TensorProto.INT64: "int64_data",
                 TensorProto.UINT32: "uint64_data", TensorProto.FLOAT16: "int32_data", TensorProto.INT32: "int32_data",
                 TensorProto.INT16: "int32_data", TensorProto.INT8: "int32_data", TensorProto.UINT8: "int32_data",
                 TensorProto.UINT16: "int32_data", TensorProto.BOOL: "int32_data"}


class Source:
    """Where a model came from: its name in messages and, for a file, its folder (external data)."""

    def __init__(self, origin: str, folder: Path | None):
        self.origin, self.folder = origin, folder

    def error(self, message: str) -> OnnxError:
        return OnnxError(f"{self.origin}: {message}")


def parse(path_or_bytes) -> tuple:
    """(ModelProto, Source) of a file path or the bytes of a model; a damaged protobuf is an OnnxError."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        source, data = Source("ONNX model (bytes)", None), bytes(path_or_bytes)
    else:
        path = Path(path_or_bytes)
        source = Source(f"ONNX file {str(path)!r}", path.resolve().parent)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise source.error(f"cannot read it: {exc.strerror or exc}") from None
    try:
        model = onnx.ModelProto.FromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise source.error(f"not a readable ONNX model (damaged or truncated protobuf: {exc})") from None
    if not model.HasField("graph"):
        raise source.error("not an ONNX model: it holds no graph")
    _check_text(model.graph, source)
    return model, source


def _check_text(graph, source: Source) -> None:
    """Names and op types must be text (protobuf hands invalid UTF-8 back as bytes)."""
    names = [graph.name] + [v.name for v in (*graph.input, *graph.output, *graph.initializer)]
    for node in graph.node:
        names += [node.name, node.op_type, node.domain, *node.input, *node.output, *(a.name for a in node.attribute)]
    bad = next((name for name in names if not isinstance(name, str)), None)
    if bad is not None:
        raise source.error(f"a name or op type is not valid UTF-8 text: {bad!r}")


def default_opset(model, source: Source) -> int:
    """The model's default-domain (ai.onnx) opset, refused below MIN_OPSET."""
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise source.error("the model imports no default-domain (ai.onnx) opset")
    if versions[0] < MIN_OPSET:
        raise source.error(f"opset {versions[0]} is not supported; lucid reads opset {MIN_OPSET} and newer "
                           "(convert it with onnx.version_converter.convert_version(model, 17))")
    return versions[0]


def tensor_array(tensor, source: Source) -> np.ndarray:
    """The checked contents of a TensorProto (an initialiser or a constant) as a lucid dtype."""
    what = f"tensor {tensor.name!r}" if tensor.name else "a constant tensor"
    if tensor.data_type not in DTYPES:
        name = TensorProto.DataType.Name(tensor.data_type) if tensor.data_type in TensorProto.DataType.values() else tensor.data_type
        raise source.error(f"{what} has element type {name}, which lucid does not hold")
    shape = tuple(tensor.dims)
    count = checked_count(shape, np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize, what, source)
    if tensor.data_location == TensorProto.EXTERNAL:
        return _external(tensor, shape, count, what, source).astype(DTYPES[tensor.data_type])
    stored_type = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    if tensor.HasField("raw_data"):
        if len(tensor.raw_data) != count * stored_type.itemsize:
            raise source.error(f"{what} of shape {shape} needs {count * stored_type.itemsize} bytes, "
                               f"its raw_data holds {len(tensor.raw_data)}")
    else:
        held = len(getattr(tensor, _TYPED_FIELDS[tensor.data_type]))
        if held != count:
            raise source.error(f"{what} of shape {shape} needs {count} values, it holds {held}")
    from onnx import numpy_helper

    return np.array(numpy_helper.to_array(tensor), dtype=DTYPES[tensor.data_type]).reshape(shape)


def checked_count(shape: tuple, itemsize: int, what: str, source: Source) -> int:
    if any(d < 0 for d in shape):
        raise source.error(f"{what} declares a negative dimension: shape {shape}")
    count = math.prod(shape)
    if math.prod(max(d, 1) for d in shape) * itemsize > MAX_TENSOR_BYTES:    # empty tensors too: NumPy sizes each axis
        raise source.error(f"{what} declares shape {shape}, {count * itemsize} bytes, more than lucid reads "
                           f"({MAX_TENSOR_BYTES} bytes)")
    return count


def _external(tensor, shape: tuple, count: int, what: str, source: Source) -> np.ndarray:
    """A tensor stored in a file beside the model: only inside the model's folder, read within bounds."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    if source.folder is None:
        raise source.error(f"{what} is stored in external data; load the model from its file path "
                           "so its folder is known")
    location = info.get("location", "")
    path = (source.folder / location).resolve()
    if not location or Path(location).is_absolute() or not path.is_relative_to(source.folder) or not path.is_file():
        raise source.error(f"{what}: external data location {location!r} is not a file inside the model's "
                           f"folder {str(source.folder)!r}; lucid reads nothing outside it")
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    try:
        offset = int(info.get("offset", 0))
        length = int(info.get("length", count * dtype.itemsize))
    except ValueError:
        raise source.error(f"{what}: external data offset or length is not an integer: {info}") from None
    size = path.stat().st_size
    if length != count * dtype.itemsize or offset < 0 or offset + length > size:
        raise source.error(f"{what} of shape {shape} needs {count * dtype.itemsize} bytes; its external data "
                           f"declares {length} bytes at offset {offset} of {location!r} ({size} bytes)")
    with open(path, "rb") as file:
        file.seek(offset)
        data = file.read(length)
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).reshape(shape)


def input_types(graph, initialised: set, input_shapes, source: Source) -> list:
    """(name, TensorType) of each graph input that is not an initialiser; `input_shapes` (name -> shape,
    or shapes in input order) fixes dimensions the file leaves symbolic."""
    inputs = [v for v in graph.input if v.name not in initialised]
    given = _given_shapes(inputs, input_shapes, source)
    return [(v.name, _input_type(v, given.get(v.name), source)) for v in inputs]


def _given_shapes(inputs: list, input_shapes, source: Source) -> dict:
    if input_shapes is None:
        return {}
    if isinstance(input_shapes, dict):
        unknown = set(input_shapes) - {v.name for v in inputs}
        if unknown:
            raise source.error(f"input_shapes names {sorted(unknown)}, which are not inputs of the model "
                               f"(its inputs: {[v.name for v in inputs]})")
        return {name: tuple(shape) for name, shape in input_shapes.items()}
    shapes = [tuple(s) for s in input_shapes]
    if len(shapes) != len(inputs):
        raise source.error(f"input_shapes gives {len(shapes)} shapes for {len(inputs)} inputs "
                           f"({[v.name for v in inputs]})")
    return {v.name: shape for v, shape in zip(inputs, shapes)}


def _input_type(value, given: tuple | None, source: Source) -> TensorType:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type" or value.type.tensor_type.elem_type not in (
            TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.BOOL):
        raise source.error(f"input {value.name!r} must be a float, double, int64 or bool tensor")
    tensor_type = value.type.tensor_type
    dims = list(tensor_type.shape.dim) if tensor_type.HasField("shape") else None
    if given is not None:
        shape = _fitted(value.name, dims, given, source)
    elif dims is None:
        raise source.error(f"input {value.name!r} has no declared shape; give it with input_shapes (--input)")
    else:
        symbolic = [d.dim_param or "?" for d in dims if not d.HasField("dim_value")]
        if symbolic:
            raise source.error(f"input {value.name!r} has symbolic dimensions {symbolic}; give its shape with "
                               f"input_shapes={{{value.name!r}: (...)}} (--input on the command line; lucid's graphs have "
                               "static shapes)")
        shape = tuple(d.dim_value for d in dims)
    dtype = DTYPES[tensor_type.elem_type]
    checked_count(shape, np.dtype(dtype).itemsize, f"input {value.name!r}", source)
    return TensorType(shape, dtype)


def _fitted(name: str, dims, given: tuple, source: Source) -> tuple:
    """`given`, checked against the file's declared dimensions (rank, and every fixed size)."""
    if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in given):
        raise source.error(f"input_shapes: the shape of input {name!r} must be non-negative integers, got {given}")
    if dims is not None:
        declared = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        if len(declared) != len(given) or any(d is not None and d != g for d, g in zip(declared, given)):
            shown = tuple(d if d is not None else "?" for d in declared)
            raise source.error(f"input_shapes: input {name!r} is declared {shown}, which shape {given} does not fit")
    return tuple(int(d) for d in given)
