"""The autograd hooks: post-accumulate-grad hooks on leaves and end-of-backward callbacks, eager and compiled."""
import numpy as np
import pytest

import lucid
from lucid import autograd, nn


def test_the_hook_sees_the_complete_gradient_once_per_backward():
    w = lucid.Tensor([1.0, 2.0], requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    (w * 3 + w * w).sum().backward()          # two paths into w: the hook runs after both
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], 3 + 2 * np.array([1.0, 2.0]))
    (w * 2).sum().backward()                  # accumulates into .grad; the hook sees the sum
    np.testing.assert_allclose(seen[1], seen[0] + 2)


def test_callbacks_run_after_every_hook_and_removed_hooks_stop():
    a, b = lucid.Tensor([1.0], requires_grad=True), lucid.Tensor([2.0], requires_grad=True)
    events = []

    def hook(t):
        events.append("a" if t is a else "b")
        if len(events) == 1:
            autograd.queue_callback(lambda: events.append("end"))

    handle = a.register_post_accumulate_grad_hook(hook)
    b.register_post_accumulate_grad_hook(hook)
    (a * b).sum().backward()
    assert sorted(events[:2]) == ["a", "b"] and events[2:] == ["end"]
    handle.remove()
    events.clear()
    (a * b).sum().backward()
    assert events == ["b", "end"]


def test_hook_and_callback_refusals():
    w = lucid.Tensor([1.0], requires_grad=True)
    with pytest.raises(lucid.GradientError, match="leaf"):
        (w * 2).register_post_accumulate_grad_hook(print)
    with pytest.raises(lucid.GradientError, match="no backward is running"):
        autograd.queue_callback(print)


def test_hooks_run_for_the_parameters_of_a_compiled_backward():
    lucid.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    ready = []
    for p in model.parameters():
        p.register_post_accumulate_grad_hook(lambda t: ready.append((id(t), t.grad is not None)))
    lucid.compile(model)(lucid.randn(2, 3)).sum().backward()
    assert sorted(ready) == sorted((id(p), True) for p in model.parameters())
