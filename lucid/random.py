"""The global random generator behind every random draw in lucid (randn, rand, parameter init, dropout)."""
from __future__ import annotations

import numpy as np

from .errors import DTypeError
from .ir.methods import _sizes
from .ir.types import as_dtype, float32

_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Make every later random draw reproducible."""
    global _generator
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"manual_seed: expected a non-negative int, got {seed!r}")
    _generator = np.random.default_rng(int(seed))


def generator() -> np.random.Generator:
    return _generator


def standard_normal(shape: tuple, dtype=None) -> np.ndarray:
    """Samples of N(0, 1) for `lucid.randn(*shape)`, in a floating dtype (float32 by default)."""
    return _floating_samples("randn", shape, dtype, "standard_normal")


def uniform(shape: tuple, dtype=None) -> np.ndarray:
    """Samples of U[0, 1) for `lucid.rand(*shape)`, in a floating dtype (float32 by default)."""
    return _floating_samples("rand", shape, dtype, "random")


def _floating_samples(fn: str, shape: tuple, dtype, method: str) -> np.ndarray:
    dtype = as_dtype(dtype or float32)
    if not dtype.is_floating:
        raise DTypeError(f"{fn}: expected a floating dtype, got {dtype}")
    return getattr(_generator, method)(_sizes(shape, fn), dtype=dtype.numpy)
