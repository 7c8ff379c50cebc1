"""Containers: Sequential, ModuleList, ModuleDict, with PyTorch's list and dict operations."""
from __future__ import annotations

import numbers
from collections import OrderedDict

from ..module import Module


class _ModuleSequence(Module):
    """Children in order, reached by position: what Sequential and ModuleList share. Positions may be
    negative; deleting or inserting renumbers the children '0', '1', ... as PyTorch does."""

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._sliced(list(self._modules.items())[index])
        return self._modules[self._key(index)]

    def _sliced(self, items: list) -> "_ModuleSequence":
        """A new container of the same kind holding `items` ((name, module) pairs)."""
        raise NotImplementedError

    def __setitem__(self, index: int, module: Module) -> None:
        self._modules[self._key(index)] = _check_module(module, type(self).__name__)

    def __delitem__(self, index) -> None:
        keys = list(self._modules)[index] if isinstance(index, slice) else [self._key(index)]
        for key in keys:
            del self._modules[key]
        self._renumber(list(self._modules.values()))

    def __iadd__(self, modules):
        return self.extend(modules)

    def append(self, module: Module):
        self.add_module(str(len(self)), _check_module(module, type(self).__name__))
        return self

    def extend(self, modules):
        for module in list(modules):
            self.append(module)
        return self

    def insert(self, index: int, module: Module):
        """Put `module` before position `index` (-len <= index <= len)."""
        count = len(self)
        if not isinstance(index, numbers.Integral) or not -count <= index <= count:
            raise IndexError(f"{type(self).__name__}.insert: index {index!r} is out of range for {count} modules")
        modules = list(self._modules.values())
        modules.insert(int(index), _check_module(module, type(self).__name__))
        self._renumber(modules)
        return self

    def pop(self, index=-1) -> Module:
        module = self[index]
        del self[index]
        return module

    def _key(self, index) -> str:
        owner, count = type(self).__name__, len(self)
        if not isinstance(index, numbers.Integral) or isinstance(index, bool):
            raise TypeError(f"{owner}: indices must be integers or slices, got {type(index).__name__}")
        if not -count <= index < count:
            raise IndexError(f"{owner}: index {index} is out of range for {count} modules")
        return list(self._modules)[index]

    def _renumber(self, modules: list) -> None:
        self._modules.clear()
        self._modules.update((str(i), m) for i, m in enumerate(modules))


class Sequential(_ModuleSequence):
    """Calls its children in order; Sequential(m1, m2, ...) or Sequential(OrderedDict(name=m)).
    A slice is a Sequential of the same children under the same names."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, _check_module(module, "Sequential"))
        else:
            for i, module in enumerate(modules):
                self.add_module(str(i), _check_module(module, "Sequential"))

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def _sliced(self, items: list) -> "Sequential":
        return Sequential(OrderedDict(items))


class ModuleList(_ModuleSequence):
    """A list of modules registered as children (named '0', '1', ...)."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def _sliced(self, items: list) -> "ModuleList":
        return ModuleList(module for _, module in items)


class ModuleDict(Module):
    """A dict of modules registered as children under their keys."""

    def __init__(self, modules=None):
        super().__init__()
        self.update(modules or {})

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, _check_module(module, "ModuleDict"))

    def __delitem__(self, key: str) -> None:
        del self._modules[key]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key) -> bool:
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def pop(self, key: str) -> Module:
        return self._modules.pop(key)

    def clear(self) -> None:
        self._modules.clear()

    def update(self, modules) -> None:
        """Add or replace entries from a mapping or an iterable of (key, module) pairs."""
        pairs = modules.items() if hasattr(modules, "items") else modules
        for key, module in pairs:
            self[key] = module


def _check_module(module, owner: str) -> Module:
    if not isinstance(module, Module):
        raise TypeError(f"{owner}: expected a Module, got {type(module).__name__}")
    return module
