"""Large outputs recycled from call to call (`lucid/runtime/executable.py`, `_RecycledOutputs`).

An output of at least `SMALLEST_BYTES` that nothing outside the executable refers to any more is
handed out again by a later call (its pages already mapped). Checked against an independent NumPy
reference: an array still held in any way (the array, a view, a memoryview, a Tensor of
`lucid.compile`, a copy's source) is never written again; one dropped is reused with the new
call's values, unless its holders changed it in place (read-only, another shape or dtype); at most
`KEPT` arrays are kept per output; a graph of symbolic sizes gets arrays of each call's shape; calls
from several Python threads at once never share an output; small outputs are not kept.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import lucid
from lucid.passes import memory_planning
from lucid.runtime.executable import Executable, _RecycledOutputs

SHAPE = (2, 4, 16, 32, 32)                    # 512 KiB of float32: recycled


def _scaled_relu(x):
    return lucid.relu(x) * 3.0 - 1.0


def _reference(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, np.float32(0)) * np.float32(3) - np.float32(1)


def _inputs(count: int, shape=SHAPE) -> list:
    rng = np.random.default_rng(7)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(count)]


def _executable(shape=SHAPE, name="recycled") -> Executable:
    return Executable(memory_planning.run(lucid.trace(_scaled_relu, lucid.spec(*shape), name=name)))


def test_an_output_nothing_refers_to_is_given_out_again_with_the_new_values():
    executable = _executable()
    first_x, second_x = _inputs(2)
    first = executable(first_x)[0]
    first_id = id(first)
    del first
    second = executable(second_x)[0]
    assert id(second) == first_id and any(kept is second for kept in executable._recycled._kept[0])
    np.testing.assert_array_equal(second, _reference(second_x))


HOLDERS = {
    "the array": lambda y: y,
    "a view": lambda y: y[1:, 2],
    "a reshaped view": lambda y: y.reshape(-1),
    "a memoryview": memoryview,
    "an array on its buffer": lambda y: np.frombuffer(y, np.float32),
}


@pytest.mark.parametrize("holder", sorted(HOLDERS))
def test_an_output_still_held_is_never_written_again(holder):
    executable = _executable(name=f"held_{len(holder)}")
    xs = _inputs(4)
    held = HOLDERS[holder](executable(xs[0])[0])
    wanted = np.array(held, copy=True)
    for x in xs[1:]:
        np.testing.assert_array_equal(executable(x)[0], _reference(x))
    np.testing.assert_array_equal(np.asarray(held), wanted)


CHANGES = {
    "made read-only": lambda y: setattr(y.flags, "writeable", False),
    "reshaped in place": lambda y: setattr(y, "shape", (y.size,)),
    "given another dtype in place": lambda y: setattr(y, "dtype", np.int32),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_an_output_changed_in_place_before_it_was_dropped_is_not_given_out_again(change):
    executable = _executable(name=f"changed_{len(change)}")
    first_x, second_x = _inputs(2)
    first = executable(first_x)[0]
    CHANGES[change](first)
    first_id = id(first)
    del first
    second = executable(second_x)[0]
    assert second.shape == SHAPE and second.dtype == np.float32 and second.flags.writeable
    np.testing.assert_array_equal(second, _reference(second_x))
    second[...] = 0                                             # writable, as a fresh array is
    assert all(id(kept) != first_id or kept is second for kept in executable._recycled._kept[0])


def test_a_compiled_functions_tensor_keeps_its_output():
    compiled = lucid.compile(_scaled_relu)
    xs = _inputs(3)
    kept = [compiled(lucid.Tensor(x)) for x in xs]
    for tensor, x in zip(kept, xs):
        np.testing.assert_array_equal(tensor.numpy(), _reference(x))
    addresses = {tensor.numpy().ctypes.data for tensor in kept}
    assert len(addresses) == 3


def test_at_most_kept_arrays_per_output():
    executable = _executable(name="kept_bound")
    outputs = [executable(x)[0] for x in _inputs(5)]
    assert len(executable._recycled._kept[0]) <= _RecycledOutputs.KEPT
    assert len({y.ctypes.data for y in outputs}) == 5


def test_symbolic_sizes_get_arrays_of_each_calls_shape():
    graph = lucid.trace(_scaled_relu, lucid.spec(lucid.dim("N"), 4, 16, 64, 64), name="recycled_sizes")
    executable = Executable(memory_planning.run(graph))
    for batch in (2, 3, 2, 1, 3):
        x, = _inputs(1, (batch, 4, 16, 64, 64))
        y = executable(x)[0]
        assert y.shape == x.shape
        np.testing.assert_array_equal(y, _reference(x))
    assert len(executable._recycled._kept[0]) <= _RecycledOutputs.KEPT


def test_calls_from_several_threads_at_once_never_share_an_output():
    executable = _executable(name="recycled_threads")
    xs = _inputs(4)
    failures = []

    def calls(x):
        for _ in range(15):
            y = executable(x, threads=1)[0]
            if not np.array_equal(y, _reference(x)):
                failures.append("wrong values")

    threads = [threading.Thread(target=calls, args=(x,)) for x in xs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_small_outputs_are_not_kept():
    executable = _executable((2, 4, 8, 16, 16), name="recycled_small")          # 64 KiB
    for x in _inputs(3, (2, 4, 8, 16, 16)):
        np.testing.assert_array_equal(executable(x)[0], _reference(x))
    assert executable._recycled._kept == {}
