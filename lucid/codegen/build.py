"""From a planned graph to its object code: the step `runtime.executable` (JIT) and `aot.emitter`
(export) share. A planned graph is what the `codegen-ready` pipeline returns (`memory_plan_of` reads
its plan; codegen plans nothing itself).

`graph_code(graph, plan, target)` returns the object code of every kernel module and of the entry
module (`lucid_run`, see `parallel.py`), and the bytes of per-node workspace the kernels need. A graph
met before is served from its entry in the disk cache (keyed by the code generator's source hash,
lucid's version, the target and the graph text; see `cache.py`) without lowering anything, once the
whole entry passed its checks; otherwise (no entry, or one that failed and was reported) the graph
is lowered, each kernel module handed to a `jit.Compilation` as soon as it is made, at the level
`compile_worker.level_for` picks (so worker processes compile the modules the object cache lacks
while lowering goes on), the entry module (compiled as written, at O0: it only orders the kernels
and hands out their work items) last, linked with the graph's level-0 kernel modules into one
object (LLVM's fixed cost per object is most of a level-0 module's: 47 of them took 0.08 s one by
one and 0.02 s as one), and the entry is written. A
position-independent target has its own fingerprint, so JIT and shared-library objects never mix.

`graph_codes([(graph, plan), ...], target)` is that for graphs built together (a training variant's
forward and backward, or its forward and backward stages): they are lowered one after the other into
one `Compilation`, so the modules of the graphs lowered first are compiled while the next is lowered,
a module two graphs share is compiled once, and the caller waits for the compilers (and helps them)
once, at the very end, instead of once per graph (a UNet3D training variant cold on 2 cores, medians
of 13 runs alternating: the compile worker's waits for its next module went from 0.80 s in all to
0.48 s, 0.25 s with jit.py's short switch interval, and the compile's wall time from 4.7-5.1 s to 4.4 s).
Each graph keeps its own cache entry and its own kernels.

Also here, because both callers apply them the same way: which graph outputs a run writes in place
(`written_outputs`) and how many threads a run uses by default (`default_threads`, `runs_serially`,
`flops_by_size` for a graph of symbolic sizes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import llvmlite.ir as ir

from ..errors import GraphError
from ..ir.cost import estimated_flops
from ..ir.graph import Graph
from ..ir.specialize import require_concrete
from ..passes.memory_planning import MemoryPlan
from ..version import __version__
from .cache import cache_key, code_fingerprint, load_graph, store_graph
from .compile_worker import level_for
from .jit import COUNTERS, Compilation
from .lowering import Lowering
from .parallel import emit_entry
from .target import Target, available_cores

#: Graphs estimated below this many floating-point operations run on one thread: starting threads
#: costs tens of microseconds, more than such a graph takes.
SERIAL_FLOPS = 4_000_000


@dataclass
class GraphCode:
    objects: list[bytes]          # kernel modules' and the entry module's object code
    workspace_bytes: int          # per-node scratch the kernels use (one workspace per call; with symbolic
                                  # sizes, at least this: the entry's lucid_workspace_bytes(dims) says)
    kernels: list | None = None   # [(Kernel, graph Node)] in run order; None when the objects came from the
                                  # disk cache (no lowering ran)


def memory_plan_of(graph: Graph, dynamic: bool = False) -> MemoryPlan:
    """The memory plan of a planned graph, or a GraphError saying how to plan it. A graph with
    symbolic sizes is taken only by a caller that passes its `dynamic` sizes at run time (the JIT's
    executable); others (export) get a CompileError."""
    if not dynamic:
        require_concrete(graph, "codegen")
    plan = getattr(graph, "memory_plan", None)
    if plan is None:
        raise GraphError(f"codegen: graph {graph.name} has no memory plan; run it through the codegen-ready "
                         "pipeline (lucid.passes.PassManager('codegen-ready')) or memory_planning.run first")
    return plan


def graph_code(graph: Graph, plan: MemoryPlan, target: Target, changing_weights: frozenset = frozenset()) -> GraphCode:
    """The object code of `graph` (planned by `plan`) for `target`, from the disk cache or built;
    `changing_weights` as for `Lowering`."""
    return graph_codes([(graph, plan)], target, changing_weights)[0]


def graph_codes(planned: list[tuple[Graph, MemoryPlan]], target: Target,
                changing_weights: frozenset = frozenset()) -> list[GraphCode]:
    """The object code of each (graph, plan) for `target`, each from the disk cache or built; the
    graphs built share one compilation (see the module docstring). `changing_weights`: names of
    parameters that change from call to call (`Lowering.changing_weights`)."""
    keys = [cache_key(code_fingerprint(), __version__, target.fingerprint, str(graph),
                      " ".join(sorted(changing_params(graph, changing_weights)))) for graph, _ in planned]
    codes = [_cached_code(key, target) for key in keys]
    built = {}                                   # position -> (its Lowering, its objects' cache names)
    with Compilation(target) as compilation:
        for position, (graph, plan) in enumerate(planned):
            if codes[position] is None:
                built[position] = _lowered_into(compilation, graph, plan, target,
                                                changing_params(graph, changing_weights))
        named = dict(compilation.results()) if built else {}
    for position, (lowering, names) in built.items():
        objects = [(name, named[name]) for name in names]
        store_graph(keys[position], target.fingerprint, objects, lowering.workspace_bytes)
        codes[position] = GraphCode([code for _, code in objects], lowering.workspace_bytes,
                                    lowering.kernels_and_nodes())
    return codes


def _cached_code(key: str, target: Target) -> GraphCode | None:
    """The graph's code from its disk cache entry, or None when it has none (or a damaged one)."""
    cached = load_graph(key, target.fingerprint)
    if cached is None:
        return None
    COUNTERS["loaded"] += len(cached.codes)
    return GraphCode(cached.codes, cached.workspace_bytes)


def changing_params(graph: Graph, changing_weights: frozenset) -> frozenset:
    """The names in `changing_weights` of `graph`'s parameters."""
    return frozenset(v.name for v in graph.params if v.name in changing_weights)


def _lowered_into(compilation: Compilation, graph: Graph, plan: MemoryPlan, target: Target,
                  changing_weights: frozenset) -> tuple:
    """Lower `graph`, adding each kernel module to `compilation` as it is made (a level-0 one kept for
    the entry's object), then its entry module; returns the Lowering and the cache names of the
    graph's objects, in order (kernel modules, then the entry's)."""
    names, unoptimised = [], []             # unoptimised: level-0 kernel modules, compiled with the entry

    def hand_on(module) -> None:
        level = level_for(module)
        if level:
            names.append(compilation.add(module.text, level))
        else:
            unoptimised.append(module.text)

    lowering = Lowering(graph, plan, target, on_module=hand_on, changing_weights=changing_weights)
    lowering.lower()
    entry = ir.Module(name="entry")
    entry.triple = target.triple
    emit_entry(entry, lowering.kernels, lowering.table, (lowering.workspace_bytes, lowering.symbolic_workspace),
               lowering.persistent_bytes)
    names.append(compilation.add([str(entry), *unoptimised], level=0))
    return lowering, names


def written_outputs(graph: Graph) -> list[bool]:
    """For each graph output, whether the run's kernels write it into the output buffer itself. The
    others (outputs that are inputs, parameters, constants, or repeats of an earlier output) are
    copied from their storage after the run."""
    produced, written = set(), []
    for value in graph.outputs:
        written.append(value.node is not None and not value.node.is_constant and value not in produced)
        produced.add(value)
    return written


def runs_serially(graph: Graph) -> bool:
    """Whether a run of `graph` uses one thread unless told otherwise (see SERIAL_FLOPS)."""
    return estimated_flops(graph) < SERIAL_FLOPS


def flops_by_size(graph: Graph):
    """The work of a graph as a size (the operators' FLOP counts summed, a node holding graphs (a
    fused body) counting theirs; an Expr when its sizes are symbolic), or None when an operator
    cannot count symbolically: `evaluate(flops_by_size(graph), sizes) < SERIAL_FLOPS` is
    `runs_serially` at those sizes without specialising the graph."""
    total = 0
    for node in graph.nodes:
        if node.is_constant:
            continue
        bodies = [node.attrs[name] for name in node.opdef.graph_attributes]
        counts = [flops_by_size(body) for body in bodies] if bodies else \
            [node.opdef.flops(node.attrs, tuple(v.type for v in node.inputs), node.output.type)]
        if None in counts:
            return None
        total += sum(counts)
    return total


def default_threads() -> int:
    """`LUCID_NUM_THREADS`, else every core this process may use."""
    configured = os.environ.get("LUCID_NUM_THREADS")
    if configured:
        return max(1, int(configured))
    return available_cores()
