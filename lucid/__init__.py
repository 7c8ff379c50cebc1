"""lucid: a graph-compiling deep-learning framework."""
from .autograd import enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled
from .creation import (arange, as_tensor, full, linspace, ones, ones_like, rand, rand_like, randn, randn_like, tensor,
                       zeros, zeros_like)
from .errors import DeviceError, DTypeError, GradientError, GraphError, LucidError, ShapeError, TraceError
from .ir.types import Device, DType, bool_, float32, float64, int64

device = Device
dtype = DType
float, double, long = float32, float64, int64  # noqa: A001  (PyTorch's dtype names: torch.float, ...)
from .random import manual_seed
from .tensor import Tensor
from .version import __version__
from .functions import (  # noqa: A004  (PyTorch's names: abs, max, min, pow, sum)
    Size, abs, add, allclose, amax, amin, argmax, argmin, cat, chunk, clamp, clip, clone, concat, concatenate, div,
    divide, equal, exp, flatten, full_like, is_tensor, isclose, isfinite, isinf, isnan, log, log_softmax, matmul,
    max, maximum, mean, meshgrid, min, minimum, mul, multiply, narrow, neg, negative, numel, permute, pow,
    reciprocal, relu, reshape, rsqrt, select, sigmoid, softmax, split, sqrt, square, squeeze, stack, std, sub,
    subtract, sum, tanh, transpose, true_divide, unbind, unsqueeze, var, where)


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
from . import utils  # noqa: E402
from .tracing import dim, spec, trace  # noqa: E402
from .compiler import compile  # noqa: E402,A004
from . import ir, passes  # noqa: E402
from .aot import export  # noqa: E402
from . import runtime  # noqa: E402  (numpy + ctypes only)


def __getattr__(name: str):
    """`lucid.viz` and `lucid.onnx` are imported on first use, so `import lucid` (and `lucid.runtime`)
    does not load networkx and the renderers, nor the optional onnx package."""
    import importlib

    if name == "viz":
        return importlib.import_module(".viz", __name__)
    if name == "onnx":
        return importlib.import_module(".onnx", __name__)
    raise AttributeError(f"module 'lucid' has no attribute {name!r}")
