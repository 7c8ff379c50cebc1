"""The process's worker pool: threads that stay alive between compiled calls.

Starting threads for every call costs tens of microseconds, and on a virtual machine a core that went
idle between calls can take milliseconds to wake: a graph run right after another would then do
most of its work on one thread. So a compiled call with several threads hands its share-out to the
pool (`lucid_pool_run`). After a job a worker keeps checking for the next one, with a pause
instruction between checks (a thread that yielded its core instead was found sharing the caller's),
for 0.2 ms, or for 1 ms when its last job came within 1 ms of the one before (back-to-back calls
find it awake, even with a Python graph step between them), then marks its slot ASLEEP and sleeps
on a futex on the slot's word until a call claims it and wakes it (the caller's only system call,
and only for a worker that sleeps). So a pool between calls costs at most that spin of CPU (the
short one for calls that come after pauses), and the next call starts no thread. A call names for
each worker an allowed CPU other than the caller's current one, and the worker pins itself there
(again only when the caller has moved; the caller is not pinned). Workers are joined, not detached:
`lucid_pool_stop` wakes every sleeping worker, tells them all to exit and joins them, so after it
returns no thread runs the module's code (the module may then be unloaded, as an exported library
is by dlclose). The futex is Linux's, like the affinity calls the pool already makes.

The pool's code is its own small native module. A job names the executable's exported
`lucid_work(table, state)` (see `codegen/parallel.py`), its buffer table and its state block; the workers
call it, so one pool serves every executable. One call uses the pool at a time (`WorkerPool.run`
holds a lock; a call that finds it taken starts threads of its own through `lucid_run`).

The pool block (i64 words, zeroed by Python): [work function, table, state, live workers, done,
quit, when the job was posted (ns), CPU count, the CPUs], one state word per worker slot (NONE,
IDLE: waiting, CLAIMED: taken for a job being set up, BUSY: go, ASLEEP: waiting on the futex), then
each slot's context (block address, slot index, CPU mask of its next job, thread handle: 0 when
none is left to join).
"""
from __future__ import annotations

import atexit
import ctypes
import os
import threading

import llvmlite.ir as ir
import numpy as np

from ..codegen.irgen import I8P, I32, I64, VOID, counted_loop, i64, intrinsic
from ..codegen.parallel import MAX_THREADS, THREADS, TIMELINE, WORK_TYPE, pause_or_yield

POOL_WORK, POOL_TABLE, POOL_STATE, POOL_LIVE, POOL_DONE, POOL_QUIT, POOL_POSTED, POOL_CPU_COUNT = range(8)
MAX_WORKERS = MAX_THREADS - 1               # the caller is the call's other thread
MAX_CPUS = 256
POOL_CPUS = 8                               # the CPUs this process may use
POOL_SLOTS = POOL_CPUS + MAX_CPUS           # one state word per worker slot
POOL_CONTEXTS = POOL_SLOTS + MAX_WORKERS    # per slot: (pool address, slot index, CPU mask, handle)
CONTEXT_WORDS = 4
CONTEXT_HANDLE = 3
POOL_WORDS = POOL_CONTEXTS + CONTEXT_WORDS * MAX_WORKERS
SLOT_NONE, SLOT_IDLE, SLOT_CLAIMED, SLOT_BUSY, SLOT_ASLEEP = range(5)
SHORT_SPIN_NANOSECONDS = 200_000            # how long an idle worker checks for the next job before it sleeps,
LONG_SPIN_NANOSECONDS = 1_000_000           # or after a job that came this soon after the one before
WORKER_THREAD_NAME = "lucid-pool"                # what a worker thread is called (comm)
SYS_FUTEX, CLOCK_MONOTONIC = 202, 1         # x86-64 Linux
FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 128, 129


def pool_module(triple: str) -> ir.Module:
    module = ir.Module(name="lucid_pool")
    module.triple = triple
    worker = _emit_pool_worker(module)
    _emit_pool_run(module, worker)
    _emit_pool_stop(module)
    return module


def _word(b: ir.IRBuilder, pool, index) -> ir.Value:
    return b.gep(pool, [index if isinstance(index, ir.Value) else i64(index)])


def _call_work(b: ir.IRBuilder, pool) -> None:
    work = b.inttoptr(b.load(_word(b, pool, POOL_WORK)), WORK_TYPE.as_pointer())
    table = b.inttoptr(b.load(_word(b, pool, POOL_TABLE)), I8P.as_pointer())
    b.call(work, [table, b.inttoptr(b.load(_word(b, pool, POOL_STATE)), I64.as_pointer())])


def _emit_pool_worker(module: ir.Module) -> ir.Function:
    """i8* lucid_pool_worker(i8* context): run jobs while they come (slot BUSY), marking the slot IDLE
    before counting itself done; after its spin without a job (`_choose_spin`), sleep (slot ASLEEP)
    until woken; exit (slot NONE) when told to quit. Its last act is to decrement the live count."""
    fn = ir.Function(module, ir.FunctionType(I8P, [I8P]), "lucid_pool_worker")
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    context = b.bitcast(fn.args[0], I64.as_pointer())
    pool = b.inttoptr(b.load(context), I64.as_pointer())
    slot = _word(b, pool, b.add(i64(POOL_SLOTS), b.load(b.gep(context, [i64(1)]))))
    _name_this_thread(b, WORKER_THREAD_NAME)
    pinned = b.alloca(I64)                                      # the CPU mask applied
    b.store(i64(0), pinned)
    _follow_cpu_mask(b, context, pinned)
    clock = b.alloca(I64, 2)                                    # a struct timespec
    spin = b.alloca(I64)                                        # nanoseconds to wait awake
    b.store(i64(SHORT_SPIN_NANOSECONDS), spin)
    started = _now_nanoseconds(b, clock)
    entry = b.block
    wait, run, leave = (b.append_basic_block(name) for name in ("wait", "run", "leave"))
    b.branch(wait)
    b.position_at_end(wait)
    idle_since = b.phi(I64)
    idle_since.add_incoming(started, entry)
    state = b.load_atomic(slot, "acquire", 8)
    with b.if_then(b.icmp_signed("==", state, i64(SLOT_BUSY))):
        b.branch(run)
    _leave_when_told(b, pool, slot, state, leave)
    with b.if_then(b.icmp_signed("==", state, i64(SLOT_ASLEEP))):
        _futex(b, slot, FUTEX_WAIT_PRIVATE, SLOT_ASLEEP)
    with b.if_then(b.icmp_signed("==", state, i64(SLOT_IDLE))):
        waited = b.sub(_now_nanoseconds(b, clock), idle_since)
        with b.if_then(b.icmp_signed(">=", waited, b.load(spin))):
            b.cmpxchg(slot, i64(SLOT_IDLE), i64(SLOT_ASLEEP), "acq_rel", "acquire")
    b.call(intrinsic(b.module, "llvm.x86.sse2.pause", VOID, []), [])
    idle_since.add_incoming(idle_since, b.block)
    b.branch(wait)
    b.position_at_end(run)
    _follow_cpu_mask(b, context, pinned)
    _choose_spin(b, b.sub(b.load(_word(b, pool, POOL_POSTED)), idle_since), spin)
    _call_work(b, pool)
    b.store_atomic(i64(SLOT_IDLE), slot, "release", 8)
    b.atomic_rmw("add", _word(b, pool, POOL_DONE), i64(1), "acq_rel")
    idle_since.add_incoming(_now_nanoseconds(b, clock), b.block)
    b.branch(wait)
    b.position_at_end(leave)
    b.atomic_rmw("sub", _word(b, pool, POOL_LIVE), i64(1), "acq_rel")
    b.ret(ir.Constant(I8P, None))
    return fn


def _name_this_thread(b: ir.IRBuilder, name: str) -> None:
    """pthread_setname_np(pthread_self(), name): the worker shows by name in top, gdb and
    /proc/<pid>/task/<tid>/comm (at most 15 bytes)."""
    text = bytearray(name.encode("ascii") + b"\0")
    constant = ir.Constant(ir.ArrayType(ir.IntType(8), len(text)), text)
    variable = ir.GlobalVariable(b.module, constant.type, name="lucid_pool_thread_name")
    variable.global_constant, variable.linkage, variable.initializer = True, "internal", constant
    self_id = b.call(intrinsic(b.module, "pthread_self", I64, []), [])
    setname = intrinsic(b.module, "pthread_setname_np", I32, [I64, I8P])
    b.call(setname, [self_id, b.bitcast(variable, I8P)])


def _choose_spin(b: ir.IRBuilder, gap, spin) -> None:
    """After this job, wait awake LONG_SPIN_NANOSECONDS if the job came that soon after the last one
    (calls in quick succession: the next one will likely come as soon), else SHORT_SPIN_NANOSECONDS."""
    soon = b.icmp_signed("<", gap, i64(LONG_SPIN_NANOSECONDS))
    b.store(b.select(soon, i64(LONG_SPIN_NANOSECONDS), i64(SHORT_SPIN_NANOSECONDS)), spin)


def _follow_cpu_mask(b: ir.IRBuilder, context, pinned) -> None:
    """Pin this worker to the CPU mask its context names (0: no pinning) unless it is pinned there."""
    mask = b.load(b.gep(context, [i64(2)]))
    with b.if_then(b.and_(b.icmp_signed("!=", mask, i64(0)), b.icmp_signed("!=", mask, b.load(pinned)))):
        b.store(mask, pinned)
        setaffinity = intrinsic(b.module, "sched_setaffinity", I32, [I32, I64, I8P])
        b.call(setaffinity, [ir.Constant(I32, 0), i64(8), b.bitcast(pinned, I8P)])


def _leave_when_told(b: ir.IRBuilder, pool, slot, state, leave) -> None:
    """Branch to `leave` (slot NONE) when the pool is told to quit and the worker has no job."""
    waiting = b.or_(b.icmp_signed("==", state, i64(SLOT_IDLE)), b.icmp_signed("==", state, i64(SLOT_ASLEEP)))
    told_to_quit = b.icmp_signed("!=", b.load_atomic(_word(b, pool, POOL_QUIT), "acquire", 8), i64(0))
    with b.if_then(b.and_(told_to_quit, waiting)):
        exchanged = b.cmpxchg(slot, state, i64(SLOT_NONE), "acq_rel", "acquire")
        with b.if_then(b.extract_value(exchanged, 1)):
            b.branch(leave)


def _now_nanoseconds(b: ir.IRBuilder, clock) -> ir.Value:
    """CLOCK_MONOTONIC in nanoseconds (clock_gettime, through the vDSO: tens of nanoseconds)."""
    gettime = intrinsic(b.module, "clock_gettime", I32, [I32, I64.as_pointer()])
    b.call(gettime, [ir.Constant(I32, CLOCK_MONOTONIC), clock])
    return b.add(b.mul(b.load(clock), i64(1_000_000_000)), b.load(b.gep(clock, [i64(1)])))


def _futex(b: ir.IRBuilder, word, operation: int, value: int) -> None:
    """syscall(SYS_futex, word, operation, value, no timeout) on the low 32 bits of an i64 word (x86-64
    is little-endian; the slot states fit)."""
    syscall = b.module.globals.get("syscall") or ir.Function(
        b.module, ir.FunctionType(I64, [I64], var_arg=True), "syscall")
    b.call(syscall, [i64(SYS_FUTEX), word, i64(operation), i64(value), ir.Constant(I8P, None)])


def _emit_pool_run(module: ir.Module, worker: ir.Function) -> None:
    """void lucid_pool_run(i64* pool, work, i8** table, i64* state, i64 threads): claim threads - 1
    workers (waiting ones, then sleeping ones, which it wakes, else new ones; fewer if the system
    refuses threads), publish the job, work as thread 0, wait for the workers to count themselves done."""
    pthread_start = ir.FunctionType(I8P, [I8P]).as_pointer()
    create = ir.Function(module, ir.FunctionType(I32, [I64.as_pointer(), I8P, pthread_start, I8P]), "pthread_create")
    join = _declare_join(module)
    fn = ir.Function(module, ir.FunctionType(VOID, [I64.as_pointer(), WORK_TYPE.as_pointer(), I8P.as_pointer(),
                                                    I64.as_pointer(), I64]), "lucid_pool_run")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    pool, work, table, state, wanted = fn.args
    wanted = b.select(b.icmp_signed(">", wanted, i64(MAX_WORKERS + 1)), i64(MAX_WORKERS + 1), wanted)
    claimed = b.alloca(I64)
    b.store(i64(0), claimed)
    for word, value in ((POOL_WORK, work), (POOL_TABLE, table), (POOL_STATE, state)):
        b.store(b.ptrtoint(value, I64), _word(b, pool, word))
    b.store(i64(0), _word(b, pool, POOL_DONE))
    b.store(_now_nanoseconds(b, b.alloca(I64, 2)), _word(b, pool, POOL_POSTED))
    position = _caller_cpu_position(b, pool)
    with counted_loop(b, b.sub(wanted, i64(1)), name="claim") as index:
        with b.if_then(b.icmp_signed("==", b.load(claimed), index)):        # stop at the first refusal
            slot = _word(b, pool, b.add(i64(POOL_SLOTS), index))
            mask = _worker_cpu_mask(b, pool, position, index)
            with b.if_else(_claim(b, slot)) as (waiting, absent):
                with waiting:
                    b.store(mask, b.gep(_context(b, pool, index), [i64(2)]))    # read once the slot is BUSY
                    b.store(b.add(index, i64(1)), claimed)
                with absent:
                    _start_worker(b, pool, index, mask, slot, claimed, (create, join, worker))
    helpers = b.load(claimed)
    b.store_atomic(b.add(helpers, i64(1)), b.gep(state, [i64(THREADS)]), "release", 8)
    with counted_loop(b, helpers, name="release") as index:
        b.store_atomic(i64(SLOT_BUSY), _word(b, pool, b.add(i64(POOL_SLOTS), index)), "release", 8)
    b.call(work, [table, state])
    _wait_until(b, _word(b, pool, POOL_DONE), helpers)
    b.ret_void()


def _claim(b: ir.IRBuilder, slot) -> ir.Value:
    """Whether the slot's worker was waiting and is now CLAIMED; one that was asleep is woken (the
    second exchange fails when the first succeeded)."""
    spinning = b.extract_value(b.cmpxchg(slot, i64(SLOT_IDLE), i64(SLOT_CLAIMED), "acq_rel", "acquire"), 1)
    asleep = b.extract_value(b.cmpxchg(slot, i64(SLOT_ASLEEP), i64(SLOT_CLAIMED), "acq_rel", "acquire"), 1)
    with b.if_then(asleep):
        _futex(b, slot, FUTEX_WAKE_PRIVATE, 1)
    return b.or_(spinning, asleep)


def _start_worker(b: ir.IRBuilder, pool, index, mask, slot, claimed, functions) -> None:
    """A new worker for slot `index` pinned to `mask` (after joining the slot's exited one), CLAIMED
    from the start; on refusal the slot goes back to NONE."""
    create, join, worker = functions
    context = _context(b, pool, index)
    _join_slot(b, join, context)
    b.store(b.ptrtoint(pool, I64), context)
    b.store(index, b.gep(context, [i64(1)]))
    b.store(mask, b.gep(context, [i64(2)]))
    b.store(i64(SLOT_CLAIMED), slot)
    b.atomic_rmw("add", _word(b, pool, POOL_LIVE), i64(1), "acq_rel")
    handle = b.gep(context, [i64(CONTEXT_HANDLE)])
    status = b.call(create, [handle, ir.Constant(I8P, None), worker, b.bitcast(context, I8P)])
    with b.if_else(b.icmp_signed("==", status, ir.Constant(I32, 0))) as (started, refused):
        with started:
            b.store(b.add(index, i64(1)), claimed)
        with refused:
            b.store(i64(0), handle)
            b.store(i64(SLOT_NONE), slot)
            b.atomic_rmw("sub", _word(b, pool, POOL_LIVE), i64(1), "acq_rel")


def _context(b: ir.IRBuilder, pool, index) -> ir.Value:
    return _word(b, pool, b.add(i64(POOL_CONTEXTS), b.mul(index, i64(CONTEXT_WORDS))))


def _declare_join(module: ir.Module) -> ir.Function:
    return module.globals.get("pthread_join") or ir.Function(
        module, ir.FunctionType(I32, [I64, I8P.as_pointer()]), "pthread_join")


def _join_slot(b: ir.IRBuilder, join: ir.Function, context) -> None:
    """Join the thread that last ran in this slot, if one is left to join (it has exited or is
    about to: its slot is NONE)."""
    handle = b.gep(context, [i64(CONTEXT_HANDLE)])
    with b.if_then(b.icmp_signed("!=", b.load(handle), i64(0))):
        b.call(join, [b.load(handle), ir.Constant(I8P.as_pointer(), None)])
        b.store(i64(0), handle)


def _caller_cpu_position(b: ir.IRBuilder, pool) -> ir.Value:
    """The position of the caller's current CPU in the pool's list of allowed CPUs (0 if absent)."""
    here = b.sext(b.call(intrinsic(b.module, "sched_getcpu", I32, []), []), I64)
    position = b.alloca(I64)
    b.store(i64(0), position)
    with counted_loop(b, b.load(_word(b, pool, POOL_CPU_COUNT)), name="cpu") as k:
        with b.if_then(b.icmp_signed("==", b.load(_word(b, pool, b.add(i64(POOL_CPUS), k))), here)):
            b.store(k, position)
    return b.load(position)


def _worker_cpu_mask(b: ir.IRBuilder, pool, position, index) -> ir.Value:
    """The affinity mask (one 64-bit word) of worker `index` for this call: the (index + 1)-th allowed
    CPU after the caller's, so workers and caller work on different cores (the caller, not pinned,
    can move: a worker follows at its next job); 0 (no pinning) when that CPU's number is 64 or more."""
    count = b.load(_word(b, pool, POOL_CPU_COUNT))
    chosen = b.load(_word(b, pool, b.add(i64(POOL_CPUS), b.urem(b.add(position, b.add(index, i64(1))), count))))
    small = b.icmp_unsigned("<", chosen, i64(64))
    return b.select(small, b.shl(i64(1), b.select(small, chosen, i64(0))), i64(0))


def _emit_pool_stop(module: ir.Module) -> None:
    """void lucid_pool_stop(i64* pool): tell waiting workers to exit, waking sleeping ones until none
    is left (one that fell asleep just as it was told is woken on the next round), and join every
    one. The pool stays usable: a later run starts workers that exit as soon as they are idle."""
    fn = ir.Function(module, ir.FunctionType(VOID, [I64.as_pointer()]), "lucid_pool_stop")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    pool = fn.args[0]
    b.store_atomic(i64(1), _word(b, pool, POOL_QUIT), "release", 8)
    _wait_until(b, _word(b, pool, POOL_LIVE), i64(0), lambda: _wake_sleepers(b, pool))
    join = _declare_join(module)
    with counted_loop(b, i64(MAX_WORKERS), name="join") as index:
        _join_slot(b, join, _context(b, pool, index))
    b.ret_void()


def _wake_sleepers(b: ir.IRBuilder, pool) -> None:
    with counted_loop(b, i64(MAX_WORKERS), name="wake") as index:
        slot = _word(b, pool, b.add(i64(POOL_SLOTS), index))
        with b.if_then(b.icmp_signed("==", b.load_atomic(slot, "acquire", 8), i64(SLOT_ASLEEP))):
            _futex(b, slot, FUTEX_WAKE_PRIVATE, 1)


def _wait_until(b: ir.IRBuilder, word: ir.Value, value: ir.Value, between_checks=None) -> None:
    """Spin (then yield) until `word` holds `value`, calling `between_checks()`'s code between checks."""
    before = b.block
    check, done = b.append_basic_block("check"), b.append_basic_block("waited")
    b.branch(check)
    b.position_at_end(check)
    spins = b.phi(I64)
    spins.add_incoming(i64(0), before)
    with b.if_then(b.icmp_signed("==", b.load_atomic(word, "acquire", 8), value)):
        b.branch(done)
    if between_checks is not None:
        between_checks()
    pause_or_yield(b, spins)
    spins.add_incoming(b.add(spins, i64(1)), b.block)
    b.branch(check)
    b.position_at_end(done)


_RUN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
_STOP = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class WorkerPool:
    """The pool of this process (one per target), its native code and its block."""

    _pools: dict = {}
    _lock = threading.Lock()

    def __init__(self, target):
        from ..codegen.jit import NativeCode, objects

        module = pool_module(target.triple)
        self.native = NativeCode([code for _, code in objects([("lucid_pool", str(module))], target)], target)
        self._run = _RUN(self.native.address("lucid_pool_run"))
        self._stop = _STOP(self.native.address("lucid_pool_stop"))
        self.busy = threading.Lock()
        self._block, self._pid = None, None

    @classmethod
    def of(cls, target) -> "WorkerPool":
        with cls._lock:
            if target.fingerprint not in cls._pools:
                cls._pools[target.fingerprint] = cls(target)
            return cls._pools[target.fingerprint]

    def run(self, work: int, table: int, state: np.ndarray, threads: int, timeline: int = 0) -> None:
        """Run `work` on `table` with `threads` threads, writing its timeline at address `timeline`
        if not 0 (`parallel.TIMELINE`); the caller holds `busy`."""
        if self._pid != os.getpid():                 # first use, or a forked child: no workers yet
            self._block, self._pid = np.zeros(POOL_WORDS, np.int64), os.getpid()
            cpus = sorted(os.sched_getaffinity(0))[:MAX_CPUS] if hasattr(os, "sched_getaffinity") else [0]
            self._block[POOL_CPU_COUNT] = len(cpus)
            self._block[POOL_CPUS:POOL_CPUS + len(cpus)] = cpus
        state[:] = 0
        state[TIMELINE] = timeline
        self._run(self._block.ctypes.data, work, table, state.ctypes.data, threads)

    def stop(self) -> None:
        if self._pid == os.getpid():
            with self.busy:
                self._stop(self._block.ctypes.data)


@atexit.register
def _stop_pools() -> None:
    """Workers must be gone before the interpreter frees the blocks and the native code."""
    for pool in list(WorkerPool._pools.values()):
        pool.stop()
