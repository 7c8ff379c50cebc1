"""The one place that loads mpi4py: `lucid.distributed` imports it on first use, so `import lucid` never does.

Without mpi4py (or without an MPI library it can load) every `lucid.distributed` call raises
`DistributedUnavailableError`, an ImportError that says how to install them.
"""
from __future__ import annotations

import numpy as np

INSTALL_HINT = "pip install 'lucid[distributed]'"


class DistributedUnavailableError(ImportError):
    """lucid.distributed was used without mpi4py or without an MPI library mpi4py can load."""


def mpi(caller: str):
    """The `mpi4py.MPI` module; `caller` names the lucid function in the error when it is missing."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedUnavailableError(
            f"{caller}: lucid.distributed needs mpi4py and an MPI library; install them with "
            f"{INSTALL_HINT} (mpi4py and MPICH from PyPI). Import failed: {exc}") from exc
    except RuntimeError as exc:      # mpi4py found no MPI library to load
        raise DistributedUnavailableError(
            f"{caller}: mpi4py could not load an MPI library ({exc}); install one with {INSTALL_HINT}") from exc
    return MPI


def is_available() -> bool:
    """Whether mpi4py and an MPI library can be loaded (loads them when they can)."""
    try:
        mpi("lucid.distributed.is_available")
    except DistributedUnavailableError:
        return False
    return True


#: The NumPy dtypes a collective accepts, by the name of their MPI datatype.
MPI_TYPES = {np.dtype(np.float32): "FLOAT", np.dtype(np.float64): "DOUBLE", np.dtype(np.int8): "INT8_T",
             np.dtype(np.int16): "INT16_T", np.dtype(np.int32): "INT32_T", np.dtype(np.int64): "INT64_T",
             np.dtype(np.uint8): "UINT8_T", np.dtype(np.bool_): "C_BOOL"}


def mpi_datatype(MPI, dtype: np.dtype, caller: str):
    """The MPI datatype of a NumPy dtype; a TypeError naming `caller` for one MPI cannot carry."""
    name = MPI_TYPES.get(np.dtype(dtype))
    if name is None:
        supported = ", ".join(str(d) for d in MPI_TYPES)
        raise TypeError(f"{caller}: dtype {np.dtype(dtype)} has no MPI datatype here; use one of {supported}")
    return getattr(MPI, name)
