"""``lucid.load_safetensors`` / ``lucid.save_safetensors``: the safetensors weight format, without
torch or pickle, so a checkpoint converted once from PyTorch loads by ``load_state_dict``.

A file is an 8-byte little-endian unsigned header length N, N bytes of a JSON header, then the
tensors' raw little-endian C-order bytes. The header maps each name to
``{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}`` (offsets relative to the end of
the header) and may hold ``"__metadata__": {str: str}``.

Loading trusts nothing in the file: the whole header is checked (its length against the file's,
its JSON, every dtype, shape and offset pair; offsets inside the data, not overlapping, and exactly
the shape's bytes) before any tensor is read, each read is bounded by those checked offsets, and
any problem raises ``SerializationError`` naming the file.

lucid's tensors are bool, int64, float32 and float64: F16 and BF16 load as float32 (exactly), the
narrower integers (I32, I16, I8, U8) as int64.
"""
from __future__ import annotations

import json
import math
import os
import struct

import numpy as np

from .errors import DTypeError, SerializationError
from .ir.types import bool_, float32, float64, int64
from .tensor import Tensor

#: The format's dtype codes: (how the bytes read in NumPy, the lucid dtype they load as).
DTYPES = {
    "F64": ("<f8", float64), "F32": ("<f4", float32), "F16": ("<f2", float32), "BF16": ("<u2", float32),
    "I64": ("<i8", int64), "I32": ("<i4", int64), "I16": ("<i2", int64), "I8": ("i1", int64),
    "U8": ("u1", int64), "BOOL": ("u1", bool_),
}
#: The code `save_safetensors` writes for each NumPy dtype.
CODES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
         np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
         np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL"}
#: The longest header read (the reference implementation's limit).
MAX_HEADER_BYTES = 100 * 1024 * 1024
METADATA = "__metadata__"


def load_safetensors(path) -> dict[str, Tensor]:
    """The tensors of the safetensors file at `path`, by name, in the header's order."""
    name = os.fspath(path)
    with open(name, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header, data_start = _read_header(f, size, name)
        entries = _check_entries(header, size - data_start, name)
        tensors = {}
        for key, (code, shape, begin, end) in entries.items():
            f.seek(data_start + begin)
            raw = f.read(end - begin)
            if len(raw) != end - begin:
                _refuse(name, f"tensor {key!r} is cut short by the end of the file")
            tensors[key] = _tensor(raw, code, shape)
    return tensors


def _refuse(name: str, problem: str):
    raise SerializationError(f"load_safetensors: {name} is not a valid safetensors file: {problem}")


def _read_header(f, size: int, name: str) -> tuple[dict, int]:
    """The parsed JSON header, and where the data starts."""
    if size < 8:
        _refuse(name, f"it has {size} bytes, fewer than the 8 of the header length")
    (length,) = struct.unpack("<Q", f.read(8))
    if length > size - 8:
        _refuse(name, f"the header length {length} runs past the end of the file ({size} bytes)")
    if length > MAX_HEADER_BYTES:
        _refuse(name, f"the header length {length} exceeds the limit of {MAX_HEADER_BYTES} bytes")
    try:
        header = json.loads(f.read(length).decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        _refuse(name, f"the header is not valid JSON: {exc}")
    if not isinstance(header, dict):
        _refuse(name, f"the header is a JSON {type(header).__name__}, expected an object")
    return header, 8 + length


def _unique_keys(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate name(s) {sorted({k for k in keys if keys.count(k) > 1})}")
    return dict(pairs)


def _check_entries(header: dict, data_bytes: int, name: str) -> dict:
    """{tensor name: (dtype code, shape, begin, end)}, each checked; offsets disjoint, in the data."""
    metadata = header.get(METADATA, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        _refuse(name, f"{METADATA!r} must map names to strings, got {metadata!r:.200}")
    entries = {key: _check_entry(key, info, data_bytes, name)
               for key, info in header.items() if key != METADATA}
    spans = sorted((begin, end, key) for key, (_, _, begin, end) in entries.items() if end > begin)
    for (_, end, first), (begin, _, second) in zip(spans, spans[1:]):
        if begin < end:
            _refuse(name, f"the bytes of tensors {first!r} and {second!r} overlap")
    return entries


def _check_entry(key: str, info, data_bytes: int, name: str) -> tuple:
    where = f"tensor {key!r}"
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        _refuse(name, f"{where} must be an object with exactly 'dtype', 'shape' and 'data_offsets', "
                      f"got {info!r:.200}")
    code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(code, str) or code not in DTYPES:
        _refuse(name, f"{where} has unknown dtype {code!r:.50}; expected one of {sorted(DTYPES)}")
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        _refuse(name, f"{where} has shape {shape!r:.200}; expected a list of non-negative ints")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(n) for n in offsets):
        _refuse(name, f"{where} has data_offsets {offsets!r:.200}; expected [begin, end] ints >= 0")
    begin, end = offsets
    if not begin <= end <= data_bytes:
        _refuse(name, f"{where} has data_offsets [{begin}, {end}] outside the {data_bytes} data bytes")
    expected = math.prod(shape) * np.dtype(DTYPES[code][0]).itemsize
    if end - begin != expected:
        _refuse(name, f"{where} of dtype {code} and shape {shape} needs {expected} bytes, its "
                      f"data_offsets [{begin}, {end}] hold {end - begin}")
    return code, tuple(shape), begin, end


def _is_count(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def _tensor(raw: bytes, code: str, shape: tuple) -> Tensor:
    layout, dtype = DTYPES[code]
    array = np.frombuffer(raw, dtype=layout).reshape(shape)
    if code == "BF16":                 # bfloat16 is the top half of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return Tensor(array, dtype=dtype)


def save_safetensors(state_dict: dict, path, metadata: dict | None = None) -> None:
    """Write `state_dict` ({name: Tensor or array}) to `path` in the safetensors format, in its order.

    Arrays keep their dtype (bool, uint8, int8/16/32/64, float16/32/64). `metadata`, a dict of
    strings, is stored as the header's ``__metadata__``."""
    header, arrays, offset = {}, [], 0
    for key, value in state_dict.items():
        if not isinstance(key, str) or key == METADATA:
            raise TypeError(f"save_safetensors: tensor names must be strings other than {METADATA!r}, "
                            f"got {key!r}")
        array = np.asarray(value.data if isinstance(value, Tensor) else value)
        if array.dtype not in CODES:
            raise DTypeError(f"save_safetensors: {key!r} has dtype {array.dtype}; expected one of "
                             f"{sorted(str(d) for d in CODES)}")
        header[key] = {"dtype": CODES[array.dtype], "shape": list(array.shape),
                       "data_offsets": [offset, offset + array.nbytes]}
        arrays.append(array.astype(array.dtype.newbyteorder("<"), copy=False))
        offset += array.nbytes
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in metadata.items()):
            raise TypeError(f"save_safetensors: metadata must be a dict of strings, got {metadata!r:.200}")
        header = {METADATA: metadata, **header}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)    # pad so the data starts 8-byte aligned
    with open(os.fspath(path), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for array in arrays:
            f.write(array.tobytes())
