"""Argument parsing the functions and the layers share: ints or tuples, padding strings, unbatched inputs."""
from __future__ import annotations

import numbers

from ...errors import DTypeError, ShapeError
from ...ir.methods import TensorMethods
from ...tensor import Tensor



def ntuple(value, rank: int, what: str, owner: str, minimum: int | None = None) -> tuple:
    """An int or a length-`rank` sequence of ints as a tuple; checks every entry >= minimum."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        values = (int(value),) * rank
    elif isinstance(value, (tuple, list)) and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        values = tuple(int(v) for v in value)
        if len(values) != rank:
            raise ShapeError(f"{owner}: expected {what} as an int or a tuple of {rank} ints, got {tuple(value)}")
    else:
        raise ShapeError(f"{owner}: expected {what} as an int or a tuple of {rank} ints, got {value!r}")
    if minimum is not None and min(values) < minimum:
        raise ShapeError(f"{owner}: {what} must be >= {minimum}, got {values}")
    return values


def check_padding_arg(padding, rank: int, owner: str):
    """Validate a padding argument: 'same', 'valid', an int or a tuple of non-negative ints."""
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ShapeError(f"{owner}: padding must be 'same', 'valid', an int or a tuple of {rank} ints, got {padding!r}")
        return padding
    return ntuple(padding, rank, "padding", owner, minimum=0)


def conv_padding(padding, rank: int, owner: str, in_sp: tuple, kernel: tuple, stride: tuple, dilation: tuple) -> tuple:
    """(lo, hi) pairs for a conv. 'same' keeps ceil(in/stride) outputs, the odd element on the high side."""
    padding = check_padding_arg(padding, rank, owner)
    if padding == "valid":
        return ((0, 0),) * rank
    if padding == "same":
        pairs = []
        for n, k, s, d in zip(in_sp, kernel, stride, dilation):
            total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
            pairs.append((total // 2, total - total // 2))
        return tuple(pairs)
    return tuple((p, p) for p in padding)


def conv_transpose_padding(padding, output_padding, rank: int, owner: str, kernel: tuple, stride: tuple,
                           dilation: tuple) -> tuple[tuple, tuple]:
    """((lo, hi) pairs, output_padding) for a transposed conv; 'same' gives in*stride outputs."""
    padding = check_padding_arg(padding, rank, owner)
    output_padding = ntuple(output_padding, rank, "output_padding", owner, minimum=0)
    if isinstance(padding, str) and any(output_padding):
        raise ShapeError(f"{owner}: output_padding must be 0 with padding={padding!r}, got {output_padding}")
    if padding == "valid":
        return ((0, 0),) * rank, output_padding
    if padding == "same":
        pairs, extra = [], []
        for k, s, d in zip(kernel, stride, dilation):
            total = d * (k - 1) + 1 - s
            pairs.append((total // 2, total - total // 2) if total >= 0 else (0, 0))
            extra.append(max(-total, 0))
        return tuple(pairs), tuple(extra)
    return tuple((p, p) for p in padding), output_padding


def check_output_padding(output_padding: tuple, stride: tuple, dilation: tuple, owner: str) -> None:
    if any(p >= max(s, d) for p, s, d in zip(output_padding, stride, dilation)):
        raise ShapeError(f"{owner}: output_padding must be smaller than stride or dilation, got "
                         f"output_padding={output_padding} stride={stride} dilation={dilation}")


def require_tensor(x, owner: str, what: str = "input") -> Tensor:
    if not isinstance(x, TensorMethods):
        raise DTypeError(f"{owner}: expected {what} to be a lucid Tensor, got {type(x).__name__}")
    return x


def batched(x, rank: int, owner: str) -> tuple[Tensor, bool]:
    """Accept (C, *spatial) or (N, C, *spatial); return the batched tensor and whether a batch axis was added."""
    x = require_tensor(x, owner)
    if x.ndim == rank + 1:
        return x.unsqueeze(0), True
    if x.ndim != rank + 2:
        raise ShapeError(f"{owner}: expected a {rank + 1}-D (unbatched) or {rank + 2}-D (batched) input, "
                         f"got a {x.ndim}-D input of shape {x.shape}")
    return x, False


def unbatch(y: Tensor, added: bool) -> Tensor:
    return y.squeeze(0) if added else y


def check_weight(weight, rank: int, owner: str) -> Tensor:
    weight = require_tensor(weight, owner, "weight")
    if weight.ndim != rank + 2:
        raise ShapeError(f"{owner}: expected a weight of rank {rank + 2}, got shape {weight.shape}")
    return weight
