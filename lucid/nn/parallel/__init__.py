"""lucid.nn.parallel: data-parallel training across MPI ranks (`DistributedDataParallel`)."""
from .distributed import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
