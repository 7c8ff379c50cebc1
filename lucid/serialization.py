"""``lucid.save`` / ``lucid.load``: nested Python objects with numpy arrays, without pickle.

A lucid file is a zip archive (like numpy's ``.npz``) holding ``manifest.json`` and one ``.npy``
entry per array. The manifest is ``{"format": "lucid", "version": 1, "root": node}`` where a node is
a JSON scalar (None, bool, int, float, str) or a tagged object:

- ``{"type": "list" | "tuple", "items": [node, ...]}``
- ``{"type": "dict", "items": [[key, node], ...]}`` (keys are str or int, order kept)
- ``{"type": "ndarray" | "scalar", "entry": "arr_0.npy"}`` (a numpy array or numpy scalar)
- ``{"type": "tensor", "entry": "arr_0.npy", "requires_grad": bool}`` (a ``lucid.Tensor``)

Loading parses JSON and reads arrays with ``allow_pickle=False``: it never runs code from the file.
"""
from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np

from lucid.errors import LucidError

FORMAT_NAME = "lucid"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class SerializationError(LucidError, ValueError):
    """A file given to ``lucid.load`` is not a readable lucid file."""


def save(obj, path) -> None:
    """Save ``obj`` to ``path`` (a str, os.PathLike, or a file object opened for binary writing).

    ``obj`` may nest dicts (str or int keys), lists and tuples of numpy arrays and scalars,
    lucid Tensors, int, float, bool, str and None. Arrays keep their dtype; object arrays are refused.
    """
    arrays: list[np.ndarray] = []
    root = _encode(obj, arrays, "obj")
    manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "root": root}
    target = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(MANIFEST, json.dumps(manifest))
        for i, array in enumerate(arrays):
            with zf.open(f"arr_{i}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array, allow_pickle=False)


def _encode(obj, arrays: list, where: str):
    from lucid.tensor import Tensor

    if isinstance(obj, (np.ndarray, np.generic, Tensor)):
        array = np.asarray(obj.data if isinstance(obj, Tensor) else obj)
        if array.dtype.hasobject:
            raise TypeError(f"lucid.save: {where} is an array of dtype {array.dtype}; "
                            "object arrays cannot be saved")
        node = {"type": "ndarray", "entry": f"arr_{len(arrays)}.npy"}
        arrays.append(array)
        if isinstance(obj, Tensor):
            node.update(type="tensor", requires_grad=bool(obj.requires_grad))
        elif isinstance(obj, np.generic):
            node["type"] = "scalar"
        return node
    if obj is None or isinstance(obj, (bool, int, float, str)):  # np.float64 is a float: test after np.generic
        return obj
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]
        return {"type": "list" if isinstance(obj, list) else "tuple", "items": items}
    if isinstance(obj, dict):
        items = []
        for key, value in obj.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise TypeError(f"lucid.save: {where} has a key {key!r} of type "
                                f"{type(key).__name__}; dict keys must be str or int")
            items.append([key, _encode(value, arrays, f"{where}[{key!r}]")])
        return {"type": "dict", "items": items}
    raise TypeError(f"lucid.save: {where} has unsupported type {type(obj).__name__}; expected "
                    "numpy arrays, Tensors, dict, list, tuple, int, float, bool, str or None")


def load(path):
    """Load an object saved by ``save`` from a path or a binary file object.

    Raises ``SerializationError`` (a ValueError) naming the file when it is not a lucid file,
    is corrupt or truncated, has an unsupported version, lacks an array entry or holds object arrays.
    """
    if isinstance(path, (str, os.PathLike)):
        with open(path, "rb") as f:
            return _load(f, os.fspath(path))
    return _load(path, getattr(path, "name", repr(path)))


def _load(f, name):
    def fail(problem: str, cause: Exception | None = None):
        raise SerializationError(f"lucid.load: {name} is not a valid lucid file: {problem}") from cause

    try:
        with zipfile.ZipFile(f) as zf:
            try:
                manifest = json.loads(zf.read(MANIFEST).decode("utf-8"))
            except KeyError as exc:
                fail(f"the archive has no {MANIFEST}", exc)
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
                fail(f"{MANIFEST} does not declare format {FORMAT_NAME!r}")
            version = manifest.get("version")
            if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
                fail(f"unsupported format version {version!r} (this lucid reads up to "
                     f"version {FORMAT_VERSION})")
            if "root" not in manifest:
                fail(f"{MANIFEST} has no 'root'")
            return _decode(manifest["root"], zf, fail)
    except SerializationError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        fail(f"not a readable zip archive ({exc})", exc)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        fail(f"{MANIFEST} is not valid JSON ({exc})", exc)


def _decode(node, zf: zipfile.ZipFile, fail):
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    kind = node.get("type") if isinstance(node, dict) else None
    items = node.get("items") if isinstance(node, dict) else None
    if kind in ("list", "tuple") and isinstance(items, list):
        values = [_decode(v, zf, fail) for v in items]
        return values if kind == "list" else tuple(values)
    if kind == "dict" and isinstance(items, list):
        if not all(isinstance(i, list) and len(i) == 2 and type(i[0]) in (str, int) for i in items):
            fail("a dict node has malformed items")
        return {key: _decode(value, zf, fail) for key, value in items}
    if kind in ("ndarray", "scalar", "tensor") and isinstance(node.get("entry"), str):
        array = _read_array(zf, node["entry"], fail)
        if kind == "scalar":
            return array[()]
        if kind == "tensor":
            from lucid.tensor import Tensor

            return Tensor(array, requires_grad=bool(node.get("requires_grad")), dtype=array.dtype)
        return array
    fail(f"malformed node in {MANIFEST}: {str(node)[:80]}")


def _read_array(zf: zipfile.ZipFile, entry: str, fail) -> np.ndarray:
    try:
        data = zf.read(entry)
    except KeyError as exc:
        fail(f"array entry {entry!r} is missing", exc)
    try:
        return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except (ValueError, TypeError, EOFError, MemoryError) as exc:
        fail(f"array entry {entry!r} cannot be read ({exc})", exc)
