"""`DistributedDataParallel`: one model replica per MPI rank, gradients averaged after each backward.

At wrap time every parameter and buffer takes rank 0's values. The parameters that require grad are
grouped into buckets (in reverse registration order, which is roughly the order the backward
finishes them; at most `bucket_cap_mb` per bucket, one dtype each), each with one flat buffer.
During `loss.backward()`, a post-accumulate-grad hook (`lucid.autograd`) marks each parameter's
gradient ready; when a bucket is complete (and every bucket before it has started: all ranks must
start the allreduces in the same order), its gradients are copied into a fresh flat buffer, divided
by the world size and a non-blocking allreduce starts, while the backward goes on. A callback at the
end of the backward starts what is left, waits for every bucket and makes each `.grad` a view of
its bucket's averaged buffer. (MPI moves a non-blocking collective forward only inside MPI calls, so
each hook also tests the allreduces in flight.)

Overlap: in eager mode the tape finishes parameters one by one, so early buckets communicate while
the rest of the backward runs. When the wrapped module is a compiled one (`lucid.compile(model)`),
DDP asks it to compile its backward as one stage per bucket (`Compiled.stage_backward`,
`lucid/passes/stages.py`): after each stage the compiled backward hands over that bucket's
gradients, whose allreduce starts at once (from those arrays and what `.grad` already held) while
the later stages compute; MPI is tested between stages so it progresses. The tape then accumulates
the gradients into `.grad` as usual, and the end-of-backward callback makes each `.grad` its
bucket's average. (If the compiled module's backward runs twice in one backward, as when it is
called twice in the forward, a bucket's allreduce is redone at the end from the complete `.grad`.)
A model built of separately compiled stages (`nn.Sequential(lucid.compile(encoder),
lucid.compile(decoder))`) has one backward call per stage, and overlaps through the hooks as in eager.
`last_sync["overlap_seconds"]` is the time from the first allreduce start to the backward's end.

A parameter that gets no gradient on a rank in a backward counts as zero from that rank (every rank
joins every bucket's allreduce, so none waits forever on another); after the sync every parameter
that requires grad has a `.grad` (zeros when no rank produced one). PyTorch's default raises an error
in the next forward instead. A backward that reaches none of the module's parameters on one rank
while it does on another makes the others wait (as in PyTorch).

Use a compiled model by wrapping it: `DistributedDataParallel(lucid.compile(model))`.
"""
from __future__ import annotations

import contextlib
import functools
import time

import numpy as np

from ... import autograd, distributed
from ...tensor import Tensor
from ..module import Module


class DistributedDataParallel(Module):
    """Wrap `module` (its forward runs unchanged; `self.module` is it, so state dict keys start with
    `module.`). Needs `lucid.distributed.init()` first. With `broadcast_buffers`, each training
    forward (grad mode on) first gives every rank rank 0's buffers (BatchNorm running statistics)."""

    def __init__(self, module: Module, bucket_cap_mb: float = 25, broadcast_buffers: bool = True):
        super().__init__()
        if not distributed.is_initialized():
            raise RuntimeError("DistributedDataParallel: the process group is not initialised; call "
                               "lucid.distributed.init() first (in a script started by mpiexec)")
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be positive, got {bucket_cap_mb}")
        self.module = module
        self.broadcast_buffers = bool(broadcast_buffers)
        for tensor in list(module.parameters()) + list(module.buffers()):
            distributed.broadcast(tensor, src=0)
        trainable = [p for p in module.parameters() if p.requires_grad]
        self.reducer = _Reducer(trainable[::-1], int(bucket_cap_mb * 2 ** 20), distributed.get_world_size())
        stage_backward = getattr(module, "stage_backward", None)      # a lucid.compile'd module
        if stage_backward is not None:
            stage_backward([bucket.params for bucket in self.reducer.buckets], self.reducer.stage_finished)

    def forward(self, *args, **kwargs):
        if self.broadcast_buffers and self.training and autograd.is_grad_enabled():
            for buffer in self.module.buffers():
                distributed.broadcast(buffer, src=0)
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Backwards inside this block only accumulate into `.grad` on each rank; the first backward
        after it averages the accumulated gradients."""
        before, self.reducer.syncing = self.reducer.syncing, False
        try:
            yield
        finally:
            self.reducer.syncing = before

    @property
    def last_sync(self) -> dict:
        """What the last synchronised backward did: `buckets`, `bytes` reduced, `started_in_backward`
        (buckets whose allreduce started before the backward ended), `overlap_seconds` (first start to
        the backward's end) and `wait_seconds` (the end-of-backward wait for the results)."""
        return dict(self.reducer.last_sync)


class _Bucket:
    """Parameters whose gradients are reduced together through one flat buffer."""

    def __init__(self, params: list):
        self.params = params
        self.sizes = [p.data.size for p in params]
        self.dtype = params[0].dtype.numpy
        self.ready: set = set()
        self.staged: dict = {}          # id(parameter) -> gradient a compiled stage gave, not yet in .grad
        self.redo = False               # a second compiled backward added to its gradients after it started
        self.work = None
        self.flat: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return sum(self.sizes) * np.dtype(self.dtype).itemsize

    def start(self, world_size: int) -> None:
        """Copy the gradients (`.grad` plus what a compiled stage gave; zeros for a parameter without
        either) into a fresh flat buffer, divide by the world size and start its allreduce."""
        self.flat = np.zeros(sum(self.sizes), self.dtype)
        for p, segment in zip(self.params, self._segments()):
            if p.grad is not None:
                segment[...] = p.grad.data.reshape(-1)
            if id(p) in self.staged:
                segment += self.staged[id(p)].reshape(-1)
        self.staged = {}
        self.flat /= world_size
        self.work = distributed.all_reduce(self.flat, async_op=True)

    def finish(self) -> None:
        """Wait for the allreduce; each gradient becomes a view of the averaged buffer."""
        self.work.wait()
        for p, segment in zip(self.params, self._segments()):
            if p.grad is None:
                p.grad = Tensor._wrap(segment.reshape(p.shape))
            else:
                p.grad.data = segment.reshape(p.shape)
        self.ready, self.work, self.flat, self.redo = set(), None, None, False

    def _segments(self):
        offsets = np.cumsum([0] + self.sizes)
        return [self.flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


class _Reducer:
    """Starts the buckets' allreduces as their gradients become ready, in bucket order."""

    def __init__(self, params: list, cap_bytes: int, world_size: int):
        self.world_size, self.syncing = world_size, True
        self.buckets = _buckets(params, cap_bytes)
        self.last_sync: dict = {}
        self._in_backward, self._started, self._first_start = False, 0, 0.0
        for bucket in self.buckets:
            for p in bucket.params:
                p.register_post_accumulate_grad_hook(functools.partial(self._grad_ready, bucket))

    def _grad_ready(self, bucket: _Bucket, param) -> None:
        if not self.syncing:
            return
        self._enter_backward()
        bucket.ready.add(id(param))
        self._start_ready_buckets()
        self._progress()

    def stage_finished(self, index: int, gradients: list) -> None:
        """A compiled backward's stage finished bucket `index`'s `(parameter, gradient)` pairs (the
        tape adds them to `.grad` later): the bucket is complete, its allreduce starts."""
        if not self.syncing:
            return
        self._enter_backward()
        bucket = self.buckets[index]
        if index < self._started:
            bucket.redo = True
            return
        bucket.staged = {id(p): np.asarray(g) for p, g in gradients}
        bucket.ready.update(id(p) for p in bucket.params)
        self._start_ready_buckets()
        self._progress()

    def _enter_backward(self) -> None:
        if not self._in_backward:
            self._in_backward, self._started = True, 0
            autograd.queue_callback(self._end_of_backward)

    def _progress(self) -> None:
        for started in self.buckets[:self._started]:
            started.work.is_completed()           # lets MPI progress the allreduces in flight

    def _start_ready_buckets(self) -> None:
        while self._started < len(self.buckets) and len(self.buckets[self._started].ready) == len(
                self.buckets[self._started].params):
            self._start_next()

    def _start_next(self) -> None:
        if self._started == 0:
            self._first_start = time.perf_counter()
        self.buckets[self._started].start(self.world_size)
        self._started += 1

    def _end_of_backward(self) -> None:
        ended = time.perf_counter()
        started_in_backward = self._started
        while self._started < len(self.buckets):
            self._start_next()
        for bucket in self.buckets:
            if bucket.redo:                        # .grad now holds every contribution: reduce it again
                bucket.work.wait()
                bucket.start(self.world_size)
        for bucket in self.buckets:
            bucket.finish()
        self._in_backward = False
        self.last_sync = {"buckets": len(self.buckets), "bytes": sum(b.nbytes for b in self.buckets),
                          "started_in_backward": started_in_backward,
                          "overlap_seconds": ended - self._first_start if started_in_backward else 0.0,
                          "wait_seconds": time.perf_counter() - ended}


def _buckets(params: list, cap_bytes: int) -> list:
    """Consecutive parameters of one dtype, at most `cap_bytes` per bucket (a larger parameter alone)."""
    groups: list = []
    for p in params:
        last = groups[-1] if groups else None
        fits = last is not None and last[0].dtype == p.dtype and \
            sum(q.data.nbytes for q in last) + p.data.nbytes <= cap_bytes
        if fits:
            last.append(p)
        else:
            groups.append([p])
    return [_Bucket(group) for group in groups]
