"""Learning-rate schedules under PyTorch's names (``torch.optim.lr_scheduler``).

A scheduler sets each parameter group's ``"lr"`` when it is made (epoch 0) and at each ``step()``.
The schedules are written in closed form from the groups' base rates (``"initial_lr"``, recorded in
each group as PyTorch does), so ``step(epoch)`` may jump to any epoch; a rate set by hand on a group
lasts until the next step (PyTorch's chainable schedules would scale it instead).
``state_dict()`` is the scheduler's plain attributes (without the optimiser, or LambdaLR's functions).
"""
from __future__ import annotations

import math
from bisect import bisect_right

from .optimizer import Optimizer


class LRScheduler:
    """Base class: subclasses give ``lr_at(epoch)``, one rate per parameter group."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected a lucid.optim Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise ValueError(f"{type(self).__name__}: resuming at last_epoch={last_epoch} needs "
                                 f"'initial_lr' in parameter group {i}")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def lr_at(self, epoch: int) -> list[float]:
        raise NotImplementedError

    def step(self, epoch: int | None = None) -> None:
        """Advance one epoch (or go to `epoch`) and set the groups' rates."""
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        self._last_lr = [float(lr) for lr in self.lr_at(self.last_epoch)]
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def get_last_lr(self) -> list[float]:
        """The rates the last step set, one per parameter group."""
        return list(self._last_lr)

    _unsaved = ("optimizer",)

    def state_dict(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key not in self._unsaved}

    def load_state_dict(self, state_dict: dict) -> None:
        unknown = set(state_dict) - set(self.state_dict())
        if unknown:
            raise ValueError(f"{type(self).__name__}.load_state_dict: unknown entries {sorted(unknown)}")
        self.__dict__.update(state_dict)


def _per_group(optimizer: Optimizer, value, name: str) -> list:
    """One value per parameter group: a list of them, or one for all."""
    count = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(f"expected {count} values of {name} (one per parameter group), got {len(value)}")
        return list(value)
    return [value] * count


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(epoch); `lr_lambda` is a function or one per group."""

    _unsaved = ("optimizer", "lr_lambdas")

    def __init__(self, optimizer: Optimizer, lr_lambda, last_epoch: int = -1):
        self.lr_lambdas = _per_group(optimizer, lr_lambda, "lr_lambda")
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        return [base * fn(epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas)]


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        if not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be a positive int, got {step_size!r}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        return [base * self.gamma ** (epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """lr = base_lr * gamma ** (the number of milestones reached by `epoch`)."""

    def __init__(self, optimizer: Optimizer, milestones, gamma: float = 0.1, last_epoch: int = -1):
        self.milestones, self.gamma = sorted(milestones), gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        return [base * self.gamma ** bisect_right(self.milestones, epoch) for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """lr = base_lr * gamma ** epoch."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        return [base * self.gamma ** epoch for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2 (SGDR without restarts;
    past T_max the cosine goes on, back up to base_lr at 2 * T_max)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        if not T_max > 0:
            raise ValueError(f"CosineAnnealingLR: T_max must be positive, got {T_max!r}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        return [_cosine(base, self.eta_min, epoch / self.T_max) for base in self.base_lrs]


def _cosine(start: float, end: float, fraction: float) -> float:
    """From `start` (fraction 0) to `end` (fraction 1) along half a cosine."""
    return end + (start - end) / 2 * (1 + math.cos(math.pi * fraction))


def _linear(start: float, end: float, fraction: float) -> float:
    return start + (end - start) * fraction


class OneCycleLR(LRScheduler):
    """The one-cycle policy (Smith & Topin): the rate rises from max_lr / div_factor to max_lr over
    the first pct_start of total_steps, then falls to that initial rate / final_div_factor. With
    three_phase, it falls back to the initial rate over a second phase as long as the first, then to
    the final one. Annealing is `anneal_strategy` "cos" or "linear". With cycle_momentum, the
    momentum (SGD's ``momentum`` or Adam's beta1) moves the opposite way, between max_momentum and
    base_momentum. Stepping past total_steps raises ValueError."""

    def __init__(self, optimizer: Optimizer, max_lr, total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum=0.85, max_momentum=0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False,
                 last_epoch: int = -1):
        self.total_steps = _total_steps(total_steps, epochs, steps_per_epoch)
        if not 0 <= pct_start <= 1:
            raise ValueError(f"OneCycleLR: pct_start must be in [0, 1], got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.anneal_strategy, self.cycle_momentum = anneal_strategy, bool(cycle_momentum)
        rise = float(pct_start * self.total_steps) - 1
        # (last step of the phase, rate key at its start, at its end, momentum key at start, at end)
        self.phases = ([(rise, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                        (2 * rise, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                        (self.total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
                       if three_phase else
                       [(rise, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                        (self.total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")])
        groups = optimizer.param_groups
        if last_epoch == -1:
            for group, top in zip(groups, _per_group(optimizer, max_lr, "max_lr")):
                group.update(initial_lr=top / div_factor, max_lr=top, min_lr=top / div_factor / final_div_factor)
        if self.cycle_momentum:
            self._momentum_key = _momentum_key(optimizer)
            if last_epoch == -1:
                for group, low, high in zip(groups, _per_group(optimizer, base_momentum, "base_momentum"),
                                            _per_group(optimizer, max_momentum, "max_momentum")):
                    group.update(base_momentum=low, max_momentum=high)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        return [self._anneal(group, epoch, 1, 2) for group in self.optimizer.param_groups]

    def step(self, epoch: int | None = None) -> None:
        super().step(epoch)
        if self.cycle_momentum:
            for group in self.optimizer.param_groups:
                _set_momentum(group, self._momentum_key, self._anneal(group, self.last_epoch, 3, 4))

    def _anneal(self, group: dict, epoch: int, start: int, end: int) -> float:
        """The value at `epoch` of the quantity whose phase keys are columns start and end of phases."""
        if epoch > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {epoch} times, past total_steps={self.total_steps}")
        anneal = _cosine if self.anneal_strategy == "cos" else _linear
        first = 0.0
        for i, phase in enumerate(self.phases):
            last = phase[0]
            if epoch <= last or i == len(self.phases) - 1:
                return anneal(group[phase[start]], group[phase[end]], (epoch - first) / (last - first))
            first = last
        raise AssertionError("unreachable: the last phase takes every step")


def _total_steps(total_steps, epochs, steps_per_epoch) -> int:
    if total_steps is None:
        if not all(isinstance(n, int) and n > 0 for n in (epochs, steps_per_epoch)):
            raise ValueError(f"OneCycleLR: give total_steps, or epochs and steps_per_epoch, as positive ints; "
                             f"got epochs={epochs!r}, steps_per_epoch={steps_per_epoch!r}")
        total_steps = epochs * steps_per_epoch
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"OneCycleLR: total_steps must be a positive int, got {total_steps!r}")
    return total_steps


def _momentum_key(optimizer: Optimizer) -> str:
    for key in ("momentum", "betas"):
        if key in optimizer.defaults:
            return key
    raise ValueError(f"OneCycleLR: cycle_momentum needs an optimiser with 'momentum' or 'betas', "
                     f"{type(optimizer).__name__} has neither (pass cycle_momentum=False)")


def _set_momentum(group: dict, key: str, value: float) -> None:
    group[key] = (value, *group["betas"][1:]) if key == "betas" else value


class ReduceLROnPlateau:
    """Multiply the rates by `factor` (not below `min_lr`) when the metric passed to ``step(metric)``
    has not improved for more than `patience` steps, then wait `cooldown` steps. An improvement
    beats the best value by `threshold`: relatively (``threshold_mode="rel"``) or absolutely
    (``"abs"``), downwards (``mode="min"``) or upwards (``"max"``). Changes smaller than `eps` are
    skipped."""

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_lr=0.0,
                 eps: float = 1e-8):
        if mode not in ("min", "max") or threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max' and threshold_mode 'rel' or "
                             f"'abs', got {mode!r} and {threshold_mode!r}")
        if not factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be below 1.0, got {factor!r}")
        self.optimizer = optimizer
        self.min_lrs = _per_group(optimizer, min_lr, "min_lr")
        self.mode, self.factor, self.patience, self.cooldown = mode, factor, patience, cooldown
        self.threshold, self.threshold_mode, self.eps = threshold, threshold_mode, eps
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs, self.cooldown_counter, self.last_epoch = 0, 0, 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    def step(self, metrics) -> None:
        current = float(metrics)
        self.last_epoch += 1
        if self._improves(current):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce()
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _improves(self, current: float) -> bool:
        relative = self.threshold_mode == "rel"
        if self.mode == "min":
            return current < (self.best * (1 - self.threshold) if relative else self.best - self.threshold)
        return current > (self.best * (1 + self.threshold) if relative else self.best + self.threshold)

    def _reduce(self) -> None:
        for group, floor in zip(self.optimizer.param_groups, self.min_lrs):
            new_lr = max(group["lr"] * self.factor, floor)
            if group["lr"] - new_lr > self.eps:
                group["lr"] = new_lr

    get_last_lr = LRScheduler.get_last_lr
    state_dict = LRScheduler.state_dict
    load_state_dict = LRScheduler.load_state_dict
    _unsaved = ("optimizer",)
