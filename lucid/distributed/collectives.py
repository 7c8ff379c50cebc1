"""Collectives on lucid Tensors and NumPy arrays, in place, through MPI's buffer interface (no pickling).

A NumPy array must be C-contiguous and writeable: MPI reads and writes its memory directly. A Tensor
whose data is not (a transposed view, a read-only array) gets a contiguous copy that becomes its data.
Every call waits for its result unless `async_op=True`, which returns a `Work` handle: its `.wait()`
completes the operation (and writes the result into the tensor). Every rank must call the same
collectives in the same order.
"""
from __future__ import annotations

import enum

import numpy as np

from ..tensor import Tensor, is_eager_tensor
from .backend import mpi, mpi_datatype
from .process_group import communicator


class ReduceOp(enum.Enum):
    """How all_reduce combines the ranks' values. AVG is the SUM divided by the world size (floating dtypes)."""

    SUM = "SUM"
    PRODUCT = "PROD"
    MIN = "MIN"
    MAX = "MAX"
    AVG = "AVG"


class Work:
    """A collective in flight: `wait()` blocks until it is complete and its result is in place."""

    def __init__(self, request, finish=None):
        self._request, self._finish = request, finish

    def wait(self) -> bool:
        if self._request is not None:
            self._request.Wait()
            self._request = None
            if self._finish is not None:
                self._finish()
        return True

    def is_completed(self) -> bool:
        return self._request is None


class _Buffer:
    """The array MPI reads and writes for one tensor or array argument, and how to hand it back."""

    def __init__(self, value, caller: str, position: str):
        self.tensor = value if is_eager_tensor(value) else None
        if self.tensor is not None:
            array = value.data
            self.array = array if array.flags.c_contiguous and array.flags.writeable else np.ascontiguousarray(array)
        elif isinstance(value, np.ndarray):
            if not value.flags.c_contiguous:
                raise ValueError(f"{caller}: {position} is a non-contiguous NumPy array; MPI writes in place into "
                                 "contiguous memory: pass np.ascontiguousarray(a) and read the result from it")
            if not value.flags.writeable:
                raise ValueError(f"{caller}: {position} is a read-only NumPy array; pass a writeable one")
            self.array = value
        elif isinstance(value, Tensor):
            raise TypeError(f"{caller}: {position} is a graph value: collectives run on eager tensors only, not "
                            "inside lucid.trace or a compiled function")
        else:
            raise TypeError(f"{caller}: {position} must be a lucid Tensor or a NumPy array, got {type(value).__name__}")
        self.datatype = mpi_datatype(mpi(caller), self.array.dtype, caller)

    def spec(self):
        return [self.array, self.datatype]

    def written(self) -> None:
        """MPI has written the array: a tensor takes it as its data (an in-place change)."""
        if self.tensor is not None:
            self.tensor._data = self.array
            self.tensor._version += 1


def _run(request, finish, async_op: bool):
    work = Work(request, finish)
    if async_op:
        return work
    work.wait()
    return None


def all_reduce(tensor, op: ReduceOp = ReduceOp.SUM, async_op: bool = False):
    """Combine `tensor` (a Tensor or NumPy array) across ranks with `op`; every rank gets the result
    in place."""
    caller = "lucid.distributed.all_reduce"
    comm, buffer = communicator(caller), _Buffer(tensor, caller, "the tensor")
    MPI = mpi(caller)
    if not isinstance(op, ReduceOp):
        raise TypeError(f"{caller}: op must be a lucid.distributed.ReduceOp, got {op!r}")
    if op is ReduceOp.AVG and buffer.array.dtype.kind != "f":
        raise TypeError(f"{caller}: ReduceOp.AVG needs a floating dtype, got {buffer.array.dtype}")
    mpi_op = getattr(MPI, "SUM" if op is ReduceOp.AVG else op.value)
    size = comm.Get_size()

    def finish():
        if op is ReduceOp.AVG:
            buffer.array /= size
        buffer.written()

    return _run(comm.Iallreduce(MPI.IN_PLACE, buffer.spec(), mpi_op), finish, async_op)


def broadcast(tensor, src: int = 0, async_op: bool = False):
    """Every rank's `tensor` (a Tensor or NumPy array, same shape and dtype everywhere) takes rank
    `src`'s values, in place."""
    caller = "lucid.distributed.broadcast"
    comm, buffer = communicator(caller), _Buffer(tensor, caller, "the tensor")
    _check_rank(src, comm.Get_size(), caller, "src")
    return _run(comm.Ibcast(buffer.spec(), root=src), buffer.written, async_op)


def all_gather(tensor_list: list, tensor, async_op: bool = False):
    """Fill `tensor_list[r]` with rank r's `tensor`, on every rank. The list holds world-size Tensors
    or NumPy arrays of `tensor`'s shape and dtype; each is written in place."""
    caller = "lucid.distributed.all_gather"
    comm, source = communicator(caller), _Buffer(tensor, caller, "the tensor")
    size = comm.Get_size()
    if not isinstance(tensor_list, list) or len(tensor_list) != size:
        count = len(tensor_list) if isinstance(tensor_list, list) else type(tensor_list).__name__
        raise ValueError(f"{caller}: tensor_list must be a list of world-size ({size}) tensors, got {count}")
    targets = [_Buffer(t, caller, f"tensor_list[{k}]") for k, t in enumerate(tensor_list)]
    for k, target in enumerate(targets):
        _check_same_layout(target.array, source.array, caller, f"tensor_list[{k}]")
    gathered = np.empty((size,) + source.array.shape, source.array.dtype)

    def finish():
        for target, part in zip(targets, gathered):
            target.array[...] = part
            target.written()

    return _run(comm.Iallgather(source.spec(), [gathered, source.datatype]), finish, async_op)


def all_gather_into_tensor(output_tensor, input_tensor, async_op: bool = False):
    """Write every rank's `input_tensor` into `output_tensor`, rank after rank: the output has world
    size times the input's elements (shape (world * n, ...) for an input (n, ...), or (world, ...))."""
    caller = "lucid.distributed.all_gather_into_tensor"
    comm = communicator(caller)
    source, target = _Buffer(input_tensor, caller, "input_tensor"), _Buffer(output_tensor, caller, "output_tensor")
    size = comm.Get_size()
    if target.array.dtype != source.array.dtype or target.array.size != size * source.array.size:
        raise ValueError(f"{caller}: output_tensor must hold world size ({size}) x the input's {source.array.size} "
                         f"elements of dtype {source.array.dtype}, got shape {target.array.shape} of "
                         f"{target.array.dtype}")
    return _run(comm.Iallgather(source.spec(), target.spec()), target.written, async_op)


def _check_same_layout(array: np.ndarray, reference: np.ndarray, caller: str, position: str) -> None:
    if array.shape != reference.shape or array.dtype != reference.dtype:
        raise ValueError(f"{caller}: {position} has shape {array.shape} and dtype {array.dtype}; the tensor "
                         f"gathered has shape {reference.shape} and dtype {reference.dtype}")


def _check_rank(rank, size: int, caller: str, name: str) -> None:
    if not isinstance(rank, int) or not 0 <= rank < size:
        raise ValueError(f"{caller}: {name}={rank!r} is not a rank of this job (0 to {size - 1})")
