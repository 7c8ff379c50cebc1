"""The file format of `lucid.save` and `graph.save`: nested Python objects with numpy arrays, without pickle.

A lucid file is a zip archive (like numpy's ``.npz``) holding ``manifest.json`` and one ``.npy``
entry per array. The manifest is ``{"format": "lucid", "version": 1, "root": node}`` where a node is
a JSON scalar (None, bool, int, float, str) or a tagged object:

- ``{"type": "list" | "tuple", "items": [node, ...]}``
- ``{"type": "dict", "items": [[key, node], ...]}`` (keys are str or int, order kept)
- ``{"type": "ndarray" | "scalar", "entry": "arr_0.npy"}`` (a numpy array or numpy scalar)
- an array of another kind, tagged by the caller: ``{"type": kind, "entry": "arr_0.npy", ...fields}``
  (`lucid.serialization` stores a ``lucid.Tensor`` as kind ``tensor`` with ``requires_grad``).

Loading parses JSON and reads arrays with ``allow_pickle=False``: it never runs code from the file.
This module knows numpy and nothing of lucid's tensors or graphs, so both the eager core
(`lucid.serialization`) and the IR (`lucid.ir.serialize`) build on it.
"""
from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np

from .errors import SerializationError

FORMAT_NAME = "lucid"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def _untagged(obj):
    return None


def save(obj, path, tag=_untagged) -> None:
    """Save ``obj`` to ``path`` (a str, os.PathLike, or a file object opened for binary writing).

    ``obj`` may nest dicts (str or int keys), lists and tuples of numpy arrays and scalars,
    int, float, bool, str and None. Arrays keep their dtype; object arrays are refused.
    ``tag(obj)`` returns ``(kind, array, fields)`` for an object stored as a tagged array, else None.
    """
    arrays: list[np.ndarray] = []
    root = _encode(obj, arrays, "obj", tag)
    manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "root": root}
    target = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(MANIFEST, json.dumps(manifest))
        for i, array in enumerate(arrays):
            with zf.open(f"arr_{i}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array, allow_pickle=False)


def _encode(obj, arrays: list, where: str, tag):
    tagged = tag(obj)
    if tagged is not None:
        kind, array, fields = tagged
        return {**_array_node(array, arrays, where), "type": kind, **fields}
    if isinstance(obj, (np.ndarray, np.generic)):
        node = _array_node(obj, arrays, where)
        if isinstance(obj, np.generic):
            node["type"] = "scalar"
        return node
    if obj is None or isinstance(obj, (bool, int, float, str)):  # np.float64 is a float: test after np.generic
        return obj
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, arrays, f"{where}[{i}]", tag) for i, v in enumerate(obj)]
        return {"type": "list" if isinstance(obj, list) else "tuple", "items": items}
    if isinstance(obj, dict):
        items = []
        for key, value in obj.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise TypeError(f"lucid.save: {where} has a key {key!r} of type "
                                f"{type(key).__name__}; dict keys must be str or int")
            items.append([key, _encode(value, arrays, f"{where}[{key!r}]", tag)])
        return {"type": "dict", "items": items}
    raise TypeError(f"lucid.save: {where} has unsupported type {type(obj).__name__}; expected "
                    "numpy arrays, Tensors, dict, list, tuple, int, float, bool, str or None")


def _array_node(array, arrays: list, where: str) -> dict:
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise TypeError(f"lucid.save: {where} is an array of dtype {array.dtype}; "
                        "object arrays cannot be saved")
    arrays.append(array)
    return {"type": "ndarray", "entry": f"arr_{len(arrays) - 1}.npy"}


def load(path, untag: dict | None = None):
    """Load an object saved by ``save`` from a path or a binary file object. ``untag`` maps each
    tagged kind the caller reads to ``make(array, node) -> object``; other kinds are refused.

    Raises ``SerializationError`` (a ValueError) naming the file when it is not a lucid file,
    is corrupt or truncated, has an unsupported version, lacks an array entry or holds object arrays.
    """
    if isinstance(path, (str, os.PathLike)):
        with open(path, "rb") as f:
            return _load(f, os.fspath(path), untag or {})
    return _load(path, getattr(path, "name", repr(path)), untag or {})


def _load(f, name, untag: dict):
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
            return _decode(manifest["root"], zf, fail, untag)
    except SerializationError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        fail(f"not a readable zip archive ({exc})", exc)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        fail(f"{MANIFEST} is not valid JSON ({exc})", exc)


def _decode(node, zf: zipfile.ZipFile, fail, untag: dict):
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    kind = node.get("type") if isinstance(node, dict) else None
    items = node.get("items") if isinstance(node, dict) else None
    if kind in ("list", "tuple") and isinstance(items, list):
        values = [_decode(v, zf, fail, untag) for v in items]
        return values if kind == "list" else tuple(values)
    if kind == "dict" and isinstance(items, list):
        if not all(isinstance(i, list) and len(i) == 2 and type(i[0]) in (str, int) for i in items):
            fail("a dict node has malformed items")
        return {key: _decode(value, zf, fail, untag) for key, value in items}
    if (kind in ("ndarray", "scalar") or kind in untag) and isinstance(node.get("entry"), str):
        array = _read_array(zf, node["entry"], fail)
        if kind == "scalar":
            return array[()]
        return untag[kind](array, node) if kind in untag else array
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
