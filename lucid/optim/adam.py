"""Adam and AdamW (each optionally AMSGrad)."""
from __future__ import annotations

import math

import numpy as np

from .optimizer import Optimizer, check_range


class Adam(Optimizer):
    """Adam (Kingma & Ba), optionally AMSGrad, with PyTorch's update rule (``torch.optim.Adam``).

    For each parameter with a gradient ``g`` (negated if ``maximize``), at step ``t``::

        g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_hat = max(v_hat, v) if amsgrad else v
        p = p - lr / (1 - beta1**t) * m / (sqrt(v_hat) / sqrt(1 - beta2**t) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, maximize=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))
        self._target_named = None          # LUCID_CPU and LUCID_CPU_FEATURES at this step (see `step`)
        self._addresses = None             # (id(parameter), k) -> the k-th array's address (`KeptAddresses`)
        self._batches = None               # this step's parameters by native call (see `step`)

    def _validate(self, group: dict) -> None:
        check_range(type(self).__name__, "lr", group["lr"], 0.0)
        check_range(type(self).__name__, "eps", group["eps"], 0.0)
        if len(group["betas"]) != 2:
            raise ValueError(f"{type(self).__name__}: invalid betas: expected a pair (beta1, beta2), "
                             f"got {group['betas']!r}")
        check_range(type(self).__name__, "beta1 (betas[0])", group["betas"][0], 0.0, 1.0)
        check_range(type(self).__name__, "beta2 (betas[1])", group["betas"][1], 0.0, 1.0)
        check_range(type(self).__name__, "weight_decay", group["weight_decay"], 0.0)

    #: Whether weight decay scales the weights (AdamW) instead of adding to the gradient (Adam).
    decoupled_decay = False

    def step(self, closure=None):
        """Each parameter's update is queued by `_update` with those of the same rule and scalars,
        and each queue runs as one native call (`lucid/codegen/adam_step.py`) once every parameter
        is queued (also when a later parameter is refused: the ones before it step, as they would
        one at a time)."""
        from ..codegen.adam_step import named_target
        from ..codegen.jit import KeptAddresses

        self._target_named = named_target()     # the CPU the native steps of this call are compiled for
        if self._addresses is None:
            self._addresses = KeptAddresses()
        self._batches = {}
        try:
            return super().step(closure)
        finally:
            batches, self._batches = self._batches, None
            for batch in batches.values():
                batch.run()

    def _update(self, p, grad: np.ndarray, group: dict, state: dict) -> None:
        """Queue one native pass over the parameter's elements (PyTorch's operations in its order,
        bit for bit)."""
        from ..codegen.adam_step import AdamRule

        data = p.data
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(data, order="C"), exp_avg_sq=np.zeros_like(data, order="C"))
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = np.zeros_like(data, order="C")
        state["step"] += 1
        weights = data if data.flags.c_contiguous else np.ascontiguousarray(data)
        if grad.dtype != data.dtype or not grad.flags.c_contiguous or np.may_share_memory(grad, data):
            grad = np.array(grad, data.dtype, order="C")    # a gradient sharing the parameter's memory: as it was
        moments = (state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq", state["exp_avg_sq"]))
        weights_at, *moments_at = (self._addresses((id(p), k), a) for k, a in enumerate((weights,) + moments))
        key = (id(group), data.dtype, state["step"])         # a group's options hold during a step
        batch = self._batches.get(key)
        if batch is None:
            rule = AdamRule(data.dtype, self.decoupled_decay, group["weight_decay"] != 0, group["amsgrad"],
                            group["maximize"])
            scalars = self._scalars(group, state["step"], data.dtype)
            batch = self._batches[key] = _Batch(rule, self._target_named, scalars)
        batch.add((weights_at, grad.ctypes.data, *moments_at), data.size, grad)
        if weights is not data:
            batch.copies.append((data, weights))

    def _scalars(self, group: dict, step: int, dtype: np.dtype) -> np.ndarray:
        """The step's scalars (`adam_step.SCALARS`) in `dtype`."""
        from ..codegen.adam_step import SCALARS

        beta1, beta2 = group["betas"]
        lr, decay = group["lr"], group["weight_decay"]
        values = dict(one_minus_beta1=1 - beta1, beta2=beta2, one_minus_beta2=1 - beta2,
                      bias_correction2_sqrt=math.sqrt(1 - beta2 ** step), eps=group["eps"],
                      step_size=lr / (1 - beta1 ** step), decay=1 - lr * decay if self.decoupled_decay else decay)
        return np.array([values[name] for name in SCALARS], dtype)


class _Batch:
    """The parameters one native call steps (one rule, one step's scalars): their five arrays'
    addresses, sizes, the gradient copies those addresses point into, and the parameters stepped
    through a contiguous copy."""

    def __init__(self, rule, target_named: tuple, scalars: np.ndarray):
        self.rule, self.target_named, self.scalars = rule, target_named, scalars
        self.addresses, self.sizes, self.kept, self.copies = [], [], [], []

    def add(self, addresses: tuple, size: int, grad: np.ndarray) -> None:
        self.addresses.extend(addresses)
        self.sizes.append(size)
        self.kept.append(grad)

    def run(self) -> None:
        from ..codegen.adam_step import adam_step

        addresses, sizes = np.array(self.addresses, np.uintp), np.array(self.sizes, np.int64)
        adam_step(self.rule, self.target_named)(len(self.sizes), addresses.ctypes.data, sizes.ctypes.data,
                                                self.scalars.ctypes.data)
        for data, weights in self.copies:
            np.copyto(data, weights)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``: before
    Adam's step (with no decay in the gradient), ``p = p * (1 - lr * weight_decay)``."""

    decoupled_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
