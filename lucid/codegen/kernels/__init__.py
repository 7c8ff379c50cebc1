"""Operator lowerings, one module per family; importing this package registers them all."""
from . import conv, elementwise, fused, linalg, pool, random, reduction, resample, shape, softmax  # noqa: F401
