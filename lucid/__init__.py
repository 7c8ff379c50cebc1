"""lucid: a graph-compiling deep-learning framework."""
from .autograd import enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled
from .creation import arange, full, ones, ones_like, rand, rand_like, randn, randn_like, tensor, zeros, zeros_like
from .errors import DeviceError, DTypeError, GradientError, GraphError, LucidError, ShapeError, TraceError
from .ir.types import Device, DType, bool_, float32, float64, int64

device = Device
from .random import manual_seed
from .tensor import Tensor
from .version import __version__


def cat(tensors, axis: int = 0, *, dim: int | None = None) -> Tensor:
    """Concatenate tensors along `axis` (alias `dim`)."""
    from .ir.ops import concat

    return concat(tensors, dim if dim is not None else axis)


concatenate = cat


def stack(tensors, dim: int = 0, *, axis: int | None = None) -> Tensor:
    """Join tensors of one shape along a new axis `dim` (alias `axis`); composed of unsqueeze and
    concat, so it traces, compiles and differentiates as they do."""
    from .ir.ops import concat

    tensors = list(tensors)
    dim = axis if axis is not None else dim
    if not tensors:
        raise ShapeError("stack: expected a non-empty sequence of tensors")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ShapeError(f"stack: expected tensors of one shape, got shapes {[tuple(t.shape) for t in tensors]}")
    rank = len(tensors[0].shape) + 1
    if not -rank <= dim < rank:
        raise ShapeError(f"stack: dim {dim} is out of range for {rank - 1}-D tensors (expected -{rank} to {rank - 1})")
    return concat([t.unsqueeze(dim) for t in tensors], dim % rank)


def save(obj, path) -> None:
    """Save tensors, arrays, state dicts and plain containers; the format never executes code on load."""
    from .serialization import save as _save

    _save(obj, path)


def load(path):
    """Load what `lucid.save` wrote."""
    from .serialization import load as _load

    return _load(path)


from .safetensors import load_safetensors, save_safetensors  # noqa: E402
from . import nn, optim  # noqa: E402  (nn and optim need the names above)
from . import jit  # noqa: E402
from .tracing import spec, trace  # noqa: E402
from .compiler import compile  # noqa: E402,A004
from . import ir, passes  # noqa: E402
from .aot import export  # noqa: E402
from . import runtime  # noqa: E402  (numpy + ctypes only)


def __getattr__(name: str):
    """`lucid.viz` is imported on first use, so `import lucid` (and `lucid.runtime`) does not load
    networkx and the renderers."""
    if name == "viz":
        import importlib

        return importlib.import_module(".viz", __name__)
    raise AttributeError(f"module 'lucid' has no attribute {name!r}")
