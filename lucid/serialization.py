"""``lucid.save`` / ``lucid.load``: nested Python objects with numpy arrays and lucid Tensors, without pickle.

The file format is `lucid/archive.py`'s. A ``lucid.Tensor`` is stored as a tagged array,
``{"type": "tensor", "entry": "arr_0.npy", "requires_grad": bool}``, and loads as a Tensor again.
"""
from __future__ import annotations

from .archive import load as load_archive, save as save_archive
from .errors import SerializationError  # noqa: F401  (the error `load` raises, importable from here)
from .tensor import Tensor


def save(obj, path) -> None:
    """Save ``obj`` to ``path`` (a str, os.PathLike, or a file object opened for binary writing).

    ``obj`` may nest dicts (str or int keys), lists and tuples of numpy arrays and scalars,
    lucid Tensors, int, float, bool, str and None. Arrays keep their dtype; object arrays are refused.
    """
    save_archive(obj, path, _tensor_node)


def _tensor_node(obj):
    if isinstance(obj, Tensor):
        return "tensor", obj.data, {"requires_grad": bool(obj.requires_grad)}
    return None


def load(path):
    """Load an object saved by ``save`` from a path or a binary file object.

    Raises ``SerializationError`` (a ValueError) naming the file when it is not a lucid file,
    is corrupt or truncated, has an unsupported version, lacks an array entry or holds object arrays.
    """
    return load_archive(path, {"tensor": _tensor})


def _tensor(array, node: dict) -> Tensor:
    return Tensor(array, requires_grad=bool(node.get("requires_grad")), dtype=array.dtype)
