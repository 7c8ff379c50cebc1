"""Compiling one LLVM module to object code: in this process, or in a compile worker process.

`compile_module(text, target, level)` is the one definition of how a module is compiled, at one of
three levels, and `level_for(module)` the one rule choosing a kernel module's level:
- **3**, compute-bound code: the functions kernels share (`Lowering.shared_function`: the conv and
  weight-gradient register tiles, one module per blocking, whatever the size of the nodes calling
  them: `work` None), and a kernel its lowering declares compute-bound (`Lowering.kernel(...,
  compute_bound=True)`: the Winograd weight transform, the matrix product) of a node doing at least
  `COMPUTE_WORK` operations: LLVM's O3 pipeline with the loop and SLP vectorisers and loops
  unrolled up to `UNROLL_THRESHOLD`; their speed is their arithmetic, and is worth what it costs to
  compile. A smaller one runs in tens of microseconds, and goes to level 2, a quarter to a half
  cheaper to compile (at benchmark sizes level 2 ran conv row B and a 32-channel 16^3 conv as fast
  as level 3, and G2 up to 7% slower). The conv kernels calling the tiles (direct, phase, Winograd,
  weight gradient) only order the calls and transform and move data: level 2 (conv.py's rows B, C,
  D, E and G2 at one thread, A/B alternating: 0.99-1.015 of their time with those kernels at level 3;
  a Winograd kernel's module compiles in half the time).
- **2**, every other kernel (memory-bound: elementwise and fused maps, reductions, shape copies,
  resampling, pooling, normalisation, packing): LLVM's O2 pipeline with both vectorisers (the inner
  loops still run as interleaved vectors) and without LLVM's loop unroller. The unroller bought them
  code, not speed (A/B at a million elements: maps, sums, softmax, slices, concatenation, padding,
  pooling, upsampling, group norm, permutes and the conv packing within the noise). On the kernels
  a cold run of tests/nn, tests/codegen and tests/passes compiles (timed 4 to 6 of each kind), O2
  and O1 cost what O3 costs (the vectorisers and the unroller run at every level), while leaving
  out the unroller made a memory-bound kernel 28% cheaper to compile on average (resample, avg_pool,
  concat by half or more, softmax by three quarters). Their code generation also leaves out LLVM's
  loop strength reduction (`STRENGTH_REDUCTION_FROM`): a fifth of their compile time, for no speed
  (a UNet3D training graph's level-2 kernels, each timed alone, A/B alternating: 1.000 and 1.012
  of their time with it). Level 3 keeps it: without it, its kernels ran 2 to 9% slower.
- **0**, a kernel whose node does fewer than `TINY_WORK` operations and element reads and writes
  (`lowering.node_work`), either role, and a graph's entry module (it only orders the kernels):
  compiled as written, with fast instruction selection, five times cheaper than level 2 and seven
  than O3 (`build.graph_code` links a graph's level-0 kernels with its entry into one object, which
  saves LLVM's cost per object, most of a level-0 module's). Such a kernel runs in
  microseconds either way: the tens of milliseconds O3 costs would take thousands of calls to pay
  back (a compiled call of a sum, a softmax or a fused map of 2,000 elements took the same 20 to 50
  µs, the call's own cost, with its kernel at level 0 as at level 2). A kernel only moving its
  node's data (a conv's packing, unpacking, zeroing and weight check: `Lowering.kernel(...,
  moves_data=True)`), or ordering the calls of a shared function (a conv kernel calling its
  register tile, which keeps level 3), counts the elements the node reads and writes
  (`lowering.node_data`), not its operations: `benchmarks/small_conv_levels.py` (3x3x3 convs on
  2,800 to 3,900 elements, forward and forward + backward, weights kept or changed every call, each
  call 30-110 µs) ran them in 0.991-1.025 of the time they took with those kernels at level 2, and
  a whole cold test run's LLVM time went from 186 to 153 CPU-s. A bigger node keeps level 2: a
  changed-weights call of a 32-channel 4^3 conv (31,000 elements) ran 9% slower with its weight
  packing at level 0.
llvmlite runs one compilation at a time per process (threads gave nothing: 40 modules took 28 s on
one thread and 29 s on two), so to use several cores `jit.Compilation` hands modules to worker
processes as well.

A worker is this module run as `__main__` (`worker_command`: it loads llvmlite and the target, not
the framework `lucid/__init__.py` imports), started on first need and reused for the life of the
process (`workers(count)`): it reads requests on its stdin and answers on its stdout, each message a
JSON header and a body, both length-prefixed. A request is a target, a level and LLVM text (modules
separated by NUL characters are linked into one object); the answer is the object code and its
SHA-256 (or the compile error). `Worker.compile` checks the answer (the request's id, the digest of
the bytes received) and raises `WorkerFailed` for a worker that died, hung up, answered garbage or
gave no answer within `ANSWER_WITHIN` seconds (the caller then compiles in its own process), and
`ModuleFailed` for a module the worker could not compile. A worker ignores Ctrl-C (its parent
handles it) and exits when its stdin closes; this process closes and reaps its workers at exit (or
when `close()` is called), and a forked child forgets its parent's workers (it starts its own if it
needs them).
"""
from __future__ import annotations

import atexit
import dataclasses
import functools
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import llvmlite.binding as llvm

from .target import Target

_LENGTH = struct.Struct(">Q")

#: Messages larger than this (1 GiB) are refused as garbage: no module or object comes near.
MESSAGE_LIMIT = 1 << 30

#: Seconds a worker has to answer a request before it is killed (then it counts as failed).
ANSWER_WITHIN = 600

#: Seconds a closed worker has to exit (it may be starting, or finishing a module) before it is killed.
EXIT_WAIT = 5


#: LLVM's loop unroller at O3 fully unrolls loops up to a cost of 300; lucid's kernels unroll their
#: register tiles themselves, and LLVM's further unrolling of their tap and channel loops made a
#: UNet3D training graph's modules cost 11.3 s of LLVM time against 8.2 s at 60, with no loss in the
#: speed of conv.py's rows (seed, B, C, D, E, G2 forward and forward+backward, A/B alternating).
UNROLL_THRESHOLD = 60


#: The lowest level whose code generation runs LLVM's loop strength reduction (LSR), which rewrites a
#: loop's address arithmetic around induction variables: it took a quarter of the LLVM time of a
#: UNet3D training graph's modules (35% of a Winograd kernel's); level 2's memory-bound loops ran as
#: fast without it, level 3's conv tiles 2 to 9% slower.
STRENGTH_REDUCTION_FROM = 3


@functools.cache
def _set_unroll_threshold() -> None:
    llvm.set_option("", f"-unroll-threshold={UNROLL_THRESHOLD}")


def _set_pipeline_options(level: int) -> None:
    """LLVM's options for a compilation at `level` (options are global to the process: set before
    each compilation, one at a time per process)."""
    _set_unroll_threshold()
    llvm.set_option("", f"-disable-lsr={int(level < STRENGTH_REDUCTION_FROM)}")


#: A kernel whose node's work (`lowering.node_work`: operations, or elements read and written) is
#: less than this is compiled as written (level 0): 4096 elements take microseconds even so.
TINY_WORK = 4096


#: A compute-bound kernel gets level 3 from this much work (1 MFLOP) up.
COMPUTE_WORK = 1_000_000


def level_for(module) -> int:
    """The level (3, 2 or 0: see the module docstring) of a kernel module (`lowering.KernelModule`)."""
    if module.work is None:
        return 3 if module.compute_bound else 2
    if module.work < TINY_WORK:
        return 0
    return 3 if module.compute_bound and module.work >= COMPUTE_WORK else 2


#: Between the modules of a request linked into one object (LLVM text never holds a NUL character).
MODULE_SEPARATOR = "\0"


def module_texts(text: str | list[str]) -> list[str]:
    """The modules of a compile request: one module's text, or a list of them."""
    return text if isinstance(text, list) else [text]


def compile_module(text, target: Target, level: int = 3) -> bytes:
    """Object code of one module (LLVM text or an llvmlite module), or of a list of modules linked
    into one object (their external symbols must differ: a kernel module's only one is its kernel,
    named by its code's hash), optimised at `level` (3, 2 or 0: see the module docstring)."""
    machine = target.machine(level)
    return machine.emit_object(optimised_module(text, target, level, machine))


def optimised_module(text, target: Target, level: int = 3, machine=None) -> llvm.ModuleRef:
    """The module(s) of `compile_module` linked and optimised at `level`, before code emission (the
    tests read what LLVM made of lucid's IR here); `machine`, the target machine to optimise for."""
    machine = machine or target.machine(level)
    _set_pipeline_options(level)
    context = llvm.create_context()
    first, *others = module_texts(text)
    parsed = llvm.parse_assembly(str(first), context=context)
    for other in others:
        parsed.link_in(llvm.parse_assembly(str(other), context=context))
    parsed.triple, parsed.data_layout = machine.triple, str(machine.target_data)
    parsed.verify()
    tuning = llvm.create_pipeline_tuning_options(speed_level=level)
    tuning.loop_vectorization = tuning.slp_vectorization = level >= 2
    tuning.loop_unrolling = level == 3
    builder = llvm.create_pass_builder(machine, tuning)
    builder.getModulePassManager().run(parsed, builder)
    return parsed


class WorkerFailed(Exception):
    """A compile worker died, hung up or answered something that is not a valid answer."""


class ModuleFailed(Exception):
    """A compile worker could not compile the module it was given (the message is its error)."""


# ---------------------------------------------------------------------------------------------
# Messages


def send(stream, header: dict, body: bytes) -> None:
    encoded = json.dumps(header).encode()
    stream.write(_LENGTH.pack(len(encoded)) + encoded + _LENGTH.pack(len(body)) + body)
    stream.flush()


def receive(stream) -> tuple[dict, bytes] | None:
    """The next message (header, body); None at the end of the stream; ValueError if malformed."""
    first = stream.read(_LENGTH.size)
    if not first:
        return None
    header = json.loads(_read_exactly(stream, _frame_length(first)))
    if not isinstance(header, dict):
        raise ValueError(f"message header {header!r} is not an object")
    return header, _read_exactly(stream, _frame_length(stream.read(_LENGTH.size)))


def _frame_length(prefix: bytes) -> int:
    if len(prefix) != _LENGTH.size:
        raise ValueError("message cut short")
    length = _LENGTH.unpack(prefix)[0]
    if length > MESSAGE_LIMIT:
        raise ValueError(f"message of {length} bytes")
    return length


def _read_exactly(stream, length: int) -> bytes:
    data = stream.read(length)
    if len(data) != length:
        raise ValueError("message cut short")
    return data


# ---------------------------------------------------------------------------------------------
# This process's side


#: What a worker runs: this module as `__main__`, with `lucid` registered as a bare package (its
#: path alone), so the worker loads this module, target.py, cpu_model.py and llvmlite, not the
#: framework `lucid/__init__.py` imports (0.13 CPU-s to start a worker instead of 0.46, and on a
#: busy machine half a second to a second sooner).
_BOOTSTRAP = ("import runpy, sys, types; package = types.ModuleType('lucid'); package.__path__ = [sys.argv[1]]; "
              "sys.modules['lucid'] = package; runpy.run_module('lucid.codegen.compile_worker', run_name='__main__')")


def worker_command() -> list[str]:
    """The command line of a worker process (see `_BOOTSTRAP`)."""
    return [sys.executable, "-c", _BOOTSTRAP, str(Path(__file__).resolve().parents[1])]


class Worker:
    """One compile worker process (one request at a time: concurrent callers take turns)."""

    def __init__(self, command: list[str] | None = None):
        """Start the worker (`command`: another program speaking the same messages, for tests)."""
        self.process = subprocess.Popen(command or worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._requests = 0
        self._turn = threading.Lock()

    def compile(self, text: str | list[str], target: Target, level: int) -> bytes:
        """The object code of `text` (a module, or a list linked into one), compiled by this worker;
        WorkerFailed or ModuleFailed."""
        with self._turn:
            self._requests += 1
            request = {"id": self._requests, "target": dataclasses.asdict(target), "level": level}
            watchdog = threading.Timer(ANSWER_WITHIN, self.process.kill)   # a hung worker fails too
            watchdog.start()
            try:
                send(self.process.stdin, request, MODULE_SEPARATOR.join(module_texts(text)).encode())
                answer = receive(self.process.stdout)
            except (OSError, ValueError) as error:
                raise WorkerFailed(f"{type(error).__name__}: {error}") from None
            finally:
                watchdog.cancel()
            if answer is None:
                raise WorkerFailed(f"it exited (status {self.process.wait()})")
            return _checked(answer, self._requests)

    def close(self) -> None:
        """Ask the worker to exit and reap it (killed if it does not exit within `EXIT_WAIT` s)."""
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


def _checked(answer: tuple[dict, bytes], request: int) -> bytes:
    header, code = answer
    if header.get("id") != request:
        raise WorkerFailed(f"it answered request {header.get('id')!r}, not {request}")
    if "error" in header:
        raise ModuleFailed(str(header["error"]))
    if header.get("sha256") != hashlib.sha256(code).hexdigest() or not code:
        raise WorkerFailed("its object code does not match the SHA-256 it sent")
    return code


class _Workers:
    """The worker processes of this process (a forked child starts with none)."""

    def __init__(self):
        self.started: list[Worker] = []
        self.lock = threading.Lock()

    def at_least(self, count: int) -> list[Worker]:
        with self.lock:
            while len(self.started) < count:
                self.started.append(Worker())
            return list(self.started)

    def discard(self, worker: Worker) -> None:
        with self.lock:
            if worker in self.started:
                self.started.remove(worker)
        worker.close()

    def close(self) -> None:
        with self.lock:
            workers, self.started = self.started, []
        for worker in workers:
            worker.close()

    def forget(self) -> None:
        """In a forked child: drop the parent's workers without touching them (only the child's
        copies of their pipes are closed)."""
        for worker in self.started:
            for pipe in (worker.process.stdin, worker.process.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
            worker.process.returncode = 0          # not this process's child: never wait for it
        self.started = []
        self.lock = threading.Lock()


_WORKERS = _Workers()
atexit.register(_WORKERS.close)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WORKERS.forget)


def workers(count: int) -> list[Worker]:
    """`count` running workers of this process (started now if fewer are running)."""
    return _WORKERS.at_least(count)


def close() -> None:
    """Close and reap this process's workers now (later compilations start new ones if needed)."""
    _WORKERS.close()


def discard(worker: Worker) -> None:
    """Stop using `worker` (it failed): close and reap it."""
    _WORKERS.discard(worker)


# ---------------------------------------------------------------------------------------------
# The worker's side


def serve(requests, answers) -> None:
    """Answer compile requests from `requests` on `answers` until `requests` ends."""
    while (message := receive(requests)) is not None:
        header, text = message
        try:
            code = compile_module(text.decode().split(MODULE_SEPARATOR), Target(**header["target"]), header["level"])
            answer = {"id": header["id"], "sha256": hashlib.sha256(code).hexdigest()}
        except Exception as error:                 # noqa: BLE001  (the parent reports it)
            code, answer = b"", {"id": header.get("id"), "error": f"{type(error).__name__}: {error}"}
        send(answers, answer, code)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                                  # anything printed goes to stderr, not into answers
    serve(sys.stdin.buffer, answers)
