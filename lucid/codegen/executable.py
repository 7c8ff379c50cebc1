"""`Executable`: a graph compiled to native code, callable on NumPy arrays.

Building one plans memory, then loads the graph's object code from the disk cache, or lowers the
graph (one module per kernel plus the entry module) and compiles the modules the cache lacks.

The executable keeps arenas (the planned intermediates and the workspace) reused from call to call,
so calls allocate nothing but their outputs; calls made at once from several Python threads each take
their own arena. A call checks the inputs' count, shapes and dtypes before any native code runs,
fills the buffer table, runs `lucid_run` with the GIL released, and writes the graph's state updates
into the bound buffers.
Threads: `LUCID_NUM_THREADS`, else every core this process may use.
"""
from __future__ import annotations

import ctypes
import os
import threading
from contextlib import contextmanager

import llvmlite.ir as ir
import numpy as np

from .. import __version__
from ..ir.cost import estimated_flops
from ..ir.graph import Graph, Value
from ..ir.interpreter import check_arrays
from ..passes import memory_planning
from . import kernels  # noqa: F401  (registers the lowerings)
from .jit import NativeCode, cache_key, code_fingerprint, load_objects, objects, read_graph, write_graph
from .lowering import Lowering, buffer_table
from .parallel import emit_entry
from .target import Target, host

_RUN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)


#: Graphs estimated below this many floating-point operations run on one thread: starting threads
#: costs tens of microseconds, more than such a graph takes.
SERIAL_FLOPS = 4_000_000


def default_threads() -> int:
    configured = os.environ.get("LUCID_NUM_THREADS")
    if configured:
        return max(1, int(configured))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Executable:
    """Native code for `graph` (a verified graph; its shapes are fixed)."""

    def __init__(self, graph: Graph, target: Target | None = None):
        self.graph, self.target = graph, target or host()
        self.plan = memory_planning.plan(graph)
        self.table = buffer_table(graph, self.plan)
        key = cache_key(code_fingerprint(), __version__, self.target.fingerprint, str(graph))
        record = read_graph(key)
        codes = load_objects(record["objects"]) if record else None
        if codes is None:
            record, codes = self._build(key)
        self.native = NativeCode(codes, self.target)
        self._run = _RUN(self.native.address("lucid_run"))
        self.workspace_bytes = int(record["workspace_bytes"])
        self._free_arenas: list[_Arena] = []
        self._lock = threading.Lock()
        self.serial = estimated_flops(graph) < SERIAL_FLOPS

    @property
    def peak_scratch_bytes(self) -> int:
        """Bytes of intermediate storage: the planned arena plus the largest per-node workspace."""
        return self.plan.arena_bytes + self.workspace_bytes

    def _build(self, key: str) -> tuple[dict, list]:
        """Lower the graph, compile what the cache lacks, and record the graph's objects."""
        lowering = Lowering(self.graph, self.plan, self.target)
        lowering.lower()
        entry = ir.Module(name="entry")
        entry.triple = self.target.triple
        emit_entry(entry, lowering.kernels)
        modules = [(m.name, m.text) for m in lowering.modules.values()] + [("entry", str(entry))]
        named = objects(modules, self.target)
        record = {"objects": [name for name, _ in named], "workspace_bytes": lowering.workspace_bytes}
        write_graph(key, record)
        return record, [code for _, code in named]

    @contextmanager
    def _arena(self):
        """An arena for one call: reused from earlier calls, or a new one when every arena is in use
        (calls from several Python threads run at once and must not share intermediates)."""
        with self._lock:
            arena = self._free_arenas.pop() if self._free_arenas else _Arena(self)
        try:
            yield arena
        finally:
            with self._lock:
                self._free_arenas.append(arena)

    # ------------------------------------------------------------------ calling
    def __call__(self, *inputs, params: dict | None = None, threads: int | None = None) -> list[np.ndarray]:
        """Outputs (a list of fresh arrays) for `inputs`; parameters from `params` or the bindings."""
        owner = f"compiled {self.graph.name}"
        arrays = [np.require(a, requirements="C") for a in check_arrays(owner, self.graph.inputs, inputs, "input")]
        given = params or {}
        weights = [given[v.name] if v.name in given else self.graph.bindings.get(v.name) for v in self.graph.params]
        weights = [np.require(a, requirements="C") for a in check_arrays(owner, self.graph.params, weights, "parameter")]
        with self._arena() as arena:
            table = arena.template.copy()
            for slot, array in zip(self.table.inputs, arrays):
                table[slot] = array.ctypes.data
            for (_, slot), array in zip(self.table.params, weights):
                table[slot] = array.ctypes.data
            outputs = self._output_arrays(table)
            self._run(table.ctypes.data, threads or (1 if self.serial else default_threads()))
            found = _Found(self, arena, outputs, arrays + weights)
            outputs = [array if array is not None else np.array(found.storage(v))
                       for v, array in zip(self.graph.outputs, outputs)]
            for name, value in self.graph.state_updates.items():
                if name in self.graph.bindings:
                    np.copyto(np.asarray(self.graph.bindings[name]), found.storage(value))
        return outputs

    def _output_arrays(self, table: np.ndarray) -> list:
        """A fresh array for each output computed by a node (one per distinct value); None for outputs
        that are inputs, parameters, constants or repeats (copied after the run)."""
        produced, arrays = set(), []
        for value, slot in zip(self.graph.outputs, self.table.outputs):
            if value.node is None or value.node.is_constant or value in produced:
                arrays.append(None)
                continue
            produced.add(value)
            array = np.empty(value.shape, value.dtype.numpy)
            table[slot] = array.ctypes.data
            arrays.append(array)
        return arrays



class _Arena:
    """The intermediates and workspace of one call, and the buffer table pointing into them."""

    def __init__(self, executable: Executable):
        self.memory = np.zeros(executable.plan.arena_bytes + executable.workspace_bytes + 64, np.uint8)
        self.base = -self.memory.ctypes.data % 64                          # offset of 64-byte alignment
        self.template = np.zeros(executable.table.size, np.uintp)
        start = self.memory.ctypes.data + self.base
        for slot, offset in executable.table.arena.items():
            self.template[slot] = start + offset
        self.template[executable.table.workspace_slot] = start + executable.plan.arena_bytes
        for slot, array in executable.table.constants:
            self.template[slot] = array.ctypes.data


class _Found:
    """Where each value of a finished call is: an output array, the arena, a constant or an input."""

    def __init__(self, executable: Executable, arena: _Arena, outputs: list, arguments: list):
        self.executable, self.arena, self.outputs, self.arguments = executable, arena, outputs, arguments

    def storage(self, value: Value) -> np.ndarray:
        graph, plan = self.executable.graph, self.executable.plan
        root = plan.root(value)
        produced = [array for v, array in zip(graph.outputs, self.outputs) if v is root and array is not None]
        if produced:
            data = produced[0]
        elif root in plan.offsets:
            start = self.arena.base + plan.offsets[root]
            data = self.arena.memory[start:start + root.type.size * root.dtype.numpy.itemsize].view(root.dtype.numpy)
        elif root.node is not None and root.node.is_constant:
            data = root.node.value
        else:
            data = next(a for v, a in zip(graph.inputs + graph.params, self.arguments) if v is root)
        return data.reshape(value.shape)
