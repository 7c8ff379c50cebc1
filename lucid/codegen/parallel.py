"""The entry point of a compiled graph, and how it uses several cores.

`void lucid_run(i8** table, i64 threads)` runs the graph's kernels in order on `table` (the buffer
addresses of this call), giving each kernel its list of table slots. With threads > 1 it starts
threads - 1 POSIX threads for this call only, so concurrent calls share nothing. Every thread runs
the same kernel sequence. Thread t owns the t-th of `threads` equal ranges of each kernel's work
items and claims them in chunks from its own progress word; having drained its range it takes
chunks from the other threads' ranges (`_emit_claims`). So each thread works, kernel after kernel,
on the same part of the data, which its cache still holds, and claims without contention, while a
thread that runs slower (another process on its core) still leaves its work to the others. A
barrier comes before each kernel that waits for the ones before it (`Kernel.waits`). The calling thread
works too and joins the others at the end. If the system refuses a thread, the call goes on with
the threads it got (the thread count is fixed once every thread has started).

Shared state of one call, on the caller's stack: [barrier count, barrier generation, start flag,
thread count, threads arrived (each thread's index), the address of a timeline buffer (0: none),
then one progress word per thread (`MAX_THREADS`)]. With a timeline buffer (`Executable.timeline`),
thread t writes the CPU's cycle counter at its start to word t * (kernels + 1) and, each time it is
done with its share of the kernel at position p, to the word after that one plus p. A progress
word holds the kernel it is at (its position + 1) above `POSITION_BITS` and the next unclaimed item
of its owner's range below.

A kernel whose work-item count is a symbolic size (a graph compiled for every size) has the count,
and so its chunks, computed per call from the dims in the table's dims slot (`extents.py`). Such a
graph's entry module also has `i64 lucid_workspace_bytes(i64* dims)`: the workspace a call at those
sizes needs (the largest scratch of a node, some of them symbolic). Every entry module has
`i64 lucid_persistent_bytes()`: the memory the table's persistent slot must point to (zeroed before
the first call, then kept: `Lowering.persistent`).
"""
from __future__ import annotations

import llvmlite.ir as ir

from .extents import emit_size
from .irgen import I8P, I32, I64, KERNEL_TYPE, VOID, counted_loop, i64, intrinsic
from .lowering import BufferTable, Kernel

STATE_WORDS = 6
COUNT, GENERATION, STARTED, THREADS, ARRIVED, TIMELINE = range(STATE_WORDS)
MAX_THREADS = 64                           # threads taking part in one call (the pool's 63 workers + the caller)
POSITION_BITS = 40                         # a progress word's item position: up to 2^40 work items
_CONTEXT = ir.LiteralStructType([I8P.as_pointer(), I64.as_pointer()])    # table, state
WORK_TYPE = ir.FunctionType(VOID, [I8P.as_pointer(), I64.as_pointer()])


def emit_entry(module: ir.Module, kernels: list[Kernel], table: BufferTable | None = None,
               workspace: tuple = (0, ()), persistent_bytes: int = 0) -> None:
    """The entry points running `kernels` (whose symbolic item counts read `table`'s dims slot),
    `lucid_persistent_bytes`, and for a graph with symbolic dimensions also `lucid_workspace_bytes`,
    the largest of `workspace`'s concrete size and symbolic sizes."""
    if table is not None and table.symbols:
        _emit_workspace_bytes(module, table.symbols, *workspace)
    persistent = ir.Function(module, ir.FunctionType(I64, []), "lucid_persistent_bytes")
    ir.IRBuilder(persistent.append_basic_block("entry")).ret(i64(persistent_bytes))
    barrier = _emit_barrier(module)
    work = _emit_work(module, kernels, barrier, table or BufferTable())
    _emit_run(module, _emit_worker(module, work), STATE_WORDS + MAX_THREADS)
    words = ir.Function(module, ir.FunctionType(I64, []), "lucid_state_words")
    b = ir.IRBuilder(words.append_basic_block("entry"))
    b.ret(i64(STATE_WORDS + MAX_THREADS))


def _emit_workspace_bytes(module: ir.Module, symbols: tuple, concrete: int, sizes: list) -> None:
    fn = ir.Function(module, ir.FunctionType(I64, [I64.as_pointer()]), "lucid_workspace_bytes")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    largest = i64(concrete)
    for size in sizes:
        value = emit_size(b, size, fn.args[0], symbols)
        largest = b.select(b.icmp_signed(">", value, largest), value, largest)
    b.ret(largest)


def _state_word(b: ir.IRBuilder, state: ir.Value, word: int) -> ir.Value:
    return b.gep(state, [i64(word)])


def _emit_barrier(module: ir.Module) -> ir.Function:
    fn = ir.Function(module, ir.FunctionType(VOID, [I64.as_pointer()]), "lucid_barrier")
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    state = fn.args[0]
    generation = b.load_atomic(_state_word(b, state, GENERATION), "acquire", 8)
    threads = b.load_atomic(_state_word(b, state, THREADS), "acquire", 8)
    arrived = b.atomic_rmw("add", _state_word(b, state, COUNT), i64(1), "acq_rel")
    last = b.icmp_signed("==", arrived, b.sub(threads, i64(1)))
    with b.if_else(last) as (release, wait):
        with release:
            b.store_atomic(i64(0), _state_word(b, state, COUNT), "release", 8)
            b.atomic_rmw("add", _state_word(b, state, GENERATION), i64(1), "release")
        with wait:
            _spin_until_changed(b, _state_word(b, state, GENERATION), generation)
    b.ret_void()
    return fn


SPINS_BEFORE_YIELDING = 2000


def _spin_until_changed(b: ir.IRBuilder, word: ir.Value, old: ir.Value) -> None:
    """Wait for `word` to differ from `old`: spin briefly (cheap when the other threads are running),
    then yield the core between checks (so an oversubscribed machine still makes progress)."""
    before = b.block
    spin = b.append_basic_block("spin")
    done = b.append_basic_block("spun")
    b.branch(spin)
    b.position_at_end(spin)
    count = b.phi(I64)
    count.add_incoming(i64(0), before)
    pause_or_yield(b, count)
    count.add_incoming(b.add(count, i64(1)), b.block)
    b.cbranch(b.icmp_signed("==", b.load_atomic(word, "acquire", 8), old), spin, done)
    b.position_at_end(done)


def _emit_work(module: ir.Module, kernels: list[Kernel], barrier: ir.Function, sizes: BufferTable) -> ir.Function:
    """void lucid_work(i8** table, i64* state): run this thread's share of every kernel, with a
    barrier before each kernel that waits (state[THREADS] threads take part; `state` holds
    `lucid_state_words()` words, zero but for THREADS). Exported for the worker pool (`workers.py`)."""
    fn = ir.Function(module, WORK_TYPE, "lucid_work")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    table, state = fn.args
    threads = b.load_atomic(_state_word(b, state, THREADS), "acquire", 8)
    me = b.atomic_rmw("add", _state_word(b, state, ARRIVED), i64(1), "monotonic")
    claims = _emit_claims(module)
    dims = None
    if sizes.dims_slot >= 0:
        dims = b.bitcast(b.load(b.gep(table, [i64(sizes.dims_slot)])), I64.as_pointer())
    timeline = b.inttoptr(b.load(_state_word(b, state, TIMELINE)), I64.as_pointer())
    mark = _emit_mark(module)
    row = b.mul(me, i64(len(kernels) + 1))
    b.call(mark, [timeline, row])
    for position, kernel in enumerate(kernels):
        if position and kernel.waits:
            b.call(barrier, [state])
        items = emit_size(b, kernel.items, dims, sizes.symbols)
        kernel_fn = b.bitcast(_kernel_function(module, kernel.name), KERNEL_TYPE.as_pointer())
        b.call(claims, [table, _slots(b, module, kernel), kernel_fn, items, state, threads, me, i64(position + 1)])
        b.call(mark, [timeline, b.add(row, i64(position + 1))])
    b.ret_void()
    return fn


def _emit_mark(module: ir.Module) -> ir.Function:
    """void lucid_mark(i64* timeline, i64 word): the cycle counter into timeline[word], unless
    timeline is null."""
    fn = ir.Function(module, ir.FunctionType(VOID, [I64.as_pointer(), I64]), "lucid_mark")
    fn.linkage = "internal"
    timeline, word = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    with b.if_then(b.icmp_unsigned("!=", b.ptrtoint(timeline, I64), i64(0))):
        b.store(b.call(intrinsic(module, "llvm.readcyclecounter", I64, []), []), b.gep(timeline, [word]))
    b.ret_void()
    return fn


def pause_or_yield(b: ir.IRBuilder, spins) -> None:
    """One wait step: a pause instruction for the first SPINS_BEFORE_YIELDING steps, then sched_yield."""
    with b.if_else(b.icmp_signed("<", spins, i64(SPINS_BEFORE_YIELDING))) as (pause, give_way):
        with pause:
            b.call(intrinsic(b.module, "llvm.x86.sse2.pause", VOID, []), [])
        with give_way:
            b.call(intrinsic(b.module, "sched_yield", I32, []), [])


def _emit_worker(module: ir.Module, work: ir.Function) -> ir.Function:
    """i8* lucid_worker(i8* context): a thread of one `lucid_run` call: wait for the start flag, work."""
    fn = ir.Function(module, ir.FunctionType(I8P, [I8P]), "lucid_worker")
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    context = b.bitcast(fn.args[0], _CONTEXT.as_pointer())
    table = b.load(b.gep(context, [i64(0), ir.Constant(I32, 0)]))
    state = b.load(b.gep(context, [i64(0), ir.Constant(I32, 1)]))
    _spin_until_changed(b, _state_word(b, state, STARTED), i64(0))
    b.call(work, [table, state])
    b.ret(ir.Constant(I8P, None))
    return fn


#: A thread claims its range of a kernel's work items in about this many chunks: small enough that
#: a thread slowed down (another process on its core) leaves much of its range to the others, large
#: enough that claiming costs nothing next to the work.
CHUNKS_PER_THREAD = 8


def _emit_claims(module: ir.Module) -> ir.Function:
    """void lucid_claims(table, slots, kernel, items, state, threads, me, tag): run kernel's work items
    in chunks: the chunks of this thread's range (`me`), then those left in the others' ranges,
    each claimed by a compare-and-swap on the range's progress word (see the module docstring). A
    word tagged with an earlier kernel is this kernel's range untouched (its owner has not come to
    it yet): the claim sets the tag. A word tagged with a later kernel is a range already drained:
    a thread goes on to the next kernel only after finding every range drained."""
    pointer = I64.as_pointer()
    fn = ir.Function(module, ir.FunctionType(VOID, [I8P.as_pointer(), pointer, KERNEL_TYPE.as_pointer(), I64, pointer,
                                                    I64, I64, I64]), "lucid_claims")
    fn.linkage = "internal"
    table, slots, kernel, items, state, threads, me, tag = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    with counted_loop(b, threads, name="range") as offset:
        owner = b.urem(b.add(me, offset), threads)
        lo = b.udiv(b.mul(items, owner), threads)
        hi = b.udiv(b.mul(items, b.add(owner, i64(1))), threads)
        chunk = b.udiv(b.sub(hi, lo), i64(CHUNKS_PER_THREAD))
        chunk = b.select(b.icmp_unsigned("<", chunk, i64(1)), i64(1), chunk)
        _drain(b, b.gep(state, [b.add(owner, i64(STATE_WORDS))]), (lo, hi, chunk), tag,
               lambda first, last: b.call(kernel, [table, slots, first, last]))
    b.ret_void()
    return fn


def _drain(b: ir.IRBuilder, word, extent: tuple, tag, run) -> None:
    """Claim and `run(first, last)` chunks of [lo, hi) through the progress word `word` until none
    is left (see `_emit_claims`)."""
    lo, hi, chunk = extent
    mask = i64((1 << POSITION_BITS) - 1)
    claim = b.append_basic_block("claim")
    done = b.append_basic_block("drained")
    b.branch(claim)
    b.position_at_end(claim)
    seen = b.load_atomic(word, "monotonic", 8)
    seen_tag = b.lshr(seen, i64(POSITION_BITS))
    fresh = b.icmp_unsigned("<", seen_tag, tag)                        # untouched in this kernel
    first = b.select(fresh, lo, b.and_(seen, mask))
    left = b.and_(b.icmp_unsigned("<=", seen_tag, tag), b.icmp_unsigned("<", first, hi))
    with b.if_then(b.not_(left)):
        b.branch(done)
    last = b.add(first, chunk)
    last = b.select(b.icmp_unsigned("<", last, hi), last, hi)
    claimed = b.extract_value(b.cmpxchg(word, seen, b.or_(b.shl(tag, i64(POSITION_BITS)), last), "monotonic",
                                        "monotonic"), 1)
    with b.if_then(claimed):
        run(first, last)
    b.branch(claim)
    b.position_at_end(done)


def _kernel_function(module: ir.Module, name: str) -> ir.Function:
    """The kernel, declared here when it lives in its own module."""
    return module.globals[name] if name in module.globals else ir.Function(module, KERNEL_TYPE, name)


def _slots(b: ir.IRBuilder, module: ir.Module, kernel: Kernel) -> ir.Value:
    kind = ir.ArrayType(I64, max(len(kernel.slots), 1))
    slots = ir.GlobalVariable(module, kind, f"slots{len(module.globals)}")
    slots.initializer = ir.Constant(kind, kernel.slot_words() or [0])
    slots.global_constant = True
    slots.linkage = "internal"
    return b.gep(slots, [i64(0), i64(0)])


def _emit_run(module: ir.Module, worker: ir.Function, state_words: int) -> None:
    pthread_start = ir.FunctionType(I8P, [I8P]).as_pointer()
    create = ir.Function(module, ir.FunctionType(I32, [I64.as_pointer(), I8P, pthread_start, I8P]), "pthread_create")
    join = ir.Function(module, ir.FunctionType(I32, [I64, I8P.as_pointer()]), "pthread_join")
    fn = ir.Function(module, ir.FunctionType(VOID, [I8P.as_pointer(), I64]), "lucid_run")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    table, wanted = fn.args
    wanted = b.select(b.icmp_signed("<", wanted, i64(1)), i64(1), wanted)
    wanted = b.select(b.icmp_signed(">", wanted, i64(MAX_THREADS)), i64(MAX_THREADS), wanted)
    state = b.alloca(I64, state_words)
    with counted_loop(b, state_words, name="clear") as word:
        b.store(i64(0), b.gep(state, [word]))
    context = b.alloca(_CONTEXT)
    b.store(table, b.gep(context, [i64(0), ir.Constant(I32, 0)]))
    b.store(state, b.gep(context, [i64(0), ir.Constant(I32, 1)]))
    handles = b.alloca(I64, wanted)
    started = b.alloca(I64)
    b.store(i64(1), started)
    with counted_loop(b, wanted, 1, name="spawn") as tid:
        with b.if_then(b.icmp_signed("==", b.load(started), tid)):       # stop at the first refusal
            status = b.call(create, [b.gep(handles, [tid]), ir.Constant(I8P, None), worker,
                                     b.bitcast(context, I8P)])
            with b.if_then(b.icmp_signed("==", status, ir.Constant(I32, 0))):
                b.store(b.add(tid, i64(1)), started)
    threads = b.load(started)
    b.store_atomic(threads, _state_word(b, state, THREADS), "release", 8)
    b.store_atomic(i64(1), _state_word(b, state, STARTED), "release", 8)
    b.call(worker, [b.bitcast(context, I8P)])
    with counted_loop(b, threads, 1, name="join") as tid:
        b.call(join, [b.load(b.gep(handles, [tid])), ir.Constant(I8P.as_pointer(), None)])
    b.ret_void()

