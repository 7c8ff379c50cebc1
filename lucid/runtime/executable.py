"""`Executable`: a graph compiled to native code, callable on NumPy arrays (in this process).

It takes a planned graph (the `codegen-ready` pipeline's result, `lucid/passes/pipeline.py`) and runs
no pass: building one gets the graph's object code (`codegen.build.graph_code`: from the disk cache,
or lowered and compiled), linked in a JIT engine. `executables(graphs)` builds several at once (a
training variant's forward and backward): their code is built together (`codegen.build.graph_codes`),
so lowering one graph overlaps compiling the others' modules. Only the compiler imports this module
(it needs llvmlite; `lucid.runtime` itself does not).

The executable keeps arenas (the planned intermediates and the workspace) reused from call to call,
so calls allocate nothing but their outputs (and an output of 128 KiB or more is an array an earlier
call returned when nothing refers to it any more: `_RecycledOutputs`); calls made at once from several Python threads each take
their own arena. Each arena also holds the graph's persistent memory (`Lowering.persistent`: zeroed
once, then kept from call to call), where conv kernels keep their packed and transformed weights with
a copy of the weights they were made from: a call whose weights equal that copy, bit for bit, skips
the packing (whatever changed the weights, an optimiser, an in-place op, `load_state_dict`, another
array, is seen by that comparison, not by any version counter). A call checks the inputs' count, shapes and dtypes before any native code runs
(and the parameters', unless the bound ones are those an earlier call checked: `_BoundWeights`),
fills the buffer table, runs the kernels with the GIL released (on the process's worker pool,
`workers.py`, when several threads are wanted), and writes the graph's state updates into the bound
buffers.
Threads: `LUCID_NUM_THREADS`, else every core this process may use.

Sizes per call. A graph with symbolic dimensions (compiled once for every size) binds its symbols
from the inputs' shapes (`specialize.sizes_of_inputs`) and checks them against the dimensions' ranges
and the graph's constraints (`specialize.check_sizes`: a ShapeError naming the dimension and the
constraint) before any native code runs; then its `_Layout` at those sizes (made once per distinct
sizes and kept; every size in it computed by one generated function, `_LayoutSizes`) gives the
arena offsets and size, the output shapes and the dims array the kernels read (`codegen/extents.py`). An arena grows to the largest size it has served. A concrete graph has
one layout.
"""
from __future__ import annotations

import ctypes
import math
import operator
import sys
import threading
import time

import numpy as np

from ..errors import GraphError
from ..ir import symbolic
from ..ir.graph import Graph, Value
from ..ir.interpreter import check_arrays
from ..ir.specialize import check_sizes, sizes_of_inputs
from ..codegen.build import (SERIAL_FLOPS, GraphCode, changing_params, default_threads, flops_by_size, graph_code,
                             graph_codes, memory_plan_of, runs_serially, written_outputs)
from ..codegen.jit import KeptAddresses, NativeCode
from ..codegen.lowering import Lowering, buffer_table
from ..codegen.target import Target, host
from ..guard import generated_test
from ..tensor import Tensor
from .workers import WorkerPool

_RUN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)
_WORDS = ctypes.CFUNCTYPE(ctypes.c_int64)
_WORKSPACE = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p)
_PERSISTENT = ctypes.CFUNCTYPE(ctypes.c_int64)


def executables(graphs: list[Graph], target: Target | None = None,
                changing_weights: frozenset = frozenset()) -> list["Executable"]:
    """An Executable of each planned graph, their object code built together (`build.graph_codes`;
    `changing_weights` as there)."""
    target = target or host()
    codes = graph_codes([(graph, memory_plan_of(graph, dynamic=True)) for graph in graphs], target, changing_weights)
    return [Executable(graph, target, code, changing_weights) for graph, code in zip(graphs, codes)]


class Executable:
    """Native code for `graph` (a verified, planned graph; its shapes fixed or symbolic); `code`, its
    object code when already built (by `executables`); `changing_weights`, the names of parameters
    that change from call to call (`Lowering.changing_weights`)."""

    def __init__(self, graph: Graph, target: Target | None = None, code: GraphCode | None = None,
                 changing_weights: frozenset = frozenset()):
        self.graph, self.target = graph, target or host()
        self.plan = memory_plan_of(graph, dynamic=True)
        self.table = buffer_table(graph, self.plan)
        self._changing_weights = changing_params(graph, changing_weights)
        code = code if code is not None else graph_code(graph, self.plan, self.target, self._changing_weights)
        self.native = NativeCode(code.objects, self.target)
        self._run = _RUN(self.native.address("lucid_run"))
        self._work = self.native.address("lucid_work")
        self._state_words = _WORDS(self.native.address("lucid_state_words"))()
        self._pool = WorkerPool.of(self.target)
        self.workspace_bytes = code.workspace_bytes
        self._kernels = code.kernels
        self.persistent_bytes = _PERSISTENT(self.native.address("lucid_persistent_bytes"))()
        self._free_arenas: list[_Arena] = []
        self._recycled = _RecycledOutputs()
        self._written = written_outputs(graph)
        self._written_at = {}                         # an output the kernels write -> its first index
        for index, (value, written) in enumerate(zip(graph.outputs, self._written)):
            if written:
                self._written_at.setdefault(value, index)
        self._weight_addresses = KeptAddresses()      # by parameter index
        self._bound: _BoundWeights | None = None      # the bound parameters as the last call checked them
        self._checked_weights: list = []              # the arrays the last call checked, for `_bound_if_repeated`
        self._copies_after_run = not all(self._written) or bool(graph.state_updates)
        self._lock = threading.Lock()
        self._param_names = frozenset(v.name for v in graph.params)
        self.dynamic = bool(self.table.symbols)
        self._workspace_at = _WORKSPACE(self.native.address("lucid_workspace_bytes")) if self.dynamic else None
        self.serial = runs_serially(graph) if not self.dynamic else None   # per call when dynamic
        self._flops = flops_by_size(graph) if self.dynamic else None
        self._sizes = _LayoutSizes(self)
        self._layouts: dict = {}
        self._largest = _Layout(self, {}) if not self.dynamic else None

    @property
    def peak_scratch_bytes(self) -> int:
        """Bytes of intermediate storage: the planned arena plus the largest per-node workspace (for
        a graph of symbolic sizes, at the largest sizes called so far)."""
        return self._largest.arena_bytes + self._largest.workspace_bytes if self._largest else self.workspace_bytes

    def kernels(self) -> list:
        """[(Kernel, graph Node)]: the kernels a call runs, in order, each with the node it is for (for
        profiling and tests). Kept from the compile; lowered again if the code came from the disk cache."""
        if self._kernels is None:
            lowering = Lowering(self.graph, self.plan, self.target, changing_weights=self._changing_weights)
            lowering.lower()
            self._kernels = lowering.kernels_and_nodes()
        return self._kernels

    def _layout(self, arrays: list) -> "_Layout":
        """The layout at the sizes of these inputs (checked), made on first use."""
        if not self.dynamic:
            return self._largest
        owner = f"compiled {self.graph.name}"
        if len(arrays) != len(self.graph.inputs):
            check_arrays(owner, self.graph.inputs, arrays, "input")          # raises: the count
        sizes = sizes_of_inputs(self.graph, [np.shape(a) for a in arrays], owner)
        key = tuple(sorted(sizes.items()))
        layout = self._layouts.get(key)
        if layout is None:
            layout = _Layout(self, check_sizes(self.graph, sizes, self._sizes.symbols))
            with self._lock:
                self._layouts[key] = layout
                if self._largest is None or layout.arena_bytes + layout.workspace_bytes > \
                        self._largest.arena_bytes + self._largest.workspace_bytes:
                    self._largest = layout
        return layout

    def _take_arena(self) -> "_Arena":
        """An arena for one call: reused from earlier calls, or a new one when every arena is in use
        (calls from several Python threads run at once and must not share intermediates). The call
        gives it back (`_give_back_arena`) when it ends; both are atomic under the GIL."""
        try:
            return self._free_arenas.pop()
        except IndexError:
            return _Arena(self)

    def _give_back_arena(self, arena: "_Arena") -> None:
        self._free_arenas.append(arena)

    # ------------------------------------------------------------------ calling
    def __call__(self, *inputs, params: dict | None = None, threads: int | None = None) -> list[np.ndarray]:
        """Outputs (a list of arrays no one else holds: fresh, or recycled, see `_RecycledOutputs`) for
        `inputs`; parameters from `params` or the bindings."""
        return self._call(inputs, params, threads)

    def timeline(self, *inputs, params: dict | None = None, threads: int = 1) -> np.ndarray:
        """A call on the worker pool that also says when each thread was done with its share of each
        kernel: seconds from the first thread's start, an array (threads that took part, kernels in
        run order). The cycle counter's rate is taken from the call's duration, so the times are
        overestimated by the pool's hand-off (tens of microseconds against the call's milliseconds)."""
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"compiled {self.graph.name}: timeline: expected a thread count of at least 1, "
                             f"got {threads!r}")
        marks = np.zeros((threads, len(self.kernels()) + 1), np.int64)
        with self._pool.busy:
            started = time.perf_counter()
            self._call(inputs, params, threads, marks)
            seconds = time.perf_counter() - started
        marks = marks[marks[:, 0] != 0]
        cycles = marks - marks[:, :1].min()
        return cycles[:, 1:] * (seconds / max(int(cycles.max()), 1))

    def _call(self, inputs: tuple, params: dict | None, threads: int | None, timeline: np.ndarray | None = None):
        owner = f"compiled {self.graph.name}"
        layout = self._layout(list(inputs))
        arrays = _c_contiguous(check_arrays(owner, layout.inputs, inputs, "input"))
        bound = self._bound if params is None else None
        if bound is None or bound.layout is not layout or not bound.holds():
            bound = None
            weights = _c_contiguous(check_arrays(owner, layout.params, self._weights(params), "parameter"))
            if params is None:
                self._bound = self._bound_if_repeated(layout, weights)
        arena = self._take_arena()
        try:
            table = arena.template(layout).copy()
            for slot, array in zip(self.table.inputs, arrays):
                table[slot] = array.ctypes.data
            if bound is not None:
                weights = bound.arrays
                table[bound.slots] = bound.addresses
            else:
                self._point_at_weights(table, weights)
            outputs = self._output_arrays(table, layout)
            if timeline is None:
                self._execute(table, arena, threads or (1 if (layout.serial if self.dynamic else self.serial) else
                                                        default_threads()))
            else:
                self._pool.run(self._work, table.ctypes.data, arena.state, len(timeline), timeline.ctypes.data)
            if self._copies_after_run:
                outputs = self._copied_outputs(_Found(self, arena, layout, outputs, arrays + weights), outputs)
        finally:
            self._give_back_arena(arena)
        return outputs

    def _bound_if_repeated(self, layout: "_Layout", weights: list) -> "_BoundWeights | None":
        """The bound parameters kept (`_BoundWeights`) when a call checks the same arrays as the call
        before it: making their test costs 1.7 ms for R2Plus1dNet's 107, which a model whose arrays
        are swapped on every call (`p.data = ...`) must not pay each time."""
        repeated = len(weights) == len(self._checked_weights) and all(map(operator.is_, weights, self._checked_weights))
        self._checked_weights = weights
        return _BoundWeights.of(self, layout, weights) if repeated else None

    def _point_at_weights(self, table: np.ndarray, weights: list) -> None:
        """Each parameter's address in its table slot, kept with the array a parameter had on the
        last call (`KeptAddresses`: a microsecond per parameter and call otherwise)."""
        for k, ((_, slot), array) in enumerate(zip(self.table.params, weights)):
            table[slot] = self._weight_addresses(k, array)

    def _copied_outputs(self, found: "_Found", outputs: list) -> list:
        """The outputs the kernels did not write (copied from their storage), and the graph's state
        updates written into the bound buffers."""
        outputs = [array if array is not None else np.array(found.storage(v))
                   for v, array in zip(self.graph.outputs, outputs)]
        for name, value in self.graph.state_updates.items():
            if name in self.graph.bindings:
                np.copyto(np.asarray(self.graph.bindings[name]), found.storage(value))
        return outputs

    def _weights(self, params: dict | None) -> list:
        """Each graph parameter's value: from `params` (by name), else the graph's binding."""
        given = params or {}
        unknown = given.keys() - self._param_names
        if unknown:
            raise GraphError(f"compiled {self.graph.name}: no parameters named {sorted(unknown)} "
                             f"(its parameters: {sorted(self._param_names)})")
        weights = [given.get(v.name, self.graph.bindings.get(v.name)) for v in self.graph.params]
        if any(w is None for w in weights):
            unbound = [v.name for v, w in zip(self.graph.params, weights) if w is None]
            raise GraphError(f"compiled {self.graph.name}: parameters {unbound} have no value; pass them in params=")
        return weights

    def _execute(self, table: np.ndarray, arena: "_Arena", threads: int) -> None:
        """Run the kernels: on the process's worker pool when it is free, else with threads started
        for this call only (also for one thread, which starts none)."""
        if threads > 1 and self._pool.busy.acquire(blocking=False):
            try:
                self._pool.run(self._work, table.ctypes.data, arena.state, threads)
            finally:
                self._pool.busy.release()
        else:
            self._run(table.ctypes.data, threads)

    def _output_arrays(self, table: np.ndarray, layout: "_Layout") -> list:
        """An array for each output the kernels write (see `written_outputs`; fresh, or one an earlier
        call returned that nothing refers to any more: `_RecycledOutputs`), its table slot pointed at
        it; None for the others, copied after the run."""
        arrays = [None] * len(self.graph.outputs)
        for index, slot, shape, dtype in layout.written_outputs:
            arrays[index] = self._recycled.array(index, shape, dtype)
            table[slot] = arrays[index].ctypes.data
        return arrays


class _BoundWeights:
    """The graph's bound parameters as a call without `params=` checked them (against `layout`'s
    shapes and dtypes): each binding's array (a Tensor's, or the binding itself), with its address
    and table slot. `holds()` is one expression (`guard.generated_test`): each binding still in
    `graph.bindings`, still holding the same array, whose shape, strides and dtype are the ones
    checked (some 0.15 us a parameter). While it holds, a call neither checks the parameters nor
    reads their addresses again: R2Plus1dNet's 107 took 63 us a call, their test takes 15 (made once
    two calls in a row check the same arrays: `Executable._bound_if_repeated`). Writing into the
    arrays (an optimiser's step) changes nothing here; the kernels compare the weights' values
    themselves (`Lowering.persistent`)."""

    def __init__(self, layout: "_Layout", slots: list, arrays: list, holds):
        self.layout, self.arrays, self.holds = layout, arrays, holds
        self.slots = np.array(slots, np.intp)
        self.addresses = np.array([array.ctypes.data for array in arrays], np.uintp)

    @classmethod
    def of(cls, executable: Executable, layout: "_Layout", weights: list) -> "_BoundWeights | None":
        """The checked `weights` (the bindings' values, in parameter order) kept, or None when one is
        not a binding's own array (a copy made for the call: a list, or an array of other strides)."""
        bindings = executable.graph.bindings
        names: dict[str, object] = {"bindings": bindings}
        tests = []
        for k, ((name, _), array) in enumerate(zip(executable.table.params, weights)):
            binding = bindings.get(name)
            owner = binding._data if isinstance(binding, Tensor) else binding
            if owner is not array:
                return None
            names.update({f"b{k}": binding, f"a{k}": array, f"s{k}": array.shape, f"t{k}": array.strides,
                          f"d{k}": array.dtype})
            tests.append(f"bindings.get({name!r}) is b{k}")
            if binding is not array:
                tests.append(f"b{k}._data is a{k}")
            tests.append(f"a{k}.shape == s{k} and a{k}.strides == t{k} and a{k}.dtype is d{k}")
        return cls(layout, [slot for _, slot in executable.table.params], weights, generated_test(tests, names))


class _RecycledOutputs:
    """Output arrays of at least `SMALLEST_BYTES` given out again once nothing but this keeps them.

    glibc maps an allocation from 128 KiB up as fresh pages (until its threshold adapts, and always
    over 32 MiB), and when freed memory is given back to the system, the next one is fresh again:
    the kernel then zeroes every page as the call first writes it. A training step's forward
    outputs (the values its backward reads) are such arrays: with glibc's defaults
    (`benchmarks/recycled_outputs.py`) UNet3D's step at two threads took 66.5 ms with fresh arrays
    and 46.2 ms recycled, R2Plus1dNet's 19.1 and 12.7 ms (the peak RSS unchanged); with the
    benchmarks' tunables, conv.py's row F (a 103 MB output) took 139.0 ms a call fresh and 129.7 ms
    recycled at one thread, 65.6 and 59.9 ms at two. An array an earlier call returned whose only
    references are this object's and the check's own (`sys.getrefcount` is 2: no Tensor, view,
    memoryview or other array holds it), still as it was made (`_as_made`), is handed out again,
    its pages mapped. At most `KEPT` arrays per output are kept (in a loop `y = compiled(x)`,
    the last result is still held while the next is made), so the memory kept is at most that many
    outputs; an array of another shape or dtype is dropped once free."""

    SMALLEST_BYTES = 128 << 10
    KEPT = 2

    def __init__(self):
        self._kept: dict[int, list] = {}               # output index -> arrays
        self._lock = threading.Lock()                  # calls from several Python threads

    def array(self, index: int, shape: tuple, dtype) -> np.ndarray:
        if math.prod(shape) * np.dtype(dtype).itemsize < self.SMALLEST_BYTES:
            return np.empty(shape, dtype)
        with self._lock:
            kept = self._kept.setdefault(index, [])
            for position in range(len(kept)):
                if sys.getrefcount(kept[position]) == 2:            # kept's reference and the argument
                    if _as_made(kept[position], shape, dtype):
                        return kept[position]
                    del kept[position]
                    break
            array = np.empty(shape, dtype)
            if len(kept) < self.KEPT:
                kept.append(array)
            return array


def _as_made(array: np.ndarray, shape: tuple, dtype) -> bool:
    """Whether a kept output array is still as `np.empty(shape, dtype)` made it: its holders may have
    changed its shape, dtype or strides in place, or made it read-only, before letting it go."""
    flags = array.flags
    return array.shape == shape and array.dtype == dtype and flags.c_contiguous and flags.writeable


def _c_contiguous(arrays: list) -> list:
    """Each array, or a C-contiguous copy of it where it is not (the kernels read dense rows)."""
    return [a if a.flags.c_contiguous else np.ascontiguousarray(a) for a in arrays]


class _Declared:
    """A graph input or parameter as `check_arrays` reads it, with its shape at one call's sizes."""

    def __init__(self, value: Value, shape: tuple):
        self.name, self.dtype, self.shape = value.name, value.dtype, shape


class _Layout:
    """What depends on a call's sizes: the arena offsets and size, the shapes of the inputs,
    parameters and outputs, the dims array the kernels read, and the thread rule."""

    def __init__(self, executable: Executable, sizes: dict):
        graph, table = executable.graph, executable.table
        self.sizes = sizes
        self.arena_bytes, flops, self.offsets, self._shapes = executable._sizes.at(sizes)
        self.dims = np.array([sizes[name] for name in table.symbols], np.int64)
        self.workspace_bytes = executable._workspace_at(self.dims.ctypes.data) if sizes else executable.workspace_bytes
        self.inputs = [_Declared(v, self.shape(v)) for v in graph.inputs]
        self.written_outputs = [(index, slot, self.shape(v), v.dtype.numpy) for index, (v, slot, written)
                                in enumerate(zip(graph.outputs, table.outputs, executable._written)) if written]
        self.params = [_Declared(v, self.shape(v)) for v in graph.params]
        if not sizes:
            self.serial = None                     # a concrete graph's rule is `Executable.serial`
        elif executable._flops is None:
            self.serial = runs_serially(graph.specialize(**sizes))
        else:
            self.serial = flops < SERIAL_FLOPS

    def shape(self, value: Value) -> tuple:
        shape = self._shapes.get(value)
        return shape if shape is not None else symbolic.evaluate(value.shape, self.sizes)


class _LayoutSizes:
    """Every size a `_Layout` holds (the arena's bytes, the graph's FLOPs, the arena offsets, the
    inputs', parameters' and outputs' shapes), computed at a call's sizes by one generated function
    (`symbolic.evaluator`), which a UNet's hundreds of offsets would otherwise cost a millisecond
    or two of term-by-term evaluation on the first call at each size."""

    def __init__(self, executable: Executable):
        graph, table = executable.graph, executable.table
        self.symbols = graph.symbols()
        self.names = tuple(s.name for s in self.symbols)
        self.slots = list(table.arena)
        found = graph.outputs + list(graph.state_updates.values())          # what `_Found.storage` looks up
        self.values = list(dict.fromkeys(graph.inputs + graph.params + found
                                         + [executable.plan.root(v) for v in found]))
        flops = executable._flops if executable._flops is not None else 0
        self._at = symbolic.evaluator([executable.plan.arena_bytes, flops, *table.arena.values()]
                                      + [size for v in self.values for size in v.shape], self.names)

    def at(self, sizes: dict) -> tuple:
        """(arena bytes, FLOPs, {slot: offset}, {value: shape}) at `sizes` (name -> int)."""
        found = iter(self._at(*(sizes[name] for name in self.names)))
        arena_bytes, flops = next(found), next(found)
        offsets = {slot: next(found) for slot in self.slots}
        shapes = {v: tuple(next(found) for _ in v.shape) for v in self.values}
        return arena_bytes, flops, offsets, shapes


class _Arena:
    """The intermediates and workspace of one call, the buffer table pointing into them (made for the
    layout of the last call, and grown when a layout needs more), the persistent memory (never
    reallocated: its contents must survive from call to call) and the state block of a run on the
    worker pool (barrier words, each thread's progress word)."""

    def __init__(self, executable: Executable):
        self.executable = executable
        self.state = np.zeros(executable._state_words, np.int64)
        self.persistent = np.zeros(executable.persistent_bytes + 64, np.uint8)
        self.memory = np.zeros(0, np.uint8)
        self.base = 0
        self._for: _Layout | None = None
        self._template = np.zeros(executable.table.size, np.uintp)

    def template(self, layout: _Layout) -> np.ndarray:
        """The table of every slot but the inputs', parameters' and outputs' for `layout`."""
        if layout is not self._for:
            self._fit(layout)
        return self._template

    def _fit(self, layout: _Layout) -> None:
        executable = self.executable
        table, needed = executable.table, layout.arena_bytes + layout.workspace_bytes + 64
        if self.memory.size < needed:
            self.memory = np.zeros(needed, np.uint8)
            self.base = -self.memory.ctypes.data % 64                          # offset of 64-byte alignment
        start = self.memory.ctypes.data + self.base
        for slot, offset in layout.offsets.items():
            self._template[slot] = start + offset
        self._template[table.workspace_slot] = start + layout.arena_bytes
        for slot, array in table.constants:
            self._template[slot] = array.ctypes.data
        if table.dims_slot >= 0:
            self._template[table.dims_slot] = layout.dims.ctypes.data
        persistent = self.persistent.ctypes.data
        self._template[table.persistent_slot] = persistent + -persistent % 64
        self._for = layout


class _Found:
    """Where each value of a finished call is: an output array, the arena, a constant or an input."""

    def __init__(self, executable: Executable, arena: _Arena, layout: _Layout, outputs: list, arguments: list):
        self.executable, self.arena, self.layout = executable, arena, layout
        self.outputs, self.arguments = outputs, arguments

    def storage(self, value: Value) -> np.ndarray:
        graph, plan = self.executable.graph, self.executable.plan
        root = plan.root(value)
        produced = self.executable._written_at.get(root)
        if produced is not None:
            data = self.outputs[produced]
        elif root in plan.offsets:
            start = self.arena.base + symbolic.evaluate(plan.offsets[root], self.layout.sizes)
            count = math.prod(self.layout.shape(root))
            data = self.arena.memory[start:start + count * root.dtype.numpy.itemsize].view(root.dtype.numpy)
        elif root.node is not None and root.node.is_constant:
            data = root.node.value
        else:
            data = next(a for v, a in zip(graph.inputs + graph.params, self.arguments) if v is root)
        return data.reshape(self.layout.shape(value))
