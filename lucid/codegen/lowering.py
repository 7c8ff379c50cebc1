"""Lowering a planned graph to LLVM: one self-contained module per kernel, and a buffer table.

Every value with storage has a slot in the buffer table (`BufferTable`): the graph's inputs, then its
parameters, outputs, constants, then the arena-resident values (aliases share their root's slot), one
workspace slot for per-node scratch, and last one **persistent** slot: memory kept from call to call
(zeroed when first allocated), where a lowering keeps what it derives from operands that seldom change
(a conv's packed and transformed weights, with a copy of the weights they were made from). Each operator has a lowering, registered with `@lowers`, that
emits one or more kernels through `Lowering.kernel`; the kernels run in graph order, separated by
barriers, each splitting its work items across threads (see `parallel.py`).

A kernel is `void kernel(i8** table, i64* slots, i64 lo, i64 hi)`: its i-th buffer is
`table[slots[i]]`, and where its node keeps memory between calls, one word of `slots` is where that
memory starts in the persistent slot's (`KeptStart`), so its code holds no slot numbers and no
offsets of the graph around it. Each
kernel is built in its own module and named after a hash of its code (`lucid_k_<hash>`), so identical
kernels (the same layer in a forward and a training graph, or in another model) are compiled once and
cached once. A node is lowered only if no earlier node, of its graph or of an earlier graph of the
process (`LOWERED`), had its `node_key` (what its kernels depend on) and the code generator's
constants: otherwise it gets that node's kernels (`NodeKernels`), without building or printing their
IR again (a UNet3D training graph's 494 kernels are 195 distinct ones). A function
several kernels call (a conv's register tile) is a shared function (`shared_function`): a module of
its own, named after its code's hash (`lucid_f_<hash>`), compiled once and linked to every kernel
module declaring it.

Sizes at run time. A graph with symbolic dimensions is lowered once for every size: the buffer
table then ends with a **dims** slot (`BufferTable.dims_slot`) holding the address of the call's
`int64` symbol values, in the order of `BufferTable.symbols` (see `extents.py`). A kernel turns a
size into an i64 with `KernelBuilder.extent(size)` (a constant for an int, so concrete graphs give the
code they always gave; else code evaluating the canonical expression from the dims, once per kernel
call), and its work-item count may be a symbolic size, which the entry point evaluates per call
(`parallel.py`). Only lowerings registered with `lowers(..., run_time_extents=True)` take a symbolic
graph; any other operator in one is a CompileError naming it (never code for the wrong sizes).

Adding an operator means writing its lowering in `kernels/` and nothing here (`lower` imports
`kernels/`, which registers every lowering; a graph served from the disk cache never imports them).
"""
from __future__ import annotations

import hashlib
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import llvmlite.ir as ir
import numpy as np

from ..errors import CompileError, GraphError
from ..ir import symbolic
from ..ir.cost import node_flops
from ..ir.graph import Graph, Node, Value
from ..ir.text import format_attributes, format_type
from ..passes.memory_planning import ALIGNMENT, MemoryPlan
from . import irgen
from .extents import emit_size
from .irgen import I64, KERNEL_TYPE, i64
from .target import Target

LOWERINGS: dict[str, Callable[["Lowering", Node], None]] = {}
#: The operators whose lowering takes symbolic sizes (computed at run time from the dims): each
#: one's test `node -> None`, or the reason it refuses that node (a path needing concrete sizes).
RUN_TIME_EXTENTS: dict[str, Callable[[Node], str | None]] = {}


def lowers(*op_names: str, run_time_extents=False):
    """Register the decorated function as the lowering of these operators. `run_time_extents`: True
    when it also lowers every node with symbolic sizes (through `KernelBuilder.extent`), or a test
    `node -> reason | None` when it lowers some (the reason names what needs concrete sizes)."""
    def register(fn):
        for name in op_names:
            if name in LOWERINGS:
                raise RuntimeError(f"operator {name!r} already has a lowering")
            LOWERINGS[name] = fn
            if run_time_extents:
                RUN_TIME_EXTENTS[name] = run_time_extents if callable(run_time_extents) else lambda node: None
        return fn
    return register


def refuse_symbolic(graph: Graph, plan: MemoryPlan) -> None:
    """CompileError, before any kernel is made, when a node of `graph` that has kernels (not an
    alias) has symbolic sizes and an operator whose lowering needs concrete ones (a fused node: any
    operator of its body)."""
    for node in graph.nodes:
        if node.is_constant or node.output in plan.aliases or not any(symbolic.free_symbols(v.shape) for v in list(node.inputs) + [node.output]):
            continue
        body = node.attrs["body"].nodes if node.op == "fused" else [node]
        refused = [n.op if n.op not in RUN_TIME_EXTENTS else f"{n.op} ({RUN_TIME_EXTENTS[n.op](n)})"
                   for n in body if not n.is_constant
                   if n.op not in RUN_TIME_EXTENTS or RUN_TIME_EXTENTS[n.op](n) is not None]
        if refused:
            where = f" at {node.scope}" if node.scope else ""
            raise CompileError(f"codegen: the lowering of {refused[0]} ({node.op}{where}) does not take symbolic "
                               "sizes yet; compile with static shapes (lucid.compile(..., dynamic=False))")


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
    symbols: tuple = ()                                  # names of the symbolic dimensions, in dims order
    dims_slot: int = -1                                  # slot of the dims array (-1: concrete graph)
    persistent_slot: int = -1                            # slot of the memory kept between calls
    size: int = 0

    def add(self, value: Value | None = None) -> int:
        slot, self.size = self.size, self.size + 1
        if value is not None:
            self.slots[value] = slot
        return slot


@dataclass(frozen=True)
class KeptStart:
    """A word of a kernel's `slots` that is not a table slot: the byte offset, in the persistent
    slot's memory, where the memory its node keeps between calls starts. The kernel adds its own
    offsets to it, so the same node in two graphs (a forward and a training graph) is the same code,
    compiled once, wherever each graph keeps its memory."""

    offset: int


@dataclass
class Kernel:
    """A compiled kernel's place in the graph: its function name, work items (an int, or a symbolic
    size the entry point evaluates per call), the words of its `slots` array (table slots, and a
    `KeptStart`), whether it waits for every thread to finish the kernels before it (False only when
    it reads nothing they write), and the lowering's name for it (`conv_direct`; for people, not part
    of the code)."""

    name: str
    items: object
    slots: tuple = ()
    waits: bool = True
    label: str = ""

    def slot_words(self) -> list[int]:
        """The i64 words of the kernel's `slots` array, in order."""
        return [word.offset if isinstance(word, KeptStart) else word for word in self.slots]


@dataclass
class KernelModule:
    """The LLVM text of one kernel's module, the name its code hash gave the kernel function, and
    what chooses how it is optimised (`compile_worker.level_for`): whether its lowering declared it
    compute-bound, and the work of the node it belongs to (`node_work`; None if unknown)."""

    name: str
    text: str
    compute_bound: bool = False
    work: int | None = None
    calls: tuple = ()               # the shared functions (`SHARED_PREFIX`) the kernel calls


PLACEHOLDER = "lucid_kernel"
SHARED_PLACEHOLDER = "lucid_shared"
#: How a shared function's symbol starts (then a hash of its code).
SHARED_PREFIX = "lucid_f_"


class Lowering:
    """Builds the kernels of one graph; lowerings call `kernel`, `slot`, `scratch` and `module`."""

    def __init__(self, graph: Graph, plan: MemoryPlan, target: Target,
                 on_module: Callable[[KernelModule], None] | None = None, changing_weights: frozenset = frozenset()):
        self.graph, self.plan, self.target = graph, plan, target
        #: names of the graph's parameters that change from call to call (those a training step
        #: updates): what a conv derives from them is made on every call, not kept (`prepared.py`)
        self.changing_weights = changing_weights
        self.on_module = on_module                 # called with each new module as soon as it is made
        self.kernels: list[Kernel] = []
        self.kernel_nodes: list[Node] = []       # the graph node each kernel is for (parallel to kernels)
        self.modules: dict[str, KernelModule] = {}
        self._shared: dict[str, tuple[str, ir.FunctionType]] = {}   # shared function -> (symbol, type)
        self.table = buffer_table(graph, plan)
        self.workspace_bytes = 0                   # the largest concrete scratch of a node
        self.symbolic_workspace: list = []         # the symbolic scratch sizes of nodes (see `scratch`)
        self.persistent_bytes = 0                  # memory kept between calls (see `persistent`)
        self.node_kept_start = 0                   # where the node being lowered starts keeping memory
        self._scratch_used = 0
        self._node_workspace = 0                   # the largest concrete scratch of the node being lowered
        self._module: ir.Module | None = None
        self.node: Node | None = None
        self._left: tuple | None = None            # (value, layout) packed at workspace offset 0
        self._leaving: tuple | None = None
        self._row_statistics: frozenset = frozenset()   # ids of values whose row sums a reader takes

    # ------------------------------------------------------------------ used by lowerings
    def changes_from_call_to_call(self, value: Value) -> bool:
        """Whether `value` is a parameter named in `changing_weights`."""
        return value.name in self.changing_weights and any(value is p for p in self.graph.params)

    @property
    def module(self) -> ir.Module:
        """The module the next kernel goes into (helpers such as shared tile functions and constant
        tables are created here just before the `kernel` call that uses them)."""
        if self._module is None:
            self._module = ir.Module(name="kernel")
            self._module.triple = self.target.triple
        return self._module

    def shared_function(self, name: str, build: Callable[[ir.Module, str], ir.Function]) -> ir.Function:
        """A function kernels call, compiled once in a module of its own (level 3), which every kernel,
        graph and process calling the same code shares: a conv's register tile is compiled once per
        blocking, not inlined into each kernel calling it. `build(module, symbol)` defines it in an
        empty module; it is named after a hash of that module's code (`lucid_f_<hash>`), and `name`
        (what the code depends on) finds it again in this lowering. Returns its declaration in the
        module of the next kernel."""
        if name not in self._shared:
            module = ir.Module(name="shared")
            module.triple = self.target.triple
            function_type = build(module, SHARED_PLACEHOLDER).function_type
            text = str(module)
            symbol = f"{SHARED_PREFIX}{hashlib.sha256(text.encode()).hexdigest()[:24]}"
            self._shared[name] = (symbol, function_type)
            if symbol not in self.modules:
                self.modules[symbol] = KernelModule(symbol, _renamed(text, symbol, SHARED_PLACEHOLDER), True, None)
                if self.on_module is not None:
                    self.on_module(self.modules[symbol])
        symbol, function_type = self._shared[name]
        return self.module.globals.get(symbol) or ir.Function(self.module, function_type, symbol)

    def slot(self, value: Value) -> int:
        return self.table.slots[self.plan.root(value) if value not in self.table.slots else value]

    def scratch(self, nbytes: int) -> int:
        """Byte offset, in the workspace, of `nbytes` of scratch for the node being lowered (its
        scratch is dead once its kernels finished, so every node's scratch starts at 0; but see
        `leave_in_workspace`). Sizes and offsets may be symbolic: the workspace is then sized per call
        (`lucid_workspace_bytes`, `parallel.py`)."""
        offset = self._scratch_used
        if symbolic.is_symbolic(nbytes) or symbolic.is_symbolic(offset):
            self._scratch_used = offset + symbolic.ceil_div(nbytes, ALIGNMENT) * ALIGNMENT
            self.symbolic_workspace.append(self._scratch_used)   # the entry point takes the max per call
            return offset
        self._scratch_used += -(-nbytes // ALIGNMENT) * ALIGNMENT
        self._node_workspace = max(self._node_workspace, self._scratch_used)
        self.workspace_bytes = max(self.workspace_bytes, self._scratch_used)
        return offset

    def persistent(self, nbytes: int) -> int:
        """Byte offset, in the persistent slot's memory, of `nbytes` (a concrete size) that only the
        node being lowered uses, kept from one call to the next: zero before the first call that
        writes it. Each run of the graph (each concurrent call) has its own."""
        offset = self.persistent_bytes
        self.persistent_bytes += -(-int(nbytes) // ALIGNMENT) * ALIGNMENT
        return offset

    def leave_in_workspace(self, value: Value, layout) -> None:
        """Declare that the node being lowered put something derived from `value` (one of its
        inputs, or its output), described by `layout`, into its first scratch (offset 0) and that
        none of its kernels writes there afterwards; the next node to use the workspace may read it
        (`left_in_workspace`): a conv's padded copy of its input (`packing.Padded`), which the
        weight gradient reads instead of packing it again, or the sums of a conv output's rows
        (`normalization.RowStatistics`), which a norm's `moments` combines."""
        self._leaving = (value, layout)

    def reads_row_statistics(self, value: Value) -> bool:
        """Whether a node of the graph takes `value`'s statistics from the sums of its rows
        (`kernels/normalization.py`: an instance or batch norm's `moments` of a conv output)."""
        return id(value) in self._row_statistics

    def left_in_workspace(self, value: Value):
        """What an earlier node left of `value` at workspace offset 0 (its layout), if no node
        since has used the workspace and this node has not allocated scratch yet; else None. A
        lowering that reads the copy takes it as its first scratch (so it stays where it is) and
        makes its first kernel wait for the kernels before it."""
        if symbolic.same(self._scratch_used, 0) and self._left is not None and self._left[0] is value:
            return self._left[1]
        return None

    def kernel(self, name: str, items, body: Callable[["KernelBuilder", ir.Value], None],
               waits: bool = True, compute_bound: bool = False, moves_data: bool = False) -> None:
        """Emit a kernel running `body(k, item)` for each work item in [lo, hi) of `items` (an int or a
        symbolic size). With
        `waits=False` threads start it without waiting for the others to finish the kernel before:
        only for a kernel that reads nothing the kernels since the last waiting one write.
        `compute_bound`: the kernel's speed is its arithmetic (a conv's register tiles, a matrix
        product), not its memory traffic, so from some size up it gets LLVM's full optimisation (see
        `level_for` in compile_worker.py). `moves_data`: the kernel packs, unpacks, zeroes or compares
        the node's data, whatever the node computes, so its work is the elements the node reads and
        writes (`node_data`), not the node's operations: a conv of many operations on a few elements
        has those kernels compiled as written (level 0), like any kernel of so few elements. A kernel
        calling a shared function counts the same way: the arithmetic is in that function (level 3),
        the kernel orders the calls and moves the data."""
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
            calls = tuple(symbol for symbol in module.globals if symbol.startswith(SHARED_PREFIX))
            work = None if self.node is None else \
                node_data(self.node) if moves_data or calls else node_work(self.node)
            self.modules[kernel_name] = KernelModule(kernel_name, _renamed(text, kernel_name), compute_bound, work,
                                                     calls)
            if self.on_module is not None:
                self.on_module(self.modules[kernel_name])
        items = items if symbolic.is_symbolic(items) else max(int(items), 0)
        self.kernels.append(Kernel(kernel_name, items, tuple(k.slots), waits, name))
        self._module = None

    # ------------------------------------------------------------------ driver
    def lower(self) -> None:
        from . import kernels  # noqa: F401  (registers the lowerings: here, so a cached graph never loads them)
        from .kernels.normalization import row_statistics_values

        self._row_statistics = row_statistics_values(self.graph)

        if self.table.symbols:
            refuse_symbolic(self.graph, self.plan)

        settings = codegen_settings()
        for node in self.graph.nodes:
            if node.is_constant or node.output in self.plan.aliases:
                continue
            if node.op not in LOWERINGS:
                raise GraphError(f"codegen: operator {node.op!r} has no lowering")
            self.node, self._scratch_used, self._node_workspace, self._leaving = node, 0, 0, None
            self.node_kept_start = self.persistent_bytes
            key = (node_key(self, node), settings)
            record = LOWERED.get(key)
            if record is not None:
                record.replay(self, node)
            else:
                first_kernel, first_workspace = len(self.kernels), len(self.symbolic_workspace)
                LOWERINGS[node.op](self, node)
                LOWERED.put(key, NodeKernels.record(self, node, first_kernel, first_workspace))
            if not symbolic.same(self._scratch_used, 0):      # the node overwrote what the workspace held
                self._left = self._leaving
            self.kernel_nodes.extend([node] * (len(self.kernels) - len(self.kernel_nodes)))
        self.node = None

    def kernels_and_nodes(self) -> list:
        """[(Kernel, graph Node)] in run order, once `lower` has run."""
        return list(zip(self.kernels, self.kernel_nodes, strict=True))


def node_key(lowering: Lowering, node: Node) -> tuple:
    """Everything the kernels of `node` depend on in the graph being lowered, besides lucid's code: the
    target, the order of the graph's symbols in the dims, the node's operator and attributes (a fused
    body as its text, its constants' values included), its operands' types, which operands share
    storage, the data of its constant inputs (a one-element constant becomes an immediate), which
    of its inputs are parameters that change from call to call (`changing_weights`), and which of
    its inputs an earlier node left packed in the workspace, and how (`left_in_workspace`), and
    whether a reader takes its output's statistics from its rows' sums (`reads_row_statistics`).
    Two nodes with the same key get the same kernels (`NodeKernels`), in one graph or in two; the
    level each kernel is compiled at follows from the same facts. What else the lowerings read, the
    code generator's constants (which a process may change between two graphs: the tests set
    `winograd.WEIGHT_TRANSFORM_CYCLES` to force Winograd), `lower` adds (`codegen_settings`)."""
    operands = (*node.inputs, node.output)
    slots = [lowering.slot(value) for value in operands]
    left = lowering._left
    packed = None if left is None or not any(value is left[0] for value in node.inputs) else \
        (tuple(value is left[0] for value in node.inputs), repr(left[1]))
    return (lowering.target, lowering.table.symbols, node.op, format_attributes(node.attrs),
            tuple(format_type(value.type) for value in operands), tuple(slots.index(slot) for slot in slots),
            tuple(_constant_data(value) for value in node.inputs),
            tuple(lowering.changes_from_call_to_call(value) for value in node.inputs), packed,
            lowering.reads_row_statistics(node.output))


def _constant_data(value: Value) -> tuple | None:
    """A constant input's dtype, shape and a hash of its data; None for any other input."""
    if value.node is None or not value.node.is_constant:
        return None
    data = np.ascontiguousarray(value.node.value)
    return data.dtype.str, data.shape, hashlib.sha256(data.tobytes()).hexdigest()


@dataclass
class NodeKernels:
    """What lowering one node did, in terms of its operands rather than table slots: its kernels
    (each one's name, items, buffers as `_roles`, waits, label) and their modules (with the shared
    functions they call), its scratch (the bytes it ended with, its largest concrete scratch, the
    symbolic sizes it added), the memory it keeps between calls, and which input it left packed.
    `replay` does the same for another node with the same `node_key`, in this graph or another,
    without building or printing any IR."""

    kernels: list                  # (name, items, roles, waits, label)
    modules: tuple                 # the KernelModules the kernels need
    scratch_used: object
    workspace_bytes: int
    symbolic_workspace: list
    kept_bytes: int
    leaving: tuple | None          # (operand position: an input's, or the output's after them, layout)

    @classmethod
    def record(cls, lowering: Lowering, node: Node, first_kernel: int, first_workspace: int) -> "NodeKernels | None":
        """The record of the node just lowered (its kernels from `first_kernel`, its symbolic
        scratch sizes from `first_workspace`); None when it cannot be replayed (a kernel used a
        buffer that is not one of the node's operands, the workspace, the dims or its kept memory)."""
        roles = _roles(lowering, node)
        roles[KeptStart(lowering.node_kept_start)] = "kept start"
        operands = [*node.inputs, node.output]
        leaving = lowering._leaving
        if lowering._module is not None or leaving is not None and not any(value is leaving[0] for value in operands):
            return None
        kernels, modules = [], {}
        for kernel in lowering.kernels[first_kernel:]:
            if any(slot not in roles for slot in kernel.slots):
                return None
            kernels.append((kernel.name, kernel.items, tuple(roles[slot] for slot in kernel.slots), kernel.waits,
                            kernel.label))
            module = lowering.modules[kernel.name]
            modules.update({name: lowering.modules[name] for name in (kernel.name, *module.calls)})
        left = None if leaving is None else (next(i for i, v in enumerate(operands) if v is leaving[0]), leaving[1])
        return cls(kernels, tuple(modules.values()), lowering._scratch_used, lowering._node_workspace,
                   lowering.symbolic_workspace[first_workspace:], lowering.persistent_bytes - lowering.node_kept_start,
                   left)

    def replay(self, lowering: Lowering, node: Node) -> None:
        slot_of = {role: slot for slot, role in _roles(lowering, node).items()}
        slot_of["kept start"] = KeptStart(lowering.persistent(self.kept_bytes) if self.kept_bytes else
                                          lowering.node_kept_start)
        for module in self.modules:
            if module.name not in lowering.modules:
                lowering.modules[module.name] = module
                if lowering.on_module is not None:
                    lowering.on_module(module)
        for name, items, roles, waits, label in self.kernels:
            lowering.kernels.append(Kernel(name, items, tuple(slot_of[role] for role in roles), waits, label))
        lowering._scratch_used = self.scratch_used
        lowering.workspace_bytes = max(lowering.workspace_bytes, self.workspace_bytes)
        lowering.symbolic_workspace.extend(self.symbolic_workspace)
        operands = [*node.inputs, node.output]
        lowering._leaving = None if self.leaving is None else (operands[self.leaving[0]], self.leaving[1])


class LoweredNodes:
    """What lowering did for each recent `node_key` (with the code generator's settings), in this
    process: nodes with a key seen before, in the same graph or in another, are replayed, not lowered
    again (a third of a test process's kernels repeat across its graphs; a model's inference and
    training graphs share their forward nodes). The most recently used records are kept, up to
    `limit` bytes of module text."""

    def __init__(self, limit: int):
        self.limit, self.size = limit, 0
        self._records: OrderedDict = OrderedDict()
        self._lock = threading.Lock()          # graphs may be lowered in several threads at once

    def get(self, key) -> NodeKernels | None:
        with self._lock:
            record = self._records.get(key)
            if record is not None:
                self._records.move_to_end(key)
            return record

    def put(self, key, record: NodeKernels | None) -> None:
        with self._lock:
            if record is None or key in self._records:
                return
            self._records[key] = record
            self.size += _text_bytes(record)
            while self.size > self.limit:
                self.size -= _text_bytes(self._records.popitem(last=False)[1])

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self.size = 0


def _text_bytes(record: NodeKernels) -> int:
    return sum(len(module.text) for module in record.modules)


#: The process's records of lowered nodes (64 MiB of module text at most).
LOWERED = LoweredNodes(64 << 20)


def codegen_settings() -> tuple:
    """The module-level constants of the code generator as they are now (names in capitals holding
    numbers, strings or tuples): the choices' parameters, which a test or a user may change between
    two graphs (`winograd.WEIGHT_TRANSFORM_CYCLES`), so part of a lowered node's key in `LOWERED`."""
    settings = []
    for name, module in sorted(sys.modules.items()):
        if module is not None and name.startswith(__package__ + "."):
            settings.extend((name, attribute, value) for attribute, value in vars(module).items()
                            if attribute.isupper() and isinstance(value, (int, float, str, tuple)) and _hashable(value))
    return tuple(settings)


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _roles(lowering: Lowering, node: Node) -> dict:
    """The table slots a node's kernels may use, each with its role: the first operand (inputs, then
    the output) stored there, the workspace, the dims, the persistent memory."""
    roles = {lowering.table.workspace_slot: "workspace", lowering.table.dims_slot: "dims",
             lowering.table.persistent_slot: "persistent"}
    for position, value in reversed(list(enumerate((*node.inputs, node.output)))):
        roles[lowering.slot(value)] = position
    return roles


def node_work(node: Node) -> int | None:
    """How much a node's kernels do: its floating-point operations (`ir.cost.node_flops`) or the
    elements it reads and writes, whichever is more (a sum's one operation per output element says
    nothing of the input it reads); None where a size is symbolic."""
    data, flops = node_data(node), node_flops(node)
    return None if data is None or flops is None else max(flops, data)


def node_data(node: Node) -> int | None:
    """The elements a node reads and writes (its operands' sizes); None where a size is symbolic."""
    sizes = [value.type.size for value in (*node.inputs, node.output)]
    return None if any(symbolic.is_symbolic(size) for size in sizes) else sum(sizes)


def _renamed(text: str, name: str, placeholder: str = PLACEHOLDER) -> str:
    return text.replace(f'@"{placeholder}"', f'@"{name}"').replace(f"@{placeholder}(", f"@{name}(")


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

    def pointer(self, value_or_slot, element: ir.Type | None = None, byte_offset=0) -> ir.Value:
        """Pointer to the data of a value (or raw slot), typed as `element` (default: the value's
        element type), `byte_offset` bytes in (an int or a symbolic size)."""
        if isinstance(value_or_slot, Value):
            slot, element = self.lowering.slot(value_or_slot), element or irgen.element_type(value_or_slot.dtype)
        else:
            slot = value_or_slot
        key = (slot, str(element), byte_offset)
        if key not in self._pointers:
            eb = self._entry_builder
            raw = eb.load(eb.gep(self.fn.args[0], [self._slots_word(slot)]))
            if symbolic.is_symbolic(byte_offset):
                raw = eb.gep(raw, [self.extent(byte_offset)])
            elif byte_offset:
                raw = eb.gep(raw, [i64(byte_offset)])
            self._pointers[key] = eb.bitcast(raw, element.as_pointer())
        return self._pointers[key]

    def extent(self, size) -> ir.Value:
        """A size (int or symbolic Expr) as an i64: a constant, or its value computed from the call's
        dims once in the entry block."""
        if not symbolic.is_symbolic(size):
            return i64(size)
        key = ("extent", str(size))
        if key not in self._pointers:
            dims = self.pointer(self.lowering.table.dims_slot, I64)
            self._pointers[key] = emit_size(self._entry_builder, size, dims, self.lowering.table.symbols)
        return self._pointers[key]

    def size(self, size):
        """A size for irgen's helpers that fold ints: an int as it is, a symbolic size as its i64."""
        return self.extent(size) if symbolic.is_symbolic(size) else size

    def alloca(self, ty: ir.Type, count: int = 1, name: str = "") -> ir.Value:
        """A stack slot made once in the entry block (LLVM keeps small ones in registers); never
        `b.alloca` inside the item loop, which would grow the stack on every item."""
        return self._entry_builder.alloca(ty, None if count == 1 else count, name=name)

    def scratch_pointer(self, byte_offset: int, element: ir.Type) -> ir.Value:
        return self.pointer(self.lowering.table.workspace_slot, element, byte_offset)

    def persistent_pointer(self, byte_offset: int, element: ir.Type) -> ir.Value:
        """Pointer to `byte_offset` (from `Lowering.persistent`) in the persistent memory, typed as
        `element`: the node's `KeptStart` (a word of `slots`) plus the offset from it, so the code
        does not depend on where the graph keeps the node's memory."""
        start = KeptStart(self.lowering.node_kept_start)
        assert byte_offset >= start.offset, ("memory kept by an earlier node", byte_offset, start)
        key = (start, str(element), byte_offset)
        if key not in self._pointers:
            eb = self._entry_builder
            offset = eb.add(self._slots_word(start), i64(byte_offset - start.offset))
            kept = self.pointer(self.lowering.table.persistent_slot, irgen.I8)
            self._pointers[key] = eb.bitcast(eb.gep(kept, [offset]), element.as_pointer())
        return self._pointers[key]

    def _slots_word(self, word) -> ir.Value:
        """The kernel's `slots[i]` for `word` (a table slot or a `KeptStart`), loaded in the entry block;
        the word becomes one of the kernel's slots the first time."""
        if word not in self.slots:
            self.slots.append(word)
        eb = self._entry_builder
        return eb.load(eb.gep(self.fn.args[1], [i64(self.slots.index(word))]))

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
    table.symbols = tuple(sorted(s.name for s in graph.symbols()))
    if table.symbols:
        table.dims_slot = table.add()
    table.persistent_slot = table.add()
    return table
