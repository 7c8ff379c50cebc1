"""The graph's other forms and its checks (SPEC §4-5): text (`str(graph)` / `lucid.ir.parse`), files
(`graph.save` / `lucid.ir.load`), `to_networkx()`, `verify()`, and the input checks of `lucid.ir.run`.

- every model graph (and a graph of awkward constants and attributes) prints, parses back to an equal
  graph that prints identically, and survives a save/load round trip with its parameter values; the
  loaded graph runs to the same outputs with no module behind it;
- malformed text and foreign, corrupt, truncated, too-new or tampered files raise GraphError naming the
  line or the file;
- the networkx view has one node per input, parameter and operator node and one edge per data flow;
- the verifier catches hand-corrupted graphs; `run` checks inputs (count, shape, dtype) before computing
  anything and names a parameter that has no value.
"""
from __future__ import annotations

import os

import networkx as nx
import numpy as np
import pytest

import lucid
import lucid.nn.functional as F
from lucid.errors import DTypeError, GraphError, ShapeError
from lucid.ir import Graph, TensorType, ops
from model_helpers import randomise_batch_norm
from models import ConvAutoencoder3D, UNet3D, VideoClassifier
from seeds import Conv3dModel, Decoder, Decoder3D


def data(*shape, seed=1, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def same(actual, expected):
    """Equal arrays: same dtype and shape, equal values (nan where nan), and the same sign of zero."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)
    if actual.dtype.kind == "f":
        np.testing.assert_array_equal(np.signbit(actual), np.signbit(expected))


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


# ============================================================================ graphs under test

SPECIALS = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0, 1e-45, 3.4028235e38, 0.1, -1.5e-7, 16777217.0],
                    np.float32)
F64 = np.array([[0.1, 1 / 3], [-0.0, 1e-300], [np.nan, -np.inf]], np.float64)
INTS = np.array([-(2 ** 62), 0, 2 ** 53 + 1], np.int64)
MASK = np.array([True, False, True])


# Module-level tensors (kept alive): each becomes one constant node of the traced graph.
SPECIAL_T, F64_T = lucid.Tensor(SPECIALS), lucid.Tensor(F64, dtype=lucid.float64)
INTS_T, MASK_T = lucid.Tensor(INTS, dtype=lucid.int64), lucid.Tensor(MASK)


def constants_fn(x, d, i):
    special = x * SPECIAL_T                                                # f32 constant with inf/nan/-0.0
    shaped = F.pad(F.leaky_relu(x, 0.125).clamp(-1.5, 2.75), (1, 2), value=-0.5) ** 0.25
    wide = d[:2] + F64_T[:2] * 1e-3                                        # float64 constant (and slice attrs)
    count = i + INTS_T                                                     # int64 constant
    picked = ops.where(MASK_T, x[:3], -x[:3])                              # bool constant
    clipped = x.clamp(min=-np.inf, max=0.3)                                # inf as an attribute
    return special, shaped, wide, count, picked, x > 0.25, clipped, (picked,)[0]


def _model_case(factory, shape, train=False):
    def build():
        lucid.manual_seed(0)
        model = randomise_batch_norm(factory()).train(train)
        return lucid.trace(model, lucid.spec(*shape)), model, [data(*shape)]
    return build


def _constants_case():
    graph = lucid.trace(constants_fn, lucid.spec(10), lucid.spec(3, 2, dtype=lucid.float64),
                        lucid.spec(3, dtype=lucid.int64))
    inputs = [data(10), data(3, 2, seed=2, dtype=np.float64), np.array([1, -2, 3], np.int64)]
    return graph, None, inputs


def _one_tuple_case():
    graph = lucid.trace(lambda x: (x * x,), lucid.spec(2, 2))
    return graph, None, [data(2, 2)]


CASES = {
    "Decoder3D": _model_case(Decoder3D, (2, 8, 4, 4, 4)),
    "Decoder2d": _model_case(Decoder, (1, 16, 8, 8)),
    "Conv3dModel": _model_case(Conv3dModel, (1, 1, 10, 10, 10)),
    "UNet3D_eval": _model_case(lambda: UNet3D(base=2), (2, 1, 8, 8, 8)),
    "UNet3D_train": _model_case(lambda: UNet3D(base=2), (2, 1, 8, 8, 8), train=True),
    "ConvAutoencoder3D": _model_case(lambda: ConvAutoencoder3D(base=2, latent=4), (1, 1, 8, 8, 8)),
    "VideoClassifier_eval": _model_case(lambda: VideoClassifier(width=4), (2, 3, 2, 16, 16)),
    "VideoClassifier_train": _model_case(lambda: VideoClassifier(width=4), (2, 3, 2, 16, 16), train=True),
    "constants": _constants_case,
    "one_tuple": _one_tuple_case,
}


def small_graph():
    lucid.manual_seed(0)
    model = Decoder3D()
    return lucid.trace(model, lucid.spec(1, 8, 2, 2, 2)), model


# ============================================================================ text

@pytest.mark.parametrize("case", list(CASES))
def test_text_round_trip(case):
    graph, _, inputs = CASES[case]()
    text = str(graph)
    assert text.startswith(f"graph {graph.name} {{\n") and text.endswith("\n}")
    parsed = lucid.ir.parse(text)
    assert isinstance(parsed, Graph)
    assert str(parsed) == text
    assert parsed == graph and graph == parsed
    assert lucid.ir.parse(str(parsed)) == parsed
    # structure, not only the printout
    assert [v.name for v in parsed.inputs] == [v.name for v in graph.inputs]
    assert [(v.name, v.type) for v in parsed.params] == [(v.name, v.type) for v in graph.params]
    assert [n.op for n in parsed.nodes] == [n.op for n in graph.nodes]
    assert [n.scope for n in parsed.nodes] == [n.scope for n in graph.nodes]
    assert [n.output.type for n in parsed.nodes] == [n.output.type for n in graph.nodes]
    assert [repr(n.attrs) for n in parsed.nodes] == [repr(n.attrs) for n in graph.nodes]
    assert parsed.returns_tuple == graph.returns_tuple
    assert set(parsed.state_updates) == set(graph.state_updates)
    for a, b in zip(parsed.nodes, graph.nodes):
        if a.is_constant:
            same(a.value, b.value)
    assert parsed.bindings == {}                  # text carries no parameter values
    parsed.verify()
    # the parsed graph computes what the original does, given the same parameter values
    params = {name: np.asarray(value).copy() for name, value in graph.bindings.items()}
    for got, expected in zip(as_tuple(lucid.ir.run(parsed, *inputs, params=dict(params))),
                             as_tuple(lucid.ir.run(graph, *inputs))):
        same(got, expected)


def test_graph_equality_is_structural():
    graph, model = small_graph()
    assert graph == lucid.trace(model, lucid.spec(1, 8, 2, 2, 2))
    assert graph != lucid.trace(model, lucid.spec(2, 8, 2, 2, 2))
    assert graph != lucid.trace(model.deconv, lucid.spec(1, 8, 2, 2, 2))
    assert graph != str(graph)
    changed = lucid.ir.parse(str(graph).replace("relu(%0)", "sigmoid(%0)"))
    assert changed != graph


def test_constants_and_attributes_print_and_read_back_exactly():
    graph, _, _ = _constants_case()
    text = str(graph)
    for fragment in ("inf", "-inf", "nan", "-0.0", "1e-45", "3.4028235e+38", "1.6777216e+07",
                     "0.3333333333333333", "1e-300", "-4611686018427387904", "9007199254740993",
                     "[True, False, True]", "negative_slope=0.125", "min=-1.5, max=2.75", "min=-inf",
                     "value=-0.5", "exponent=0.25", "f64[3, 2]", "i64[3]", "bool[", "return ("):
        assert fragment in text, fragment
    parsed = lucid.ir.parse(text)
    constants = [(a.value, b.value) for a, b in zip(parsed.nodes, graph.nodes) if b.is_constant]
    assert {str(b.dtype) for _, b in constants} >= {"float32", "float64", "int64", "bool"}
    for a, b in constants:
        same(a, b)
    same([c for c, _ in constants if c.shape == SPECIALS.shape][0], SPECIALS)


def test_float32_and_float64_constants_round_trip_bit_for_bit():
    rng = np.random.default_rng(5)
    f32 = rng.integers(0, 2 ** 32, 3000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    f32 = f32[~np.isnan(f32)]                          # nan payloads are not kept, only nan
    f64 = rng.integers(-(2 ** 63), 2 ** 63 - 1, 1500, dtype=np.int64).view(np.float64)
    f64 = f64[~np.isnan(f64)]
    c32, c64 = lucid.Tensor(f32), lucid.Tensor(f64, dtype=lucid.float64)
    graph = lucid.trace(lambda a, b: (a + c32, b * c64), lucid.spec(f32.size), lucid.spec(f64.size, dtype=lucid.float64))
    parsed = lucid.ir.parse(str(graph))
    values = [n.value for n in parsed.nodes if n.is_constant]
    np.testing.assert_array_equal(values[0].view(np.uint32), f32.view(np.uint32))
    np.testing.assert_array_equal(values[1].view(np.uint64), f64.view(np.uint64))


def _lines(text):
    return text.splitlines()


def _edit(graph_text, index, new_line):
    lines = _lines(graph_text)
    lines[index] = new_line
    return "\n".join(lines)


# Decoder3D's text: 1 graph, 2 input, 3-4 params, 5 conv_transpose (%0), 6 relu (%1), 7 return, 8 }
PARSE_ERRORS = {
    "garbage_line": (lambda t: _edit(t, 4, "  this is not a graph line"), 5, "expected an input, param, node"),
    "undefined_value": (lambda t: _edit(t, 5, _lines(t)[5].replace("relu(%0)", "relu(%7)")), 6,
                        "%7 is used before it is defined"),
    "undefined_param": (lambda t: t.replace("%deconv.bias)", "%deconv.bais)"), 5, "%deconv.bais"),
    "wrong_type": (lambda t: _edit(t, 5, _lines(t)[5].replace("%1: f32[1, 4, 4, 4, 4]", "%1: f32[1, 4, 4, 4, 5]")),
                   6, "the text says f32[1, 4, 4, 4, 5], the rule of relu gives f32[1, 4, 4, 4, 4]"),
    "wrong_dtype": (lambda t: _edit(t, 5, _lines(t)[5].replace("%1: f32[", "%1: f64[")), 6, "the text says f64"),
    "unknown_op": (lambda t: t.replace("relu(%0)", "frobnicate(%0)"), 6, "unknown operator 'frobnicate'"),
    "unknown_dtype": (lambda t: t.replace("input %x: f32[", "input %x: f16["), 2, "unknown element type 'f16'"),
    "wrong_number": (lambda t: t.replace("%1: f32", "%5: f32"), 6, "expected node number %1, got %5"),
    "bad_attribute": (lambda t: t.replace("groups=1", "groups=__import__('os')"), 5, "not a literal"),
    "after_return": (lambda t: t.replace("  return %1", "  return %1\n  %2: f32[1, 4, 4, 4, 4] = relu(%1)"), 8,
                     "nothing may follow 'return'"),
    "bad_update": (lambda t: t.replace("  return %1", "  update %deconv.bias = %9\n  return %1"), 7,
                   "%9 is used before it is defined"),
    # attributes are checked against the operator's declared schemas, naming the op and the attribute
    "float_stride": (lambda t: t.replace("stride=(2, 2, 2)", "stride=(2.0, 2.0, 2.0)"), 5,
                     "conv_transpose: attribute stride must be a tuple of items, each an int >= 1, got (2.0, 2.0, 2.0)"),
    "float_groups": (lambda t: t.replace("groups=1}", "groups=1.0}"), 5,
                     "conv_transpose: attribute groups must be an int >= 1, got 1.0"),
    "bool_groups": (lambda t: t.replace("groups=1}", "groups=True}"), 5, "attribute groups must be an int >= 1, got True"),
    "zero_stride": (lambda t: t.replace("stride=(2, 2, 2)", "stride=(2, 0, 2)"), 5, "attribute stride must be"),
    "none_padding": (lambda t: t.replace("padding=((1, 1), (1, 1), (1, 1))", "padding=None"), 5,
                     "attribute padding must be a tuple of items, each a tuple of 2 items, each an int >= 0, got None"),
    "short_padding_pair": (lambda t: t.replace("padding=((1, 1), (1, 1), (1, 1))", "padding=((1, 1), (1,), (1, 1))"), 5,
                           "attribute padding must be"),
    "list_dilation": (lambda t: t.replace("dilation=(1, 1, 1)", "dilation=[1, 1, 1]"), 5, "got [1, 1, 1]"),
    "huge_stride": (lambda t: t.replace("stride=(2, 2, 2)", f"stride=(2, {2 ** 64}, 2)"), 5, "attribute stride must be"),
    "missing_attribute": (lambda t: t.replace(", groups=1}", "}"), 5,
                          "conv_transpose: expected the attributes stride, padding, dilation, groups, output_padding; "
                          "missing groups"),
    "unknown_attribute": (lambda t: t.replace("groups=1}", "groups=1, winograd=True}"), 5, "unknown winograd"),
    "attribute_of_relu": (lambda t: t.replace("relu(%0)", "relu(%0) {alpha=0.5}"), 6,
                          "relu: expected no attributes; unknown alpha"),
    "positional_attribute": (lambda t: t.replace("{stride=", "{7, stride="), 5, "expected attributes written name=literal"),
    "chained_call": (lambda t: t.replace(", groups=1}", ")(groups=1}"), 5, "expected attributes written name=literal"),
    "two_operands_of_relu": (lambda t: t.replace("relu(%0)", "relu(%0, %0)"), 6, "relu: expected 1 input, got 2"),
    "one_operand_of_conv": (lambda t: t.replace("(%x, %deconv.weight, %deconv.bias)", "(%x)"), 5,
                            "conv_transpose: expected 2 to 3 inputs, got 1"),
    "operand_garbage": (lambda t: t.replace("relu(%0)", "relu(%0 junk)"), 6, "expected operands written %name"),
    "update_of_an_input": (lambda t: t.replace("  return %1", "  update %x = %1\n  return %1"), 7,
                           "an update must target a parameter"),
    "update_of_another_type": (lambda t: t.replace("  return %1", "  update %deconv.bias = %1\n  return %1"), 7,
                               "%deconv.bias is a float32[4] parameter"),
    "return_without_comma": (lambda t: t.replace("return %1", "return %1 %0"), 7, "expected 'return %value'"),
    "return_nothing": (lambda t: t.replace("return %1", "return"), 7, "expected 'return %value'"),
    "bad_size": (lambda t: t.replace("input %x: f32[1, 8, 2, 2, 2]", "input %x: f32[1, 8, 2, 2 2]"), 2,
                 "expected a shape of comma-separated sizes"),
    "too_many_elements": (lambda t: t.replace("input %x: f32[1, 8, 2, 2, 2]", f"input %x: f32[1, 8, {2 ** 62}, 2, 2]"), 2,
                          "more elements than an int64 counts"),
}


@pytest.mark.parametrize("case", list(PARSE_ERRORS))
def test_parse_errors_name_the_line(case):
    edit, line_number, fragment = PARSE_ERRORS[case]
    graph, _ = small_graph()
    text = str(graph)
    assert _lines(text)[4].lstrip().startswith("%0: ") and _lines(text)[5].lstrip().startswith("%1: ")
    bad = edit(text)
    assert bad != text
    with pytest.raises(GraphError) as info:
        lucid.ir.parse(bad)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert f"line {line_number} " in message, message
    assert _lines(bad)[line_number - 1].strip()[:40] in message, message
    assert fragment in message, message


@pytest.mark.parametrize("text, fragment", [
    ("hello world", "graph NAME {"),
    ("", "graph NAME {"),
    ("graph g {\n  input %x: f32[2]\n  %0: f32[2] = relu(%x)\n}", "no 'return' line"),
    ("graph g {\n  input %x: f32[2]\n  return %x\n", "graph NAME {"),
    ("graph bad name {\n  return %x\n}", "graph NAME {"),
    (b"graph g {\n}", "expected the text of a graph (str), got bytes"),
    (None, "got NoneType"),
])
def test_garbage_text_is_a_graph_error(text, fragment):
    with pytest.raises(GraphError, match="lucid.ir.parse") as info:
        lucid.ir.parse(text)
    assert fragment in str(info.value)


def _constant_text(type_text, literal):
    return f"graph g {{\n  %0: {type_text} = constant {literal}\n  return %0\n}}"


@pytest.mark.parametrize("type_text, literal, fragment", [
    ("f32[]", "None", "a f32[] constant holds None; expected int or float elements"),
    ("f32[2]", "[1.0, None]", "holds None"),
    ("f32[]", "True", "holds True"),
    ("f32[]", "'1.0'", "holds '1.0'"),
    ("i64[]", "1.5", "holds 1.5; expected int elements"),
    ("i64[]", "True", "holds True; expected int elements"),
    ("bool[]", "1", "holds 1; expected bool elements"),
    ("i64[]", str(2 ** 63), "outside the int64 range"),
    ("f32[]", "1e39", "too large for its element type"),
    ("f64[]", str(10 ** 400), "not a regular nested list"),
    ("f32[]", "[1.0]", "has shape (1,), its type f32[]"),
    ("f32[2, 2]", "[1.0, 2.0, 3.0, 4.0]", "has shape (4,), its type f32[2, 2]"),
    ("f32[2, 2]", "[[1.0], [2.0, 3.0]]", "not a regular nested list"),
    ("f32[2]", "(1.0, 2.0)", "holds (1.0, 2.0)"),
])
def test_constants_hold_exactly_their_type(type_text, literal, fragment):
    """A constant's literal must be its type's element kind and shape; nothing is converted to fit
    (`constant None` once loaded as NaN)."""
    with pytest.raises(GraphError, match="line 2 ") as info:
        lucid.ir.parse(_constant_text(type_text, literal))
    assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize("type_text, literal, expected", [
    ("f32[]", "1", np.float32(1.0)), ("f32[2]", "[-inf, nan]", np.array([-np.inf, np.nan], np.float32)),
    ("f64[]", "1e-300", np.float64(1e-300)), ("i64[2]", f"[{-2 ** 63}, {2 ** 63 - 1}]", np.array([-2 ** 63, 2 ** 63 - 1])),
    ("bool[0]", "[]", np.zeros(0, bool)), ("f32[2, 0]", "[[], []]", np.zeros((2, 0), np.float32)),
])
def test_constants_of_every_kind_read_as_written(type_text, literal, expected):
    graph = lucid.ir.parse(_constant_text(type_text, literal))
    same(graph.nodes[0].value, expected)


def test_verify_checks_attributes_edited_after_a_node_was_built():
    graph, _ = small_graph()
    graph.nodes[0].attrs["groups"] = 1.0
    with pytest.raises(GraphError, match=r"node %0 \(conv_transpose\).*attribute groups must be an int >= 1, got 1.0"):
        graph.verify()
    graph.nodes[0].attrs["groups"] = 1
    del graph.nodes[0].attrs["dilation"]
    with pytest.raises(GraphError, match=r"node %0 \(conv_transpose\).*missing dilation"):
        graph.verify()


def test_every_operator_declares_its_attributes_with_the_schema_vocabulary():
    from lucid.ir.ops.attributes import Schema

    for name, opdef in ops.all_ops().items():
        assert isinstance(opdef.attributes, dict), name
        assert all(isinstance(schema, Schema) for schema in opdef.attributes.values()), name
    assert ops.get("fused").graph_attributes == ("body",)
    assert all(op.graph_attributes == () for name, op in ops.all_ops().items() if name != "fused")


# ============================================================================ files

@pytest.mark.parametrize("case", list(CASES))
def test_save_load_round_trip(case, tmp_path):
    graph, model, inputs = CASES[case]()
    path = tmp_path / f"{case}.lucidgraph"
    before = {name: np.asarray(value).copy() for name, value in graph.bindings.items()}
    expected = [np.asarray(a).copy() for a in as_tuple(lucid.ir.run(graph, *inputs))]
    if model is not None:                      # a train-mode run moved the statistics: put them back
        model.load_state_dict({**model.state_dict(), **before}, strict=True)
    graph.save(path)
    assert path.is_file()

    loaded = lucid.ir.load(path)
    assert loaded == graph and str(loaded) == str(graph)
    assert set(loaded.bindings) == set(graph.bindings) == {v.name for v in graph.params}
    for name, value in loaded.bindings.items():
        assert isinstance(value, np.ndarray)
        same(value, before[name])
        if model is not None:
            assert not np.shares_memory(value, np.asarray(graph.bindings[name]))

    # the loaded graph needs no module: wreck the module's weights (and, for a function, lose it)
    if model is not None:
        for tensor in list(model.parameters()) + list(model.buffers()):
            tensor.data[...] = 0
        del model
    got = as_tuple(lucid.ir.run(loaded, *inputs))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        same(g, e)
    if graph.state_updates:                    # the run updated the loaded graph's own arrays
        moved = [n for n in graph.state_updates if not np.array_equal(loaded.bindings[n], before[n])]
        assert sorted(moved) == sorted(graph.state_updates)
    # a str path works too, and loading twice gives independent graphs
    again = lucid.ir.load(str(path))
    assert again == graph
    for name, value in again.bindings.items():
        same(value, before[name])


def test_a_parsed_graph_saves_without_parameter_values(tmp_path):
    graph, _ = small_graph()
    parsed = lucid.ir.parse(str(graph))
    parsed.save(tmp_path / "g")
    loaded = lucid.ir.load(tmp_path / "g")
    assert loaded == graph and loaded.bindings == {}
    with pytest.raises(GraphError, match="'deconv.weight' has no value"):
        lucid.ir.run(loaded, data(1, 8, 2, 2, 2))


def _saved(graph, tmp_path, name="good.lucidgraph"):
    path = tmp_path / name
    graph.save(path)
    return path


def _archive(path, text, params, version=1, fmt="lucid-graph"):
    lucid.save({"format": fmt, "version": version, "text": text, "params": params}, path)
    return path


def _params(graph):
    return {name: np.asarray(value).copy() for name, value in graph.bindings.items()}


BAD_FILES = {
    "random_bytes": (lambda g, d: (d / "f").write_bytes(np.random.default_rng(0).bytes(600)),
                     "not a lucid graph file"),
    "empty": (lambda g, d: (d / "f").write_bytes(b""), "not a lucid graph file"),
    "graph_text_as_file": (lambda g, d: (d / "f").write_text(str(g)), "not a lucid graph file"),
    "truncated_half": (lambda g, d: (d / "f").write_bytes(_saved(g, d).read_bytes()[: len(_saved(g, d).read_bytes()) // 2]),
                       "not a lucid graph file"),
    "truncated_tail": (lambda g, d: (d / "f").write_bytes(_saved(g, d).read_bytes()[:-1]), "not a lucid graph file"),
    "truncated_text": (lambda g, d: _archive(d / "f", str(g)[: len(str(g)) // 2], _params(g)), "does not parse"),
    "state_dict": (lambda g, d: lucid.save({"weight": np.zeros(3)}, d / "f"), "a lucid file but not a graph"),
    "list": (lambda g, d: lucid.save([1, 2, 3], d / "f"), "a lucid file but not a graph"),
    "version_99": (lambda g, d: _archive(d / "f", str(g), {}, version=99), "version 99"),
    "version_0": (lambda g, d: _archive(d / "f", str(g), {}, version=0), "version 0"),
    "version_str": (lambda g, d: _archive(d / "f", str(g), {}, version="1"), "version '1'"),
    "no_text": (lambda g, d: _archive(d / "f", None, {}), "lacks the graph text"),
    "params_not_arrays": (lambda g, d: _archive(d / "f", str(g), {"deconv.bias": [1.0, 2.0]}), "parameter table"),
    "tampered_type": (lambda g, d: _archive(d / "f", str(g).replace("%1: f32[1, 4, 4, 4, 4]", "%1: f32[1, 4, 4, 4, 3]"),
                                            _params(g)), "line 6"),
    "tampered_op": (lambda g, d: _archive(d / "f", str(g).replace("relu(", "relux("), _params(g)),
                    "unknown operator 'relux'"),
    "tampered_attr": (lambda g, d: _archive(d / "f", str(g).replace("stride=(2, 2, 2)", "stride=(1, 2, 2)"), _params(g)),
                      "line 5"),
    "tampered_reference": (lambda g, d: _archive(d / "f", str(g).replace("relu(%0)", "relu(%x)"), _params(g)),
                           "the rule of relu gives f32[1, 8, 2, 2, 2]"),
    "tampered_param_shape": (lambda g, d: _archive(d / "f", str(g), {**_params(g), "deconv.bias": np.zeros(5, np.float32)}),
                             "deconv.bias"),
    "tampered_param_dtype": (lambda g, d: _archive(d / "f", str(g), {**_params(g), "deconv.bias": np.zeros(4)}),
                             "float64"),
    "param_for_nothing": (lambda g, d: _archive(d / "f", str(g), {**_params(g), "extra": np.zeros(1, np.float32)}),
                          "%extra"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_are_graph_errors_naming_the_file(case, tmp_path):
    make, fragment = BAD_FILES[case]
    graph, _ = small_graph()
    make(graph, tmp_path)
    path = tmp_path / "f"
    with pytest.raises(GraphError) as info:
        lucid.ir.load(path)
    message = str(info.value)
    assert message.startswith("lucid.ir.load: "), message
    assert os.fspath(path) in message, message
    assert fragment in message, message


def test_random_truncations_and_bit_flips_never_escape_as_other_errors(tmp_path):
    graph, _ = small_graph()
    raw = _saved(graph, tmp_path).read_bytes()
    path = tmp_path / "f"
    rng = np.random.default_rng(3)
    outcomes = {"loaded": 0, "refused": 0}
    for cut in list(range(0, len(raw), max(1, len(raw) // 40))) + [len(raw) - 1]:
        path.write_bytes(raw[:cut])
        with pytest.raises(GraphError):
            lucid.ir.load(path)
    for _ in range(60):
        flipped = bytearray(raw)
        flipped[rng.integers(len(raw))] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(flipped))
        try:
            loaded = lucid.ir.load(path)
        except GraphError:
            outcomes["refused"] += 1
        else:                           # a flip in an unchecked zip field: the graph is intact
            assert loaded == graph
            outcomes["loaded"] += 1
    assert outcomes["refused"] > outcomes["loaded"]


# ============================================================================ networkx

def _expected_edges(graph):
    key = {v: v.name for v in graph.inputs + graph.params}
    edges = {}
    for i, node in enumerate(graph.nodes):
        key[node.output] = f"%{i}"
        for position, v in enumerate(node.inputs):
            edges.setdefault((key[v], f"%{i}"), []).append(position)
    return edges


@pytest.mark.parametrize("case", ["UNet3D_train", "VideoClassifier_eval", "constants"])
def test_to_networkx_follows_the_data_flow(case):
    graph, _, _ = CASES[case]()
    g = graph.to_networkx()
    assert type(g) is nx.DiGraph
    expected_nodes = ([v.name for v in graph.inputs] + [v.name for v in graph.params]
                      + [f"%{i}" for i in range(len(graph.nodes))])
    assert len(set(expected_nodes)) == len(expected_nodes)
    assert set(g.nodes) == set(expected_nodes) and g.number_of_nodes() == len(expected_nodes)
    edges = _expected_edges(graph)
    assert set(g.edges) == set(edges)
    for (u, v), positions in edges.items():
        assert g.edges[u, v]["indices"] == positions
    assert nx.is_directed_acyclic_graph(g)
    for v in graph.inputs:
        assert g.nodes[v.name]["kind"] == "input" and g.in_degree(v.name) == 0
    for v in graph.params:
        assert g.nodes[v.name]["kind"] == "param" and g.in_degree(v.name) == 0
    for i, node in enumerate(graph.nodes):
        attrs = g.nodes[f"%{i}"]
        assert attrs["kind"] == ("constant" if node.is_constant else "op")
        assert attrs["op"] == node.op and attrs["scope"] == node.scope and attrs["type"] == node.output.type
        assert g.in_degree(f"%{i}") == len({id(v) for v in node.inputs})
    # every parameter feeds something; a topological order of the view is a valid schedule
    assert all(g.out_degree(v.name) > 0 for v in graph.params)
    order = {n: i for i, n in enumerate(nx.topological_sort(g))}
    assert all(order[u] < order[v] for u, v in g.edges)


def test_to_networkx_repeated_operand_is_one_edge_with_both_positions():
    graph = lucid.trace(lambda x: (x * x + 1) * (x * x + 1), lucid.spec(3))
    g = graph.to_networkx()
    muls = [i for i, n in enumerate(graph.nodes) if n.op == "mul"]
    assert g.edges["x", f"%{muls[0]}"]["indices"] == [0, 1]
    assert g.number_of_nodes() == 1 + len(graph.nodes)
    assert g.graph["outputs"] == [f"%{len(graph.nodes) - 1}"]


def test_to_networkx_records_outputs_and_state_updates():
    graph, _, _ = CASES["VideoClassifier_train"]()
    g = graph.to_networkx()
    index = {node.output: f"%{i}" for i, node in enumerate(graph.nodes)}
    assert g.graph["outputs"] == [index[v] for v in graph.outputs]
    assert g.graph["state_updates"] == {name: index[v] for name, v in graph.state_updates.items()}
    assert set(g.graph["state_updates"]) == {n for n in (v.name for v in graph.params)
                                            if n.split(".")[-1] in ("running_mean", "running_var", "num_batches_tracked")}


# ============================================================================ verify

def _corrupt_type(g):
    g.nodes[0].output.type = TensorType((1, 4, 4, 4, 5), lucid.float32)


def _swap_nodes(g):
    g.nodes[0], g.nodes[1] = g.nodes[1], g.nodes[0]


def _change_attr(g):
    g.nodes[0].attrs["stride"] = (1, 1, 1)


def _unknown_op(g):
    g.nodes[1].op = "frobnicate"


def _foreign_value(g):
    other = lucid.ir.parse(str(g))
    g.outputs = [other.nodes[-1].output]


def _foreign_operand(g):
    other = lucid.ir.parse(str(g))
    g.nodes[1].inputs = (other.nodes[0].output,)


def _bad_binding(g):
    g.bindings["deconv.bias"] = np.zeros(3, np.float32)


def _binding_without_param(g):
    g.bindings["nothing"] = np.zeros(3, np.float32)


def _duplicate_param(g):
    g.params.append(g.params[0])


def _bad_update(g):
    g.state_updates["deconv.bias"] = g.nodes[1].output            # f32[1, 4, 4, 4, 4] into f32[4]


def _constant_changed(g):
    node = g.nodes[0]
    node.value = np.zeros(7, np.float32)


@pytest.mark.parametrize("corrupt, fragment", [
    (_corrupt_type, "recorded as float32[1, 4, 4, 4, 5] but its rule gives float32[1, 4, 4, 4, 4]"),
    (_swap_nodes, "before it is defined"),
    (_change_attr, "rule gives"),
    (_unknown_op, "frobnicate"),
    (_foreign_value, "undefined value"),
    (_foreign_operand, "before it is defined"),
    (_bad_binding, "%deconv.bias"),
    (_binding_without_param, "%nothing"),
    (_duplicate_param, "duplicate"),
    (_bad_update, "state update of %deconv.bias"),
], ids=lambda v: v.__name__ if callable(v) else "")
def test_verify_catches_hand_corrupted_graphs(corrupt, fragment):
    graph, _ = small_graph()
    assert graph.verify() is graph
    corrupt(graph)
    with pytest.raises(GraphError, match="is malformed") as info:
        graph.verify()
    assert fragment in str(info.value), str(info.value)
    with pytest.raises(GraphError):
        lucid.ir.verify(graph)


def test_verify_catches_a_constant_whose_data_changed():
    graph = lucid.trace(lambda x: x + lucid.Tensor(np.ones(3, np.float32)), lucid.spec(3))
    graph.verify()
    _constant_changed(graph)
    with pytest.raises(GraphError, match="node %0 \\(constant\\)"):
        graph.verify()


@pytest.mark.parametrize("case", list(CASES))
def test_every_traced_graph_verifies(case):
    graph, _, _ = CASES[case]()
    assert graph.verify() is graph
    assert lucid.ir.parse(str(graph)).verify() is not None


# ============================================================================ run: input checks

@pytest.fixture
def no_kernels(monkeypatch):
    """Count kernel calls: `run` must refuse bad inputs before computing anything."""
    calls = []
    for name in ops.all_ops():
        opdef = ops.get(name)
        original = opdef.compute

        def counting(attrs, *arrays, _name=name, _original=original):
            calls.append(_name)
            return _original(attrs, *arrays)
        monkeypatch.setitem(vars(opdef), "compute", counting)      # undo removes it again
    return calls


def test_run_checks_input_shape_dtype_and_count_before_computing(no_kernels):
    lucid.manual_seed(0)
    model = VideoClassifier(width=4).train()
    graph = lucid.trace(model, lucid.spec(1, 3, 2, 16, 16))
    state = {k: v.copy() for k, v in model.state_dict().items()}
    good = data(1, 3, 2, 16, 16)
    bad_calls = [
        (ShapeError, ["'x'", "(1, 3, 2, 16, 16)", "(1, 3, 2, 16, 8)"], (data(1, 3, 2, 16, 8),)),
        (ShapeError, ["'x'", "(1, 3, 2, 16, 16)", "(3, 2, 16, 16)"], (data(3, 2, 16, 16),)),
        (DTypeError, ["'x'", "float32", "float64"], (good.astype(np.float64),)),
        (DTypeError, ["'x'", "float32", "int64"], (good.astype(np.int64),)),
        (ShapeError, ["expected 1 input", "(x)", "got 0"], ()),
        (ShapeError, ["expected 1 input", "(x)", "got 2"], (good, good)),
    ]
    for error, fragments, inputs in bad_calls:
        with pytest.raises(error) as info:
            lucid.ir.run(graph, *inputs)
        assert str(info.value).startswith("lucid.ir.run(VideoClassifier)"), str(info.value)
        for fragment in fragments:
            assert fragment in str(info.value), str(info.value)
    assert no_kernels == []
    for name, value in model.state_dict().items():          # no state update was written either
        np.testing.assert_array_equal(value, state[name])
    lucid.ir.run(graph, good)                               # the counter does see kernels run
    assert "conv" in no_kernels


def test_run_names_the_offending_input_among_several(no_kernels):
    graph = lucid.trace(lambda a, b: a @ b, lucid.spec(2, 3), lucid.spec(3, 4))
    with pytest.raises(ShapeError, match="input 'b' must have shape \\(3, 4\\), got \\(4, 3\\)"):
        lucid.ir.run(graph, data(2, 3), data(4, 3))
    with pytest.raises(DTypeError, match="input 'a' must have dtype float32, got float64"):
        lucid.ir.run(graph, data(2, 3, dtype=np.float64), data(3, 4))
    assert no_kernels == []
    np.testing.assert_allclose(lucid.ir.run(graph, data(2, 3), data(3, 4)), data(2, 3) @ data(3, 4), rtol=1e-6)


def test_run_without_bindings_names_the_missing_parameter(no_kernels):
    graph, model = small_graph()
    x = data(1, 8, 2, 2, 2)
    expected = lucid.ir.run(graph, x)
    parsed = lucid.ir.parse(str(graph))
    no_kernels.clear()
    with pytest.raises(GraphError, match="parameter 'deconv.weight' has no value; pass params="):
        lucid.ir.run(parsed, x)
    with pytest.raises(GraphError, match="parameter 'deconv.bias' has no value"):
        lucid.ir.run(parsed, x, params={"deconv.weight": model.deconv.weight.numpy()})
    with pytest.raises(GraphError, match=r"no parameters named \['deconv.wieght'\]"):
        lucid.ir.run(parsed, x, params={"deconv.wieght": model.deconv.weight.numpy(),
                                        "deconv.bias": model.deconv.bias.numpy()})
    with pytest.raises(ShapeError, match="parameter 'deconv.bias' must have shape \\(4,\\), got \\(3,\\)"):
        lucid.ir.run(parsed, x, params={"deconv.weight": model.deconv.weight.numpy(),
                                        "deconv.bias": np.zeros(3, np.float32)})
    assert no_kernels == []
    params = {"deconv.weight": model.deconv.weight.numpy(), "deconv.bias": model.deconv.bias.numpy()}
    same(lucid.ir.run(parsed, x, params=params), expected)
    # other values give other results, equal to the eager module with those values
    params = {"deconv.weight": data(8, 4, 4, 4, 4, seed=4) * 0.1, "deconv.bias": data(4, seed=5)}
    model.deconv.weight.data[...] = params["deconv.weight"]
    model.deconv.bias.data[...] = params["deconv.bias"]
    np.testing.assert_allclose(lucid.ir.run(parsed, x, params=params), model(lucid.Tensor(x)).numpy(),
                               rtol=1e-6, atol=1e-6)
