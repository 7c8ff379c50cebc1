"""Lowering a planned graph to LLVM: one self-contained module per kernel, and a buffer table.

Every value with storage has a slot in the buffer table (`BufferTable`): the graph's inputs, then its
parameters, outputs, constants, then the arena-resident values (aliases share their root's slot) and
one workspace slot for per-node scratch. Each operator has a lowering, registered with `@lowers`, that
emits one or more kernels through `Lowering.kernel`; the kernels run in graph order, separated by
barriers, each splitting its work items across threads (see `parallel.py`).

A kernel is `void kernel(i8** table, i64* slots, i64 lo, i64 hi)`: its i-th buffer is
`table[slots[i]]`, so its code holds no slot numbers and does not depend on the graph around it. Each
kernel is built in its own module and named after a hash of its code (`lucid_k_<hash>`), so identical
kernels (the same layer in a forward and a training graph, or in another model) are compiled once and
cached once.

Adding an operator means writing its lowering in `kernels/` and nothing here (`lower` imports
`kernels/`, which registers every lowering; a graph served from the disk cache never imports them).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import llvmlite.ir as ir
import numpy as np

from ..errors import GraphError
from ..ir.cost import node_flops
from ..ir.graph import Graph, Node, Value
from ..ir.symbolic import is_symbolic
from ..passes.memory_planning import ALIGNMENT, MemoryPlan
from . import irgen
from .irgen import KERNEL_TYPE, i64
from .target import Target

LOWERINGS: dict[str, Callable[["Lowering", Node], None]] = {}


def lowers(*op_names: str):
    """Register the decorated function as the lowering of these operators."""
    def register(fn):
        for name in op_names:
            if name in LOWERINGS:
                raise RuntimeError(f"operator {name!r} already has a lowering")
            LOWERINGS[name] = fn
        return fn
    return register


@dataclass
class BufferTable:
    """Where each value's data is at run time: the table slot of each value, and what fills it."""

    slots: dict = field(default_factory=dict)            # Value -> slot index
    inputs: list = field(default_factory=list)           # slot of each graph input, in order
    params: list = field(default_factory=list)           # (name, slot)
    outputs: list = field(default_factory=list)          # slot of each graph output
    constants: list = field(default_factory=list)        # (slot, array)
    arena: dict = field(default_factory=dict)            # slot -> arena offset
    workspace_slot: int = -1
    size: int = 0

    def add(self, value: Value | None = None) -> int:
        slot, self.size = self.size, self.size + 1
        if value is not None:
            self.slots[value] = slot
        return slot


@dataclass
class Kernel:
    """A compiled kernel's place in the graph: its function name, work items, table slots, whether
    it waits for every thread to finish the kernels before it (False only when it reads nothing
    they write), and the lowering's name for it (`conv_direct`; for people, not part of the code)."""

    name: str
    items: int
    slots: tuple = ()
    waits: bool = True
    label: str = ""


@dataclass
class KernelModule:
    """The LLVM text of one kernel's module, the name its code hash gave the kernel function, and
    what chooses how it is optimised (`compile_worker.level_for`): whether its lowering declared it
    compute-bound, and the work of the node it belongs to (`node_work`; None if unknown)."""

    name: str
    text: str
    compute_bound: bool = False
    work: int | None = None


PLACEHOLDER = "lucid_kernel"


class Lowering:
    """Builds the kernels of one graph; lowerings call `kernel`, `slot`, `scratch` and `module`."""

    def __init__(self, graph: Graph, plan: MemoryPlan, target: Target,
                 on_module: Callable[[KernelModule], None] | None = None):
        self.graph, self.plan, self.target = graph, plan, target
        self.on_module = on_module                 # called with each new module as soon as it is made
        self.kernels: list[Kernel] = []
        self.modules: dict[str, KernelModule] = {}
        self.table = buffer_table(graph, plan)
        self.workspace_bytes = 0
        self._scratch_used = 0
        self._module: ir.Module | None = None
        self.node: Node | None = None
        self._left: tuple | None = None            # (value, layout) packed at workspace offset 0
        self._leaving: tuple | None = None

    # ------------------------------------------------------------------ used by lowerings
    @property
    def module(self) -> ir.Module:
        """The module the next kernel goes into (helpers such as shared tile functions and constant
        tables are created here just before the `kernel` call that uses them)."""
        if self._module is None:
            self._module = ir.Module(name="kernel")
            self._module.triple = self.target.triple
        return self._module

    def slot(self, value: Value) -> int:
        return self.table.slots[self.plan.root(value) if value not in self.table.slots else value]

    def scratch(self, nbytes: int) -> int:
        """Byte offset, in the workspace, of `nbytes` of scratch for the node being lowered (its
        scratch is dead once its kernels finished, so every node's scratch starts at 0; but see
        `leave_packed`)."""
        offset = self._scratch_used
        self._scratch_used += -(-nbytes // ALIGNMENT) * ALIGNMENT
        self.workspace_bytes = max(self.workspace_bytes, self._scratch_used)
        return offset

    def leave_packed(self, value: Value, layout) -> None:
        """Declare that the node being lowered packed `value` as `layout` into its first scratch
        (offset 0) and that none of its kernels writes there afterwards: the next node to use the
        workspace may read that copy instead of packing `value` again (`packed_at_start`)."""
        self._leaving = (value, layout)

    def packed_at_start(self, value: Value):
        """The layout in which an earlier node left `value` packed at workspace offset 0, if no node
        since has used the workspace and this node has not allocated scratch yet; else None. A
        lowering that reads the copy takes it as its first scratch (so it stays where it is) and
        makes its first kernel wait for the kernels before it."""
        if self._scratch_used == 0 and self._left is not None and self._left[0] is value:
            return self._left[1]
        return None

    def kernel(self, name: str, items: int, body: Callable[["KernelBuilder", ir.Value], None],
               waits: bool = True, compute_bound: bool = False) -> None:
        """Emit a kernel running `body(k, item)` for each work item in [lo, hi) of `items`. With
        `waits=False` threads start it without waiting for the others to finish the kernel before:
        only for a kernel that reads nothing the kernels since the last waiting one write.
        `compute_bound`: the kernel's speed is its arithmetic (a conv's register tiles, a matrix
        product), not its memory traffic, so from some size up it gets LLVM's full optimisation (see
        `level_for` in compile_worker.py)."""
        module = self.module
        fn = ir.Function(module, KERNEL_TYPE, name=PLACEHOLDER)
        k = KernelBuilder(self, fn)
        with irgen.counted_loop(k.b, fn.args[3], fn.args[2], name="item") as item:
            body(k, item)
        k.finish()
        text = str(module)
        digest = hashlib.sha256(text.encode()).hexdigest()[:24]
        kernel_name = f"lucid_k_{digest}"
        if kernel_name not in self.modules:
            work = node_work(self.node) if self.node is not None else None
            self.modules[kernel_name] = KernelModule(kernel_name, _renamed(text, kernel_name), compute_bound, work)
            if self.on_module is not None:
                self.on_module(self.modules[kernel_name])
        self.kernels.append(Kernel(kernel_name, max(int(items), 0), tuple(k.slots), waits, name))
        self._module = None

    # ------------------------------------------------------------------ driver
    def lower(self) -> None:
        from . import kernels  # noqa: F401  (registers the lowerings: here, so a cached graph never loads them)

        for node in self.graph.nodes:
            if node.is_constant or node.output in self.plan.aliases:
                continue
            if node.op not in LOWERINGS:
                raise GraphError(f"codegen: operator {node.op!r} has no lowering")
            self.node, self._scratch_used, self._leaving = node, 0, None
            LOWERINGS[node.op](self, node)
            if self._scratch_used:                 # the node overwrote what the workspace held
                self._left = self._leaving
        self.node = None


def node_work(node: Node) -> int | None:
    """How much a node's kernels do: its floating-point operations (`ir.cost.node_flops`) or the
    elements it reads and writes, whichever is more (a sum's one operation per output element says
    nothing of the input it reads); None where a size is symbolic."""
    sizes = [value.type.size for value in (*node.inputs, node.output)]
    flops = node_flops(node)
    if flops is None or any(is_symbolic(size) for size in sizes):
        return None
    return max(flops, sum(sizes))


def _renamed(text: str, name: str) -> str:
    return text.replace(f'@"{PLACEHOLDER}"', f'@"{name}"').replace(f"@{PLACEHOLDER}(", f"@{name}(")


class KernelBuilder:
    """The IR builder of one kernel, positioned in its per-item loop, with buffer pointers loaded
    once in the entry block."""

    def __init__(self, lowering: Lowering, fn: ir.Function):
        self.lowering, self.fn = lowering, fn
        self.module, self.target = fn.module, lowering.target
        self.entry = fn.append_basic_block("entry")
        self._entry_builder = ir.IRBuilder(self.entry)
        self.b = ir.IRBuilder(fn.append_basic_block("start"))
        self._pointers: dict = {}
        self.slots: list[int] = []               # table slot of the kernel's i-th buffer

    def pointer(self, value_or_slot, element: ir.Type | None = None, byte_offset: int = 0) -> ir.Value:
        """Pointer to the data of a value (or raw slot), typed as `element` (default: the value's
        element type), `byte_offset` bytes in."""
        if isinstance(value_or_slot, Value):
            slot, element = self.lowering.slot(value_or_slot), element or irgen.element_type(value_or_slot.dtype)
        else:
            slot = value_or_slot
        key = (slot, str(element), byte_offset)
        if key not in self._pointers:
            if slot not in self.slots:
                self.slots.append(slot)
            eb = self._entry_builder
            table_index = eb.load(eb.gep(self.fn.args[1], [i64(self.slots.index(slot))]))
            raw = eb.load(eb.gep(self.fn.args[0], [table_index]))
            if byte_offset:
                raw = eb.gep(raw, [i64(byte_offset)])
            self._pointers[key] = eb.bitcast(raw, element.as_pointer())
        return self._pointers[key]

    def alloca(self, ty: ir.Type, count: int = 1, name: str = "") -> ir.Value:
        """A stack slot made once in the entry block (LLVM keeps small ones in registers); never
        `b.alloca` inside the item loop, which would grow the stack on every item."""
        return self._entry_builder.alloca(ty, None if count == 1 else count, name=name)

    def scratch_pointer(self, byte_offset: int, element: ir.Type) -> ir.Value:
        return self.pointer(self.lowering.table.workspace_slot, element, byte_offset)

    def finish(self) -> None:
        self._entry_builder.branch(self.fn.blocks[1])
        self.b.ret_void()


def buffer_table(graph: Graph, plan: MemoryPlan) -> BufferTable:
    """The slot of every value with storage (see the module docstring)."""
    table = BufferTable()
    table.inputs = [table.add(v) for v in graph.inputs]
    table.params = [(v.name, table.add(v)) for v in graph.params]
    for v in graph.outputs:
        table.outputs.append(table.slots[v] if v in table.slots else table.add(v))
    for node in graph.nodes:
        if node.is_constant:
            table.constants.append((table.add(node.output), np.ascontiguousarray(node.value)))
    for value, offset in plan.offsets.items():
        if value not in table.slots and plan.root(value) is value:
            table.arena[table.add(value)] = offset
    for value in plan.aliases:
        root = plan.root(value)
        if value not in table.slots and root in table.slots:
            table.slots[value] = table.slots[root]
    table.workspace_slot = table.add()
    return table
