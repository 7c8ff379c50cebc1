"""Bound parameters checked once (`lucid/runtime/executable.py`, `_BoundWeights`).

A call without `params=` whose bindings still hold the arrays an earlier call checked (same arrays,
shapes, strides and dtypes) neither checks nor points at them again. Checked against the NumPy
oracle of tests/oracle.py: every way the weights can change between calls is seen by the next call
(values written in place, a Tensor's array swapped, a binding replaced, `params=` given), and an
array changed in place into another shape or dtype is refused with the same error as on a first
call, never read as it was; a graph of symbolic sizes keeps the check for the layout of the call's
sizes; a model whose arrays are swapped on every call never pays for making that check.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import oracle
from lucid.errors import DTypeError, ShapeError
from lucid.passes import pipeline
from lucid.runtime.executable import Executable, _BoundWeights

SHAPE = (1, 3, 5, 6, 7)


def _data(shape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture
def compiled():
    """A Conv3d(3 -> 4, k3, padding 1), its inference graph and the graph's executable."""
    lucid.manual_seed(5)
    conv = nn.Conv3d(3, 4, 3, padding=1)
    graph = pipeline.for_inference(lucid.trace(conv, lucid.spec(*SHAPE)))
    return conv, graph, Executable(graph)


def _expected(weight, bias, x) -> np.ndarray:
    return oracle.conv_nd(x.astype(np.float64), np.asarray(weight, np.float64), np.asarray(bias, np.float64),
                          padding=1)


def _check(executable, conv, x, **kwargs) -> None:
    (y,) = executable(x, **kwargs)
    np.testing.assert_allclose(y, _expected(conv.weight.data, conv.bias.data, x), rtol=1e-4, atol=1e-4)


def test_calls_after_the_second_use_the_kept_check_and_see_values_written_in_place(compiled):
    conv, _, executable = compiled
    x = _data(SHAPE, 1)
    _check(executable, conv, x)
    assert executable._bound is None                               # kept once two calls check the same arrays
    _check(executable, conv, x)
    assert executable._bound is not None and executable._bound.holds()
    conv.weight.data[...] = _data(conv.weight.shape, 2)           # an optimiser's step
    conv.bias.data[...] = _data(conv.bias.shape, 3)
    _check(executable, conv, x)


def test_a_tensors_array_swapped_or_a_binding_replaced_is_used(compiled):
    conv, graph, executable = compiled
    x = _data(SHAPE, 4)
    _check(executable, conv, x)
    _check(executable, conv, x)
    conv.weight.data = _data(conv.weight.shape, 5)                 # p.data = ...
    assert not executable._bound.holds()
    _check(executable, conv, x)
    _check(executable, conv, x)
    assert executable._bound.holds()
    name = next(v.name for v in graph.params if graph.bindings[v.name] is conv.bias)
    graph.bindings[name] = lucid.tensor(_data(conv.bias.shape, 6))
    (y,) = executable(x)
    np.testing.assert_allclose(y, _expected(conv.weight.data, graph.bindings[name].data, x), rtol=1e-4, atol=1e-4)


def test_params_given_override_the_bindings_and_the_next_call_reads_the_bindings_again(compiled):
    conv, graph, executable = compiled
    x = _data(SHAPE, 7)
    _check(executable, conv, x)
    names = {id(t): n for n, t in graph.bindings.items()}
    other_weight, other_bias = _data(conv.weight.shape, 8), _data(conv.bias.shape, 9)
    (y,) = executable(x, params={names[id(conv.weight)]: other_weight, names[id(conv.bias)]: other_bias})
    np.testing.assert_allclose(y, _expected(other_weight, other_bias, x), rtol=1e-4, atol=1e-4)
    _check(executable, conv, x)


@pytest.mark.parametrize("change, error", [
    (lambda a: setattr(a, "shape", (a.shape[1], a.shape[0]) + a.shape[2:]), ShapeError),
    (lambda a: setattr(a, "dtype", np.int32), DTypeError),
])
def test_an_array_changed_in_place_into_another_shape_or_dtype_is_refused(compiled, change, error):
    conv, _, executable = compiled
    x = _data(SHAPE, 10)
    _check(executable, conv, x)
    changed = conv.weight.data.copy()
    conv.weight.data = changed
    _check(executable, conv, x)
    _check(executable, conv, x)                                    # kept with the new array
    assert executable._bound.holds()
    change(changed)
    with pytest.raises(error, match="parameter"):
        executable(x)


def test_an_array_given_other_strides_in_place_is_read_as_it_now_is(compiled):
    conv, _, executable = compiled
    x = _data(SHAPE, 11)
    square = _data((4, 4), 12)                                     # the bias as a column of a 4 x 4 array
    column = square[:, 0].copy()
    conv.bias.data = column
    _check(executable, conv, x)
    _check(executable, conv, x)
    assert executable._bound.holds()
    with warnings.catch_warnings():                                # deprecated in NumPy 2.4, still possible
        warnings.simplefilter("ignore", DeprecationWarning)
        column.strides = (0,)                                      # every element reads the first now
    assert not column.flags.c_contiguous
    _check(executable, conv, x)


class _Holder:
    """A parameter value that is no Tensor: NumPy reads its `values` through `__array__`."""

    def __init__(self, values: np.ndarray):
        self.values = values

    def __array__(self, dtype=None, copy=None):
        return self.values


def test_a_binding_that_is_not_the_array_read_is_checked_on_every_call(compiled):
    conv, graph, executable = compiled
    x = _data(SHAPE, 13)
    name = next(v.name for v in graph.params if graph.bindings[v.name] is conv.bias)
    holder = _Holder(_data(4, 14))
    graph.bindings[name] = holder                                  # the same array on each call, via __array__
    for seed in (15, 16):
        for _ in range(2):
            (y,) = executable(x)
            np.testing.assert_allclose(y, _expected(conv.weight.data, holder.values, x), rtol=1e-4, atol=1e-4)
        assert executable._bound is None
        holder.values = _data(4, seed)                             # swapped where no Tensor shows it
    square = _data((4, 4), 17)
    graph.bindings[name] = square[:, 1]                            # not C-contiguous: copied for each call
    for _ in range(2):
        (y,) = executable(x)
        np.testing.assert_allclose(y, _expected(conv.weight.data, square[:, 1], x), rtol=1e-4, atol=1e-4)
        square[:, 1] = _data(4, 18)
    assert executable._bound is None


def test_a_graph_of_symbolic_sizes_keeps_the_check_per_layout_and_stays_right():
    lucid.manual_seed(6)
    conv = nn.Conv3d(3, 4, 3, padding=1)
    graph = pipeline.for_inference(lucid.trace(conv, lucid.spec(lucid.dim("N"), *SHAPE[1:])))
    executable = Executable(graph)
    _check(executable, conv, _data(SHAPE, 15))
    for batch, seed in ((1, 16), (3, 17), (1, 18)):
        x = _data((batch,) + SHAPE[1:], seed)
        _check(executable, conv, x)
        assert executable._bound is not None and executable._bound.layout is executable._layout([x])
        conv.weight.data[...] = _data(conv.weight.shape, seed + 10)
        _check(executable, conv, x)


def test_arrays_swapped_on_every_call_are_checked_each_time_without_making_a_test(compiled, monkeypatch):
    conv, _, executable = compiled
    made = []
    real = _BoundWeights.of
    monkeypatch.setattr(_BoundWeights, "of", classmethod(lambda cls, *a: made.append(1) or real(*a)))
    x = _data(SHAPE, 19)
    for seed in range(20, 25):
        conv.weight.data = _data(conv.weight.shape, seed)          # a new array every call
        _check(executable, conv, x)
    assert not made and executable._bound is None
