"""The small part of ``torch.jit`` that model code touches while it is defined or run.

lucid compiles by tracing (``lucid.trace``, ``lucid.compile``), not by scripting, so these are
plain Python: the decorators return the function they decorate, ``script`` and ``trace`` return
their argument unchanged (use ``lucid.compile`` to compile), and ``is_scripting()`` is always False.
"""
from __future__ import annotations

import builtins
import typing

from .ir.graph import active_builder

#: ``Final[int]`` class-attribute annotations, as in ``torch.jit.Final``.
Final = typing.Final


def is_scripting() -> bool:
    """False: lucid never scripts Python code."""
    return False


def is_tracing() -> bool:
    """True while ``lucid.trace`` (or ``lucid.compile``'s trace) is recording a graph."""
    return active_builder() is not None


def isinstance(obj, target_type) -> bool:  # noqa: A001  (torch.jit.isinstance's name)
    """``builtins.isinstance`` that also takes typing generics, checked loosely: ``List[Tensor]``
    means a list whose items are Tensors, ``Dict[str, Tensor]`` a dict of such keys and values,
    ``Tuple[...]`` a tuple of those item types, ``Optional[T]`` / ``Union`` any of their members.
    A graph value (what model code receives while traced) counts as a ``lucid.Tensor``, as for
    ``builtins.isinstance``."""
    origin = typing.get_origin(target_type)
    if target_type is typing.Any:
        return True
    if origin is None:
        return builtins.isinstance(obj, target_type)
    args = typing.get_args(target_type)
    if origin is typing.Union:
        return any(isinstance(obj, member) for member in args)
    if not builtins.isinstance(obj, origin):
        return False
    if not args:
        return True
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return all(isinstance(item, args[0]) for item in obj)
        return len(obj) == len(args) and all(isinstance(i, t) for i, t in zip(obj, args))
    if origin is dict:
        return all(isinstance(k, args[0]) and isinstance(v, args[1]) for k, v in obj.items())
    return all(isinstance(item, args[0]) for item in obj)


def _passthrough_decorator(fn=None, **_options):
    """Usable as ``@ignore`` or ``@ignore(drop=True)``: returns the function unchanged."""
    if fn is None or not callable(fn):
        return lambda f: f
    return fn


ignore = _passthrough_decorator
unused = _passthrough_decorator
export = _passthrough_decorator


def script(obj, *args, **kwargs):
    """Returns `obj` unchanged: lucid does not script. Compile with ``lucid.compile`` instead."""
    return obj


def trace(func, *args, **kwargs):
    """Returns `func` unchanged (``torch.jit.trace``'s example inputs are ignored). For a graph, use
    ``lucid.trace``; to compile, ``lucid.compile``."""
    return func
