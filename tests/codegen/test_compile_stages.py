"""`Compiled.stage_backward` (lucid/compiler.py): the training backward compiled as one stage per
group of parameters, reporting each group's gradients as its stage ends.

Oracle: the eager model. A UNet3D (BatchNorm, skip connections, views) and an MLP whose input
requires grad: after `loss.backward()` through the staged compiled backward, every `.grad` (and the
input's) equals eager's; `on_stage` ran once per group, in group order, with exactly the group's
parameters (those the graph differentiates) and the gradients `.grad` then received; variants
compiled before `stage_backward` are dropped.
"""
from __future__ import annotations

import numpy as np

import lucid
import lucid.nn as nn
from models import UNet3D


def grads_of(model) -> list:
    return [p.grad.numpy().copy() for p in model.parameters()]


def staged_run(model, x, groups: list, input_grad: bool = False):
    calls: list = []
    compiled = lucid.compile(model)
    compiled.stage_backward(groups, lambda k, pairs: calls.append((k, [(p, np.array(g)) for p, g in pairs])))
    inputs = lucid.Tensor(x, requires_grad=input_grad)
    (compiled(inputs) ** 2).sum().backward()
    return compiled, calls, inputs


def eager_grads(model, x, input_grad: bool = False):
    inputs = lucid.Tensor(x, requires_grad=input_grad)
    (model(inputs) ** 2).sum().backward()
    result = grads_of(model), inputs.grad
    model.zero_grad(set_to_none=True)
    return result


def test_a_staged_unet_backward_reports_each_group_in_order_and_matches_eager():
    lucid.manual_seed(0)
    model = UNet3D(in_channels=1, out_channels=2, base=2, depth=1).train()
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8, 8)).astype(np.float32)
    expected, _ = eager_grads(model, x)
    params = list(model.parameters())[::-1]
    groups = [params[k:k + 5] for k in range(0, len(params), 5)]
    compiled, calls, _ = staged_run(model, x, groups)
    assert [k for k, _ in calls] == list(range(len(groups)))
    for (_, pairs), group in zip(calls, groups):
        assert [id(p) for p, _ in pairs] == [id(p) for p in group]
        for p, g in pairs:
            np.testing.assert_array_equal(g, p.grad.numpy())
    for ours, theirs in zip(grads_of(model), expected):        # float32 sums in another order
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max())
    (variant,) = compiled.variants.values()
    assert len(variant.backward.stages) == len(groups)     # every parameter is in a group: no last stage


def test_input_gradients_and_ungrouped_parameters_come_from_the_last_stage():
    lucid.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    x = np.random.default_rng(1).standard_normal((2, 5)).astype(np.float32)
    expected, expected_input = eager_grads(model, x, input_grad=True)
    last = model[2]
    compiled, calls, inputs = staged_run(model, x, [[last.weight], []], input_grad=True)
    assert [(k, [id(p) for p, _ in pairs]) for k, pairs in calls] == [(0, [id(last.weight)]), (1, [])]
    (variant,) = compiled.variants.values()
    assert len(variant.backward.stages) == 2               # the weight's stage, then the rest
    for ours, theirs in zip(grads_of(model), expected):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inputs.grad.numpy(), expected_input.numpy(), rtol=1e-5, atol=1e-6)


def test_stage_backward_drops_the_training_variants_compiled_before():
    lucid.manual_seed(2)
    model = nn.Linear(3, 2)
    compiled = lucid.compile(model)
    x = lucid.Tensor(np.ones((1, 3), np.float32))
    compiled(x).sum().backward()
    before = next(iter(compiled.variants.values()))
    compiled.stage_backward([[model.weight, model.bias]], lambda k, pairs: None)
    assert compiled.variants == {}
    compiled(x).sum().backward()
    after = next(iter(compiled.variants.values()))
    assert after is not before and hasattr(after.backward, "stages")
