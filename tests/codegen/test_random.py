"""The `random` operator: Philox4x32-10, its NumPy reference and its LLVM lowering.

- The NumPy Philox against the published known-answer vectors of Philox4x32-10 (Random123's
  tests/kat_vectors, the three `philox4x32 10` lines), and against a scalar Python Philox written
  here from the algorithm (Salmon et al., SC'11) on random counters and keys.
- The stream's definition checked element by element with that scalar Philox: element i of a draw
  is word i % 4 of block i // 4, under key (seed low, seed high) and counter
  (block low, block high, draw low, draw high), the draw's 64-bit counter carrying into its high word.
- Compiled against the reference: uniform numbers bit for bit, normal ones to a few ulps (LLVM calls
  libm, NumPy may use its own log, cos and sin); float32 and float64, odd sizes
  (7x5x3, 1, 5, 33, 4097, empty), seeds above 2^63, counters at the 32-bit carry, on the host's
  vectors and on 4-lane ones; one thread and two.
- The numbers look like their distributions (mean, variance, range, quartiles) on a million draws.
"""
from __future__ import annotations

import numpy as np
import pytest

import lucid
from lucid.codegen.target import Target, host
from lucid.ir import ops
from lucid.ir.ops.random import philox
from lucid.passes import pipeline
from lucid.runtime.executable import Executable

#: (counter words, key words, expected words), Random123 tests/kat_vectors, "philox4x32 10" lines.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def scalar_philox(counter: tuple, key: tuple) -> tuple:
    """Philox4x32-10 of one block with Python integers: ten rounds, the key bumped before rounds 2..10."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for round_ in range(10):
        if round_:
            k0, k1 = (k0 + 0x9E3779B9) % 2 ** 32, (k1 + 0xBB67AE85) % 2 ** 32
        product0, product1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (product1 >> 32) ^ c1 ^ k0, product1 % 2 ** 32, (product0 >> 32) ^ c3 ^ k1, product0 % 2 ** 32
    return c0, c1, c2, c3


def graph_of(shape: tuple, dtype: str, distribution: str, draw: int):
    return lucid.trace(lambda generator: ops.random_values(generator, shape, dtype, distribution, draw),
                       lucid.spec(2, dtype=lucid.int64), name="draw")


def state(seed: int, counter: int) -> np.ndarray:
    return np.array([seed % 2 ** 64, counter % 2 ** 64], np.uint64).view(np.int64)


@pytest.mark.parametrize("counter, key, expected", KNOWN_ANSWERS)
def test_philox_known_answers(counter, key, expected):
    assert tuple(int(w) for w in philox(np.array([counter], np.uint32), key)[0]) == expected
    assert scalar_philox(counter, key) == expected


def test_philox_matches_the_scalar_algorithm_on_random_blocks():
    rng = np.random.default_rng(4)
    counters = rng.integers(0, 2 ** 32, (50, 4), dtype=np.uint64).astype(np.uint32)
    for key in [(0, 0), (2 ** 32 - 1, 7), tuple(int(k) for k in rng.integers(0, 2 ** 32, 2))]:
        got = philox(counters, key)
        for row, words in zip(counters, got):
            assert tuple(int(w) for w in words) == scalar_philox(tuple(int(c) for c in row), key)


@pytest.mark.parametrize("seed, counter, draw", [(0, 0, 0), (2 ** 64 - 3, 2 ** 32 - 1, 1), (123456789, 41, 5)])
def test_the_stream_is_philox_word_i_mod_4_of_block_i_div_4(seed, counter, draw):
    size = 23
    got = lucid.ir.run(graph_of((size,), "float64", "uniform", draw), state(seed, counter))
    d = (counter + draw) % 2 ** 64
    key = (seed % 2 ** 32, (seed >> 32) % 2 ** 32)
    for i in range(size):
        block = i // 4
        words = scalar_philox((block % 2 ** 32, block >> 32, d % 2 ** 32, d >> 32), key)
        assert got[i] == words[i % 4] * 2.0 ** -32
    as_float32 = lucid.ir.run(graph_of((size,), "float32", "uniform", draw), state(seed, counter))
    np.testing.assert_array_equal(as_float32, np.floor(got * 2 ** 24) * np.float32(2.0 ** -24))


def test_normal_numbers_are_box_muller_of_word_pairs():
    got = lucid.ir.run(graph_of((6,), "float64", "normal", 0), state(99, 3))
    for block in range(2):
        w = scalar_philox((block, 0, 3, 0), (99, 0))
        for pair in range(2):
            radius = np.sqrt(-2.0 * np.log((w[2 * pair] + 1.0) * 2.0 ** -32))
            angle = w[2 * pair + 1] * 2.0 ** -32 * 2 * np.pi
            expected = (radius * np.cos(angle), radius * np.sin(angle))
            for k in range(2):
                index = 4 * block + 2 * pair + k
                if index < 6:
                    assert got[index] == pytest.approx(expected[k], rel=1e-14, abs=1e-14)


SIZES = [(7, 5, 3), (1,), (5,), (33,), (4097,), (0, 3)]


@pytest.mark.parametrize("lanes", [4, None])
@pytest.mark.parametrize("distribution", ["uniform", "normal"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_draws_equal_the_reference(distribution, dtype, lanes):
    """On the host's vectors and on 4-lane (SSE2) vectors."""
    if lanes is not None and not host().triple.startswith("x86_64"):
        pytest.skip("the 4-lane target is x86-64's baseline")
    target = host() if lanes is None else Target(host().triple, "x86-64", "", cores=host().cores)
    assert lanes in (None, target.vector_floats)
    for shape in SIZES:
        graph = graph_of(shape, dtype, distribution, 2)
        executable = Executable(pipeline.for_inference(graph), target)
        for generator in (state(2 ** 63 + 12345, 2 ** 32 - 2), state(7, 0)):
            expected = lucid.ir.run(graph, generator)
            got = executable(generator)[0]
            assert got.shape == shape and got.dtype == np.dtype(dtype)
            if distribution == "uniform":
                np.testing.assert_array_equal(got, expected, err_msg=f"{dtype} {shape}")
            else:       # libm's log, cos, sin against NumPy's (which may use other implementations)
                np.testing.assert_allclose(got, expected, rtol=4 * np.finfo(dtype).eps, atol=1e-12,
                                           err_msg=f"{dtype} {shape}")


def test_one_and_two_threads_draw_the_same_numbers_and_they_look_uniform_and_normal():
    n = 1 << 20
    for distribution in ("uniform", "normal"):
        executable = Executable(pipeline.for_inference(graph_of((n + 3,), "float32", distribution, 0)))
        one, two = executable(state(5, 9), threads=1)[0], executable(state(5, 9), threads=2)[0]
        np.testing.assert_array_equal(one, two)
        if distribution == "uniform":
            assert one.min() >= 0.0 and one.max() < 1.0
            assert abs(one.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
            np.testing.assert_allclose(np.quantile(one, [0.25, 0.5, 0.75]), [0.25, 0.5, 0.75], atol=3e-3)
        else:
            assert abs(one.mean()) < 5 / np.sqrt(n) and abs(one.var() - 1.0) < 5 * np.sqrt(2 / n)
            np.testing.assert_allclose(np.quantile(one, [0.25, 0.5, 0.75]), [-0.6745, 0.0, 0.6745], atol=5e-3)
        assert len(np.unique(one)) > 0.99 * n * (1 if distribution == "normal" else 0.97)


def test_the_state_must_be_an_int64_pair():
    with pytest.raises(lucid.DTypeError, match="random: expected the generator state as an int64 tensor of shape"):
        ops.random_values(lucid.zeros(2), (3,), "float32", "uniform", 0)
    with pytest.raises(lucid.ShapeError, match="distribution"):
        lucid.trace(lambda g: ops.emit("random", g, shape=(2,), dtype="float32", distribution="cauchy", draw=0),
                    lucid.spec(2, dtype=lucid.int64))
