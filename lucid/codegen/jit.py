"""From LLVM modules to callable native code, and the disk cache that makes that a one-time cost.

Object code is cached per module: a `Compilation` takes (LLVM text, level) modules one by one and
returns the object code of each, reading it from the cache when present and intact, else compiling
it (`compile_worker.compile_module` at that level: `compile_worker.level_for` picks a kernel's) and
storing it for the next time; a module added twice (a kernel two graphs share) is compiled once.
llvmlite runs one compilation at a time per process, so the missing modules are compiled
by worker processes too (`compile_worker.py`; `LUCID_COMPILE_JOBS`, default every core) while the
caller goes on making modules, and by the caller once it has made them all; the costliest waiting
module is compiled first (the highest level, then the longest text), so the compile ends on cheap
modules rather than one core finishing a big one while the other idles. While workers are fed, the
GIL switch interval is short (`_QuickSwitching`): the threads feeding them get the GIL back soon
from a caller lowering in Python. `objects(modules,
target)` is that for a list of modules. Modules named in `unoptimised` (a graph's entry module: it
only orders the kernels and hands out their work items, so its own speed is nothing next to theirs)
are compiled as written (O0 and fast instruction selection), about ten times cheaper than at O3.
Kernel modules are named by a hash of their code, so a kernel shared by several graphs is compiled
once (`build.py` keeps, beside them, each graph's manifest: a process that meets a known graph loads
its objects without lowering or compiling anything). `NativeCode(objects)` links object code in one
MCJIT engine. `COUNTERS["compiled"]` counts LLVM compilations for this process, in it or in its
workers (tests assert a warm cache does none).

Object names are keys of the code generator's source hash (`cache.code_fingerprint()`), the LLVM
version, the target's fingerprint, the optimisation level and the module's text, so a changed lucid
or LLVM never reads what another one wrote. How entries are stored and verified before use is
`cache.py`'s part; an unwritable cache only costs compilations.
"""
from __future__ import annotations

import heapq
import os
import sys
import threading
import warnings
from collections.abc import Collection

import llvmlite.binding as llvm

from . import compile_worker, progress
from .cache import cache_key, code_fingerprint, load_object, write_object
from .compile_worker import ModuleFailed, compile_module, module_texts
from .target import Target, available_cores

COUNTERS = {"compiled": 0, "loaded": 0}

#: Worker processes start only for a compilation with at least this many missing modules: fewer do
#: not pay for starting them (about 0.3 s) when none is running yet.
WORKERS_FROM = 4

#: CPython's GIL switch interval while feeder threads hand modules to workers (`_QuickSwitching`).
FEEDING_SWITCH_INTERVAL = 0.0005


class CompileWorkerWarning(RuntimeWarning):
    """A compile worker process failed; its modules were compiled in this process."""


# ---------------------------------------------------------------------------------------------
# Object code


def objects(modules: list[tuple[str, str]], target: Target,
            unoptimised: Collection[str] = ()) -> list[tuple[str, bytes]]:
    """(cache name, object code) of each (name, LLVM text) module, from the cache or compiled; those
    named in `unoptimised` at O0."""
    with Compilation(target) as compilation:
        for name, text in modules:
            compilation.add(text, 0 if name in unoptimised else 3)
        return compilation.results()


def compile_jobs() -> int:
    """How many processes compile at once: `LUCID_COMPILE_JOBS`, else every core this process may
    use (this process and `jobs - 1` worker processes)."""
    configured = os.environ.get("LUCID_COMPILE_JOBS")
    return max(1, int(configured)) if configured else available_cores()


class Compilation:
    """The object code of modules added one by one (`add`, as lowering makes them). Each is read from
    the cache when there, else compiled, once however often it is added: once `WORKERS_FROM`
    modules are missing, worker processes (`compile_jobs() - 1` of them) start compiling them, the
    costliest first (`_cost_order`), while the caller goes on; `results()` has the caller compile
    what is left too, and returns every module's (cache name, object code) in the order added. A
    worker that fails is reported once (CompileWorkerWarning) and its module is compiled here; a
    module no one can compile raises this process's own error. Use it in a `with` block: leaving it
    (also on an error) stops handing modules to the workers."""

    def __init__(self, target: Target):
        self.target = target
        self.names: list[str] = []                 # each module added, in order (one added twice: twice)
        self._codes: dict[str, bytes | None] = {}  # cache name -> object code (None until compiled)
        self._queue: list = []                     # heap of (cost order, name, text, level) to compile
        self._here: list = []                      # modules a worker could not compile
        self._busy = 0                             # modules being compiled by workers
        self._missing = 0
        self._sealed = False
        self._changed = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._switching = False                    # whether this compilation holds `_QUICK_SWITCHING`
        self._progress = progress.current()

    def add(self, text: str | list[str], level: int = 3) -> str:
        """Add a module's LLVM text (or a list of modules', linked into one object) at `level`;
        returns its cache name (its key in `results()`)."""
        name = _object_name(text, self.target, level)
        self.names.append(name)
        if name in self._codes:                    # added before: looked up or compiled once
            return name
        code = self._codes[name] = load_object(name)
        if code is not None:
            COUNTERS["loaded"] += 1
            self._report("loaded")
            return name
        self._missing += 1
        self._report("missing")
        with self._changed:
            heapq.heappush(self._queue, (_cost_order(text, level, self._missing), name, text, level))
            self._changed.notify()
        if self._missing == WORKERS_FROM and compile_jobs() > 1:
            self._start_workers()
        return name

    def results(self) -> list[tuple[str, bytes]]:
        self._seal()
        while (job := self._next(helping=False)) is not None:
            self._compile_here(job)
        self.close()
        for job in self._here:
            self._compile_here(job)
        return [(name, self._codes[name]) for name in self.names]

    def close(self) -> None:
        """Hand no more modules to the workers and wait for those they are compiling."""
        self._seal(drop_queue=True)
        for thread in self._threads:
            thread.join()
        self._threads = []
        if self._switching:
            self._switching = False
            _QUICK_SWITCHING.leave()

    def __enter__(self) -> "Compilation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _next(self, helping: bool):
        """The next module to compile; None when there is none left (for a worker's thread: none
        left in a sealed compilation; for the caller: none queued or being compiled elsewhere)."""
        with self._changed:
            while not self._queue and not (self._sealed and (helping or not self._busy)):
                self._changed.wait()
            if not self._queue:
                return None
            if helping:
                self._busy += 1
            return heapq.heappop(self._queue)

    def _seal(self, drop_queue: bool = False) -> None:
        with self._changed:
            self._sealed = True
            if drop_queue:
                self._queue = []
            self._changed.notify_all()

    def _compile_here(self, job) -> None:
        _, name, text, level = job
        self._done(name, compile_module(text, self.target, level))

    def _done(self, name: str, code: bytes) -> None:
        write_object(name, code)
        with self._changed:
            self._codes[name] = code
            COUNTERS["compiled"] += 1
        self._report("compiled")

    def _start_workers(self) -> None:
        try:
            started = compile_worker.workers(compile_jobs() - 1)
        except OSError as failure:             # no process could be started: this process compiles all
            _warn_worker_failed(failure)
            return
        for worker in started:
            thread = threading.Thread(target=self._feed, args=(worker,), daemon=True,
                                      name="lucid-compile-feeder")
            thread.start()
            self._threads.append(thread)
        if started:
            self._switching = True
            _QUICK_SWITCHING.enter()

    def _feed(self, worker: compile_worker.Worker) -> None:
        """Hand queued modules to `worker` until none is left, or it fails (then its module goes back
        to the queue, before this module stops counting as busy, so the caller cannot miss it)."""
        while (job := self._next(helping=True)) is not None:
            try:
                _, name, text, level = job
                self._done(name, worker.compile(text, self.target, level))
            except ModuleFailed:
                self._here.append(job)         # compiled here at the end, raising this process's error
            except Exception as failure:       # noqa: BLE001  (WorkerFailed, or anything unforeseen)
                _warn_worker_failed(failure)
                compile_worker.discard(worker)
                with self._changed:
                    heapq.heappush(self._queue, job)
                return
            finally:
                with self._changed:
                    self._busy -= 1
                    self._changed.notify_all()

    def _report(self, field: str) -> None:
        if self._progress is not None:
            self._progress.count(field)


class _QuickSwitching:
    """The GIL switch interval at FEEDING_SWITCH_INTERVAL while any compilation has feeder threads (the
    interval before is restored when the last one closes). A feeder thread needs the GIL back after
    each read and write on its worker's pipes and each cache write, and a caller lowering in Python
    keeps it for the whole interval each time (CPython's default, 5 ms): while a UNet3D training
    variant was lowered, its worker waited 20 to 30 ms between modules for its next one (0.35 s in
    all, median of 13 runs); at 0.5 ms, 5 ms (0.13 s), and the compile took 4.4 s instead of 4.5-4.8."""

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._before = sys.getswitchinterval()

    def enter(self) -> None:
        with self._lock:
            if not self._users:
                self._before = sys.getswitchinterval()
                sys.setswitchinterval(min(self._before, FEEDING_SWITCH_INTERVAL))
            self._users += 1

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if not self._users:
                sys.setswitchinterval(self._before)


_QUICK_SWITCHING = _QuickSwitching()
_WARNED = []


def _warn_worker_failed(failure: Exception) -> None:
    """Say once per process that a worker failed (the compile goes on in this process)."""
    if not _WARNED:
        _WARNED.append(failure)
        warnings.warn(f"lucid: a compile worker process failed ({type(failure).__name__}: {failure}); its "
                      "modules are compiled in this process", CompileWorkerWarning, stacklevel=2)


class KeptAddresses:
    """`array.ctypes.data` (a microsecond each) for arrays passed to native code call after call,
    kept per slot (any hashable key) with the array it was read from: the same ndarray object keeps
    its address, since NumPy refuses to resize in place an array referenced elsewhere, as it is here.
    Used for a compiled graph's parameters and an optimiser step's arrays."""

    def __init__(self):
        self._kept: dict = {}

    def __call__(self, slot, array) -> int:
        kept = self._kept.get(slot)
        if kept is None or kept[0] is not array:
            kept = self._kept[slot] = (array, array.ctypes.data)
        return kept[1]


class NativeCode:
    """Object code linked in its own JIT engine (kept alive as long as this object)."""

    def __init__(self, codes: list[bytes], target: Target):
        machine = target.machine()
        empty = llvm.parse_assembly("")
        empty.triple = machine.triple
        self.engine = llvm.create_mcjit_compiler(empty, machine)
        for code in codes:
            self.engine.add_object_file(llvm.ObjectFileRef.from_data(code))
        self.engine.finalize_object()

    def address(self, name: str) -> int:
        address = self.engine.get_function_address(name)
        if not address:
            raise RuntimeError(f"codegen: the compiled object has no function {name!r}")
        return address


def _cost_order(text: str | list[str], level: int, order: int) -> tuple:
    """A missing module's place in the queue: the highest level first (a level-3 module's LLVM time is
    several times a level-2 one's), then the longest text, then the first added."""
    return -level, -sum(map(len, module_texts(text))), order


def _object_name(text: str | list[str], target: Target, level: int) -> str:
    llvm_version = ".".join(map(str, llvm.llvm_version_info))
    return f"{cache_key(code_fingerprint(), llvm_version, target.fingerprint, f'O{level}', *module_texts(text))}.o"
