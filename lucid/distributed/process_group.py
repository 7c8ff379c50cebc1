"""The process group: every rank `mpiexec` started (MPI.COMM_WORLD), joined by `init()`.

`init()` checks that MPI sees as many ranks as the launcher meant to start: a script run without
`mpiexec`, or by the `mpiexec` of another MPI implementation than the one mpi4py loaded, finds itself
alone while the environment says otherwise, and is stopped with an error saying so.

With more than one rank, `init()` installs an exception hook: an uncaught exception on any rank prints
its traceback and then calls `MPI.COMM_WORLD.Abort(1)`, which ends every rank of the job with an
error. Without it the other ranks would wait forever in their next collective.
"""
from __future__ import annotations

import os
import sys
import time

from .backend import mpi

#: Variables launchers set to the number of ranks they start (Open MPI, MPICH/Intel MPI's hydra and
#: PMI-based launchers, torchrun-style launchers).
LAUNCHER_WORLD_SIZE = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "WORLD_SIZE")
#: How long a rank that raised waits, its traceback written, before it aborts the job: the launcher
#: forwards a rank's output on another channel than the abort, and tearing the job down first can
#: lose the end of the traceback (seen on a loaded machine: only its first lines arrived).
ABORT_GRACE_SECONDS = 0.5

_group = {"comm": None}


def init(backend: str | None = None, world_size: int | None = None, rank: int | None = None) -> None:
    """Join the job's process group, from the MPI environment (`mpiexec -n N python script.py`).
    Calling it again does nothing. `backend` may be None or "mpi"; `world_size` and `rank`, when
    given, must be what MPI says (they are checked, not used)."""
    MPI = mpi("lucid.distributed.init")
    if backend not in (None, "mpi"):
        raise ValueError(f"lucid.distributed.init: backend {backend!r} is not available; lucid runs on MPI "
                         "(backend='mpi'): launch with mpiexec")
    comm = MPI.COMM_WORLD
    _check_launcher_agrees(comm.Get_size())
    for name, given, actual in (("world_size", world_size, comm.Get_size()), ("rank", rank, comm.Get_rank())):
        if given is not None and given != actual:
            raise ValueError(f"lucid.distributed.init: {name}={given} was given but MPI says {actual}")
    if _group["comm"] is None and comm.Get_size() > 1:
        _install_abort_on_exception(comm)
    _group["comm"] = comm


def init_process_group(backend: str | None = None, world_size: int | None = None, rank: int | None = None,
                       **_ignored) -> None:
    """torch.distributed's name for `init` (init_method, timeout and other transport options are ignored:
    MPI's launcher set everything up)."""
    init(backend, world_size, rank)


def _check_launcher_agrees(mpi_size: int) -> None:
    for variable in LAUNCHER_WORLD_SIZE:
        value = os.environ.get(variable, "")
        if value.isdigit() and int(value) > 1 and int(value) != mpi_size:
            raise RuntimeError(
                f"lucid.distributed.init: the environment expects {value} ranks ({variable}={value}) but MPI "
                f"reports {mpi_size}. Start the script with the mpiexec of the MPI library mpi4py loaded "
                "(the one `pip install 'lucid[distributed]'` put next to this Python: "
                "`python -m lucid.distributed.launch -n N script.py`), not another launcher.")


def _install_abort_on_exception(comm) -> None:
    previous = sys.excepthook

    def abort_job(kind, value, traceback):
        previous(kind, value, traceback)
        sys.stderr.write(f"lucid.distributed: rank {comm.Get_rank()} raised; aborting every rank of the job\n")
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_SECONDS)
        comm.Abort(1)

    sys.excepthook = abort_job


def is_initialized() -> bool:
    """Whether `init()` has run in this process (False without mpi4py too; it never raises)."""
    return _group["comm"] is not None


def communicator(caller: str):
    """The joined MPI communicator; an error naming `caller` before `init()`."""
    mpi(caller)
    if _group["comm"] is None:
        raise RuntimeError(f"{caller}: the process group is not initialised; call lucid.distributed.init() first "
                           "(in a script started by mpiexec)")
    return _group["comm"]


def get_rank() -> int:
    """This process's rank, 0 to world size - 1."""
    return communicator("lucid.distributed.get_rank").Get_rank()


def get_world_size() -> int:
    """The number of ranks in the job."""
    return communicator("lucid.distributed.get_world_size").Get_size()


def barrier() -> None:
    """Wait until every rank has called barrier()."""
    communicator("lucid.distributed.barrier").Barrier()
