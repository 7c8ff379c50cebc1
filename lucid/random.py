"""lucid's global random state, which `lucid.manual_seed` sets:

- a NumPy generator behind `lucid.randn`, `lucid.rand` and parameter initialisation;
- the counter-based generator state behind the random operators (dropout, `rand_like`, `randn_like`;
  `lucid/ir/ops/random.py`): an int64[2] array (seed, counter). An eager draw reads it and advances
  the counter by one; a traced graph binds this very array as its `generator` parameter and its state
  update advances it by the graph's number of draws, so compiled calls draw fresh numbers each call,
  the same ones eager code would. The array is only ever written in place.
"""
from __future__ import annotations

import numpy as np

from .errors import DTypeError
from .ir.methods import _sizes
from .ir.types import as_dtype, float32

_generator = np.random.default_rng()
_state = np.array([np.random.SeedSequence().entropy % 2 ** 63, 0], np.int64)      # (seed, counter)


def manual_seed(seed: int) -> None:
    """Make every later random draw reproducible."""
    global _generator
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"manual_seed: expected a non-negative int, got {seed!r}")
    _generator = np.random.default_rng(int(seed))
    key = int(seed) % 2 ** 64                       # the Philox key: the seed's low 64 bits, stored as int64
    _state[...] = (key - 2 ** 64 if key >= 2 ** 63 else key, 0)


def generator() -> np.random.Generator:
    return _generator


def state() -> np.ndarray:
    """The random operators' generator state (seed, counter), the array itself (graphs bind it)."""
    return _state


def next_draw() -> np.ndarray:
    """A copy of the generator state for one eager draw; the state's counter moves past it."""
    current = _state.copy()
    _state[1] += 1
    return current


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
