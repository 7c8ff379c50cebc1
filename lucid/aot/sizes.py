"""The sizes of a library's calls, as the C code `aot_runtime.c` is compiled with.

A graph with symbolic dimensions (`lucid.dim`) is exported once for every size. A call passes the
**shapes** of its inputs: every input's full shape, concatenated in input order (`LUCID_INPUT_DIMS`
int64 values). From them the library
1. reads each symbol (in the order of `BufferTable.symbols`, the names sorted) from the first input
   axis that is that symbol alone (`symbol_axis`) and checks it lies in the symbol's range
   (`symbol_min`, `symbol_max`: -1 when it has none);
2. checks the graph's constraints (`constraint_holds`, each naming its symbol and, in
   `constraint_text`, the node that needed it);
3. computes every size of the call with `sizes_at(d, s)`: each input's and output's dims, the arena
   offsets and the arena's bytes, at offsets `LUCID_SIZE_*` of `s`; with int64 arithmetic that
   reports overflow (`checked_add`, `checked_mul` of aot_runtime.c), so sizes too large are refused,
   never wrapped;
4. checks every input dim the caller gave against its size at those symbols (a concrete dim, or an
   expression such as `2*N`, or a symbol given on another axis too).
A concrete graph has no symbols: its sizes are constants, and the same code serves it.
`runs_serially_at(d)` is `codegen.build.runs_serially` at the call's sizes (flops computed per call
from `flops_by_size`; a graph whose flops cannot be counted symbolically always uses threads).
"""
from __future__ import annotations

from ..errors import ExportError
from ..ir import symbolic
from ..ir.graph import Graph
from ..ir.specialize import _origin
from ..codegen.build import SERIAL_FLOPS, flops_by_size, runs_serially


def define_sizes(tables, graph: Graph, plan, table) -> None:
    """Add the symbols, constraints and size functions of `graph` (planned by `plan`, laid out in
    `table`) to `tables` (the emitter's generated header)."""
    symbols = table.symbols
    input_dims = [d for v in graph.inputs for d in v.shape]
    output_dims = [d for v in graph.outputs for d in v.shape]
    _define_shapes(tables, "input", graph.inputs)
    _define_shapes(tables, "output", graph.outputs)
    tables.array("input_dim_text", "char *", [c_string(str(d)) for d in input_dims])
    _define_symbols(tables, graph, symbols)
    arena = list(table.arena.values())
    tables.define("LUCID_SIZE_OUTPUT_DIMS", len(input_dims))
    tables.define("LUCID_SIZE_ARENA_OFFSETS", len(input_dims) + len(output_dims))
    tables.define("LUCID_SIZE_ARENA_BYTES", len(input_dims) + len(output_dims) + len(arena))
    sizes = input_dims + output_dims + arena + [plan.arena_bytes]
    tables.define("LUCID_NUM_SIZES", len(sizes))
    tables.lines += ["/* every size of a call at the symbols' values d (see LUCID_SIZE_*); 1 when one overflows int64 */",
                     "static int sizes_at(const int64_t *d, int64_t *s) {",
                     "    int overflow = 0, *overflow_flag = &overflow;", "    (void)d; (void)overflow_flag;"]
    tables.lines += [f"    s[{k}] = {_c_size(size, symbols)};" for k, size in enumerate(sizes)]
    tables.lines += ["    return overflow;", "}"]
    _define_serial_rule(tables, graph, symbols)


def _define_shapes(tables, what: str, values: list) -> None:
    """Each value's rank, where its dims start in the concatenated shapes, and its declared dims
    (-1 for a symbolic one): what `N_input_shape` and `N_output_shape` report."""
    ranks = [len(v.shape) for v in values]
    tables.array(f"{what}_rank", "int", ranks)
    tables.array(f"{what}_first", "int", [sum(ranks[:k]) for k in range(len(ranks))])
    tables.define(f"LUCID_{what.upper()}_DIMS", sum(ranks))
    tables.array(f"{what}_declared", "int64_t",
                 [-1 if symbolic.is_symbolic(d) else int(d) for v in values for d in v.shape])


def _define_symbols(tables, graph: Graph, symbols: tuple) -> None:
    """The symbols (where each is read, its range) and the constraints the graph records."""
    by_name = {s.name: s for s in graph.symbols()}
    tables.define("LUCID_NUM_SYMBOLS", len(symbols))
    tables.array("symbol_name", "char *", [c_string(name) for name in symbols])
    tables.array("symbol_axis", "int", [_first_axis(graph, name) for name in symbols])
    tables.array("symbol_min", "int64_t", [by_name[name].min for name in symbols])
    tables.array("symbol_max", "int64_t", [-1 if by_name[name].max is None else by_name[name].max for name in symbols])
    constraints = list(graph.constraints)
    tables.define("LUCID_NUM_CONSTRAINTS", len(constraints))
    tables.array("constraint_symbol", "int", [symbols.index(min(c.symbols, key=lambda s: s.name).name)
                                              for c, _ in constraints])
    tables.array("constraint_text", "char *", [c_string(f"{c}, required by {_origin(node)}") for c, node in constraints])
    tables.lines += ["/* whether constraint k holds at the symbols' values d */",
                     "static int constraint_holds(int k, const int64_t *d, int *overflow_flag) {",
                     "    (void)d; (void)overflow_flag;", "    switch (k) {"]
    tables.lines += [f"    case {k}: return {_c_size(c.expr, symbols)} {c.op} INT64_C({c.bound});"
                     for k, (c, _) in enumerate(constraints)]
    tables.lines += ["    }", "    return 0;", "}"]


def _first_axis(graph: Graph, name: str) -> int:
    """The position, in the concatenated input shapes, of the first axis that is the symbol alone."""
    dims = [d for v in graph.inputs for d in v.shape]
    for position, d in enumerate(dims):
        if isinstance(d, symbolic.Expr) and d.symbol is not None and d.symbol.name == name:
            return position
    raise ExportError(f"lucid.export: graph {graph.name}'s symbolic dimension {name} is no input's axis on its own "
                      "(only in expressions such as 2*N), so a call's input shapes would not give its size; "
                      f"give some input an axis of size {name}")


def _define_serial_rule(tables, graph: Graph, symbols: tuple) -> None:
    """`runs_serially_at(d)`: whether a call at these sizes runs on one thread by default."""
    lines = ["/* whether a call at the symbols' values d runs on one thread unless told otherwise */",
             "static int runs_serially_at(const int64_t *d) {", "    (void)d;"]
    flops = flops_by_size(graph) if symbols else None
    if not symbols:
        lines.append(f"    return {int(runs_serially(graph))};")
    elif flops is None:
        lines.append("    return 0;                    /* flops not countable symbolically: threads */")
    else:
        lines += ["    int overflow = 0, *overflow_flag = &overflow;", f"    int64_t flops = {_c_size(flops, symbols)};",
                  f"    return !overflow && flops < INT64_C({SERIAL_FLOPS});"]
    tables.lines += lines + ["}"]


def _c_size(size, symbols: tuple) -> str:
    """A size (an int or a symbolic Expr) as a C expression over `d` (the symbols' values in the order
    of `symbols`) that sets `*overflow_flag` when a step overflows int64."""
    return symbolic.fold(size, lambda k: f"INT64_C({k})", lambda dim: f"d[{symbols.index(dim.name)}]",
                         lambda inner, k: f"floor_div({inner}, INT64_C({k}))",
                         lambda a, b: f"checked_mul({a}, {b}, overflow_flag)",
                         lambda a, b: f"checked_add({a}, {b}, overflow_flag)")


def c_string(text: str) -> str:
    """`text` as a C string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
