"""`lucid.compile`: run a module or function as native code, with a compiled backward for training.

`compile(fn_or_module, *example_inputs)` returns a `CompiledModule` for a module (an `nn.Module` that
behaves as the module it wraps: attributes, parameters, state dicts and train/eval pass through) or a
`Compiled` callable for a function or a `lucid.ir.Graph` (an imported ONNX model, a loaded graph
file: compiled as it is, for its own input types). Each call signature (input shapes and dtypes,
whether gradients are needed, the modules' train/eval flags) is traced, run through the passes and
compiled once; its native code is cached on disk, so another process with the same graph skips
LLVM. Example inputs (Tensors or `lucid.spec`s) compile their signature up front.

- Inference (grad mode off, or nothing requires grad): `pipeline.for_inference`, one executable; but
  a signature already compiled for training runs its training forward instead (no second compile).
- Training: `pipeline.for_training` with respect to the inputs and parameters that require grad
  (autodiff, simplification, the partition, then fusion and planning of each side): a forward
  executable (outputs and saved activations) and a backward executable, their code built together
  (`runtime.executable.executables`: lowering one graph overlaps compiling the other's modules).
  Outputs are Tensors on the eager tape: `loss.backward()` runs the compiled backward and fills `.grad`. BatchNorm running
  statistics are updated as in eager mode. After `stage_backward(groups, on_stage)` the backward is
  compiled as stages (`pipeline.for_staged_training`), one per group of parameters, and reports each
  group's gradients as its stage ends (DistributedDataParallel starts its allreduces there).
The passes and their order are `lucid/passes/pipeline.py`'s; the executables
(`lucid/runtime/executable.py`) run no pass.

Every call first checks the guard (`lucid/guard.py`): when a parameter, buffer or submodule was
replaced, or a tensor changed shape or dtype, every variant is dropped and the next call traces again.
Each trace and each compile is logged (logger `lucid.compile`, INFO; `LUCID_LOG=compile` prints it
to stderr) with its reason; `stats()` counts them.

A call whose inputs do not fit the model fails while tracing, with the layer's error, before any
native code runs; inputs must be lucid Tensors (or NumPy arrays).

Dynamic sizes (`lucid/dynamic_shapes.py` says which axes): with `dynamic=True` the batch and spatial
dimensions of the inputs are symbolic from the first call: one trace, one compile, and a call at a
new size compiles nothing (the kernels take their extents at run time); a size the graph cannot
serve (a constraint it recorded, such as `D >= 3`) is a ShapeError naming the dimension and the
constraint. With `dynamic=None` (the default, automatic) a signature is compiled for its sizes
until a call of the same ranks and dtypes comes with other sizes: then the axes that differed become
symbolic and that variant serves every later size that fits it. If the graph cannot be compiled
for symbolic sizes (an operator whose lowering needs concrete ones, model code needing a number),
the call goes on with static variants, and the reason is logged once (`LUCID_LOG=compile`) and kept
in `stats()["static_reason"]` (a log line, not a warning: model code needing a number is an
ordinary way to write a model); sizes outside a symbolic variant's constraints get a static variant
too.
`dynamic=False` compiles every signature for its sizes.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
import time

import numpy as np

from . import autograd, dynamic_shapes
from .errors import CompileError, DTypeError, ShapeError, TraceError
from .guard import Snapshot
from .ir.graph import Graph, active_builder
from .ir.specialize import check_sizes, sizes_of_inputs
from .ir.types import TensorType
from .nn.module import Module
from .passes import autodiff, pipeline
from .tensor import Tensor, is_eager_tensor
from .tracing import Spec, spec, trace

LOG = logging.getLogger("lucid.compile")


def compile(fn_or_module, *example_inputs, dynamic: bool | None = None) -> "Compiled":   # noqa: A001
    """(The public name is lucid.compile.) `dynamic`: True, None (automatic) or False; see above."""
    compiled = CompiledModule(fn_or_module) if isinstance(fn_or_module, Module) else Compiled(fn_or_module)
    compiled.dynamic = dynamic
    if example_inputs:
        compiled.prepare(*example_inputs)
    return compiled


class Compiled:
    """A compiled module or function; call it like the original."""

    #: The attributes of the compiled object itself (a CompiledModule passes any other to its module).
    OWN_ATTRIBUTES = frozenset({"fn", "graphs", "variants", "_forward_only", "_snapshot", "_stale", "_counts",
                                "_backward_stages", "dynamic", "_seen", "_served", "_interned_types",
                                "_static_reason"})

    def __init__(self, fn_or_module):
        self.fn = fn_or_module
        self.graphs: dict = {}          # (input types, train/eval flags) -> traced graph
        self.variants: dict = {}        # (input types, flags, inputs wanting grad, params wanting grad) -> variant
        self._forward_only: dict = {}   # an inference key -> the forward of the training variant serving it
        self._snapshot = Snapshot.of(fn_or_module, [])
        self._stale = "first call"      # why the next trace happens, when no graph is left
        self._counts = {"traces": 0, "native_compiles": 0, "cache_loads": 0}
        self._backward_stages = None    # (groups of parameters, on_stage) once stage_backward is called
        self.dynamic = None             # True, None (automatic) or False: see the module docstring
        self._seen: dict = {}           # (input types, modes) of the calls compiled for their own sizes
        self._served: dict = {}         # (input types, modes) -> the input types of the graph serving them
        self._interned_types: dict = {}  # (shape, NumPy dtype) of each input -> their TensorTypes (`_types_of`)
        self._static_reason = None      # why automatic dynamic sizes were given up, once they were

    @property
    def __wrapped__(self):
        """The module or function compiled (the `functools.wraps` convention: the tracer names graphs by it)."""
        return self.fn

    def __call__(self, *inputs):
        if active_builder() is not None:       # traced inside another graph (lucid.trace, export, viz)
            return self.fn(*inputs)
        tensors = [_as_tensor(x, k) for k, x in enumerate(inputs)]
        return self._variant(tensors, self._types_of(tensors))(tensors)

    def prepare(self, *example_inputs) -> None:
        """Compile the signature of these example inputs (Tensors or specs) now."""
        self._variant(example_inputs)

    def stage_backward(self, groups: list, on_stage) -> None:
        """Compile the training backward as stages (`passes/stages.py`), one per group of parameters
        (Tensors), run in the groups' order: after the stage of group k has run, `on_stage(k,
        [(parameter, gradient array), ...])` gets the gradients of group k's parameters that the
        graph computes, while the later stages are still to run (DistributedDataParallel starts a
        bucket's allreduce there). The tape then accumulates every gradient as before. The inputs'
        gradients and parameters in no group come from a last stage. Training variants compiled
        before are dropped (compiled again, staged, on their next call)."""
        self._backward_stages = ([list(group) for group in groups], on_stage)
        self.variants = {key: v for key, v in self.variants.items() if not isinstance(v, _Training)}
        self._forward_only = {}

    def stats(self) -> dict:
        """Work done by this object: `traces`, `native_compiles` (LLVM modules compiled; objects
        loaded from the disk cache are `cache_loads`), `variants` (compiled call signatures),
        `dynamic_variants` (those compiled for symbolic sizes) and `static_reason` (why automatic
        dynamic sizes were given up, or None)."""
        dynamic = sum(1 for key in self.variants if any(t.is_symbolic for t in key[0]))
        return dict(self._counts, variants=len(self.variants), dynamic_variants=dynamic,
                    static_reason=self._static_reason)

    @property
    def peak_scratch_bytes(self) -> int:
        """Intermediate storage of the largest compiled variant (arena + workspace)."""
        return max((v.peak_scratch_bytes for v in self.variants.values()), default=0)

    def _variant(self, inputs: list, types: tuple | None = None):
        """The variant for these inputs (Tensors or specs; `types`, their concrete types when known),
        made on first use. Variants are keyed by
        the input types, the modules' train/eval flags, and which inputs and which graph parameters
        require grad (a layer frozen or unfrozen later gets its own variant). A call without
        gradients on a signature compiled for training runs that variant's forward."""
        if not self._snapshot.holds():
            change = self._snapshot.change()
            if change is None:
                self._snapshot.refresh()
            else:
                self._take_snapshot(change)
        modes = self._snapshot.modes
        if types is None:
            types = tuple(TensorType(x.shape, x.dtype) for x in inputs)
            if any(t.is_symbolic for t in types):      # specs with symbolic sizes: compiled as given
                return self._variant_of(types, modes, inputs)
        served = self._served.get((types, modes))
        if served is not None:                         # sizes called before: the graph that served them
            return self._variant_of(served, modes, inputs)
        symbolic_types = self._symbolic_types(types, modes)
        if symbolic_types is not None:
            try:
                variant = self._variant_of(symbolic_types, modes, inputs)
                self._served[(types, modes)] = symbolic_types
                return variant
            except (CompileError, ShapeError, TraceError) as error:
                if self.dynamic:
                    raise
                self._give_up_dynamic(symbolic_types, modes, error)
        self._seen[(types, modes)] = None
        self._served[(types, modes)] = types
        return self._variant_of(types, modes, inputs)

    def _types_of(self, tensors: list) -> tuple:
        """The input types of eager Tensors: one tuple of TensorTypes per distinct signature, kept,
        so the lookups of every later call with that signature compare its types by identity (a
        call's Python work is a small layer's time: 9 of 48 us went to making and comparing types)."""
        signature = tuple((t.data.shape, t.data.dtype) for t in tensors)
        types = self._interned_types.get(signature)
        if types is None:
            types = self._interned_types[signature] = tuple(TensorType(shape, dtype) for shape, dtype in signature)
        return types

    def _symbolic_types(self, types: tuple, modes: tuple):
        """The symbolic input types whose variant serves these concrete ones: a graph traced with
        symbolic sizes that fits them, else new ones if dynamic sizes apply (see the module
        docstring); a ShapeError for sizes a `dynamic=True` graph cannot serve."""
        if isinstance(self.fn, Graph):                   # a graph with symbolic sizes serves what fits it
            declared = tuple(v.type for v in self.fn.inputs)
            return declared if any(t.is_symbolic for t in declared) and dynamic_shapes.fits(declared, types) else None
        serving = self._serving(types, modes)
        if serving is not None or self.dynamic is False or self._static_reason is not None:
            return serving
        if self.dynamic:
            return dynamic_shapes.symbolic_types(types, dynamic_shapes.all_axes(types))
        history = [seen for seen, seen_modes in self._seen
                   if seen_modes == modes and dynamic_shapes.same_signature(seen, types)]
        axes = dynamic_shapes.varying_axes(history + [types]) if history else None
        made = None if axes is None else dynamic_shapes.symbolic_types(types, axes, history)
        return None if (made, modes) in self.graphs else made      # that graph refused these sizes

    def _serving(self, types: tuple, modes: tuple):
        """The symbolic types of a traced graph that serves these concrete ones (they fit, and their
        sizes meet its constraints), or None."""
        for (declared, graph_modes), graph in self.graphs.items():
            if graph_modes == modes and any(t.is_symbolic for t in declared) and dynamic_shapes.fits(declared, types):
                try:
                    check_sizes(graph, sizes_of_inputs(graph, [t.shape for t in types], self._title))
                except ShapeError:
                    if self.dynamic:
                        raise
                    continue
                return declared
        return None

    def _give_up_dynamic(self, symbolic_types: tuple, modes: tuple, error: Exception) -> None:
        """Automatic dynamic sizes failed for this model: log why, once, and compile static variants."""
        self.graphs.pop((symbolic_types, modes), None)
        self._served = {key: served for key, served in self._served.items() if served != symbolic_types}
        self.variants = {key: v for key, v in self.variants.items() if key[0] != symbolic_types}
        self._static_reason = f"{type(error).__name__}: {error}"
        _announce(f"{self._title}: sizes vary, but the model compiles for fixed sizes only ({self._static_reason})")

    def _variant_of(self, types: tuple, modes: tuple, inputs: list):
        """The variant for input `types` (concrete, or symbolic serving the inputs) and `modes`."""
        graph = self.graphs.get((types, modes))
        if graph is None:
            graph = self._trace(types, modes)
        grad_mode = autograd.is_grad_enabled()
        wants_grad = tuple(grad_mode and bool(getattr(x, "requires_grad", False)) for x in inputs)
        trainable = set(autodiff.default_wrt(graph)) if grad_mode else set()
        params_grad = tuple(v.name in trainable for v in graph.params)
        key = (types, modes, wants_grad, params_grad)
        variant = self.variants.get(key, self._forward_only.get(key))
        if variant is None and not any(wants_grad + params_grad):
            variant = self._reused_forward(key)
        return variant if variant is not None else self._build(key, graph)

    def _take_snapshot(self, change: str | None) -> None:
        """Record the module again; when `change` voids the traced graphs, drop them and every variant."""
        if change is not None:
            self._stale = f"{change} ({len(self.variants)} compiled variant(s) dropped)"
            self.graphs, self.variants, self._forward_only, self._served = {}, {}, {}, {}
        self._snapshot = Snapshot.of(self.fn, self.graphs.values())

    def _trace(self, types: tuple, modes: tuple):
        reason = self._stale if not self.graphs else (
            "train/eval mode changed" if any(t == types for t, _ in self.graphs) else "new input shapes or dtypes")
        if any(t.is_symbolic for t in types):
            reason += "; symbolic sizes" + (" (dynamic=True)" if self.dynamic else " (sizes vary)")
        _announce(f"{self._title}: tracing for {_signature(types)}, {_mode_words(modes)}: {reason}")
        graph = _fixed_graph(self.fn, types) if isinstance(self.fn, Graph) else \
            trace(self.fn, *(spec(*t.shape, dtype=t.dtype) for t in types))
        self._counts["traces"] += 1
        self.graphs[(types, modes)] = graph
        self._take_snapshot(None)             # after the trace, which made the lazy layers' parameters
        return graph

    def _reused_forward(self, key: tuple):
        """The forward of a training variant of this signature (inputs, modes), serving a call that
        wants no gradients; None when there is none."""
        training = next((v for k, v in self.variants.items() if k[:2] == key[:2] and isinstance(v, _Training)), None)
        if training is not None:
            self._forward_only[key] = training.infer
        return self._forward_only.get(key)

    def _build(self, key: tuple, graph):
        types, modes, wants_grad, params_grad = key
        grad_inputs = [v.name for v, wanted in zip(graph.inputs, wants_grad) if wanted]
        params = [v.name for v, wanted in zip(graph.params, params_grad) if wanted]
        kind = "training" if grad_inputs or params else "inference"
        from .codegen import jit, progress   # here, not at the top: `import lucid` must not load llvmlite

        before, started = dict(jit.COUNTERS), time.perf_counter()
        with progress.showing(f"{self._title} {kind} variant"):
            self.variants[key] = _Training(graph, grad_inputs, params, self._backward_stages) if grad_inputs or params \
                else _Inference(graph)
        compiled, loaded = (jit.COUNTERS[k] - before[k] for k in ("compiled", "loaded"))
        self._counts["native_compiles"] += compiled
        self._counts["cache_loads"] += loaded
        why = f"{len(grad_inputs)} input(s) and {len(params)} parameter(s) want gradients" if kind == "training" \
            else "no gradients wanted"
        _announce(f"{self._title}: compiled the {kind} variant for {_signature(types)}, {_mode_words(modes)} "
                  f"({why}): {compiled} LLVM module(s) compiled, {loaded} loaded from the disk cache, "
                  f"{time.perf_counter() - started:.2f} s")
        return self.variants[key]

    @property
    def _title(self) -> str:
        name = type(self.fn).__name__ if isinstance(self.fn, Module) else self.fn.name if isinstance(self.fn, Graph) \
            else getattr(self.fn, "__name__", "function")
        return f"lucid.compile({name})"


class CompiledModule(Compiled, Module):
    """A compiled module: an `nn.Module` whose calls run the compiled code and whose every other
    attribute (parameters, state dicts, `train()`/`eval()`, submodules...) is the wrapped module's.
    Module methods that return the module return this object, so `fast.eval()` stays compiled."""

    def __getattr__(self, name):
        if name == "fn":                # before __init__ set it (copy, pickle)
            raise AttributeError(name)
        return getattr(self.fn, name)

    def __setattr__(self, name, value):
        if name in Compiled.OWN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            setattr(self.fn, name, value)

    def __delattr__(self, name):
        delattr(self.fn, name)

    def __repr__(self) -> str:
        return f"lucid.compile({self.fn!r})"


def _delegated(name: str) -> property:
    """Module attribute `name`, read from the wrapped module. A method keeps its signature (the
    tracer reads `forward`'s argument names) and, when it returns the module, returns the compiled one."""
    def read(self):
        target = getattr(self.fn, name)
        if not callable(target):
            return target

        @functools.wraps(target)
        def method(*args, **kwargs):
            result = target(*args, **kwargs)
            return self if result is self.fn else result

        return method

    return property(read)


for _module_attribute in vars(Module):
    if not _module_attribute.startswith("__"):
        setattr(CompiledModule, _module_attribute, _delegated(_module_attribute))


def _announce(message: str) -> None:
    """Log one trace or compile (INFO on `lucid.compile`; printed to stderr when LUCID_LOG has `compile`)."""
    if "compile" in os.environ.get("LUCID_LOG", "").split(",") and not LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
    LOG.info(message)


def _signature(types: tuple) -> str:
    return "(" + ", ".join(f"{t.dtype}{list(t.shape)}" for t in types) + ")"


def _mode_words(modes: tuple) -> str:
    if not modes:
        return "a function"
    return "training mode" if all(modes) else "eval mode" if not any(modes) else "mixed train/eval modes"


def _fixed_graph(graph: Graph, types: tuple) -> Graph:
    """A graph given to lucid.compile (an imported ONNX model, a loaded graph file) compiles as it is,
    for the input types it was made with."""
    fixed = tuple(v.type for v in graph.inputs)
    if types != fixed:
        raise ShapeError(f"lucid.compile({graph.name}): the graph takes inputs {_signature(fixed)}, "
                         f"got {_signature(types)}; its shapes are fixed (import or trace it again for others)")
    return graph


def _as_tensor(x, position: int) -> Tensor:
    if is_eager_tensor(x):
        return x
    if isinstance(x, np.ndarray):
        return Tensor(x, dtype=x.dtype)
    if isinstance(x, Spec):
        raise DTypeError(f"compiled call: input {position} is a lucid.spec; call with Tensors (specs are for "
                         "lucid.compile's example inputs)")
    raise DTypeError(f"compiled call: input {position} must be a lucid Tensor or a NumPy array, got {type(x).__name__}")


def _executables(*planned_graphs, changing_weights: frozenset = frozenset()) -> list:
    """An executable of each planned graph, their code built together (lowering one graph overlaps
    compiling the others' modules; `runtime.executable.executables`, `changing_weights` as there)."""
    from .runtime.executable import executables     # here: `import lucid` loads no llvmlite

    return executables(list(planned_graphs), changing_weights=changing_weights)


def _wrap_outputs(graph, arrays: list):
    tensors = [Tensor._wrap(a) for a in arrays]
    return tuple(tensors) if graph.returns_tuple else tensors[0]


class _Inference:
    def __init__(self, graph):
        self.graph = graph
        self.executable, = _executables(pipeline.for_inference(graph))

    @property
    def peak_scratch_bytes(self) -> int:
        return self.executable.peak_scratch_bytes

    def __call__(self, tensors: list):
        return _wrap_outputs(self.graph, self.executable(*(t.data for t in tensors)))


class _Training:
    """Forward and backward executables of one signature, tied into eager autograd. The backward's
    graph (or its stages' graphs) and the forward's are compiled together (`_executables`)."""

    def __init__(self, graph, input_names: list, params: list, backward_stages: tuple | None = None):
        self.graph, self.input_names, self.params = graph, input_names, params
        self.uniform_seeds = _UniformSeeds()
        wrt = input_names + self.params
        if backward_stages is None:
            self.split = pipeline.for_training(graph, wrt=wrt)
            self.backward, self.forward = _executables(self.split.backward, self.split.forward,
                                                       changing_weights=frozenset(self.params))
        else:
            groups, on_stage = backward_stages
            outputs = self._gradient_indices(groups)
            self.split, stages = pipeline.for_staged_training(graph, wrt, [g for g in outputs if g])
            *stage_executables, self.forward = _executables(*(stage.graph for stage in stages), self.split.forward,
                                                            changing_weights=frozenset(self.params))
            leaves = [None] * len(self.input_names) + [graph.bindings[name] for name in self.params]
            self.backward = _StagedBackward(self.split.backward, list(zip(stages, stage_executables)), outputs,
                                            leaves, on_stage)

    def _gradient_indices(self, groups: list) -> list:
        """The backward's outputs (gradients, in `wrt` order) of each group of parameter Tensors, in
        group order, then those of no group (the inputs' gradients first)."""
        offset = len(self.input_names)
        index_of = {id(self.graph.bindings[name]): offset + j for j, name in enumerate(self.params)}
        indices = [[index_of[id(p)] for p in group if id(p) in index_of] for group in groups]
        placed = {i for group in indices for i in group}
        return indices + [[i for i in range(offset + len(self.params)) if i not in placed]]

    @property
    def peak_scratch_bytes(self) -> int:
        return max(self.forward.peak_scratch_bytes, self.backward.peak_scratch_bytes)

    def infer(self, tensors: list):
        """The outputs alone, off the tape (a call that wants no gradients)."""
        results = self.forward(*(t.data for t in tensors))
        return _wrap_outputs(self.graph, results[:len(self.graph.outputs)])

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


class _StagedBackward:
    """A backward compiled as stages (`stages`: (stage, its executable) pairs): runs them in order
    (with the backward graph's inputs) and after each group's stage calls `on_stage(k, [(parameter,
    gradient), ...])` (the last group, of the gradients no caller's group asked for, is not
    reported). A value carried between stages is dropped when no later stage reads it."""

    def __init__(self, backward, stages: list, groups: list, leaves: list, on_stage):
        self.input_names = [v.name for v in backward.inputs]
        self.count, self.groups, self.leaves, self.on_stage = len(backward.outputs), groups, leaves, on_stage
        self.stages = stages
        reads = [{v.name for v in stage.graph.inputs} for stage, _ in stages]
        self.kept_after = [set().union(*reads[k + 1:]) for k in range(len(stages))]

    @property
    def peak_scratch_bytes(self) -> int:
        return max(executable.peak_scratch_bytes for _, executable in self.stages)

    def __call__(self, *arrays) -> list:
        values, gradients = dict(zip(self.input_names, arrays)), [None] * self.count
        stages = iter(enumerate(self.stages))
        for k, group in enumerate(self.groups):
            if group:
                position, (stage, executable) = next(stages)
                results = executable(*(values[v.name] for v in stage.graph.inputs))
                for index, array in zip(stage.outputs, results):
                    gradients[index] = array
                values.update(zip(stage.carried, results[len(stage.outputs):]))
                values = {name: a for name, a in values.items() if name in self.kept_after[position]}
            if k < len(self.groups) - 1:
                self.on_stage(k, [(self.leaves[i], gradients[i]) for i in group])
        return gradients


class _BackwardContext:
    """What one forward call leaves for its backward: saved activations and the inputs it reads."""

    def __init__(self, training: _Training, saved: list, inputs: list, outputs: list):
        self.training, self.saved, self.inputs, self.outputs = training, saved, inputs, outputs

    def gradients(self, index: int, seed: np.ndarray) -> list:
        uniform = self.training.uniform_seeds
        seeds = [uniform.dense(k, seed if k == index else np.broadcast_to(np.zeros((), o.dtype), o.shape), o.dtype)
                 for k, o in enumerate(self.outputs)]
        return self.training.backward(*self.saved, *self.inputs, *seeds)


class _UniformSeeds:
    """The seeds of a compiled backward as the dense arrays it reads. A uniform seed (one value
    broadcast: the gradient of `sum` or `mean`, or the zeros of the outputs a backward does not
    start from) is kept per output and filled again only when its value, shape or dtype changes: a
    fresh array written on every step, out of cache, cost conv.py's E and G2 steps 0.3-1.0 ms at two
    threads. The backward only reads its inputs, so the kept arrays stay as filled."""

    def __init__(self):
        self._kept: dict = {}

    def dense(self, output: int, seed: np.ndarray, dtype: np.dtype) -> np.ndarray:
        if seed.size <= 1 or any(seed.strides):
            return np.require(seed, dtype, "C")                          # keeps 0-d seeds 0-d
        value = np.asarray(seed.flat[0], dtype)
        kept = self._kept.get(output)
        if kept is None or (kept.shape, kept.dtype) != (seed.shape, dtype) or kept.flat[0].tobytes() != value.tobytes():
            kept = self._kept[output] = np.full(seed.shape, value, dtype)
        return kept


class _CompiledGradient:
    """The tape's view of a compiled backward: the gradient rule of output `index`."""

    name = "compiled"
    differentiable = True

    def __init__(self, context: _BackwardContext, index: int):
        self.context, self.index = context, index

    def grad(self, attrs, inputs, output, grad_output):
        grads = self.context.gradients(self.index, grad_output.data)
        return tuple(autograd.sole_gradient(Tensor._wrap(g)) for g in grads)
