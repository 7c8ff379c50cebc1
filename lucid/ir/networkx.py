"""`graph.to_networkx()`: the graph as a `networkx.DiGraph` for analysis and drawing.

Graph nodes are the inputs and parameters (keyed by name) and the operator nodes (keyed `%i`), with
attributes `kind` ('input', 'param', 'op' or 'constant'), `op`, `attrs`, `scope` and `type`; edges
run from producer to consumer and carry the value's `type` and the consumer's operand positions
`indices` (a list: `mul(%3, %3)` reads %3 twice over one edge).
"""
from __future__ import annotations

import networkx as nx

from .graph import Graph


def to_networkx(graph: Graph) -> nx.DiGraph:
    g = nx.DiGraph(name=graph.name)
    key = {}
    for kind, values in (("input", graph.inputs), ("param", graph.params)):
        for v in values:
            key[v] = v.name
            g.add_node(v.name, kind=kind, op=None, attrs={}, scope=None, type=v.type)
    for i, node in enumerate(graph.nodes):
        key[node.output] = f"%{i}"
        g.add_node(f"%{i}", kind="constant" if node.is_constant else "op", op=node.op, attrs=dict(node.attrs),
                   scope=node.scope, type=node.output.type)
        for index, v in enumerate(node.inputs):
            if g.has_edge(key[v], f"%{i}"):
                g.edges[key[v], f"%{i}"]["indices"].append(index)
            else:
                g.add_edge(key[v], f"%{i}", type=v.type, indices=[index])
    g.graph["outputs"] = [key[v] for v in graph.outputs]
    g.graph["state_updates"] = {name: key[v] for name, v in graph.state_updates.items()}
    return g
