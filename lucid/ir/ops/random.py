"""Random numbers as a graph operator: `random`, drawn from a counter-based generator (Philox4x32-10).

A counter-based generator computes the n-th number of a stream directly from (key, counter), so the
same node gives the same numbers in the reference kernel and in the compiled code, on any number of
threads, with no state carried from element to element.

`random(generator; shape, dtype, distribution, draw)` reads `generator`, an int64[2] tensor holding
lucid's generator state (seed, counter) (`lucid/random.py`; in a traced graph the `generator`
parameter), and fills a new tensor of `shape`:
- element i comes from Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy
  as 1, 2, 3", SC'11) applied to block b = i // 4: key (seed low 32 bits, seed high 32 bits), counter
  words (b low, b high, d low, d high) where d = counter + draw (64-bit, wrapping). A block gives 4
  words w0..w3;
- uniform on [0, 1): float32 (w >> 8) * 2^-24, float64 w * 2^-32, from word i % 4 (exact values);
- normal: Box-Muller on the word pairs (w0, w1) and (w2, w3), in float64 then rounded to `dtype`:
  r = sqrt(-2 log((w0 + 1) * 2^-32)), t = (w1 * 2^-32) * 2 pi, z0 = r cos t, z1 = r sin t (z2, z3 from
  w2, w3 alike); element i takes z_{i % 4}.
`draw` numbers the draws of one graph: a graph making k draws reads counters counter .. counter+k-1
and advances the state by k, exactly as k eager draws in a row would (each advances it by 1).
"""
from __future__ import annotations

import numpy as np

from .. import symbolic
from ..types import TensorType, as_dtype, int64
from .attributes import Int, IntTuple, OneOf
from .registry import OpDef, emit, register

ROUNDS = 10
MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)     # M0 (applied to counter word 0), M1 (to word 2)
KEY_STEPS = (0x9E3779B9, 0xBB67AE85)       # added to the key words between rounds (golden ratio, sqrt(3) - 1)
DISTRIBUTIONS = ("uniform", "normal")
WORDS = 4                                  # 32-bit words per Philox block: elements per block
CHUNK = 8192                               # blocks the NumPy reference computes at a time


def philox(counters: np.ndarray, key: tuple) -> np.ndarray:
    """Philox4x32-10 of each row of `counters` (n, 4) uint32 under `key` (k0, k1): (n, 4) uint32,
    CHUNK rows at a time (small temporaries stay in cache and are not fresh pages)."""
    out = np.empty_like(counters)
    for start in range(0, len(counters), CHUNK):
        out[start:start + CHUNK] = _philox_rows(counters[start:start + CHUNK], key)
    return out


def _philox_rows(counters: np.ndarray, key: tuple) -> np.ndarray:
    c = [counters[:, j].astype(np.uint64) for j in range(WORDS)]
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    mask, shift = np.uint64(0xFFFFFFFF), np.uint64(32)
    m0, m1 = np.uint64(MULTIPLIERS[0]), np.uint64(MULTIPLIERS[1])
    for round_ in range(ROUNDS):
        if round_:
            k0, k1 = (k0 + np.uint64(KEY_STEPS[0])) & mask, (k1 + np.uint64(KEY_STEPS[1])) & mask
        p0, p1 = c[0] * m0, c[2] * m1
        c = [(p1 >> shift) ^ c[1] ^ k0, p1 & mask, (p0 >> shift) ^ c[3] ^ k1, p0 & mask]
    return np.stack(c, axis=1).astype(np.uint32)


def words(state: np.ndarray, draw: int, count: int) -> np.ndarray:
    """The blocks covering `count` elements of draw `draw` from generator state (seed, counter): (blocks, 4) uint32."""
    seed, counter = (int(v) for v in np.asarray(state, np.int64).view(np.uint64))
    d = (counter + draw) % 2 ** 64
    b = np.arange(-(-count // WORDS), dtype=np.uint64)
    low = np.uint64(0xFFFFFFFF)
    counters = np.stack([b & low, b >> np.uint64(32), np.full_like(b, d & 0xFFFFFFFF), np.full_like(b, d >> 32)], 1)
    return philox(counters.astype(np.uint32), (seed & 0xFFFFFFFF, seed >> 32))


def uniform(w: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Words as uniform numbers in [0, 1) of `dtype` (24 bits for float32, 32 for float64; exact)."""
    if dtype == np.float32:
        return ((w >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24))
    return w.astype(np.float64) * 2.0 ** -32


def normal(w: np.ndarray) -> np.ndarray:
    """Blocks (n, 4) as standard normal numbers (n, 4) float64, by Box-Muller on word pairs."""
    w = w.astype(np.float64)
    radius = np.sqrt(-2.0 * np.log((w[:, 0::2] + 1.0) * 2.0 ** -32))
    angle = (w[:, 1::2] * 2.0 ** -32) * (2.0 * np.pi)
    z = np.empty_like(w)
    z[:, 0::2], z[:, 1::2] = radius * np.cos(angle), radius * np.sin(angle)
    return z


@register
class Random(OpDef):
    name = "random"
    differentiable = False          # its only input is the generator state
    attributes = {"shape": IntTuple(min=0, symbolic=True), "dtype": OneOf("float32", "float64"),
                  "distribution": OneOf(*DISTRIBUTIONS), "draw": Int(min=0)}

    def infer(self, attrs, generator):
        if generator.dtype != int64 or generator.shape != (2,):
            raise self.dtype_error(f"expected the generator state as an int64 tensor of shape (2,), "
                                   f"got {generator.dtype}{list(generator.shape)}")
        return TensorType(attrs["shape"], as_dtype(attrs["dtype"]))

    def compute(self, attrs, generator):
        dtype, count = np.dtype(attrs["dtype"]), int(np.prod(attrs["shape"], dtype=np.int64))
        blocks = words(generator, attrs["draw"], count)
        values = uniform(blocks, dtype) if attrs["distribution"] == "uniform" else normal(blocks).astype(dtype)
        return values.reshape(-1)[:count].reshape(attrs["shape"])


def random_values(generator, shape: tuple, dtype: str, distribution: str, draw: int):
    """A tensor of `shape` drawn from `generator` (int64[2]: seed, counter), draw number `draw` of its graph."""
    return emit("random", generator, shape=tuple(symbolic.as_size(n) for n in shape), dtype=as_dtype(dtype).name,
                distribution=distribution, draw=int(draw))
