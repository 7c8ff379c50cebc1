"""Checkpoints of a data-parallel job: one file, written by rank 0, read by every rank.

After each data-parallel step every rank holds the same parameters and optimiser state, so one copy
is the whole checkpoint, and it does not depend on the number of ranks: a job resumed on another
world size loads it on each of its ranks (``lucid.load``, or ``lucid.load_safetensors`` for
weights) and carries on. ``save_on_rank0(obj, path)`` writes that one copy:

- only rank 0 writes, so N ranks do not write the same file at once;
- it writes a temporary file beside ``path`` and renames it into place, so a reader (or a job
  killed mid-write) never sees half a file;
- every rank waits at a barrier until the file is complete, so the next line may read it.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..safetensors import save_safetensors
from ..serialization import save
from . import barrier, get_rank


def save_on_rank0(obj, path) -> None:
    """Rank 0 saves `obj` to `path` (safetensors if the name ends in ``.safetensors``: a flat dict
    of tensors; otherwise ``lucid.save``'s format: state dicts, optimiser state, plain values);
    every rank returns once the file is complete. Call it on every rank."""
    path = Path(path)
    if get_rank() == 0:
        partial = path.with_name(f".{path.name}.partial")
        (save_safetensors if path.suffix == ".safetensors" else save)(obj, partial)
        os.replace(partial, path)
    barrier()
