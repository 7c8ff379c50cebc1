"""Stochastic gradient descent with optional momentum, dampening, Nesterov and weight decay."""
from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, check_range


class SGD(Optimizer):
    """Stochastic gradient descent, with PyTorch's update rule (``torch.optim.SGD``).

    For each parameter with a gradient ``g`` (negated if ``maximize``)::

        g = g + weight_decay * p
        b = g (first step) or momentum * b + (1 - dampening) * g    # if momentum != 0
        g = g + momentum * b if nesterov else b                     # if momentum != 0
        p = p - lr * g
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _validate(self, group: dict) -> None:
        check_range("SGD", "lr", group["lr"], 0.0)
        check_range("SGD", "momentum", group["momentum"], 0.0)
        check_range("SGD", "weight_decay", group["weight_decay"], 0.0)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: nesterov=True requires momentum > 0 and dampening == 0, got "
                             f"momentum={group['momentum']!r}, dampening={group['dampening']!r}")

    def _update(self, p, grad: np.ndarray, group: dict, state: dict) -> None:
        grad = -grad if group["maximize"] else grad
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * p.data
        momentum = group["momentum"]
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(grad, dtype=p.data.dtype)
            else:
                buf *= momentum
                buf += (1 - group["dampening"]) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        data = p.data  # update the array in place (assigning p.data would copy it)
        data -= group["lr"] * grad
