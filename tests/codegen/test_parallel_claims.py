"""How the threads of a compiled call share each kernel's work items (lucid/codegen/parallel.py):
each owns an equal range and claims it in chunks through its own progress word, then takes what is
left of the others' ranges.

- Every item runs exactly once at any thread count, more threads than cores and than the state
  block's progress words included: a gradient graph gives the bits of a one-thread run.
- A thread that never arrives (here: `lucid_work` called by one thread of a state block saying two
  take part) leaves its range to the one that does: the kernel's output is whole.
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

import lucid
import lucid.nn.functional as F
from lucid.codegen.parallel import ARRIVED, MAX_THREADS, STATE_WORDS, THREADS
from lucid.passes import autodiff, memory_planning
from lucid.runtime.executable import Executable


def _layers(x, w1, w2, w3):
    y = F.max_pool3d(F.relu(F.conv3d(x, w1, padding=1)), 2)
    y = F.relu(F.conv3d(y, w2, padding=(1, 0, 0)))
    return F.conv_transpose3d(y, w3, stride=2)


def test_every_thread_count_gives_the_bits_of_one_thread():
    """The output and every gradient of a few layers (conv, ReLU, max pool, a temporal conv, a
    transposed conv), at thread counts up to more than the state block has progress words."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape).astype(np.float32)
              for shape in ((2, 3, 6, 10, 12), (8, 3, 3, 3, 3), (6, 8, 3, 1, 1), (6, 4, 2, 2, 2))]
    graph = lucid.trace(_layers, *(lucid.spec(a.shape) for a in arrays), name="claims_layers")
    grad = autodiff.run(graph, wrt=[v.name for v in graph.inputs])
    seed = rng.standard_normal(grad.inputs[-1].shape).astype(np.float32)
    executable = Executable(memory_planning.run(grad))
    one = executable(*arrays, seed, threads=1)
    for threads in (2, 3, 5, MAX_THREADS + 7):
        for index, (got, wanted) in enumerate(zip(executable(*arrays, seed, threads=threads), one)):
            np.testing.assert_array_equal(got, wanted, err_msg=f"{threads} threads, output {index}")


_WORK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


@pytest.mark.parametrize("depth", [2, 8, 40])
def test_a_thread_that_never_arrives_leaves_its_range_to_the_others(depth):
    """One kernel (no barrier before it: a max pool, an item per output row): `lucid_work` run by one
    thread of a state block saying two take part writes every output."""
    shape = (2, 3, depth, 16, 32)
    x = np.random.default_rng(depth).standard_normal(shape).astype(np.float32)
    graph = memory_planning.run(lucid.trace(lambda x: F.max_pool3d(x, 2), lucid.spec(*shape), name=f"claims_{depth}"))
    executable = Executable(graph)
    (kernel, _), = executable.kernels()
    assert kernel.items == 2 * 3 * depth // 2 * 8
    layout = executable._layout([])
    arena = executable._take_arena()
    try:
        table = arena.template(layout).copy()
        table[executable.table.inputs[0]] = x.ctypes.data
        (y,) = executable._output_arrays(table, layout)
        y[...] = np.nan
        state = np.zeros(executable._state_words, np.int64)
        assert state.size == STATE_WORDS + MAX_THREADS
        state[THREADS] = 2
        _WORK(executable.native.address("lucid_work"))(table.ctypes.data, state.ctypes.data)
    finally:
        executable._give_back_arena(arena)
    assert state[ARRIVED] == 1
    wanted = x.reshape(2, 3, depth // 2, 2, 8, 2, 16, 2).max(axis=(3, 5, 7))
    np.testing.assert_array_equal(y, wanted)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_timeline_marks_each_threads_end_of_each_kernel(threads):
    """`Executable.timeline`: a row per thread, a column per kernel, each row non-decreasing (a
    thread's kernels in order), and after a barrier no thread done with the kernel before every
    thread was done with the kernels before it."""
    rng = np.random.default_rng(threads)
    arrays = [rng.standard_normal(shape).astype(np.float32)
              for shape in ((2, 3, 6, 10, 12), (8, 3, 3, 3, 3), (6, 8, 3, 1, 1), (6, 4, 2, 2, 2))]
    graph = memory_planning.run(lucid.trace(_layers, *(lucid.spec(a.shape) for a in arrays), name="timeline"))
    executable = Executable(graph)
    marks = executable.timeline(*arrays, threads=threads)
    kernels = executable.kernels()
    assert marks.shape == (threads, len(kernels))
    assert (np.diff(marks, axis=1) >= 0).all() and (marks >= 0).all() and marks.max() < 10.0
    for k in range(1, len(kernels)):
        if kernels[k][0].waits:               # a barrier: every thread done with kernel k-1 before any with k
            assert marks[:, k].min() >= marks[:, k - 1].max()


@pytest.mark.parametrize("threads", [0, -2, 1.5, True])
def test_a_timeline_refuses_a_thread_count_below_one(threads):
    graph = memory_planning.run(lucid.trace(lambda x: F.relu(x), lucid.spec(4, 5), name="timeline_refused"))
    with pytest.raises(ValueError, match=r"timeline_refused: timeline: expected a thread count of at least 1"):
        Executable(graph).timeline(np.zeros((4, 5), np.float32), threads=threads)
