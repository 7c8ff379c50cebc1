"""The guard of `lucid.compile` (lucid/compiler.py): what a compiled call re-checks before it reuses
code traced earlier.

A traced graph binds the module's tensors as they were when it was traced. `Snapshot.of(module)`,
taken after each trace, records what the compiled variants assume besides their inputs:
- the module tree: every registry (parameters, buffers, children) of every module, its size and each
  entry by identity, so a parameter, buffer or submodule replaced (or added, or deleted) is seen;
- each parameter's and buffer's array (by identity) and its shape and dtype;
- the train/eval flag of every module (`modes`, part of a variant's key).

`holds()` is one boolean expression over these objects, generated when the snapshot is taken (a
chain of `is` and `len` tests, no loop): one test per module flag, registry, registry entry and
tensor (7 for a lone ConvTranspose3d, 381 for examples/models.py's UNet3D()), some 40-100 ns each
(docs/guide.md has measured costs). Writing into a tensor's array (optimiser steps,
`load_state_dict`, BatchNorm's running statistics) changes nothing recorded. When `holds()` is False,
`change()` says whether the variants are void (a replaced tensor or module, a new shape or dtype) or
the snapshot merely needs `refresh()` (a train/eval flag flipped, an array swapped for one of the
same shape and dtype by `p.data = ...`): the flags and arrays the expression compares against are
entries of a list it reads, rewritten in place, so a model switched between train() and eval() on
every call, or whose arrays are swapped on every call, does not pay for generating the expression
again (4.8 ms for R2Plus1dNet; its refresh takes 32 us).
For a plain function, the snapshot covers the arrays of the tensors its graphs captured.
"""
from __future__ import annotations

from .tensor import Tensor

_REGISTRIES = {"_parameters": "parameter", "_buffers": "buffer", "_modules": "submodule"}


class Snapshot:
    """The module tree, tensors and train/eval flags a compiled object's variants were traced with."""

    def __init__(self, modules: list, tensors: list):
        self.modules = modules                              # [(path, module)]
        self.registries = [(path, kind, getattr(module, name), dict(getattr(module, name)))
                           for path, module in modules for name, kind in _REGISTRIES.items()]
        self.tensors = list(tensors)                        # [(name, Tensor)]
        self._expected: list = []           # each module's flag, then each tensor's array: what holds() compares
        self.refresh()
        self.holds = self._check()

    def refresh(self) -> None:
        """Record the modules' train/eval flags and the tensors' arrays as they are now (their shapes and
        dtypes, and every registry, as recorded: `change()` is None)."""
        self.modes = tuple(bool(module.training) for _, module in self.modules)
        arrays = [tensor.data for _, tensor in self.tensors]
        self.types = [(array.shape, array.dtype) for array in arrays]
        self._expected[:] = list(self.modes) + arrays

    @classmethod
    def of(cls, fn, graphs) -> "Snapshot":
        """The snapshot of `fn`: a module's tree and tensors, or the tensors bound by a function's graphs."""
        if not hasattr(fn, "named_modules"):
            bound = {id(t): (name, t) for g in graphs for name, t in g.bindings.items() if isinstance(t, Tensor)}
            return cls([], list(bound.values()))
        return cls(list(fn.named_modules()), list(fn.named_parameters()) + list(fn.named_buffers()))

    def _check(self):
        """`holds()`: whether every recorded object is still in place (generated for this snapshot)."""
        names: dict[str, object] = {"e": self._expected}

        def ref(obj) -> str:
            names[f"o{len(names)}"] = obj
            return f"o{len(names) - 1}"

        # a module's flag read from its __dict__: nn.Module's __getattr__ slows attribute reads down
        tests = [f"{ref(vars(module))}.get('training') is e[{k}]" for k, (_, module) in enumerate(self.modules)]
        for _, _, registry, entries in self.registries:
            name = ref(registry)
            tests.append(f"len({name}) == {len(entries)}")
            tests += [f"{name}.get({key!r}) is {ref(value)}" for key, value in entries.items()]
        first = len(self.modules)
        tests += [f"{ref(tensor)}._data is e[{first + k}]" for k, (_, tensor) in enumerate(self.tensors)]
        return generated_test(tests, names)

    def change(self) -> str | None:
        """What voids the variants, in words; None when nothing does (a train/eval flag flipped, or an
        array was swapped for one of the same shape and dtype): then a new snapshot is enough."""
        for path, kind, registry, entries in self.registries:
            for key, value in entries.items():
                if key not in registry or registry[key] is not value:
                    return f"{kind} {_joined(path, key)!r} was {'deleted' if key not in registry else 'replaced'}"
            added = [key for key in registry if key not in entries]
            if added:
                return f"{kind} {_joined(path, added[0])!r} was added"
        for (name, tensor), (shape, dtype) in zip(self.tensors, self.types):
            now = tensor.data
            if (now.shape, now.dtype) != (shape, dtype):
                return f"tensor {name!r} changed from {dtype}{list(shape)} to {now.dtype}{list(now.shape)}"
        return None


def generated_test(tests: list, names: dict):
    """A function of no arguments returning whether every one of `tests` holds: Python expressions
    over the objects in `names` (by the names they are given there), compiled into one `and` chain,
    no loop (a test costs tens of nanoseconds). Also the executable's check of its bound parameters
    (`runtime.executable._BoundWeights`)."""
    return eval("lambda: " + (" and ".join(tests) or "True"), names)     # noqa: S307 (built from names only)


def _joined(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
