"""`lucid.compile`: run a module or function as native code, with a compiled backward for training.

`compile(fn_or_module, *example_inputs)` returns a `Compiled` callable. Each call signature (input
shapes and dtypes, whether gradients are needed, the module's train/eval mode) is traced, run
through the passes and compiled once; its native code is cached on disk, so another process with the
same graph skips LLVM. Example inputs (Tensors or `lucid.spec`s) compile their signature up front.

- Inference (grad mode off, or nothing requires grad): `pipeline.for_inference`, one executable.
- Training: `pipeline.for_training` with respect to the inputs and parameters that require grad
  (autodiff, simplification, the partition, then fusion and planning of each side): a forward
  executable (outputs and saved activations) and a backward executable. Outputs are Tensors on the
  eager tape: `loss.backward()` runs the compiled backward and fills `.grad`. BatchNorm running
  statistics are updated as in eager mode.
The passes and their order are `lucid/passes/pipeline.py`'s; the executables
(`lucid/runtime/executable.py`) run no pass.

A call whose inputs do not fit the model fails while tracing, with the layer's error, before any
native code runs; inputs must be lucid Tensors (or NumPy arrays).
"""
from __future__ import annotations

import numpy as np

from . import autograd
from .errors import DTypeError
from .ir.types import TensorType
from .passes import autodiff, pipeline
from .tensor import Tensor
from .tracing import Spec, spec, trace


def compile(fn_or_module, *example_inputs) -> "Compiled":   # noqa: A001  (the public name is lucid.compile)
    compiled = Compiled(fn_or_module)
    if example_inputs:
        compiled.prepare(*example_inputs)
    return compiled


class Compiled:
    """A compiled module or function; call it like the original."""

    def __init__(self, fn_or_module):
        self.fn = fn_or_module
        self.graphs: dict = {}          # (input types, train/eval) -> traced graph
        self.variants: dict = {}

    def __call__(self, *inputs):
        tensors = [_as_tensor(x, k) for k, x in enumerate(inputs)]
        return self._variant(tensors)(tensors)

    def prepare(self, *example_inputs) -> None:
        """Compile the signature of these example inputs (Tensors or specs) now."""
        self._variant(example_inputs)

    @property
    def peak_scratch_bytes(self) -> int:
        """Intermediate storage of the largest compiled variant (arena + workspace)."""
        return max((v.peak_scratch_bytes for v in self.variants.values()), default=0)

    def _variant(self, inputs: list):
        """The compiled variant for these inputs (Tensors or specs), made on first use. Variants are
        keyed by the input types, which inputs and which graph parameters require grad (a layer
        frozen or unfrozen later gets its own variant), and the module's train/eval mode."""
        types = tuple(TensorType(x.shape, x.dtype) for x in inputs)
        mode = getattr(self.fn, "training", None)
        if (types, mode) not in self.graphs:
            self.graphs[(types, mode)] = trace(self.fn, *(spec(*t.shape, dtype=t.dtype) for t in types))
        graph = self.graphs[(types, mode)]
        grad_mode = autograd.is_grad_enabled()
        wants_grad = tuple(grad_mode and bool(getattr(x, "requires_grad", False)) for x in inputs)
        trainable = set(autodiff.default_wrt(graph)) if grad_mode else set()
        params_grad = tuple(v.name in trainable for v in graph.params)
        key = (types, wants_grad, params_grad, mode)
        if key not in self.variants:
            grad_inputs = [v.name for v, wanted in zip(graph.inputs, wants_grad) if wanted]
            params = [v.name for v, wanted in zip(graph.params, params_grad) if wanted]
            self.variants[key] = _Training(graph, grad_inputs, params) if grad_inputs or params else _Inference(graph)
        return self.variants[key]


def _as_tensor(x, position: int) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return Tensor(x, dtype=x.dtype)
    if isinstance(x, Spec):
        raise DTypeError(f"compiled call: input {position} is a lucid.spec; call with Tensors (specs are for "
                         "lucid.compile's example inputs)")
    raise DTypeError(f"compiled call: input {position} must be a lucid Tensor or a NumPy array, got {type(x).__name__}")


def _executable(planned_graph):
    from .runtime.executable import Executable      # here: `import lucid` loads no llvmlite

    return Executable(planned_graph)


def _wrap_outputs(graph, arrays: list):
    tensors = [Tensor._wrap(a) for a in arrays]
    return tuple(tensors) if graph.returns_tuple else tensors[0]


class _Inference:
    def __init__(self, graph):
        self.graph = graph
        self.executable = _executable(pipeline.for_inference(graph))

    @property
    def peak_scratch_bytes(self) -> int:
        return self.executable.peak_scratch_bytes

    def __call__(self, tensors: list):
        return _wrap_outputs(self.graph, self.executable(*(t.data for t in tensors)))


class _Training:
    """Forward and backward executables of one signature, tied into eager autograd."""

    def __init__(self, graph, input_names: list, params: list):
        self.graph, self.input_names, self.params = graph, input_names, params
        self.split = pipeline.for_training(graph, wrt=input_names + self.params)
        self.forward = _executable(self.split.forward)
        self.backward = _executable(self.split.backward)

    @property
    def peak_scratch_bytes(self) -> int:
        return max(self.forward.peak_scratch_bytes, self.backward.peak_scratch_bytes)

    def __call__(self, tensors: list):
        arrays = [t.data for t in tensors]
        results = self.forward(*arrays)
        count = len(self.graph.outputs)
        outputs, saved = results[:count], results[count:]
        by_name = {v.name: a for v, a in zip(self.graph.inputs, arrays)}
        grad_inputs = [t for v, t in zip(self.graph.inputs, tensors) if v.name in self.input_names]
        leaves = tuple(grad_inputs) + tuple(self.graph.bindings[name] for name in self.params)
        context = _BackwardContext(self, saved, [by_name[n] for n in self.split.forward_inputs], outputs)
        tensors_out = []
        for index, array in enumerate(outputs):
            node = autograd.Node(_CompiledGradient(context, index), {}, leaves) if array.dtype.kind == "f" else None
            tensors_out.append(Tensor._wrap(array, node is not None, node))
        return tuple(tensors_out) if self.graph.returns_tuple else tensors_out[0]


class _BackwardContext:
    """What one forward call leaves for its backward: saved activations and the inputs it reads."""

    def __init__(self, training: _Training, saved: list, inputs: list, outputs: list):
        self.training, self.saved, self.inputs, self.outputs = training, saved, inputs, outputs

    def gradients(self, index: int, seed: np.ndarray) -> list:
        seeds = [seed if k == index else np.zeros_like(o) for k, o in enumerate(self.outputs)]
        return self.training.backward(*self.saved, *self.inputs, *seeds)


class _CompiledGradient:
    """The tape's view of a compiled backward: the gradient rule of output `index`."""

    name = "compiled"
    differentiable = True

    def __init__(self, context: _BackwardContext, index: int):
        self.context, self.index = context, index

    def grad(self, attrs, inputs, output, grad_output):
        seed = np.require(grad_output.data, output.dtype.numpy, "C")          # keeps 0-d seeds 0-d
        grads = self.context.gradients(self.index, seed)
        return tuple(autograd.sole_gradient(Tensor._wrap(g)) for g in grads)
