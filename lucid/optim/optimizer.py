"""The optimiser base class: parameter groups, per-parameter state, zero_grad and state dicts."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def check_range(optimizer: str, name: str, value, low: float, high: float | None = None) -> None:
    """Raise ValueError naming the optimiser and argument unless ``low <= value`` (``< high``)."""
    if not (value >= low and (high is None or value < high)):
        expected = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ValueError(f"{optimizer}: invalid {name}: expected {expected}, got {value!r}")


class Optimizer:
    """Base class of lucid's optimisers, modelled on ``torch.optim.Optimizer``.

    ``params`` is an iterable of Parameters, or of dicts each holding ``"params"`` plus options
    that override ``defaults`` for that group. ``param_groups`` is the list of those group dicts;
    ``state`` maps each parameter to its state (a dict of numpy arrays and ints).
    Subclasses implement ``_update`` (one parameter's step, in place on ``p.data`` with numpy)
    and ``_validate`` (checks of a group's options).
    """

    def __init__(self, params, defaults: dict):
        from lucid.tensor import Tensor

        if isinstance(params, (Tensor, dict)):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Parameters or of "
                            f"dicts, got a single {type(params).__name__}")
        self.defaults = dict(defaults)
        self.state: dict = {}
        self.param_groups: list[dict] = []
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        """Add a group of parameters (a dict with ``"params"`` and optional per-group options)."""
        from lucid.tensor import Tensor

        name = type(self).__name__
        if not isinstance(group, dict):
            raise TypeError(f"{name}: a parameter group must be a dict, got {type(group).__name__}")
        params = group.get("params", ())
        if isinstance(params, Tensor):
            params = [params]
        if not isinstance(params, Iterable) or isinstance(params, (str, dict)):
            raise TypeError(f"{name}: a group's 'params' must be a Parameter or an iterable of "
                            f"Parameters, got {type(params).__name__}")
        params = list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: can only optimise Tensors/Parameters, got {type(p).__name__}")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"{name}: unknown option(s) {sorted(unknown)} in a parameter group; "
                             f"expected some of {sorted(self.defaults)}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or seen & {id(p) for p in params}:
            raise ValueError(f"{name}: a parameter appears more than once in the parameter groups")
        new_group = {**self.defaults, **group, "params": params}
        self._validate(new_group)
        self.param_groups.append(new_group)

    def _validate(self, group: dict) -> None:
        """Check a group's options; subclasses raise ValueError for out-of-range values."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all parameters: to None, or (``set_to_none=False``) to zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.data[...] = 0

    def step(self, closure=None):
        """Update the parameters once; ``closure`` (optional) re-evaluates and returns the loss."""
        loss = None
        if closure is not None:
            from lucid.autograd import enable_grad

            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = np.asarray(p.grad.data)
                if grad.shape != p.data.shape:
                    raise ValueError(f"{type(self).__name__}.step: a parameter of shape {p.data.shape} "
                                     f"has a gradient of shape {grad.shape}")
                self._update(p, grad, group, self.state.setdefault(p, {}))
        return loss

    def _update(self, p, grad: np.ndarray, group: dict, state: dict) -> None:
        """Apply one step to ``p.data`` in place, given its gradient, group options and state."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Return ``{"state": {index: {...}}, "param_groups": [...]}`` holding copies of numpy arrays.

        Parameters are numbered in the order of ``param_groups``, as in PyTorch.
        """
        index = {}
        groups = []
        for group in self.param_groups:
            ids = [index.setdefault(p, len(index)) for p in group["params"]]
            groups.append({**group, "params": ids})
        state = {index[p]: {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in s.items()}
                 for p, s in self.state.items() if p in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a dict made by ``state_dict()`` for an optimiser over parameters of the same shapes."""
        name = type(self).__name__
        groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        if not isinstance(groups, (list, tuple)) or not isinstance(state_dict.get("state"), dict):
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and "
                             f"'param_groups', got {type(state_dict).__name__}")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: expected {len(self.param_groups)} parameter "
                             f"group(s), got {len(groups)}")
        params = {}
        for i, (saved, group) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: parameter group {i} expected "
                                 f"{len(group['params'])} parameters, got {len(saved['params'])}")
            params.update(zip(saved["params"], group["params"]))
        new_state = {}
        for key, saved in state_dict["state"].items():
            if key not in params:
                raise ValueError(f"{name}.load_state_dict: state for unknown parameter index {key!r}")
            p = params[key]
            new_state[p] = {k: self._load_value(k, v, p) for k, v in saved.items()}
        options = [{**group, **{k: v for k, v in saved.items() if k in self.defaults}}
                   for saved, group in zip(groups, self.param_groups)]
        for group in options:
            self._validate(group)
        for group, new_options in zip(self.param_groups, options):
            group.update(new_options)
        self.state = new_state

    def _load_value(self, key: str, value, p):
        """Convert a saved state value: ``step`` to int, arrays to copies in the parameter's dtype."""
        if key == "step":
            return int(value)
        value = np.array(value, dtype=p.data.dtype)
        if value.shape != p.data.shape:
            raise ValueError(f"{type(self).__name__}.load_state_dict: state {key!r} expected shape "
                             f"{p.data.shape}, got {value.shape}")
        return value

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])
