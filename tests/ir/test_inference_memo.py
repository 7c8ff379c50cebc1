"""Remembered shape-rule results (`ir/graph.py`, `_INFERRED`): a node whose operator, attributes and
input types were inferred before gets the same type and constraints, and nothing that would be
refused is let through because a look-alike passed."""
import pytest

import lucid
from lucid.errors import ShapeError
from lucid.ir import Graph, TensorType, graph as graph_module


def conv_graph():
    graph = Graph("memo")
    x = graph.add_input("x", TensorType((1, 2, 5, 5, 5), lucid.float32))
    w = graph.add_input("w", TensorType((3, 2, 3, 3, 3), lucid.float32))
    return graph, x, w


def conv_attributes(**changes):
    return dict(dict(stride=(1, 1, 1), padding=((1, 1),) * 3, dilation=(1, 1, 1), groups=1), **changes)


@pytest.mark.parametrize("groups", [True, 1.0, "1", (1,)])
def test_a_look_alike_of_a_valid_attribute_is_still_refused(groups):
    graph, x, w = conv_graph()
    assert graph.add_node("conv", [x, w], conv_attributes()).shape == (1, 3, 5, 5, 5)
    with pytest.raises(ShapeError, match="groups"):
        graph.add_node("conv", [x, w], conv_attributes(groups=groups))


def test_a_remembered_rule_gives_what_the_rule_gives():
    graph, x, w = conv_graph()
    first = graph.add_node("conv", [x, w], conv_attributes(padding=((0, 0),) * 3))
    again = graph.add_node("conv", [x, w], conv_attributes(padding=((0, 0),) * 3))
    graph_module._INFERRED.clear()
    fresh = graph.add_node("conv", [x, w], conv_attributes(padding=((0, 0),) * 3))
    assert first.type == again.type == fresh.type == TensorType((1, 3, 3, 3, 3), lucid.float32)


def test_symbolic_sizes_keep_their_constraints_when_remembered():
    d = lucid.dim("D", min=4)
    graph = Graph("memo")
    x = graph.add_input("x", TensorType((1, d // 2), lucid.float32))
    y = graph.add_input("y", TensorType((1, 2 * (d // 4)), lucid.float32))
    nodes = [graph.new_node("concat", [x, y], {"axis": 0}) for _ in range(2)]
    graph_module._INFERRED.clear()
    fresh = graph.new_node("concat", [x, y], {"axis": 0})
    assert fresh.constraints, "the concat assumes D // 2 == 2 * (D // 4)"
    for node in nodes:
        assert node.output.type == fresh.output.type and node.constraints == fresh.constraints


def test_the_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(graph_module, "INFERRED_LIMIT", 4)
    graph_module._INFERRED.clear()
    graph = Graph("memo")
    for size in range(2, 12):
        x = graph.add_input(f"x{size}", TensorType((size,), lucid.float32))
        graph.add_node("relu", [x], {})
    assert 0 < len(graph_module._INFERRED) <= 4
