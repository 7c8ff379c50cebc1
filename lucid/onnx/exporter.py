"""`lucid.onnx.save`: a lucid model or graph written as an ONNX model (opset `OPSET`).

A module is traced in eval mode, as `lucid.export` does (a graph is written as it is); each node
becomes ONNX nodes through its entry in `WRITERS`, lucid operator name -> writer, the one table of
them. A writer gets an `Emitter` (which names values and adds nodes and constant tensors) and the
node, and returns the name of the node's result. Parameters become initialisers named by their
graph names, constants initialisers of their own. An operator without an ONNX form, or attribute
values ONNX cannot say (a pad's interior padding, an average pool's divisor_override), are an
`OnnxError` naming the operator.
"""
from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from ..errors import OnnxError
from ..ir.graph import Graph
from ..ir.ops.resample import BLENDING
from ..nn.functional import SELU_ALPHA, SELU_SCALE
from ..tracing import trace_in_eval_mode

#: The opset written: Mish and ReduceMean's axes input need 18.
OPSET = 18

ELEMENT_TYPES = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE, "int64": TensorProto.INT64,
                 "bool": TensorProto.BOOL}


def save(fn_or_module_or_graph, *inputs, path) -> None:
    """Write `path`: the graph, or the model traced on `inputs` (lucid.spec's or Tensors) in eval mode."""
    if isinstance(fn_or_module_or_graph, Graph):
        if inputs:
            raise OnnxError(f"lucid.onnx.save: graph {fn_or_module_or_graph.name} is written as it is; "
                            f"got {len(inputs)} inputs for it")
        graph = fn_or_module_or_graph
    else:
        graph = trace_in_eval_mode(fn_or_module_or_graph, *inputs)
    with open(path, "wb") as file:
        file.write(to_model(graph).SerializeToString())


def to_model(graph: Graph):
    """The ONNX ModelProto of a graph."""
    if graph.state_updates:
        raise OnnxError(f"lucid.onnx.save: graph {graph.name} updates state (a module in training mode); "
                        "save it in eval mode")
    emitter = Emitter(graph)
    for node in graph.nodes:
        emitter.names[node.output] = emitter.write(node)
    outputs = [emitter.output(k, v) for k, v in enumerate(graph.outputs)]
    onnx_graph = helper.make_graph(emitter.nodes, graph.name, [_value_info(v.name, v) for v in graph.inputs],
                                   outputs, emitter.initialisers)
    return helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lucid")


def _value_info(name: str, value):
    return helper.make_tensor_value_info(name, ELEMENT_TYPES[value.dtype.name], list(value.shape))


class Emitter:
    """The ONNX graph being written: value names, nodes and initialisers."""

    def __init__(self, graph: Graph):
        self.graph, self.nodes, self.initialisers = graph, [], []
        self.names = {v: v.name for v in graph.inputs}
        for v in graph.params:
            self.names[v] = v.name
            self.initialisers.append(numpy_helper.from_array(np.asarray(graph.bindings[v.name]), v.name))
        self.count = 0

    def fresh(self) -> str:
        self.count += 1
        return f"t{self.count}"

    def write(self, node) -> str:
        if node.is_constant:
            return self.tensor(np.asarray(node.value))
        writer = WRITERS.get(node.op)
        if writer is None:
            raise OnnxError(f"lucid.onnx.save: operator {node.op!r} has no ONNX form in lucid "
                            f"(lucid writes {', '.join(sorted(WRITERS))})")
        return writer(self, node, *(self.names[v] for v in node.inputs))

    def add(self, op: str, inputs: list, **attrs) -> str:
        """A node applying `op` to the named inputs; the name of its one output."""
        output = self.fresh()
        self.nodes.append(helper.make_node(op, list(inputs), [output], **attrs))
        return output

    def tensor(self, array) -> str:
        name = self.fresh()
        self.initialisers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def ints(self, values) -> str:
        return self.tensor(np.array(values, dtype=np.int64))

    def scalar(self, value, like) -> str:
        return self.tensor(np.array(value, dtype=like.dtype.numpy))

    def output(self, position: int, value):
        name = f"output{position}" if len(self.graph.outputs) > 1 else "output"
        self.nodes.append(helper.make_node("Identity", [self.names[value]], [name]))
        return _value_info(name, value)


def error(node, message: str) -> OnnxError:
    return OnnxError(f"lucid.onnx.save: {node.op}: {message}")


# ---------------------------------------------------------------------------------------------- writers


def same(op: str):
    """An operator ONNX has under another name, with the same inputs and no attributes."""
    return lambda e, node, *names: e.add(op, list(names))


def _onnx_pads(padding) -> list:
    return [lo for lo, _ in padding] + [hi for _, hi in padding]


def conv(e, node, *names):
    a = node.attrs
    return e.add("Conv", list(names), strides=list(a["stride"]), pads=_onnx_pads(a["padding"]),
                 dilations=list(a["dilation"]), group=a["groups"])


def conv_transpose(e, node, *names):
    a = node.attrs
    return e.add("ConvTranspose", list(names), strides=list(a["stride"]), pads=_onnx_pads(a["padding"]),
                 dilations=list(a["dilation"]), group=a["groups"], output_padding=list(a["output_padding"]))


def max_pool(e, node, x):
    a = node.attrs
    return e.add("MaxPool", [x], kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                 pads=list(a["padding"]) * 2, dilations=list(a["dilation"]), ceil_mode=int(a["ceil_mode"]))


def avg_pool(e, node, x):
    a = node.attrs
    if a["divisor_override"] is not None:
        raise error(node, "divisor_override has no ONNX form")
    return e.add("AveragePool", [x], kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                 pads=list(a["padding"]) * 2, ceil_mode=int(a["ceil_mode"]),
                 count_include_pad=int(a["count_include_pad"]))


def moments(e, node, x):
    """Mean and biased variance over the node's axes (two passes, where the kernel makes one),
    stacked on a new axis 0."""
    axes = e.ints(list(node.attrs["axes"]))
    mean = e.add("ReduceMean", [x, axes], keepdims=1)
    centred = e.add("Sub", [x, mean])
    var = e.add("ReduceMean", [e.add("Mul", [centred, centred]), axes], keepdims=1)
    return e.add("Concat", [e.add("Unsqueeze", [e.add("Squeeze", [v, axes]), e.ints([0])]) for v in (mean, var)],
                 axis=0)


def normalize(e, node, x, mean, rstd, weight, bias):
    return e.add("Add", [e.add("Mul", [e.add("Mul", [e.add("Sub", [x, mean]), rstd]), weight]), bias])


def softmax(op: str):
    return lambda e, node, x: e.add(op, [x], axis=node.attrs["axis"])


def reduce(op: str):
    return lambda e, node, x: e.add(op, [x, e.ints(node.attrs["axes"])], keepdims=int(node.attrs["keepdims"]))


def argmax(e, node, x):
    return e.add("ArgMax", [x], axis=node.attrs["axis"], keepdims=int(node.attrs["keepdims"]))


def reshape(e, node, x):
    return e.add("Reshape", [x, e.ints(node.attrs["shape"])])


def permute(e, node, x):
    return e.add("Transpose", [x], perm=list(node.attrs["perm"]))


def broadcast_to(e, node, x):
    return e.add("Expand", [x, e.ints(node.attrs["shape"])])


def pad(e, node, x):
    a = node.attrs
    if any(a["interior"]):
        raise error(node, f"interior padding {a['interior']} has no ONNX form")
    value = e.scalar(a["value"], node.inputs[0])
    return e.add("Pad", [x, e.ints(list(a["lo"]) + list(a["hi"])), value], mode="constant")


def slice_(e, node, x):
    a = node.attrs
    return e.add("Slice", [x, e.ints(a["starts"]), e.ints(a["stops"]), e.ints(range(len(a["starts"]))),
                           e.ints(a["steps"])])


def concat(e, node, *names):
    return e.add("Concat", list(names), axis=node.attrs["axis"])


def resample(e, node, x):
    """One axis of PyTorch's interpolation as a Resize: the coordinate mode PyTorch exports for it."""
    a, shape = node.attrs, node.inputs[0].shape
    if a["mode"] == "linear-asymmetric":
        coordinates, extra = "asymmetric", {}
    elif a["mode"] == "linear":
        coordinates, extra = ("align_corners" if a["align_corners"] else "pytorch_half_pixel"), {}
    else:
        coordinates = "asymmetric" if a["mode"] == "nearest" else "half_pixel"
        extra = {"nearest_mode": "floor" if a["mode"] == "nearest" else "round_prefer_ceil"}
    mode = "linear" if a["mode"] in BLENDING else "nearest"
    if a["scale"] is not None and math.floor(shape[a["axis"]] / a["scale"]) == a["size"]:
        scales = np.ones(len(shape), np.float32)
        scales[a["axis"]] = 1.0 / a["scale"]
        inputs = [x, "", e.tensor(scales)]
    else:
        sizes = list(shape)
        sizes[a["axis"]] = a["size"]
        inputs = [x, "", "", e.ints(sizes)]
    return e.add("Resize", inputs, mode=mode, coordinate_transformation_mode=coordinates, **extra)


def leaky_relu(e, node, x):
    return e.add("LeakyRelu", [x], alpha=node.attrs["negative_slope"])


def gelu(e, node, x):
    """0.5 x (1 + erf(x / sqrt 2)), or the tanh form: Gelu itself is opset 20."""
    like = node.inputs[0]
    if node.attrs["approximate"] == "tanh":
        cube = e.add("Mul", [e.add("Mul", [x, x]), x])
        inner = e.add("Mul", [e.add("Add", [x, e.add("Mul", [cube, e.scalar(0.044715, like)])]),
                              e.scalar(math.sqrt(2 / math.pi), like)])
        curve = e.add("Tanh", [inner])
    else:
        curve = e.add("Erf", [e.add("Mul", [x, e.scalar(1 / math.sqrt(2), like)])])
    return e.add("Mul", [e.add("Mul", [x, e.scalar(0.5, like)]), e.add("Add", [curve, e.scalar(1.0, like)])])


def pow_scalar(e, node, x):
    return e.add("Pow", [x, e.scalar(node.attrs["exponent"], node.inputs[0])])


def clamp(e, node, x):
    bounds = [node.attrs["min"], node.attrs["max"]]
    return e.add("Clip", [x] + [e.scalar(b, node.inputs[0]) if b is not None else "" for b in bounds])


def hardtanh(e, node, x):
    return e.add("Clip", [x, e.scalar(node.attrs["min_val"], node.inputs[0]), e.scalar(node.attrs["max_val"], node.inputs[0])])


def cast(e, node, x):
    return e.add("Cast", [x], to=ELEMENT_TYPES[node.attrs["dtype"]])


def elu(e, node, x):
    alpha, scale, input_scale = node.attrs["alpha"], node.attrs["scale"], node.attrs["input_scale"]
    if scale == 1.0 and input_scale == 1.0:
        return e.add("Elu", [x], alpha=alpha)
    if (alpha, scale, input_scale) == (SELU_ALPHA, SELU_SCALE, 1.0):
        return e.add("Selu", [x], alpha=alpha, gamma=scale)
    if scale == 1.0 and math.isclose(input_scale * alpha, 1.0):
        return e.add("Celu", [x], alpha=alpha)
    raise error(node, f"alpha={alpha}, scale={scale}, input_scale={input_scale} is none of ELU, SELU, CELU")


def softplus(e, node, x):
    beta = node.attrs["beta"]
    if beta == 1.0:
        return e.add("Softplus", [x])
    like = node.inputs[0]
    return e.add("Div", [e.add("Softplus", [e.add("Mul", [x, e.scalar(beta, like)])]), e.scalar(beta, like)])


def silu(e, node, x):
    return e.add("Mul", [x, e.add("Sigmoid", [x])])


def hardsigmoid(e, node, x):
    return e.add("HardSigmoid", [x], alpha=1 / 6, beta=0.5)


def not_equal(e, node, a, b):
    return e.add("Not", [e.add("Equal", [a, b])])


WRITERS = {
    "conv": conv, "conv_transpose": conv_transpose, "max_pool": max_pool, "avg_pool": avg_pool,
    "moments": moments, "normalize": normalize, "softmax": softmax("Softmax"), "log_softmax": softmax("LogSoftmax"),
    "sum": reduce("ReduceSum"), "mean": reduce("ReduceMean"), "max": reduce("ReduceMax"), "min": reduce("ReduceMin"),
    "argmax": argmax, "reshape": reshape, "permute": permute, "broadcast_to": broadcast_to, "pad": pad,
    "slice": slice_, "concat": concat, "resample": resample, "matmul": same("MatMul"),
    "add": same("Add"), "sub": same("Sub"), "mul": same("Mul"), "div": same("Div"), "maximum": same("Max"),
    "minimum": same("Min"), "where": same("Where"), "eq": same("Equal"), "ne": not_equal, "lt": same("Less"),
    "le": same("LessOrEqual"), "gt": same("Greater"), "ge": same("GreaterOrEqual"),
    "neg": same("Neg"), "abs": same("Abs"), "sign": same("Sign"), "exp": same("Exp"), "log": same("Log"),
    "sqrt": same("Sqrt"), "erf": same("Erf"), "tanh": same("Tanh"), "sigmoid": same("Sigmoid"), "relu": same("Relu"),
    "leaky_relu": leaky_relu, "gelu": gelu, "pow_scalar": pow_scalar, "clamp": clamp, "cast": cast,
    "elu": elu, "softplus": softplus, "silu": silu, "mish": same("Mish"), "hardtanh": hardtanh,
    "hardsigmoid": hardsigmoid, "hardswish": same("HardSwish"), "prelu": same("PRelu"),
}
