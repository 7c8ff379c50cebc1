"""Memory planning: where every intermediate value lives in one arena, reused by liveness.

Guarantees of `plan(graph)` (and of `run`, which returns a copy of the graph with `.memory_plan` set):
- every node output that is neither a graph output nor a constant gets a storage root; the result
  of an operator declaring `aliases_input` (reshape) that is not a graph output shares its first
  input's storage (an alias, no copy);
- a storage root in the arena gets an offset (aligned to ALIGNMENT bytes); two roots whose live
  ranges overlap never share bytes. A root is live from the node that defines it to the last node
  reading it or any of its aliases; values read by state updates stay live to the end;
- `arena_bytes` is the arena's size: the peak of simultaneously live intermediates (first-fit reuse
  of freed blocks, so it can exceed the true peak by fragmentation, never fall below it).
Storage of graph inputs, parameters, constants and outputs belongs to the caller, not the arena.

Symbolic sizes (a graph compiled for every size): sizes, offsets and `arena_bytes` are then sizes
too (ints or `symbolic.Expr`s), which the executable evaluates at each call's sizes. A freed block is
reused only by a value of the same canonical size (`symbolic.same`) or, between concrete sizes,
first fit; neighbours merge only when their ends are the same form. So the guarantees hold for every
size the graph serves, without a question about sizes ever being asked (nor a constraint recorded).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir import symbolic
from ..ir.graph import Graph, Value

NAME = "memory_planning"
ALIGNMENT = 64


@dataclass
class MemoryPlan:
    #: arena offset of each value stored in the arena (aliases included, with their root's offset);
    #: a symbolic size where the graph's sizes are
    offsets: dict = field(default_factory=dict)
    #: value -> the value whose storage it shares (results of operators that alias their input)
    aliases: dict = field(default_factory=dict)
    arena_bytes: object = 0

    def root(self, value: Value) -> Value:
        while value in self.aliases:
            value = self.aliases[value]
        return value


def run(graph: Graph) -> Graph:
    planned = graph.copy()
    planned.memory_plan = plan(planned)
    return planned


def plan(graph: Graph) -> MemoryPlan:
    result = MemoryPlan()
    outputs = set(graph.outputs)
    for node in graph.nodes:
        if not node.is_constant and node.opdef.aliases_input and node.output not in outputs:
            result.aliases[node.output] = node.inputs[0]
    arena_roots = [n.output for n in graph.nodes
                   if not n.is_constant and n.output not in outputs and n.output not in result.aliases]
    last_use = _last_uses(graph, result)
    defined = {node.output: i for i, node in enumerate(graph.nodes)}
    free: list[tuple[int, int]] = []           # (offset, size) blocks
    releases: dict[int, list] = {}
    for root in arena_roots:
        releases.setdefault(last_use.get(root, defined[root]), []).append(root)
    roots = set(arena_roots)
    for i, node in enumerate(graph.nodes):
        if node.output in roots:              # allocated before this node's inputs are freed:
            result.offsets[node.output] = _allocate(free, _size(node.output), result)   # no overlap
        for root in releases.get(i, []):
            _release(free, result.offsets[root], _size(root))
    for value in result.aliases:
        root = result.root(value)
        if root in result.offsets:
            result.offsets[value] = result.offsets[root]
    return result


def _size(value: Value):
    nbytes = value.type.size * value.dtype.numpy.itemsize
    if symbolic.is_symbolic(nbytes):
        return symbolic.ceil_div(nbytes, ALIGNMENT) * ALIGNMENT + (ALIGNMENT if symbolic.bounds(nbytes)[0] < 1 else 0)
    return max(ALIGNMENT, -(-nbytes // ALIGNMENT) * ALIGNMENT)


def _last_uses(graph: Graph, plan: MemoryPlan) -> dict:
    """Index of the last node reading each storage root (through any alias)."""
    last = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            last[plan.root(v)] = i
    end = len(graph.nodes)
    for v in list(graph.state_updates.values()) + list(graph.outputs):
        last[plan.root(v)] = end
    return last


def _release(free: list, offset, size) -> None:
    """Return a block to the free list (kept in offset order), merged with free neighbours."""
    for k, (start, length) in enumerate(free):
        if symbolic.same(start + length, offset) or symbolic.same(offset + size, start):
            del free[k]
            _release(free, start if symbolic.same(start + length, offset) else offset, length + size)
            return
    free.append((offset, size))
    free.sort(key=_offset_order)


def _offset_order(block: tuple) -> tuple:
    """Concrete offsets in increasing order, then symbolic ones (which never ask a question)."""
    offset = block[0]
    return (1, 0, str(offset)) if symbolic.is_symbolic(offset) else (0, offset, "")


def _allocate(free: list, size, plan: MemoryPlan):
    """First fit among freed blocks (splitting the rest off; a symbolic size takes a block of its
    very size only), else grow the arena."""
    for k, (offset, block) in enumerate(free):
        if symbolic.same(block, size) or not symbolic.is_symbolic((block, size)) and block > size:
            free[k:k + 1] = [] if symbolic.same(block, size) else [(offset + size, block - size)]
            return offset
    offset = plan.arena_bytes
    plan.arena_bytes += size
    return offset
