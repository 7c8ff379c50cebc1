"""lucid's intermediate representation: value types and the operator definitions."""
from . import ops
from .types import DType, TensorType, as_dtype, bool_, float32, float64, int64, promote
