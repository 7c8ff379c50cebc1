"""Operator lowerings, one module per family; importing this package registers them all."""
from . import conv, elementwise, fused, linalg, normalization, pool, reduction, resample, shape, softmax  # noqa: F401
