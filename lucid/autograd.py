"""The eager autograd tape: grad mode switches and reverse-mode accumulation.

Each Tensor produced by an operator while grad mode is on, from an input that requires grad,
remembers a `Node` (the operator definition, its attributes and inputs). `backward` walks those nodes
in reverse topological order and applies each definition's gradient rule — the same rules the graph
autodiff pass reads.

Two hooks let code act during a backward (DistributedDataParallel starts its gradient allreduces
with them while the backward still runs):
- `register_post_accumulate_grad_hook(leaf, hook)` (also `Tensor.register_post_accumulate_grad_hook`):
  `hook(leaf)` runs each time a backward has finished adding into `leaf.grad`. The tape accumulates
  a leaf once per backward, as soon as every operator reading it has given its gradient (not at
  the leaf's own place in the order, which may be late), so `.grad` is complete for that backward
  when the hook runs, and hooks run while the rest of the backward is still to come. A compiled
  backward gives all its leaves' gradients in one call, so their hooks run one after the other at
  that point.
- `queue_callback(fn)`: called from inside a backward (from a hook), runs `fn()` once when that
  backward has finished.

Gradients inside a backward belong to the tape: nothing writes into them, and a leaf's `.grad` is
an array of its own (a copy, or a fresh array no one else holds: `sole_gradient`). So a uniform
gradient (one value broadcast, as the gradient of `sum` or `mean` is) stays a read-only view while
a backward runs (`running_backward`; `Tensor._lucid_apply`), and a compiled backward reads a dense
copy kept from call to call (`compiler._UniformSeeds`) instead of a fresh array written each time.
"""
from __future__ import annotations

import functools
import threading
from collections import Counter

import numpy as np

from .errors import GradientError
from .ir.ops import cast

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "enabled", True)


class set_grad_enabled:
    """Context manager and decorator that turns gradient recording on or off inside its block."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)
        self._previous = []

    def __enter__(self):
        self._previous.append(is_grad_enabled())
        _state.enabled = self.mode
        return self

    def __exit__(self, *exc):
        _state.enabled = self._previous.pop()
        return False

    def __call__(self, fn):
        mode = self.mode

        @functools.wraps(fn)
        def with_grad_mode(*args, **kwargs):
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)

        return with_grad_mode


class _GradModeSwitch(set_grad_enabled):
    """A switch used as `with switch():`, `@switch()` or bare `@switch` (PyTorch accepts all three)."""

    def __new__(cls, *args, **kwargs):
        if len(args) == 1 and not kwargs and callable(args[0]):
            return cls()(args[0])
        return super().__new__(cls)


class no_grad(_GradModeSwitch):
    """`with lucid.no_grad(): ...` (or `@lucid.no_grad`) — operators inside record no gradient history."""

    def __init__(self):
        super().__init__(False)


class enable_grad(_GradModeSwitch):
    """Turns gradient recording back on inside a `no_grad` block (context manager and decorator)."""

    def __init__(self):
        super().__init__(True)


class inference_mode(_GradModeSwitch):
    """PyTorch's inference mode: like `no_grad` when `mode` is True (lucid has no cheaper mode)."""

    def __init__(self, mode: bool = True):
        super().__init__(not mode)


class Node:
    """How a tensor was made: operator definition, attributes, input tensors and the inputs'
    in-place change counts (`_version`) when the operator read them."""

    __slots__ = ("op", "attrs", "inputs", "versions")

    def __init__(self, op, attrs, inputs):
        self.op, self.attrs, self.inputs = op, attrs, inputs
        self.versions = tuple(t._version for t in inputs)

    def check_inputs_unchanged(self) -> None:
        """A GradientError if an input was changed in place after this operator read it (its
        gradient would read the new data and follow the new history)."""
        for position, (tensor, version) in enumerate(zip(self.inputs, self.versions)):
            if tensor._version != version:
                raise GradientError(f"backward: input {position} of {self.op.name} (shape {tensor.shape}) was changed "
                                    f"by an in-place operation after {self.op.name} used it; change a copy "
                                    "(clone()) or use the out-of-place form")


def _topological_order(root) -> list:
    """Tensors reachable from root through nodes, each before every tensor it was computed from."""
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        tensor, finished = stack.pop()
        if finished:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        if tensor._node is not None:
            stack.extend((p, False) for p in tensor._node.inputs if p.requires_grad and id(p) not in visited)
    return order[::-1]


class RemovableHandle:
    """What `register_post_accumulate_grad_hook` returns: `.remove()` unregisters the hook."""

    def __init__(self, hooks: list, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def register_post_accumulate_grad_hook(leaf, hook) -> RemovableHandle:
    """Run `hook(leaf)` after each backward has accumulated into `leaf.grad` (leaf tensors that require
    grad only)."""
    if not leaf.requires_grad or not leaf.is_leaf:
        raise GradientError("register_post_accumulate_grad_hook: the tensor must be a leaf that requires grad")
    if "_post_accumulate_grad_hooks" not in vars(leaf):
        leaf._post_accumulate_grad_hooks = []
    leaf._post_accumulate_grad_hooks.append(hook)
    return RemovableHandle(leaf._post_accumulate_grad_hooks, hook)


def queue_callback(fn) -> None:
    """Run `fn()` once when the backward now running finishes (call it from a hook)."""
    callbacks = getattr(_state, "callbacks", None)
    if callbacks is None:
        raise GradientError("queue_callback: no backward is running")
    callbacks.append(fn)


def running_backward() -> bool:
    """Whether this thread is inside `backward`."""
    return getattr(_state, "callbacks", None) is not None


def backward(root, seed) -> None:
    """Accumulate d(root)/d(leaf) * seed into `.grad` of every leaf that requires grad; `seed` is a
    tensor of root's shape and dtype (`Tensor.backward` makes it).

    Tensors are reached only through the tensors given: `t._wrap(array)` makes a new one, so the
    tape sits below `lucid.tensor` and does not import it.
    """
    pending = {id(root): seed}
    order = _topological_order(root)
    readers = Counter(id(p) for t in order if t._node is not None for p in t._node.inputs if p.requires_grad)
    outer_callbacks = getattr(_state, "callbacks", None)
    _state.callbacks = []
    try:
        with no_grad():
            for tensor in order:
                g = pending.pop(id(tensor), None)
                if g is not None and (tensor._node is None or tensor._retains_grad):
                    _accumulate(tensor, g)
                if tensor._node is not None:
                    if g is not None:
                        _propagate(tensor, g, pending)
                    _accumulate_finished_leaves(tensor._node.inputs, readers, pending)
            callbacks = _state.callbacks
            while callbacks:
                callbacks.pop(0)()
    finally:
        _state.callbacks = outer_callbacks


def _accumulate_finished_leaves(inputs: tuple, readers: Counter, pending: dict) -> None:
    """Count one read of each input done; a leaf whose every reader is done gets its gradient now,
    not at its own (possibly late) place in the order, so its hooks run as early as they can."""
    for parent in inputs:
        if not parent.requires_grad:
            continue
        readers[id(parent)] -= 1
        if not readers[id(parent)] and parent._node is None and id(parent) in pending:
            _accumulate(parent, pending.pop(id(parent)))


def sole_gradient(tensor):
    """Mark a gradient tensor whose array is fresh and referenced by nothing else: the leaf it
    reaches takes it as its `.grad` without a copy."""
    tensor._sole_gradient = True
    return tensor


def _accumulate(tensor, g) -> None:
    if tensor.grad is None:
        taken = tensor._node is None and getattr(g, "_sole_gradient", False) and g.data.dtype == tensor.dtype.numpy
        tensor.grad = tensor._wrap(g.data if taken else np.array(g.data, dtype=tensor.dtype.numpy))
    else:
        tensor.grad.data += g.data
    for hook in tuple(vars(tensor).get("_post_accumulate_grad_hooks", ())):
        hook(tensor)


def _propagate(tensor, g, pending: dict) -> None:
    node = tensor._node
    node.check_inputs_unchanged()
    inputs = tuple(t._wrap(t.data) for t in node.inputs)
    grads = node.op.grad(node.attrs, inputs, tensor._wrap(tensor.data), g)
    for parent, gp in zip(node.inputs, grads):
        if gp is None or not parent.requires_grad:
            continue
        if gp.shape != parent.shape:
            raise GradientError(f"{node.op.name}: gradient rule gave shape {gp.shape} for an input of shape {parent.shape}")
        if gp.dtype != parent.dtype:
            gp = cast(gp, parent.dtype)
        previous = pending.get(id(parent))
        pending[id(parent)] = gp if previous is None else sole_gradient(gp._wrap(np.asarray(previous.data + gp.data)))

