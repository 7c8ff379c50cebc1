"""lucid.save / lucid.load: round trips of every supported kind, refusal of foreign files, every header
bit flip of a small file, and zip bombs refused under a memory limit."""
import io
import json
import math
import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

import lucid
from lucid import nn
from lucid.serialization import SerializationError
from model_helpers import named_buffer, same_object


def round_trip(obj, tmp_path):
    path = tmp_path / "obj.lucid"
    lucid.save(obj, path)
    return lucid.load(path)


DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8,
          np.uint64, np.bool_, np.complex64, np.complex128]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3, 4)])
def test_arrays_keep_dtype_shape_and_values(dtype, shape, tmp_path):
    array = (np.arange(int(np.prod(shape))) % 7).reshape(shape).astype(dtype)
    loaded = round_trip(array, tmp_path)
    assert type(loaded) is np.ndarray and loaded.dtype == array.dtype and loaded.shape == shape
    np.testing.assert_array_equal(loaded, array)


def test_non_contiguous_arrays_and_special_values(tmp_path):
    array = np.arange(24, dtype=np.float32).reshape(4, 6)
    special = np.array([np.nan, np.inf, -np.inf, -0.0])
    loaded = round_trip({"t": array.T, "s": array[::2, 1::3], "f": np.asfortranarray(array),
                         "special": special}, tmp_path)
    np.testing.assert_array_equal(loaded["t"], array.T)
    np.testing.assert_array_equal(loaded["s"], array[::2, 1::3])
    np.testing.assert_array_equal(loaded["f"], array)
    np.testing.assert_array_equal(loaded["special"], special)


def test_python_values_and_nesting(tmp_path):
    obj = {
        "int": 3, "big": 2 ** 80, "neg": -7, "float": 0.1, "whole_float": 2.0, "bool": True,
        "none": None, "str": "héllo ✓", "empty": "", "list": [1, [2, [3.5, None]], ()],
        "tuple": (1, "a", (False,)), "nested": {"a": {"b": {"c": [np.ones(2)]}}},
        "int_keys": {0: "zero", 10: {"x": 1}}, "empty_dict": {}, "empty_list": [],
        "np_scalars": [np.float32(1.5), np.int64(-3), np.bool_(True)],
    }
    loaded = round_trip(obj, tmp_path)
    assert loaded.keys() == obj.keys()
    for key in obj:
        if key not in ("nested", "np_scalars"):
            assert loaded[key] == obj[key] and type(loaded[key]) is type(obj[key]), key
    assert type(loaded["tuple"][2]) is tuple and type(loaded["list"][2]) is tuple
    assert type(loaded["whole_float"]) is float and type(loaded["big"]) is int
    assert list(loaded["int_keys"]) == [0, 10]
    np.testing.assert_array_equal(loaded["nested"]["a"]["b"]["c"][0], np.ones(2))
    assert [type(v) for v in loaded["np_scalars"]] == [np.float32, np.int64, np.bool_]
    assert loaded["np_scalars"] == obj["np_scalars"]


@pytest.mark.parametrize("value", [None, 5, -1.25, math.inf, "s", True, [], (), {}])
def test_top_level_scalars_and_empty_containers(value, tmp_path):
    loaded = round_trip(value, tmp_path)
    assert loaded == value and type(loaded) is type(value)


def test_nan_float(tmp_path):
    assert math.isnan(round_trip(float("nan"), tmp_path))


def test_tensors_come_back_as_tensors(tmp_path):
    t32 = lucid.Tensor([[1.0, 2.0], [3.0, 4.0]], dtype=lucid.float32)
    t64 = lucid.Tensor([1.0, 2.0], dtype=lucid.float64)
    ti = lucid.Tensor(np.array([1, 2, 3], dtype=np.int64))
    tg = lucid.Tensor([0.5], requires_grad=True)
    loaded = round_trip({"t32": t32, "t64": t64, "ti": ti, "tg": tg}, tmp_path)
    for key, original in [("t32", t32), ("t64", t64), ("ti", ti), ("tg", tg)]:
        got = loaded[key]
        assert isinstance(got, lucid.Tensor), key
        assert got.data.dtype == original.data.dtype and got.shape == original.shape, key
        np.testing.assert_array_equal(got.data, original.data)
        assert got.requires_grad == original.requires_grad, key


@pytest.mark.parametrize("kind", ["str", "pathlike", "bytesio", "file"])
def test_paths_and_file_objects(kind, tmp_path):
    obj = {"w": np.arange(6.0).reshape(2, 3), "n": 1}
    path = tmp_path / "x.lucid"
    if kind == "bytesio":
        buffer = io.BytesIO()
        lucid.save(obj, buffer)
        buffer.seek(0)
        loaded = lucid.load(buffer)
    elif kind == "file":
        with open(path, "wb") as f:
            lucid.save(obj, f)
        with open(path, "rb") as f:
            loaded = lucid.load(f)
    else:
        target = str(path) if kind == "str" else path
        lucid.save(obj, target)
        loaded = lucid.load(target)
    np.testing.assert_array_equal(loaded["w"], obj["w"])
    assert loaded["n"] == 1


def test_file_is_a_zip_with_a_json_manifest_and_npy_entries(tmp_path):
    path = tmp_path / "x.lucid"
    lucid.save({"a": np.zeros(3, np.float32), "b": [np.ones(2)]}, path)
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert manifest["format"] == "lucid" and isinstance(manifest["version"], int)
        npy = [n for n in zf.namelist() if n.endswith(".npy")]
        assert len(npy) == 2
        assert np.load(io.BytesIO(zf.read(npy[0])), allow_pickle=False).dtype == np.float32


def test_module_state_dict_round_trip(tmp_path):
    lucid.manual_seed(0)
    model = nn.Linear(3, 2)
    state = model.state_dict()
    assert set(state) == {"weight", "bias"}
    loaded = round_trip(state, tmp_path)
    assert list(loaded) == list(state)
    for name, value in state.items():
        assert isinstance(loaded[name], np.ndarray) and loaded[name].dtype == value.dtype
        np.testing.assert_array_equal(loaded[name], value)
    lucid.manual_seed(1)
    fresh = nn.Linear(3, 2)
    assert not np.array_equal(fresh.weight.data, model.weight.data)
    fresh.load_state_dict(loaded)
    x = lucid.Tensor(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    np.testing.assert_array_equal(fresh(x).data, model(x).data)


@pytest.mark.parametrize("obj,match", [
    (np.array([1, "a"], dtype=object), r"obj is an array of dtype object"),
    ({"a": [1, {2, 3}]}, r"obj\['a'\]\[1\] has unsupported type set"),
    ({(1, 2): 3}, r"key \(1, 2\).*str or int"),
    ([object()], r"obj\[0\] has unsupported type object"),
])
def test_unsupported_objects_are_refused_before_writing(obj, match, tmp_path):
    path = tmp_path / "bad.lucid"
    with pytest.raises(TypeError, match=match):
        lucid.save(obj, path)
    assert not path.exists()


class _Marker:
    """Unpickling this creates the file ``path``: proof that a loader ran code from a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_marker_payload_runs_when_unpickled(tmp_path):
    """The bad-file tests below are meaningful: unpickling their payload would create the marker."""
    pickle.loads(pickle.dumps(_Marker(tmp_path / "MARKER")))
    assert (tmp_path / "MARKER").exists()


def write_zip(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


def npy_bytes(array, allow_pickle=False):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def manifest(root, version=1, fmt="lucid"):
    return json.dumps({"format": fmt, "version": version, "root": root})


ARRAY_NODE = {"type": "ndarray", "entry": "arr_0.npy"}


def make_random_bytes(path, marker):
    path.write_bytes(np.random.default_rng(0).bytes(1000))


def make_empty(path, marker):
    path.write_bytes(b"")


def make_plain_zip(path, marker):
    write_zip(path, {"readme.txt": "hello"})


def make_npz(path, marker):
    with open(path, "wb") as f:
        np.savez(f, a=np.ones(3))


def make_pickle(path, marker):
    path.write_bytes(pickle.dumps({"weight": _Marker(marker)}))


def make_truncated(path, marker):
    lucid.save({"a": np.arange(100.0)}, path)
    path.write_bytes(path.read_bytes()[:300])


def make_version_999(path, marker):
    write_zip(path, {"manifest.json": manifest(ARRAY_NODE, version=999),
                     "arr_0.npy": npy_bytes(np.ones(2))})


def make_other_format(path, marker):
    write_zip(path, {"manifest.json": manifest(None, fmt="other")})


def make_bad_json(path, marker):
    write_zip(path, {"manifest.json": "{not json"})


def make_missing_entry(path, marker):
    write_zip(path, {"manifest.json": manifest(ARRAY_NODE)})


def make_object_entry(path, marker):
    write_zip(path, {"manifest.json": manifest(ARRAY_NODE),
                     "arr_0.npy": npy_bytes(np.array([_Marker(marker)], dtype=object), True)})


def make_pickle_entry(path, marker):
    write_zip(path, {"manifest.json": manifest(ARRAY_NODE), "arr_0.npy": pickle.dumps(_Marker(marker))})


def make_unknown_node(path, marker):
    write_zip(path, {"manifest.json": manifest({"type": "pickle", "data": "..."})})


def make_corrupt_entry(path, marker):
    lucid.save({"a": np.arange(100.0)}, path)
    data = bytearray(path.read_bytes())
    start = data.index(b"\x93NUMPY")
    data[start + 200:start + 210] = b"\xff" * 10
    path.write_bytes(bytes(data))


BAD_FILES = {
    "random bytes": (make_random_bytes, "not a readable zip"),
    "empty file": (make_empty, "not a readable zip"),
    "plain zip": (make_plain_zip, "no manifest.json"),
    "npz": (make_npz, "no manifest.json"),
    "pickle": (make_pickle, "not a readable zip"),
    "truncated": (make_truncated, "not a readable zip"),
    "version 999": (make_version_999, "unsupported format version 999"),
    "other format": (make_other_format, "does not declare format 'lucid'"),
    "bad json": (make_bad_json, "not valid JSON"),
    "missing entry": (make_missing_entry, "'arr_0.npy' is missing"),
    "object entry": (make_object_entry, "'arr_0.npy' cannot be read.*[Oo]bject arrays"),
    "pickle entry": (make_pickle_entry, "'arr_0.npy' cannot be read"),
    "unknown node": (make_unknown_node, "malformed node"),
    "corrupt entry": (make_corrupt_entry, "CRC"),
}


@pytest.mark.parametrize("maker,problem", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_files_raise_value_error_without_running_code(maker, problem, tmp_path):
    path, marker = tmp_path / "bad.lucid", tmp_path / "MARKER"
    maker(path, marker)
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}.*{problem}") as info:
        lucid.load(path)
    assert isinstance(info.value, SerializationError)
    assert not marker.exists()
    with open(path, "rb") as f, pytest.raises(ValueError, match=problem):
        lucid.load(f)
    assert not marker.exists()


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        lucid.load(tmp_path / "nothing.lucid")


# ============================================================================ damaged headers, zip bombs

def header_ranges(raw: bytes) -> list[range]:
    """The byte ranges of a zip file's headers: each local file header (with its name and extra
    field), then everything from the central directory to the end (central directory, zip64 records,
    end-of-central-directory record)."""
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        ranges = []
        for info in zf.infolist():
            start = info.header_offset
            name_length, extra_length = struct.unpack("<HH", raw[start + 26:start + 30])
            ranges.append(range(start, start + 30 + name_length + extra_length))
        ranges.append(range(zf.start_dir, len(raw)))
    return ranges


def header_flips(raw: bytes):
    """Every file that differs from `raw` by one bit in one header byte."""
    for span in header_ranges(raw):
        for position in span:
            for bit in range(8):
                flipped = bytearray(raw)
                flipped[position] ^= 1 << bit
                yield bytes(flipped)


def test_every_header_bit_flip_gives_the_data_or_a_serialization_error_naming_the_file():
    """A flipped bit in a zip header (a compression method, an encryption flag, a size, an offset,
    a name) either leaves the data readable and intact or is refused as a damaged lucid file."""
    original = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "t": lucid.Tensor([1.5, -2.0]), "n": 3}
    buffer = io.BytesIO()
    lucid.save(original, buffer)
    outcomes = {"intact": 0, "refused": 0}
    for damaged in header_flips(buffer.getvalue()):
        try:
            loaded = lucid.load(named_buffer(damaged, "flipped.lucid"))
        except SerializationError as error:
            assert "lucid.load: flipped.lucid is not a valid lucid file: " in str(error)
            outcomes["refused"] += 1
        else:
            same_object(loaded, original)
            outcomes["intact"] += 1
    assert outcomes["refused"] > 1000 and outcomes["intact"] > 100, outcomes


def central_record(raw: bytes, name: str) -> int:
    """The offset of `name`'s record in the central directory."""
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        position = zf.start_dir
    while raw[position + 46:position + 46 + len(name)] != name.encode():
        name_length, extra_length, comment_length = struct.unpack("<HHH", raw[position + 28:position + 34])
        position += 46 + name_length + extra_length + comment_length
    return position


@pytest.mark.parametrize("field,value,problem", [
    (10, zipfile.ZIP_DEFLATED, "uses compression method 8"),      # compression method
    (8, 1, "is marked encrypted"),                                 # general purpose flags
    (24, 10 ** 6, "declares 1000000 bytes"),                       # uncompressed size
])
def test_compressed_encrypted_or_missized_entries_are_refused_by_name(field, value, problem, tmp_path):
    """The central-directory fields whose flips made zipfile raise NotImplementedError or
    RuntimeError (or read past the file), each refused naming the file and the entry."""
    path = tmp_path / "x.lucid"
    lucid.save({"w": np.ones(3)}, path)
    raw = bytearray(path.read_bytes())
    record = central_record(bytes(raw), "arr_0.npy")
    width = 4 if field == 24 else 2
    raw[record + field:record + field + width] = value.to_bytes(width, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(SerializationError, match=f"{re.escape(str(path))}.*'arr_0.npy' {problem}"):
        lucid.load(path)


def zip_archive(entries) -> bytes:
    """A zip file written field by field, so that its headers may lie: each entry is (name, payload,
    compression method, declared uncompressed size, CRC); sizes go in zip64 extra fields."""
    local, central = b"", b""
    for name, payload, method, size, crc in entries:
        offset, name_bytes = len(local), name.encode()
        fields = struct.pack("<HHHHHIII", 45, 0, method, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF)
        extra = struct.pack("<HHQQ", 1, 16, size, len(payload))
        local += b"PK\x03\x04" + fields + struct.pack("<HH", len(name_bytes), len(extra)) + name_bytes + extra + payload
        extra = struct.pack("<HHQQQ", 1, 24, size, len(payload), offset)
        central += (b"PK\x01\x02" + struct.pack("<H", 45) + fields
                    + struct.pack("<HHHHHII", len(name_bytes), len(extra), 0, 0, 0, 0, 0xFFFFFFFF) + name_bytes + extra)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, len(entries), len(entries), len(central), len(local), 0)
    return local + central + end


SIX_GIB = 6 << 30


def deflated_zeros(size: int) -> bytes:
    """A raw deflate stream inflating to `size` zero bytes (size a multiple of 1 MiB), built from one
    compressed MiB repeated: after a full flush the compressor starts afresh, so each MiB compresses
    to the same bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert chunk == compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return chunk * (size >> 20) + compressor.flush(zlib.Z_FINISH)


def _manifest_entry():
    data = manifest(ARRAY_NODE).encode()
    return ("manifest.json", data, zipfile.ZIP_STORED, len(data), zlib.crc32(data))


def deflate_bomb(path):
    """An array entry that really inflates to 6 GiB (from 6 MiB on disk)."""
    path.write_bytes(zip_archive([_manifest_entry(),
                                  ("arr_0.npy", deflated_zeros(SIX_GIB), zipfile.ZIP_DEFLATED, SIX_GIB, 0)]))


def declared_bomb(path):
    """A stored array entry whose headers declare 6 GiB in a file of a few hundred bytes."""
    payload = npy_bytes(np.ones(4, np.float32))
    path.write_bytes(zip_archive([_manifest_entry(),
                                  ("arr_0.npy", payload, zipfile.ZIP_STORED, SIX_GIB, zlib.crc32(payload))]))


def npy_header_bomb(path):
    """A well-formed zip whose .npy header declares a float32 array of 6 GiB and holds 16 bytes."""
    header = npy_bytes(np.ones(4, np.float32))
    forged = header.replace(b"(4,)", f"({SIX_GIB // 4},)".encode()).replace(b" " * 9 + b"\n", b"\n", 1)
    assert len(forged) == len(header)
    write_zip(path, {"manifest.json": manifest(ARRAY_NODE), "arr_0.npy": forged})


BOMB_LOADER = """
import resource, sys, time
import lucid
from lucid.errors import SerializationError
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
start = time.perf_counter()
try:
    lucid.load(sys.argv[1])
except SerializationError as error:
    print(f"refused in {time.perf_counter() - start:.3f} s: {error}")
else:
    print("loaded")
"""


@pytest.mark.parametrize("make,problem", [
    (deflate_bomb, "uses compression method 8"),
    (declared_bomb, "declares 6442450944 bytes"),
    (npy_header_bomb, r"declares shape \(1610612736,\) of float32 \(6442450944 bytes\) but holds 16 bytes"),
], ids=["deflate", "declared_size", "npy_header"])
def test_zip_bombs_are_refused_quickly_under_a_memory_limit(make, problem, tmp_path):
    """Loading never inflates or allocates what a header declares before checking it against the file
    and the array's own header: under a 1 GiB address-space limit each bomb is refused in moments."""
    path = tmp_path / "bomb.lucid"
    make(path)
    assert path.stat().st_size < 8 << 20
    result = subprocess.run([sys.executable, "-c", BOMB_LOADER, str(path)], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.fullmatch(r"refused in ([0-9.]+) s: (.*)\n", result.stdout)
    assert match, result.stdout + result.stderr[-2000:]
    assert float(match.group(1)) < 5.0
    assert str(path) in match.group(2) and re.search(problem, match.group(2)), match.group(2)
