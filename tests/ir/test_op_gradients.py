"""Finite-difference gradient checks of every differentiable operator in the registry.

Each registered operator with `differentiable = True` must have an entry in `CASES` (the shared table
in tests/gradient_cases.py): a list of small example calls, written with lucid's public operator
functions (`lucid.ir.ops`) or `lucid.nn.functional`.
For each call, the analytic gradient of the scalar loss `(y * G).sum()` (G a fixed random tensor of
the output's shape, so every output element matters) is compared, for every float64 input, with
central finite differences. The inputs are drawn away from kinks (relu/abs/leaky_relu/clamp not near
their break points, max/min/maximum/minimum/max_pool without ties, log/sqrt/pow of positive values).

`test_every_differentiable_op_has_a_gradient_case` fails when an operator is added to the registry
without a gradient case in the table, and each case checks that its target operator really runs in it.
Non-differentiable operators (comparisons, sign, argmax, one_hot, the *_grad operators) are checked to
give outputs that do not require grad even from inputs that do.
"""
from __future__ import annotations

import numpy as np
import pytest

import lucid
from gradient_cases import CASES, F64, away, differentiable_ops, flat_cases, rnd
from gradient_cases import forward as _forward
from gradient_cases import loss_weights as _loss_weights
from lucid.ir import ops


# ----------------------------------------------------------------------------------------------
# The checks


def test_every_differentiable_op_has_a_gradient_case():
    missing = sorted(differentiable_ops() - set(CASES))
    assert not missing, f"differentiable operators without a gradient case in CASES: {missing}"


def test_gradient_table_names_only_registered_differentiable_ops():
    registry = ops.all_ops()
    unknown = sorted(n for n in CASES if n not in registry or not registry[n].differentiable)
    assert not unknown, f"CASES entries that are not registered differentiable operators: {unknown}"
    assert all(CASES[n] for n in CASES), "every entry needs at least one case"


@pytest.mark.parametrize("op_name, case", list(flat_cases()))
def test_gradient_matches_finite_differences(op_name, case, monkeypatch):
    # Record the operators the call runs, to be sure the case exercises `op_name`.
    seen = []
    original = lucid.Tensor.__dict__["_lucid_apply"].__func__

    def recording_apply(cls, opdef, inputs, attrs):
        seen.append(opdef.name)
        return original(cls, opdef, inputs, attrs)

    monkeypatch.setattr(lucid.Tensor, "_lucid_apply", classmethod(recording_apply))
    tensors, y = _forward(case, case.arrays, True)
    monkeypatch.undo()
    assert op_name in seen, f"case {case.label!r} never applies operator {op_name!r} (ran {seen})"
    assert y.dtype == F64, f"{op_name}: float64 inputs gave a {y.dtype} output"
    assert y.requires_grad, f"{op_name}: output of differentiable inputs does not require grad"

    G = _loss_weights(y.shape)
    loss = (y * lucid.Tensor(G, dtype=F64)).sum()
    assert loss.shape == ()
    loss.backward()

    def f(arrays):
        with lucid.no_grad():
            _, out = _forward(case, arrays, False)
        assert out.shape == y.shape
        return float(np.sum(out.data * G))

    eps = 1e-6
    arrays = [np.array(a, dtype=np.float64) for a in case.arrays]
    for i, (t, a) in enumerate(zip(tensors, arrays)):
        assert t.grad is not None, f"{op_name}: input {i} got no gradient"
        assert t.grad.shape == a.shape, f"{op_name}: grad of input {i} has shape {t.grad.shape}, input {a.shape}"
        assert t.grad.dtype == F64
        numeric = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            saved = a[idx]
            a[idx] = saved + eps
            up = f(arrays)
            a[idx] = saved - eps
            down = f(arrays)
            a[idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(t.grad.data, numeric, rtol=case.rtol, atol=case.atol,
                                   err_msg=f"{op_name} {case.label}: gradient of input {i} (shape {a.shape})")


# ----------------------------------------------------------------------------------------------
# Exact (non finite-difference) gradient facts


def test_cast_to_float32_gradient_comes_back_as_float64():
    x = lucid.Tensor(rnd(2, 3), dtype=F64, requires_grad=True)
    y = ops.cast(x, lucid.float32)
    assert y.dtype == lucid.float32 and y.requires_grad
    G = _loss_weights((2, 3)).astype(np.float32)
    (y * lucid.Tensor(G)).sum().backward()
    assert x.grad.dtype == F64
    np.testing.assert_array_equal(x.grad.data, G.astype(np.float64))


def test_maximum_minimum_split_the_gradient_on_ties():
    # PyTorch: on ties d max(x, y) / dx = d max(x, y) / dy = 1/2.
    x = lucid.Tensor([1.0, 2.0, 3.0], dtype=F64, requires_grad=True)
    y = lucid.Tensor([1.0, 5.0, 3.0], dtype=F64, requires_grad=True)
    (ops.maximum(x, y) * lucid.Tensor([2.0, 4.0, 6.0], dtype=F64)).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [1.0, 0.0, 3.0])
    np.testing.assert_array_equal(y.grad.data, [1.0, 4.0, 3.0])


def test_clamp_gradient_passes_at_the_bounds():
    # PyTorch's clamp backward passes the gradient where min <= x <= max (bounds included).
    x = lucid.Tensor([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=F64, requires_grad=True)
    ops.clamp(x, -0.5, 0.5).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [0.0, 1.0, 1.0, 1.0, 0.0])


def test_relu_gradient_at_zero_is_zero():
    x = lucid.Tensor([-1.0, 0.0, 2.0], dtype=F64, requires_grad=True)
    ops.relu(x).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.0, 1.0])


def test_leaf_gradients_accumulate_over_two_backward_calls():
    x = lucid.Tensor(rnd(3), dtype=F64, requires_grad=True)
    (x * 2.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad.data, np.full(3, 5.0))


# ----------------------------------------------------------------------------------------------
# Non-differentiable operators


def _grad_input(*shape):
    return lucid.Tensor(rnd(*shape), dtype=F64, requires_grad=True)


def _pool_attrs(rank):
    return dict(kernel=(2,) * rank, stride=(1,) * rank, padding=(0,) * rank)


NONDIFF = {
    "sign": lambda: ops.sign(_grad_input(3)),
    "eq": lambda: ops.eq(_grad_input(3), _grad_input(3)),
    "ne": lambda: _grad_input(2, 2) != 0.5,
    "lt": lambda: ops.lt(_grad_input(3), 0.0),
    "le": lambda: _grad_input(3) <= _grad_input(1),
    "gt": lambda: _grad_input(3) > 0.0,
    "ge": lambda: ops.ge(_grad_input(2, 3), _grad_input(3)),
    "argmax": lambda: ops.argmax(_grad_input(3, 4), 1),
    "one_hot": lambda: ops.one_hot(lucid.Tensor([0, 2, 1]), 3),
    "conv_weight_grad": lambda: ops.emit("conv_weight_grad", _grad_input(1, 2, 5), _grad_input(1, 3, 4),
                                         kernel_size=(2,), stride=(1,), padding=((0, 0),), dilation=(1,), groups=1),
    "max_pool_grad": lambda: ops.emit("max_pool_grad", _grad_input(1, 1, 4, 4), _grad_input(1, 1, 3, 3),
                                      dilation=(1, 1), ceil_mode=False, **_pool_attrs(2)),
    "avg_pool_grad": lambda: ops.emit("avg_pool_grad", _grad_input(1, 1, 3), input_shape=(1, 1, 4), ceil_mode=False,
                                      count_include_pad=True, divisor_override=None, **_pool_attrs(1)),
    "resample_grad": lambda: ops.emit("resample_grad", _grad_input(1, 2, 5), axis=2, size=5, input_size=3,
                                      mode="linear", align_corners=False, scale=None),
    "fused": lambda: ops.emit("fused", _grad_input(3), body=lucid.ir.parse(_FUSED_BODY)),
    "random": lambda: ops.random_values(lucid.Tensor([5, 0], dtype=lucid.int64), (3,), "float64", "uniform", 0),
    "size": lambda: ops.size_value(_grad_input(3), 12),
}
_FUSED_BODY = "graph body {\n  input %in0: f64[3]\n  %0: f64[3] = exp(%in0)\n  return %0\n}"


def test_every_non_differentiable_op_has_a_case():
    nondiff = {name for name, op in ops.all_ops().items() if not op.differentiable}
    assert sorted(nondiff - set(NONDIFF)) == [], "non-differentiable operators without a requires_grad check"


@pytest.mark.parametrize("op_name", sorted(NONDIFF))
def test_non_differentiable_op_output_does_not_require_grad(op_name):
    y = NONDIFF[op_name]()
    assert y.grad_fn is None and y.is_leaf
    assert not y.requires_grad, f"{op_name}: output requires grad"


def test_integer_cast_of_a_grad_tensor_does_not_require_grad():
    # PyTorch: torch.randn(3, requires_grad=True).long().requires_grad is False (integers carry no grad).
    x = _grad_input(3)
    y = x.long()
    assert y.dtype == lucid.int64
    assert not y.requires_grad, "cast to int64 of a tensor requiring grad gave an integer tensor requiring grad"


def test_comparison_result_used_in_where_keeps_gradient_flowing():
    x = lucid.Tensor(away(6), dtype=F64, requires_grad=True)
    y = ops.where(x > 0.0, x * 2.0, x * -3.0)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, np.where(x.data > 0, 2.0, -3.0))
