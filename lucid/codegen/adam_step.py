"""The native step of `lucid.optim.Adam` and `AdamW`: one pass over each parameter's elements.

`adam_step(rule, named_target())` compiles (once per process, `AdamRule` and target) a function
`steps(count, arrays, sizes, scalars)` that steps `count` parameters in one call: for parameter t,
`arrays[5t:5t+5]` are the addresses of p, g, m, v and v_max and `sizes[t]` its element count. For
each element it updates the parameter `p`, the moments `m` and `v` and, with AMSGrad, their running
maximum `v_max`, in place, from the gradient `g`. Each element goes through PyTorch's operations in
PyTorch's order at the parameter's precision, with LLVM's default floating-point rules (no fused
multiply-add, no reassociation), so the results are bit for bit those of the NumPy sequence (one
array operation at a time) it replaced:

    g = -g                                  (maximize)
    p = p * (1 - lr wd)                     (AdamW: decoupled decay)   g = g + wd p   (Adam: L2)
    m = m + (g - m) (1 - beta1)
    v = v beta2 + (g (1 - beta2)) g
    v_max = max(v_max, v), NaN if either is (AMSGrad, the `maximum` operator's rule; then v_max
                                            stands for v below; v is never -0, so max is NumPy's)
    p = p - (m / (sqrt(v) / sqrt(1 - beta2^t) + eps)) (lr / (1 - beta1^t))

The scalars are the parameter's dtype: (1 - beta1, beta2, 1 - beta2, sqrt(1 - beta2^t), eps,
lr / (1 - beta1^t), the decay factor or wd), as NumPy rounds a Python float for an array of that dtype.
One pass reads four arrays and writes three where the NumPy sequence made thirteen, with seven
temporaries: AdamW's step on an R(2+1)-D net's 903,633 elements in 65 parameters took 4.8 ms and
takes 1.1-1.3 ms; on 12M elements (8M, 4M and 1000), 91-100 ms and 15 ms. `Adam` keeps the
arrays' addresses (`jit.KeptAddresses`) and the step's scalars from call to call, and steps the
parameters sharing a rule and scalars in one call (a call per parameter cost 12 us of Python each:
0.8 of that R(2+1)-D step's 1.6 ms).
The loop assumes nothing about aliasing (LLVM checks at run time before it vectorises); a gradient
sharing its parameter's memory is copied first by the caller.
"""
from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass

import llvmlite.ir as ir

from .irgen import F32, F64, I64, counted_loop
from .jit import NativeCode, compile_module
from .kernels.scalar import SCALAR, Scalars
from .target import host

#: The order of the scalars a step reads.
SCALARS = ("one_minus_beta1", "beta2", "one_minus_beta2", "bias_correction2_sqrt", "eps", "step_size", "decay")


@dataclass(frozen=True)
class AdamRule:
    """Which step: the element type, decoupled decay (AdamW) or L2 decay added to the gradient (Adam),
    whether there is a decay at all, AMSGrad, and maximize."""

    dtype: object           # the NumPy dtype: float32 or float64
    decoupled: bool
    decays: bool
    amsgrad: bool
    maximize: bool


def named_target() -> tuple:
    """What LUCID_CPU and LUCID_CPU_FEATURES say now (None where unset): `host()`'s reading."""
    return os.environ.get("LUCID_CPU"), os.environ.get("LUCID_CPU_FEATURES")


@functools.cache
def adam_step(rule: AdamRule, target_named: tuple):
    """The compiled step of `rule` for the target `host()` gives while the environment names
    `target_named` (`named_target()`, read by the caller once per optimiser step: a process that
    changes LUCID_CPU gets code for the new target, as every compile does): a ctypes function
    (count, arrays, sizes, scalars), count an int, the others addresses."""
    target = host()
    native = NativeCode([compile_module(_module(rule), target)], target)
    function = ctypes.CFUNCTYPE(None, ctypes.c_int64, *[ctypes.c_void_p] * 3)
    steps = function(native.address("lucid_adam_steps"))
    steps.native = native                   # the engine holding the code lives as long as the function
    return steps


def _module(rule: AdamRule) -> ir.Module:
    element = F32 if rule.dtype == "float32" else F64      # a NumPy dtype equals its name
    pointer = element.as_pointer()
    module = ir.Module(name="adam_step")
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), [pointer] * 5 + [I64, pointer]), "lucid_adam_step")
    function.linkage = "internal"
    p, g, m, v, v_max, n, scalars = function.args
    b = ir.IRBuilder(function.append_basic_block("entry"))
    c = {name: b.load(b.gep(scalars, [ir.Constant(I64, k)])) for k, name in enumerate(SCALARS)}
    s = Scalars(b, module)
    with counted_loop(b, n) as i:
        at = [b.gep(array, [i]) for array in (p, g, m, v, v_max)]
        weight, grad, mean, square = (b.load(a) for a in at[:4])
        if rule.maximize:
            grad = b.fneg(grad)
        if rule.decays and rule.decoupled:
            weight = b.fmul(weight, c["decay"])
        elif rule.decays:
            grad = b.fadd(grad, b.fmul(c["decay"], weight))
        mean = b.fadd(mean, b.fmul(b.fsub(grad, mean), c["one_minus_beta1"]))
        square = b.fadd(b.fmul(square, c["beta2"]), b.fmul(b.fmul(grad, c["one_minus_beta2"]), grad))
        b.store(mean, at[2])
        b.store(square, at[3])
        if rule.amsgrad:
            square = SCALAR["maximum"](s, None, b.load(at[4]), square)
            b.store(square, at[4])
        denominator = b.fadd(b.fdiv(SCALAR["sqrt"](s, None, square), c["bias_correction2_sqrt"]), c["eps"])
        b.store(b.fsub(weight, b.fmul(b.fdiv(mean, denominator), c["step_size"])), at[0])
    b.ret_void()
    _emit_steps(module, function)
    return module


def _emit_steps(module: ir.Module, step: ir.Function) -> None:
    """lucid_adam_steps(count, arrays, sizes, scalars): `step` on each of `count` parameters."""
    pointer = step.args[0].type
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64, pointer.as_pointer(), I64.as_pointer(),
                                                                   pointer]), "lucid_adam_steps")
    count, arrays, sizes, scalars = function.args
    b = ir.IRBuilder(function.append_basic_block("entry"))
    with counted_loop(b, count) as t:
        first = b.mul(t, ir.Constant(I64, 5))
        addresses = [b.load(b.gep(arrays, [b.add(first, ir.Constant(I64, k))])) for k in range(5)]
        b.call(step, addresses + [b.load(b.gep(sizes, [t])), scalars])
    b.ret_void()
