"""Value types of lucid: dtypes, tensor types (shape + dtype) and the device.

These are shared by eager tensors, graph values and every operator's shape rule.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import DeviceError
from .symbolic import as_size, is_symbolic, same


class DType:
    """A lucid element type; wraps one numpy dtype and compares equal to it and to its name."""

    _by_name: dict[str, "DType"] = {}

    def __init__(self, name: str, rank: int):
        self.name = name
        self.numpy = np.dtype(name)
        # Promotion rank: bool < int64 < float32 < float64.
        self.rank = rank
        DType._by_name[name] = self

    @property
    def is_floating(self) -> bool:
        return self.numpy.kind == "f"

    def __repr__(self) -> str:
        return f"lucid.{self.name}"

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other) -> bool:
        if isinstance(other, DType):
            return self is other
        try:
            return self.numpy == np.dtype(other)
        except TypeError:
            return False

    def __hash__(self) -> int:
        return hash(self.name)

    def __reduce__(self):
        return (as_dtype, (self.name,))


bool_ = DType("bool", 0)
int64 = DType("int64", 1)
float32 = DType("float32", 2)
float64 = DType("float64", 3)

_NUMPY_TO_LUCID = {
    np.dtype(np.bool_): bool_,
    np.dtype(np.float16): float32,
    np.dtype(np.float32): float32,
    np.dtype(np.float64): float64,
}


def as_dtype(value) -> DType:
    """Convert a DType, a numpy dtype, a Python type or a name to a lucid DType.

    Floating types other than float64 map to float32; every integer type maps to int64.
    """
    if isinstance(value, DType):
        return value
    if isinstance(value, np.dtype) and value in _NUMPY_TO_LUCID:       # a Tensor's own: the common case
        return _NUMPY_TO_LUCID[value]
    if isinstance(value, str) and value in DType._by_name:
        return DType._by_name[value]
    try:
        np_dtype = np.dtype(value)
    except TypeError as exc:
        raise TypeError(f"lucid: unknown dtype {value!r}; expected one of "
                        f"{sorted(DType._by_name)}") from exc
    if np_dtype in _NUMPY_TO_LUCID:
        return _NUMPY_TO_LUCID[np_dtype]
    if np_dtype.kind in "iu":
        return int64
    raise TypeError(f"lucid: unsupported dtype {np_dtype}; expected one of {sorted(DType._by_name)}")


def promote(*dtypes: DType) -> DType:
    """The dtype of a result computed from operands of these dtypes (highest rank wins)."""
    return max(dtypes, key=lambda d: d.rank)


class Device:
    """Where a tensor lives: always the CPU (`lucid.device('cpu')`, PyTorch's spelling).

    Accepted specs are 'cpu', 'cpu:<n>', a Device, or an object whose `type` is 'cpu' (a torch.device);
    any other device raises a DeviceError, since lucid runs on the CPU only.
    """

    __slots__ = ()

    def __new__(cls, spec="cpu"):
        kind = spec.type if hasattr(spec, "type") else spec
        if not (isinstance(kind, str) and kind.partition(":")[0].strip() == "cpu"):
            raise DeviceError(f"lucid.device: lucid runs on the CPU only; got device {str(spec)!r} (use 'cpu')")
        return _CPU

    @property
    def type(self) -> str:
        return "cpu"

    @property
    def index(self) -> None:
        return None

    def __repr__(self) -> str:
        return "device(type='cpu')"

    def __str__(self) -> str:
        return "cpu"

    def __eq__(self, other) -> bool:
        return isinstance(other, Device) or str(other) == "cpu"

    def __hash__(self) -> int:
        return hash("cpu")

    def __reduce__(self):
        return (Device, ("cpu",))


_CPU = object.__new__(Device)


def as_device(spec, owner: str) -> Device:
    """The device `spec` names (None means the CPU); a DeviceError naming `owner` for any other device."""
    if spec is None:
        return _CPU
    try:
        return Device(spec)
    except DeviceError:
        raise DeviceError(f"{owner}: lucid runs on the CPU only; got device {str(spec)!r} (use 'cpu')") from None


class TensorType:
    """Static description of a tensor value: its shape and dtype. A size is an int or a symbolic size
    (`lucid.ir.symbolic.Expr`: `N`, `(D + 1) // 2`)."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype):
        self.shape = tuple(as_size(s) for s in shape)
        self.dtype = as_dtype(dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self):
        """The element count: an int, or a symbolic size when the shape holds one."""
        return math.prod(self.shape) if self.is_symbolic else int(np.prod(self.shape, dtype=np.int64))

    @property
    def is_symbolic(self) -> bool:
        return is_symbolic(self.shape)

    def __eq__(self, other) -> bool:
        return isinstance(other, TensorType) and same(self.shape, other.shape) and self.dtype == other.dtype

    def __hash__(self) -> int:
        return hash((self.shape, self.dtype))

    def __repr__(self) -> str:
        return f"{self.dtype}{list(self.shape)}"
