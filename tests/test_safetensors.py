"""lucid.load_safetensors / save_safetensors: round trips, files of the reference `safetensors`
package (where installed) and hand-built ones following the format, damaged files refused with a
SerializationError naming the file, and a torch model's weights loaded into the lucid model."""
import json
import struct

import numpy as np
import pytest

import lucid
from lucid import nn
from lucid.errors import SerializationError

ARRAYS = {
    "f32": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    "f64": np.linspace(-1, 1, 5),
    "i64": np.array([[-(2 ** 40), 3]], dtype=np.int64),
    "bool": np.array([True, False, True]),
    "scalar": np.array(2.5, dtype=np.float32),
    "empty": np.zeros((0, 3), dtype=np.float32),
}
#: Arrays of dtypes lucid has no tensor of, and what they load as.
WIDENED = {
    "f16": (np.array([0.5, -2.0, 65504.0], dtype=np.float16), np.float32),
    "i32": (np.array([-7, 2 ** 31 - 1], dtype=np.int32), np.int64),
    "i16": (np.array([-300, 5], dtype=np.int16), np.int64),
    "i8": (np.array([-128, 127], dtype=np.int8), np.int64),
    "u8": (np.array([0, 255], dtype=np.uint8), np.int64),
}


def check_equal(loaded, expected):
    assert list(loaded) == list(expected)
    for key, want in expected.items():
        want, dtype = want if isinstance(want, tuple) else (want, want.dtype)
        assert isinstance(loaded[key], lucid.Tensor)
        assert loaded[key].data.dtype == dtype and loaded[key].shape == want.shape
        np.testing.assert_array_equal(loaded[key].data, want.astype(dtype))


def test_round_trip(tmp_path):
    path = tmp_path / "w.safetensors"
    state = {**ARRAYS, **{k: v for k, (v, _) in WIDENED.items()}, "tensor": lucid.tensor([1.0, 2.0])}
    lucid.save_safetensors(state, path, metadata={"format": "pt"})
    check_equal(lucid.load_safetensors(path), {**ARRAYS, **WIDENED, "tensor": np.array([1, 2], np.float32)})
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] % 8 == 0


def test_save_refusals(tmp_path):
    with pytest.raises(lucid.DTypeError, match="'c' has dtype complex128"):
        lucid.save_safetensors({"c": np.zeros(2, complex)}, tmp_path / "x")
    with pytest.raises(TypeError, match="names must be strings"):
        lucid.save_safetensors({3: np.zeros(2)}, tmp_path / "x")
    with pytest.raises(TypeError, match="metadata"):
        lucid.save_safetensors({"a": np.zeros(2)}, tmp_path / "x", metadata={"a": 1})


def test_files_of_the_reference_package(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    theirs = {**ARRAYS, **{k: v for k, (v, _) in WIDENED.items()}}
    safetensors_numpy.save_file(theirs, str(tmp_path / "theirs.safetensors"), metadata={"k": "v"})
    loaded = lucid.load_safetensors(tmp_path / "theirs.safetensors")
    check_equal({k: loaded[k] for k in theirs}, {**ARRAYS, **WIDENED})
    lucid.save_safetensors(theirs, tmp_path / "ours.safetensors", metadata={"k": "v"})
    back = safetensors_numpy.load_file(str(tmp_path / "ours.safetensors"))
    for key, want in theirs.items():
        assert back[key].dtype == want.dtype
        np.testing.assert_array_equal(back[key], want)
    from safetensors import safe_open
    with safe_open(str(tmp_path / "ours.safetensors"), "np") as f:
        assert f.metadata() == {"k": "v"}


def handmade(entries: dict, data: bytes, metadata=None, pad: bytes = b"") -> bytes:
    header = dict(entries)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode() + pad
    return struct.pack("<Q", len(text)) + text + data


def test_a_hand_built_file_with_bfloat16(tmp_path):
    """bfloat16 is the upper half of a float32: values with zero low halves convert exactly."""
    values = np.array([1.0, -2.5, 3.140625, 1e-3], dtype=np.float32)
    values = (values.view(np.uint32) & 0xFFFF0000).view(np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    f64 = np.array([[1.5], [-3.0]], "<f8").tobytes()
    path = tmp_path / "hand.safetensors"
    path.write_bytes(handmade({"b": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]},
                               "d": {"dtype": "F64", "shape": [2, 1], "data_offsets": [8, 24]}},
                              bf16 + f64, metadata={"a": "b"}, pad=b"   "))
    check_equal(lucid.load_safetensors(path), {"b": values, "d": np.array([[1.5], [-3.0]])})


GOOD = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "I64", "shape": [1], "data_offsets": [16, 24]}}
DATA = bytes(24)


def entry(**changes):
    return {**GOOD, "a": {**GOOD["a"], **changes}}


DAMAGED = {
    "empty file": (b"", "fewer than the 8"),
    "short length": (b"\x01\x02\x03", "fewer than the 8"),
    "length past the file": (struct.pack("<Q", 1000) + b"{}", "runs past the end of the file"),
    "huge length": (struct.pack("<Q", 2 ** 64 - 1) + b"{}", "runs past the end of the file"),
    "invalid json": (struct.pack("<Q", 5) + b"{abc}", "not valid JSON"),
    "not utf-8": (struct.pack("<Q", 2) + b"\xff\xfe", "not valid JSON"),
    "deep nesting": (struct.pack("<Q", 200000) + b"[" * 100000 + b"]" * 100000, "not valid JSON"),
    "not an object": (struct.pack("<Q", 2) + b"[]", "is a JSON list"),
    "duplicate names": (struct.pack("<Q", 16) + b'{"a": 1, "a": 2}', "duplicate name\\(s\\) \\['a'\\]"),
    "unknown dtype": (handmade(entry(dtype="F128"), DATA), "unknown dtype 'F128'"),
    "dtype not a string": (handmade(entry(dtype=[1]), DATA), "unknown dtype"),
    "negative shape": (handmade(entry(shape=[-2, -2]), DATA), "list of non-negative ints"),
    "float shape": (handmade(entry(shape=[2.0, 2]), DATA), "list of non-negative ints"),
    "bool shape": (handmade(entry(shape=[True, 4]), DATA), "list of non-negative ints"),
    "shape not a list": (handmade(entry(shape="2,2"), DATA), "list of non-negative ints"),
    "huge shape": (handmade(entry(shape=[2 ** 40, 2 ** 40, 2 ** 40]), DATA), "needs"),
    "offsets past the data": (handmade(entry(data_offsets=[16, 32]), DATA), "outside the 24 data bytes"),
    "offsets reversed": (handmade(entry(data_offsets=[16, 0]), DATA), "outside the 24 data bytes"),
    "offsets negative": (handmade(entry(data_offsets=[-16, 0]), DATA), "expected \\[begin, end\\]"),
    "one offset": (handmade(entry(data_offsets=[16]), DATA), "expected \\[begin, end\\]"),
    "offsets not matching the shape": (handmade(entry(data_offsets=[0, 12]), DATA), "needs 16 bytes"),
    "overlapping": (handmade(entry(data_offsets=[8, 24]), DATA), "overlap"),
    "missing field": (handmade({"a": {"dtype": "F32", "shape": [1]}}, DATA), "exactly 'dtype'"),
    "extra field": (handmade(entry(extra=1), DATA), "exactly 'dtype'"),
    "entry not an object": (handmade({"a": 3}, DATA), "exactly 'dtype'"),
    "metadata not strings": (handmade(GOOD, DATA, metadata={"a": 1}), "__metadata__"),
    "truncated data": (handmade(GOOD, DATA[:20]), "outside the 20 data bytes"),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_damaged_files_are_refused_naming_the_file(tmp_path, case):
    content, message = DAMAGED[case]
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(content)
    with pytest.raises(SerializationError, match=message) as info:
        lucid.load_safetensors(path)
    assert str(path) in str(info.value) and isinstance(info.value, ValueError)


def test_the_good_file_loads_and_mutations_never_crash(tmp_path):
    good = handmade(GOOD, np.arange(4, dtype="<f4").tobytes() + np.array([9], "<i8").tobytes())
    path = tmp_path / "good.safetensors"
    path.write_bytes(good)
    np.testing.assert_array_equal(lucid.load_safetensors(path)["a"].data, [[0, 1], [2, 3]])
    rng = np.random.default_rng(0)
    for _ in range(300):
        damaged = bytearray(good)
        for position in rng.integers(0, len(good), rng.integers(1, 4)):
            damaged[position] = rng.integers(0, 256)
        path.write_bytes(bytes(damaged[:rng.integers(0, len(good) + 1)] if rng.random() < 0.3 else damaged))
        try:
            loaded = lucid.load_safetensors(path)
        except SerializationError:
            continue
        assert all(isinstance(t, lucid.Tensor) for t in loaded.values())


def test_missing_file_is_the_usual_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        lucid.load_safetensors(tmp_path / "nothing.safetensors")


def test_a_torch_model_loads_into_the_lucid_model(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")

    def model(nn):
        return nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
                             nn.Conv3d(4, 3, 1), nn.Flatten(), nn.Linear(3 * 4 * 4 * 4, 5))

    torch.manual_seed(0)
    theirs = model(torch.nn)
    theirs(torch.randn(3, 2, 4, 4, 4))                 # running statistics move away from 0 and 1
    theirs.eval()
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(theirs.state_dict(), str(path))
    ours = model(nn).eval()
    assert ours.load_state_dict(lucid.load_safetensors(path)) == ([], [])
    x = np.random.default_rng(1).standard_normal((2, 2, 4, 4, 4)).astype(np.float32)
    with torch.no_grad():
        want = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(lucid.tensor(x)).data, want, rtol=1e-4, atol=1e-5)
    assert ours[1].num_batches_tracked.data == 1
