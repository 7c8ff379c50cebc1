"""Operator lowerings, one module per family; importing this package registers them all."""
from . import (conv, elementwise, fused, linalg, normalization, pool, random, reduction, resample, shape,  # noqa: F401
               size, softmax)
