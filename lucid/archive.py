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
import math
import os
import struct
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

    Raises ``SerializationError`` (a ValueError) naming the file and what is wrong with it whenever it
    is not a lucid file this version reads: not a zip archive, damaged anywhere in its headers or
    entries, truncated, compressed or encrypted entries, sizes that disagree with each other or with
    the file, an unsupported version, a missing entry, object arrays. Nothing is read beyond the sizes
    the file's own length and each array's header allow, so a forged size cannot exhaust memory.
    """
    if isinstance(path, (str, os.PathLike)):
        with open(path, "rb") as f:
            return _load(f, os.fspath(path), untag or {})
    return _load(path, getattr(path, "name", repr(path)), untag or {})


#: What `zipfile` and numpy raise on a damaged archive: bad signatures or offsets (BadZipFile,
#: ValueError, struct.error, EOFError, OSError), fields naming features it lacks (NotImplementedError,
#: RuntimeError for encryption), impossible sizes (OverflowError, LargeZipFile).
_DAMAGE = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError, RuntimeError,
           ValueError, OverflowError, struct.error, UnicodeDecodeError)


def _load(f, name, untag: dict):
    def fail(problem: str, cause: Exception | None = None):
        raise SerializationError(f"lucid.load: {name} is not a valid lucid file: {problem}") from cause

    try:
        file_size = f.seek(0, io.SEEK_END)
        f.seek(0)
        zf = zipfile.ZipFile(f)
    except _DAMAGE as exc:
        fail(f"not a readable zip archive ({exc})", exc)
    with zf:
        entries = _checked_entries(zf, file_size, fail)
        manifest = _read_manifest(zf, entries, fail)
        try:
            return _decode(manifest["root"], _EntryReader(zf, entries, fail), fail, untag)
        except RecursionError as exc:
            fail(f"{MANIFEST} nests too deeply", exc)


def _checked_entries(zf: zipfile.ZipFile, file_size: int, fail) -> dict:
    """The archive's entries by name, once each is known to be stored (lucid never compresses, so no
    entry can inflate), unencrypted, listed once and lying within the file."""
    entries = {}
    for info in zf.infolist():
        if info.filename in entries:
            fail(f"entry {info.filename!r} is listed twice")
        if info.flag_bits & 0x1:
            fail(f"entry {info.filename!r} is marked encrypted")
        if info.compress_type != zipfile.ZIP_STORED:
            fail(f"entry {info.filename!r} uses compression method {info.compress_type}; "
                 "lucid files store their entries uncompressed")
        if info.compress_size != info.file_size or info.header_offset + info.file_size > file_size:
            fail(f"entry {info.filename!r} declares {info.file_size} bytes ({info.compress_size} stored) "
                 f"at offset {info.header_offset}, which a file of {file_size} bytes cannot hold")
        entries[info.filename] = info
    return entries


def _read_manifest(zf: zipfile.ZipFile, entries: dict, fail) -> dict:
    if MANIFEST not in entries:
        fail(f"the archive has no {MANIFEST}")
    data = _read_entry(zf, entries[MANIFEST], fail)
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        fail(f"{MANIFEST} is not valid JSON ({exc})", exc)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        fail(f"{MANIFEST} does not declare format {FORMAT_NAME!r}")
    version = manifest.get("version")
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        fail(f"unsupported format version {version!r} (this lucid reads up to "
             f"version {FORMAT_VERSION})")
    if "root" not in manifest:
        fail(f"{MANIFEST} has no 'root'")
    return manifest


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, fail) -> bytes:
    """The entry's bytes, exactly its checked size, its CRC verified (zipfile checks at the end)."""
    try:
        with zf.open(info) as stream:
            data, beyond = stream.read(info.file_size), stream.read(1)
    except _DAMAGE as exc:
        fail(f"entry {info.filename!r} cannot be read ({exc})", exc)
    if len(data) != info.file_size or beyond:
        fail(f"entry {info.filename!r} does not hold the {info.file_size} bytes it declares")
    return data


class _EntryReader:
    """Reads the arrays the manifest names, checking each .npy header against its entry's size."""

    def __init__(self, zf: zipfile.ZipFile, entries: dict, fail):
        self.zf, self.entries, self.fail = zf, entries, fail

    def array(self, entry: str) -> np.ndarray:
        fail = self.fail
        if entry not in self.entries:
            fail(f"array entry {entry!r} is missing")
        stream = io.BytesIO(_read_entry(self.zf, self.entries[entry], fail))
        try:
            version = np.lib.format.read_magic(stream)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(stream)
        except (ValueError, TypeError, EOFError, OverflowError) as exc:
            fail(f"array entry {entry!r} cannot be read ({exc})", exc)
        if dtype.hasobject:
            fail(f"array entry {entry!r} cannot be read (it holds an object array; object arrays are "
                 "refused, they would need pickle)")
        expected, held = math.prod(shape) * dtype.itemsize, len(stream.getbuffer()) - stream.tell()
        if held != expected:
            fail(f"array entry {entry!r} declares shape {shape} of {dtype} ({expected} bytes) but holds "
                 f"{held} bytes of data")
        stream.seek(0)
        try:
            return np.lib.format.read_array(stream, allow_pickle=False)
        except (ValueError, TypeError, EOFError, OverflowError) as exc:
            fail(f"array entry {entry!r} cannot be read ({exc})", exc)


def _decode(node, reader: _EntryReader, fail, untag: dict):
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    kind = node.get("type") if isinstance(node, dict) else None
    if not isinstance(kind, str):
        fail(f"malformed node in {MANIFEST}: {str(node)[:80]}")
    items = node.get("items")
    if kind in ("list", "tuple") and isinstance(items, list):
        values = [_decode(v, reader, fail, untag) for v in items]
        return values if kind == "list" else tuple(values)
    if kind == "dict" and isinstance(items, list):
        if not all(isinstance(i, list) and len(i) == 2 and type(i[0]) in (str, int) for i in items):
            fail("a dict node has malformed items")
        return {key: _decode(value, reader, fail, untag) for key, value in items}
    if (kind in ("ndarray", "scalar") or kind in untag) and isinstance(node.get("entry"), str):
        array = reader.array(node["entry"])
        if kind == "scalar":
            if array.ndim:
                fail(f"scalar entry {node['entry']!r} holds an array of shape {array.shape}")
            return array[()]
        if kind not in untag:
            return array
        try:
            return untag[kind](array, node)
        except (ValueError, TypeError) as exc:
            fail(f"entry {node['entry']!r} cannot be a {kind} ({exc})", exc)
    fail(f"malformed node in {MANIFEST}: {str(node)[:80]}")
