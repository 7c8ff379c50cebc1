"""lucid.distributed: data-parallel work on MPI, through mpi4py (`pip install 'lucid[distributed]'`).

Launch N ranks with `mpiexec -n N python script.py` (or `python -m lucid.distributed.launch -n N
script.py`, which finds the right mpiexec and its flags); each calls `init()`. The collectives work in
place on lucid Tensors and NumPy arrays. mpi4py is imported on the first call, never by `import lucid`;
without it every call raises `DistributedUnavailableError` (an ImportError) saying how to install it.
"""
from .backend import DistributedUnavailableError, is_available
from .collectives import ReduceOp, Work, all_gather, all_gather_into_tensor, all_reduce, broadcast
from .process_group import barrier, get_rank, get_world_size, init, init_process_group, is_initialized

__all__ = ["DistributedUnavailableError", "ReduceOp", "Work", "all_gather", "all_gather_into_tensor", "all_reduce",
           "barrier", "broadcast", "get_rank", "get_world_size", "init", "init_process_group", "is_available",
           "is_initialized"]
