"""`nn.Module`: the base class of layers and models (PyTorch's contract: parameters, buffers,
children, state dicts, train/eval, nested repr).

Errors raised while a module runs are prefixed once with the innermost module's class and its path
inside the outermost module being called, e.g. "MaxPool3d 'pool': max_pool3d: input ... too small".
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Iterator

import numpy as np

from ..errors import DTypeError, LucidError, ShapeError
from ..ir.methods import to_arguments
from ..ir.types import as_device
from ..tensor import Tensor, is_eager_tensor
from .parameter import Parameter

_calls = threading.local()


def _call_stack() -> list:
    if not hasattr(_calls, "stack"):
        _calls.stack = []
    return _calls.stack


class Module:
    """Base class of every layer. Subclasses set attributes in __init__ and define forward()."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ attribute registry
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if isinstance(value, (Parameter, Module)):
            registry = self._parameters if isinstance(value, Parameter) else self._modules
            self._forget(name, keep=registry)       # a replaced entry keeps its place (state dict order)
            registry[name] = value
        elif name in self._parameters or name in self._modules:
            if value is not None:
                kind = "a Parameter" if name in self._parameters else "a Module"
                raise TypeError(f"{type(self).__name__}: cannot assign {type(value).__name__} to '{name}' "
                                f"({kind} or None expected)")
            (self._parameters if name in self._parameters else self._modules)[name] = None
        elif name in self._buffers:
            self._buffers[name] = value if value is None or is_eager_tensor(value) else Tensor(value)
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name: str, keep=None) -> None:
        for registry in (self._parameters, self._buffers, self._modules, self.__dict__):
            if registry is not keep:
                registry.pop(name, None)

    def __getattr__(self, name):
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"{type(self).__name__}: register_parameter expects a Parameter or None, got {type(param).__name__}")
        self.__dict__.pop(name, None)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Register state that is not learnable (e.g. BatchNorm's running_mean); saved in state_dict."""
        self.__dict__.pop(name, None)
        self._buffers[name] = tensor if tensor is None or is_eager_tensor(tensor) else Tensor(tensor)
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: "Module | None") -> None:
        self._modules[name] = module

    # ------------------------------------------------------------------ calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        stack = _call_stack()
        stack.append(self)
        try:
            return self.forward(*args, **kwargs)
        except LucidError as exc:
            if not getattr(exc, "_lucid_layer_named", False):
                exc._lucid_layer_named = True
                message = str(exc.args[0]) if exc.args else ""
                message = message.removeprefix(f"{type(self).__name__}: ")
                exc.args = (f"{self._describe(stack[0])}: {message}",) + exc.args[1:]
            raise
        finally:
            stack.pop()

    def _describe(self, root: "Module") -> str:
        path = next((name for name, m in root.named_modules() if m is self), "")
        return type(self).__name__ + (f" '{path}'" if path else "")

    # ------------------------------------------------------------------ traversal
    def named_modules(self, memo=None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, "Module"]]:
        """Every module of the tree with its dotted path, this one first. A module reachable by
        several paths comes once, under the first, unless `remove_duplicate` is False (PyTorch's rule;
        state dicts list shared modules under every path)."""
        memo = set() if memo is None else memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self) -> Iterator["Module"]:
        return (m for _, m in self.named_modules())

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        return ((n, m) for n, m in self._modules.items() if m is not None)

    def children(self) -> Iterator["Module"]:
        return (m for _, m in self.named_children())

    def _named_members(self, registry: str, prefix: str, recurse: bool, remove_duplicate: bool = True):
        seen = set()
        modules = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse
                   else [(prefix, self)])
        for module_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """Parameters by dotted name; one shared by several modules or paths comes once, under its
        first name, unless `remove_duplicate` is False."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        return (b for _, b in self.named_buffers(recurse=recurse))

    def apply(self, fn) -> "Module":
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ modes and grads
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.data[...] = 0

    def requires_grad_(self, mode: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad = mode
        return self

    def to(self, *args, **kwargs) -> "Module":
        """PyTorch's forms: to(dtype), to(device), to(device, dtype), to(tensor), to(device=, dtype=).
        The device must be the CPU; a floating dtype converts the floating parameters and buffers,
        keeping the tensor objects (so their references stay valid)."""
        dtype = to_arguments(f"{type(self).__name__}.to", args, kwargs)
        if dtype is None:
            return self
        if not dtype.is_floating:
            raise DTypeError(f"{type(self).__name__}.to: expected a floating dtype, got {dtype}")
        for m in self.modules():
            for registry in (m._parameters, m._buffers):
                for value in registry.values():
                    if value is not None and value.dtype.is_floating:
                        value._data = value.data.astype(dtype.numpy)
            if "dtype" in m.__dict__:         # the dtype a lazy layer gives the parameters it creates
                m.dtype = dtype
        return self

    def cpu(self) -> "Module":
        return self

    def cuda(self, *args, **kwargs) -> "Module":
        as_device("cuda", f"{type(self).__name__}.cuda")

    def double(self) -> "Module":
        return self.to("float64")

    def float(self) -> "Module":
        return self.to("float32")

    # ------------------------------------------------------------------ state dicts
    def state_dict(self, prefix: str = "") -> "OrderedDict[str, np.ndarray]":
        """Parameters and persistent buffers by PyTorch-style dotted name, as NumPy copies. As in
        PyTorch, a module or tensor reachable by several paths is listed under each of them."""
        return OrderedDict((key, tensor.data.copy()) for key, tensor in self._state_entries(prefix).items())

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy arrays into the parameters and buffers, in place (the tensor objects stay the same, so
        compiled functions and optimisers holding them see the new values). Lazy modules materialise
        from the weights' shapes.

        Every key and shape is checked before anything changes, so a refused state dict leaves the
        module as it was (lazy modules stay lazy). Missing or unexpected keys raise ShapeError when
        strict; a shape or dtype mismatch always does. Returns (missing, unexpected).
        """
        owner = f"{type(self).__name__}.load_state_dict"
        state = {k: np.asarray(v.data if isinstance(v, Tensor) else v) for k, v in state_dict.items()}
        shapes = {key: tensor.shape for key, tensor in self._state_entries().items()}
        for module_prefix, module in self.named_modules(remove_duplicate=False):
            shapes.update(module._shapes_from_state(f"{module_prefix}." if module_prefix else "", state))
        missing = [k for k in shapes if k not in state]
        unexpected = [k for k in state if k not in shapes]
        if strict and (missing or unexpected):
            raise ShapeError(f"{owner}: missing keys {missing}, unexpected keys {unexpected}")
        for key, shape in shapes.items():
            if key in state:
                _check_loadable(owner, key, shape, state[key])
        for module_prefix, module in self.named_modules():
            module._materialize_from_state(f"{module_prefix}." if module_prefix else "", state)
        for key, target in self._state_entries().items():
            if key in state:
                target.data[...] = state[key].astype(target.data.dtype, copy=False)
        return missing, unexpected

    def _state_entries(self, prefix: str = "") -> dict:
        """The state dict's tensors by key: every path to every module (shared ones repeat)."""
        entries = {}
        for module_prefix, module in self.named_modules(prefix=prefix, remove_duplicate=False):
            dot = f"{module_prefix}." if module_prefix else ""
            for name, p in module._parameters.items():
                if p is not None:
                    entries[dot + name] = p
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent:
                    entries[dot + name] = b
        return entries

    def _shapes_from_state(self, prefix: str, state: dict) -> dict:
        """Hook for lazy modules: the shapes of the parameters (keys with `prefix`) that loading
        `state` would create, without creating them. Default: none."""
        return {}

    def _materialize_from_state(self, prefix: str, state: dict) -> None:
        """Hook for lazy modules: create parameters from the shapes in `state`. Default: nothing."""

    # ------------------------------------------------------------------ repr
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(child).replace("\n", "\n  ") for name, child in self._modules.items()]
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        body = ([extra] if extra else []) + lines
        return f"{type(self).__name__}(\n  " + "\n  ".join(body) + "\n)"


def _check_loadable(owner: str, key: str, shape: tuple, value: np.ndarray) -> None:
    if value.shape != shape:
        raise ShapeError(f"{owner}: '{key}' expects shape {shape}, got {value.shape}")
    if value.dtype.kind not in "fiub":
        raise ShapeError(f"{owner}: '{key}' expects numeric data, got dtype {value.dtype}")
