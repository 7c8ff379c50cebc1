"""Every lucid operator: definitions (registered in `registry`) and the functions that apply them.

The functions work on any value kind (eager tensors now, graph values when tracing); the gradient
rules of the definitions are written with them.
"""
from . import registry
from .registry import OpDef, OpKind, all_ops, emit, get, register
from .elementwise import (abs_, add, broadcast_shapes, cast, clamp, div, eq, erf, exp, ge, gelu, gt, le,
                          leaky_relu, log, lt, maximum, minimum, mul, ne, neg, pow_scalar, relu, sigmoid,
                          sign, sqrt, sub, sum_to_shape, tanh, where)
from .reduction import argmax, max_, mean, min_, normalize_axes, sum_, var
from .shape import broadcast_to, concat, one_hot, pad, permute, reshape, slice_
from .linalg import matmul, transpose_last
from .conv import conv, conv_output_size, conv_transpose, conv_transpose_output_size
from .pool import avg_pool, max_pool, pool_output_size
from .resample import resample
from .size import count_operand, size_value
from .random import random_values
from .normalization import log_softmax, moments, normalize, softmax, split_moments
from .activation import elu, hardsigmoid, hardswish, hardtanh, mish, prelu, silu, softplus
from . import fused  # noqa: F401  (registers the fused operator)
