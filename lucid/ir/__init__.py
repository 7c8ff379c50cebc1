"""lucid's intermediate representation: value types, operator definitions, and the graph IR with its
text form, parser, verifier, file format, networkx view and interpreter."""
from . import ops, symbolic
from .types import DType, TensorType, as_dtype, bool_, float32, float64, int64, promote
from .graph import CONSTANT, Builder, Graph, Node, Scope, Value, building, infer_type
from .text import format_type, parse
from .verify import verify
from .serialize import load
from .interpreter import run
