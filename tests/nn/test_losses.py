"""The loss functions and modules against NumPy oracles written from their definitions, finite
differences, PyTorch (when installed) and their compiled form.

Sizes are odd (3 samples, 5 classes, 7 positions) so no axis is mistaken for another. Inputs are
float64 and drawn away from kinks (|d| not near 0 or beta) so central differences are exact to ~1e-7.
"""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
from lucid import DTypeError, ShapeError

F64 = lucid.float64
REDUCTIONS = ["mean", "sum", "none"]
rng = np.random.default_rng(19)


# ----------------------------------------------------------------------------------------------
# NumPy oracles


def reduce(loss: np.ndarray, reduction: str) -> np.ndarray:
    return {"mean": loss.mean, "sum": loss.sum, "none": lambda: loss}[reduction]()


def log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def nll_oracle(logp, target, weight=None, ignore_index=-100, reduction="mean", smoothing=0.0):
    """Class-index targets: per position -(1-e) w[t] logp[t] - e/C sum_c w[c] logp[c]; the mean
    divides by the summed w[t] of the positions not ignored."""
    classes = logp.shape[1]
    weight = np.ones(classes) if weight is None else weight
    rows = np.moveaxis(logp, 1, -1).reshape(-1, classes)
    labels = target.reshape(-1)
    losses, total_weight = np.zeros(len(labels)), 0.0
    for i, label in enumerate(labels):
        if label == ignore_index:
            continue
        total_weight += weight[label]
        smooth = -(weight * rows[i]).sum() / classes
        losses[i] = (1 - smoothing) * -weight[label] * rows[i, label] + smoothing * smooth
    if reduction == "mean":
        return losses.sum() / total_weight
    return reduce(losses.reshape(target.shape), reduction)


def soft_cross_entropy_oracle(x, probs, weight=None, reduction="mean", smoothing=0.0):
    classes = x.shape[1]
    probs = (1 - smoothing) * probs + smoothing / classes
    weight = np.ones(classes) if weight is None else weight
    shape = (1, classes) + (1,) * (x.ndim - 2)
    return reduce(-(log_softmax(x, 1) * probs * weight.reshape(shape)).sum(axis=1), reduction)


def bce_oracle(p, t, weight=None, reduction="mean"):
    loss = -(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log(1 - p), -100))
    return reduce(loss * (1 if weight is None else weight), reduction)


def bce_logits_oracle(x, t, weight=None, reduction="mean", pos_weight=None):
    log_sig, log_one_minus_sig = -np.logaddexp(0, -x), -np.logaddexp(0, x)
    pos_weight = 1 if pos_weight is None else pos_weight
    loss = -(pos_weight * t * log_sig + (1 - t) * log_one_minus_sig)
    return reduce(loss * (1 if weight is None else weight), reduction)


def smooth_l1_oracle(x, t, reduction="mean", beta=1.0):
    d = np.abs(x - t)
    return reduce(np.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta) if beta else d, reduction)


# ----------------------------------------------------------------------------------------------
# Cases: (name, module factory, functional call, oracle, input array, target array)


def away_from(values: np.ndarray, kinks: tuple, margin: float = 0.05) -> np.ndarray:
    """`values` nudged so that none lies within `margin` of a kink."""
    for kink in kinks:
        near = np.abs(values - kink) < margin
        values = np.where(near, kink + np.where(values >= kink, margin, -margin) * 2, values)
    return values


def class_targets(shape, classes, ignored=1):
    t = rng.integers(0, classes, shape)
    t.reshape(-1)[:ignored] = -100
    return t


def make_cases():
    x = rng.standard_normal((3, 5, 7))
    t_same = x + away_from(rng.standard_normal((3, 5, 7)), (0.0, -1.0, 1.0, -0.5, 0.5))
    weight = rng.uniform(0.5, 2.0, 5)
    probs = np.exp(log_softmax(rng.standard_normal((3, 5, 7)), 1))
    labels = class_targets((3, 7), 5)
    p = rng.uniform(0.05, 0.95, (3, 5, 7))
    bits = (rng.random((3, 5, 7)) > 0.5).astype(float)
    pos_weight = rng.uniform(0.5, 3.0, 7)
    return [
        ("mse", lambda r: nn.MSELoss(reduction=r), lambda a, b, r: F.mse_loss(a, b, reduction=r),
         lambda a, b, r: reduce((a - b) ** 2, r), x, t_same),
        ("l1", lambda r: nn.L1Loss(reduction=r), lambda a, b, r: F.l1_loss(a, b, reduction=r),
         lambda a, b, r: reduce(np.abs(a - b), r), x, t_same),
        ("smooth_l1", lambda r: nn.SmoothL1Loss(reduction=r), lambda a, b, r: F.smooth_l1_loss(a, b, r),
         smooth_l1_oracle, x, t_same),
        ("smooth_l1_beta", lambda r: nn.SmoothL1Loss(reduction=r, beta=0.5),
         lambda a, b, r: F.smooth_l1_loss(a, b, r, beta=0.5),
         lambda a, b, r: smooth_l1_oracle(a, b, r, 0.5), x, t_same),
        ("cross_entropy", lambda r: nn.CrossEntropyLoss(reduction=r), lambda a, b, r: F.cross_entropy(a, b, reduction=r),
         lambda a, b, r: nll_oracle(log_softmax(a, 1), b, reduction=r), x, labels),
        ("cross_entropy_weighted_smoothed",
         lambda r: nn.CrossEntropyLoss(lucid.tensor(weight, dtype=F64), reduction=r, label_smoothing=0.2),
         lambda a, b, r: F.cross_entropy(a, b, lucid.tensor(weight, dtype=F64), reduction=r, label_smoothing=0.2),
         lambda a, b, r: nll_oracle(log_softmax(a, 1), b, weight, reduction=r, smoothing=0.2), x, labels),
        ("cross_entropy_ignoring_class_2",
         lambda r: nn.CrossEntropyLoss(lucid.tensor(weight, dtype=F64), ignore_index=2, reduction=r),
         lambda a, b, r: F.cross_entropy(a, b, lucid.tensor(weight, dtype=F64), ignore_index=2, reduction=r),
         lambda a, b, r: nll_oracle(log_softmax(a, 1), b, weight, ignore_index=2, reduction=r), x, np.where(labels < 0, 2, labels)),
        ("cross_entropy_probabilities",
         lambda r: nn.CrossEntropyLoss(lucid.tensor(weight, dtype=F64), reduction=r, label_smoothing=0.1),
         lambda a, b, r: F.cross_entropy(a, b, lucid.tensor(weight, dtype=F64), reduction=r, label_smoothing=0.1),
         lambda a, b, r: soft_cross_entropy_oracle(a, b, weight, r, 0.1), x, probs),
        ("nll", lambda r: nn.NLLLoss(lucid.tensor(weight, dtype=F64), reduction=r),
         lambda a, b, r: F.nll_loss(a, b, lucid.tensor(weight, dtype=F64), reduction=r),
         lambda a, b, r: nll_oracle(a, b, weight, reduction=r), log_softmax(x, 1), labels),
        ("bce", lambda r: nn.BCELoss(reduction=r), lambda a, b, r: F.binary_cross_entropy(a, b, reduction=r),
         lambda a, b, r: bce_oracle(a, b, reduction=r), p, bits),
        ("bce_weighted", lambda r: nn.BCELoss(lucid.tensor(weight.reshape(5, 1), dtype=F64), reduction=r),
         lambda a, b, r: F.binary_cross_entropy(a, b, lucid.tensor(weight.reshape(5, 1), dtype=F64), r),
         lambda a, b, r: bce_oracle(a, b, weight.reshape(5, 1), r), p, bits),
        ("bce_with_logits", lambda r: nn.BCEWithLogitsLoss(reduction=r),
         lambda a, b, r: F.binary_cross_entropy_with_logits(a, b, reduction=r),
         lambda a, b, r: bce_logits_oracle(a, b, reduction=r), 4 * x, bits),
        ("bce_with_logits_pos_weight",
         lambda r: nn.BCEWithLogitsLoss(lucid.tensor(weight.reshape(5, 1), dtype=F64), reduction=r,
                                        pos_weight=lucid.tensor(pos_weight, dtype=F64)),
         lambda a, b, r: F.binary_cross_entropy_with_logits(a, b, lucid.tensor(weight.reshape(5, 1), dtype=F64), r,
                                                            lucid.tensor(pos_weight, dtype=F64)),
         lambda a, b, r: bce_logits_oracle(a, b, weight.reshape(5, 1), r, pos_weight), 4 * x, bits),
    ]


CASES = make_cases()
IDS = [case[0] for case in CASES]


def as_tensors(x: np.ndarray, target: np.ndarray, requires_grad: bool = False):
    kind = F64 if target.dtype.kind == "f" else lucid.int64
    return lucid.tensor(x, requires_grad=requires_grad, dtype=F64), lucid.tensor(target, dtype=kind)


def finite_difference_grad(fn, x: np.ndarray, seed: np.ndarray, step: float = 1e-5) -> np.ndarray:
    """d(sum(seed * fn(x)))/dx by central differences."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += step
        down[i] -= step
        grad[i] = (np.sum(seed * fn(up)) - np.sum(seed * fn(down))) / (2 * step)
    return grad


# ----------------------------------------------------------------------------------------------
# Values and gradients


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_module_and_function_match_the_numpy_oracle(case, reduction):
    _, module, function, oracle, x, target = case
    expected = oracle(x, target, reduction)
    for loss in (module(reduction)(*as_tensors(x, target)), function(*as_tensors(x, target), reduction)):
        assert loss.shape == np.shape(expected) and loss.dtype == F64
        np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_matches_finite_differences(case, reduction):
    _, module, _, oracle, x, target = case
    xt, tt = as_tensors(x, target, requires_grad=True)
    loss = module(reduction)(xt, tt)
    seed = rng.standard_normal(loss.shape)
    loss.backward(seed)
    expected = finite_difference_grad(lambda a: oracle(a, target, reduction), x, seed)
    np.testing.assert_allclose(xt.grad.numpy(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_compiled_loss_and_gradient_equal_eager(case):
    _, module, _, _, x, target = case
    loss = module("mean")
    fast = lucid.compile(loss)
    results = []
    for fn in (fast, loss):
        xt, tt = as_tensors(x, target, requires_grad=True)
        value = fn(xt, tt)
        value.backward()
        results.append((value.numpy(), xt.grad.numpy()))
    (compiled, compiled_grad), (eager, eager_grad) = results
    np.testing.assert_allclose(compiled, eager, rtol=1e-10)
    np.testing.assert_allclose(compiled_grad, eager_grad, rtol=1e-9, atol=1e-14)


def test_compiled_loss_of_float32_model_output():
    model = nn.Sequential(nn.Linear(7, 5))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    step = lucid.compile(lambda x, t: loss_fn(model(x), t))
    x, t = lucid.randn(3, 7), lucid.tensor([0, 4, 2])
    compiled = step(x, t)
    compiled.backward()
    compiled_grad = model[0].weight.grad.numpy().copy()
    model.zero_grad()
    eager = loss_fn(model(x), t)
    eager.backward()
    np.testing.assert_allclose(compiled.numpy(), eager.numpy(), rtol=1e-5)
    np.testing.assert_allclose(compiled_grad, model[0].weight.grad.numpy(), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Edges PyTorch defines


def test_bce_clamps_each_log_at_minus_100_and_stays_finite():
    p = lucid.tensor([0.0, 1.0, 0.0, 1.0], requires_grad=True, dtype=F64)
    t = lucid.tensor([1.0, 0.0, 0.0, 1.0], dtype=F64)
    loss = F.binary_cross_entropy(p, t, reduction="none")
    np.testing.assert_array_equal(loss.numpy(), [100.0, 100.0, 0.0, 0.0])
    loss.sum().backward()
    assert np.all(np.isfinite(p.grad.numpy()))


def test_bce_with_logits_is_stable_for_large_logits():
    x = lucid.tensor([-1000.0, 1000.0, 0.0, 60.0], requires_grad=True)
    t = lucid.tensor([1.0, 0.0, 1.0, 1.0])
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    np.testing.assert_allclose(loss.numpy(), [1000.0, 1000.0, np.log(2.0), 0.0], atol=1e-6)
    loss.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [-1.0, 1.0, -0.5, 0.0], atol=1e-6)    # sigmoid(x) - t


def test_cross_entropy_on_unbatched_logits_and_all_ignored_mean():
    x = np.array([1.0, 2.0, 0.5])
    loss = F.cross_entropy(lucid.tensor(x, dtype=F64), lucid.tensor(1))
    np.testing.assert_allclose(loss.item(), -log_softmax(x, 0)[1])
    ignored = F.cross_entropy(lucid.tensor([[1.0, 2.0]]), lucid.tensor([-100]))
    assert np.isnan(ignored.item())            # 0 / 0, as PyTorch


def test_loss_weights_are_buffers_in_the_state_dict():
    weight = lucid.tensor([1.0, 2.0, 3.0])
    assert list(nn.CrossEntropyLoss(weight).state_dict()) == ["weight"]
    assert list(nn.BCEWithLogitsLoss(pos_weight=weight).state_dict()) == ["pos_weight"]
    assert list(nn.MSELoss().state_dict()) == []
    assert "reduction='sum'" in repr(nn.L1Loss(reduction="sum"))


# ----------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("module, x, target, error, words", [
    (nn.MSELoss(), lucid.randn(3, 4), lucid.randn(4, 3), ShapeError, ["MSELoss", "mse_loss", "(3, 4)", "(4, 3)"]),
    (nn.L1Loss(), lucid.randn(3), lucid.randn(3, 1), ShapeError, ["L1Loss", "l1_loss", "(3,)", "(3, 1)"]),
    (nn.MSELoss(), lucid.tensor([1, 2]), lucid.tensor([1, 2]), DTypeError, ["mse_loss", "floating", "int64"]),
    (nn.CrossEntropyLoss(), lucid.randn(3, 5), lucid.tensor([1, 2]), ShapeError,
     ["CrossEntropyLoss", "cross_entropy", "(3,)", "(2,)"]),
    (nn.CrossEntropyLoss(), lucid.randn(3, 5), lucid.tensor([True, False, True]), DTypeError,
     ["cross_entropy", "int64", "bool"]),
    (nn.CrossEntropyLoss(), lucid.randn(3, 5), lucid.randn(3, 4), ShapeError, ["cross_entropy", "(3, 5)", "(3, 4)"]),
    (nn.NLLLoss(), lucid.randn(3, 5), lucid.tensor([0, 5, 1]), ShapeError, ["nll_loss", "[0, 5)"]),
    (nn.BCELoss(), lucid.tensor([0.5, 1.5]), lucid.tensor([0.0, 1.0]), ShapeError,
     ["binary_cross_entropy", "[0, 1]", "1.5"]),
    (nn.BCELoss(), lucid.rand(2, 3), lucid.rand(3, 2), ShapeError, ["BCELoss", "(2, 3)", "(3, 2)"]),
    (nn.BCEWithLogitsLoss(pos_weight=lucid.ones(4)), lucid.randn(2, 3), lucid.rand(2, 3), ShapeError,
     ["binary_cross_entropy_with_logits", "pos_weight", "(4,)"]),
    (nn.CrossEntropyLoss(lucid.ones(4)), lucid.randn(3, 5), lucid.tensor([0, 1, 2]), ShapeError,
     ["cross_entropy", "weight", "(5,)", "(4,)"]),
])
def test_bad_targets_raise_errors_naming_the_loss(module, x, target, error, words):
    with pytest.raises(error) as info:
        module(x, target)
    for word in words:
        assert word in str(info.value)


def test_bad_arguments_are_refused_at_construction():
    with pytest.raises(ShapeError, match="MSELoss: reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ShapeError, match="label_smoothing"):
        F.cross_entropy(lucid.randn(2, 3), lucid.tensor([0, 1]), label_smoothing=1.5)
    with pytest.raises(TypeError):
        nn.MSELoss("sum")       # PyTorch's first positional argument is the deprecated size_average


# ----------------------------------------------------------------------------------------------
# PyTorch


#: Each case's PyTorch class and arguments besides the reduction and the buffers (weight, pos_weight).
TORCH_TWINS = {
    "mse": ("MSELoss", {}), "l1": ("L1Loss", {}), "smooth_l1": ("SmoothL1Loss", {}),
    "smooth_l1_beta": ("SmoothL1Loss", {"beta": 0.5}), "cross_entropy": ("CrossEntropyLoss", {}),
    "cross_entropy_weighted_smoothed": ("CrossEntropyLoss", {"label_smoothing": 0.2}),
    "cross_entropy_ignoring_class_2": ("CrossEntropyLoss", {"ignore_index": 2}),
    "cross_entropy_probabilities": ("CrossEntropyLoss", {"label_smoothing": 0.1}), "nll": ("NLLLoss", {}),
    "bce": ("BCELoss", {}), "bce_weighted": ("BCELoss", {}), "bce_with_logits": ("BCEWithLogitsLoss", {}),
    "bce_with_logits_pos_weight": ("BCEWithLogitsLoss", {}),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_pytorch(case, reduction):
    torch = pytest.importorskip("torch")
    name, module, _, _, x, target = case
    loss_module = module(reduction)
    xt, tt = as_tensors(x, target, requires_grad=True)
    loss = loss_module(xt, tt)
    seed = rng.standard_normal(loss.shape)
    loss.backward(seed)
    cls, kwargs = TORCH_TWINS[name]
    buffers = {key: torch.tensor(value) for key, value in loss_module.state_dict().items()}
    twin = getattr(torch.nn, cls)(reduction=reduction, **kwargs, **buffers)
    tx = torch.tensor(x, requires_grad=True)
    tloss = twin(tx, torch.tensor(target))
    tloss.backward(torch.tensor(seed))
    np.testing.assert_allclose(loss.numpy(), tloss.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-12)
