"""Exceptions raised by lucid for user mistakes.

Every error subclasses ValueError or TypeError so callers can catch the builtin kinds. Messages
start with the layer or operator that refused the input and state what was expected and what came in.
"""


class LucidError(Exception):
    """Base class of lucid's own errors."""


class ShapeError(LucidError, ValueError):
    """An input of the wrong shape, rank, size or an invalid attribute value."""


class DTypeError(LucidError, TypeError):
    """An input of the wrong dtype or Python type."""


class GradientError(LucidError, RuntimeError):
    """Autograd was asked for something it cannot do (e.g. backward through a non-differentiable op)."""


class TraceError(LucidError, TypeError):
    """Python code asked a traced value for data it does not have (e.g. `if x.sum() > 0:`), or returned
    something a graph cannot hold."""


class GraphError(LucidError, ValueError):
    """A graph is malformed: it fails the verifier, its text does not parse, or its file is not a lucid
    graph this version can read."""


class SerializationError(LucidError, ValueError):
    """A file given to ``lucid.load`` is not a readable lucid file."""


class ExportError(LucidError, ValueError):
    """`lucid.export` cannot write a library for this model (an unsupported input or output dtype, state
    updates, a bad name) or cannot link it (no C compiler)."""


class LibraryError(LucidError, ValueError):
    """`lucid.runtime` refused a file (not a lucid library, another ABI version, missing or damaged
    weights), or an exported library reported an error."""


class DeviceError(LucidError, ValueError):
    """A device other than the CPU was asked for (`x.to('cuda')`, `device='cuda:0'`): lucid runs on the
    CPU only."""


class OnnxError(LucidError, ValueError):
    """`lucid.onnx.load` refused an ONNX model: a damaged or hostile file, an unsupported opset,
    operator or attribute value, or shape arithmetic it cannot fold. The message names the file and,
    where there is one, the node."""


class CompileError(LucidError, ValueError):
    """A graph the code generator cannot compile as it is (symbolic dimensions: specialise it first)."""
