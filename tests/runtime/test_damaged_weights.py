"""Damaged inputs of `lucid.export` and of exported libraries: the compile cache the exporter reads
(lucid/codegen/cache.py) and a library's separate weights file (lucid/aot/aot_runtime.c, loaded
through lucid/runtime/library.py).

A tiny model is exported twice, each time in a fresh process (this file run as a script, so a crash
fails the test instead of killing pytest), with one cache: the second export (other weights, the same
code) finds the graph's manifest with a flipped digit of `workspace_bytes`, warns once, rebuilds it,
and its library passes its self-test and equals eager execution. Then the first library is loaded
with damaged weights files: truncated, a flip in each header field, in the padding and in the payload,
a trailing byte, the weights file of the other export: each is refused with a LibraryError (a
ValueError) naming the file and what is wrong, and the good file still loads afterwards. A seeded fuzz
test (200 mutations in one process) asserts each damaged file is refused that way or, if accepted,
gives the right result; its counts are printed (pytest -s shows them).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from script_runs import run_as_script

from lucid.runtime import abi

SHAPE = (1, 1, 4, 4, 4)
FUZZ_SEED, FUZZ_MUTATIONS = 23, 200
pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")


# ============================================================================== the subprocess side
def x_data() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)


def export(folder: str, seed: int) -> dict:
    """Export the tiny model (weights from `seed`) to folder/model.so with a separate weights file;
    save the eager output on x_data() as expected.npy; report the CacheWarnings seen."""
    import warnings

    import lucid
    import lucid.nn as nn
    import lucid.runtime
    from lucid.codegen.cache import CacheWarning

    lucid.manual_seed(seed)
    model = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv3d(2, 1, 1)).eval()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        files = lucid.export(model, lucid.spec(*SHAPE), path=Path(folder) / "model.so", weights_in_file=True)
    with lucid.no_grad():
        expected = model(lucid.Tensor(x_data())).numpy()
    np.save(Path(folder) / "expected.npy", expected)
    library = lucid.runtime.load(files.library)
    library.selftest()
    error = float(np.abs(library(x_data()) - expected).max())
    return {"warnings": [str(w.message) for w in seen if issubclass(w.category, CacheWarning)], "error": error}


def try_weights(library: str, weights: str, expected: np.ndarray) -> dict:
    """Load `library` with the weights file `weights`: refused (how), or the run's error."""
    import lucid.runtime

    try:
        loaded = lucid.runtime.load(library, weights=weights)
    except Exception as error:          # noqa: BLE001 (the test judges every kind)
        return {"refused": type(error).__name__, "value_or_type_error": isinstance(error, (ValueError, TypeError)),
                "names_file": weights in str(error), "message": str(error)}
    return {"error": float(np.abs(loaded(x_data()) - expected).max())}


def fuzz(library: str, good: str, other: str, work: str, seed: int, count: int) -> None:
    """`count` mutations of the weights file `good`, one JSON line each (printed as it finishes)."""
    expected = np.load(Path(library).with_name("expected.npy"))
    data, foreign = Path(good).read_bytes(), Path(other).read_bytes()
    rng = random.Random(seed)
    for index in range(count):
        kind, mutated = mutate(data, foreign, rng)
        path = Path(work) / f"fuzz{index}.weights"
        path.write_bytes(mutated)
        print(json.dumps({"index": index, "mutation": kind, "changed": mutated != data,
                          **try_weights(library, str(path), expected)}), flush=True)
        path.unlink()


def cases(library: str, *weights: str) -> None:
    expected = np.load(Path(library).with_name("expected.npy"))
    for path in weights:
        print(json.dumps(try_weights(library, path, expected)), flush=True)


# ============================================================================== mutations
def mutate(data: bytes, foreign: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random mutation of a weights file (`foreign`: another export's file of the same size)."""
    kind = rng.choice(["flip", "byte", "truncate", "append", "header field", "splice", "foreign"])
    out = bytearray(data)
    if kind == "flip":
        position = rng.randrange(len(out))
        out[position] ^= 1 << rng.randrange(8)
        return f"flip bit of byte {position}", bytes(out)
    if kind == "byte":
        position = rng.randrange(len(out))
        out[position] = rng.randrange(256)
        return f"byte {position} := {out[position]}", bytes(out)
    if kind == "truncate":
        size = rng.randrange(len(out))
        return f"truncate to {size}", bytes(out[:size])
    if kind == "append":
        return "append", bytes(out) + bytes(rng.randrange(256) for _ in range(rng.randint(1, 70)))
    if kind == "header field":
        offset, width = rng.choice([(0, 8), (8, 4), (12, 8), (20, 4), (24, 8), (56, 8)])
        out[offset:offset + width] = rng.randbytes(width)
        return f"header bytes {offset}..{offset + width}", bytes(out)
    if kind == "splice":
        at = rng.randrange(len(out))
        return f"other export's bytes from {at}", bytes(out[:at]) + foreign[at:]
    return "the other export's file", foreign


# ============================================================================== the pytest side
def run_self(*args, **options) -> list[dict]:
    """Run this file as a script in a fresh process (see script_runs); its JSON lines."""
    return run_as_script(__file__, *args, **options)


def flip_workspace_digit(manifest: Path) -> None:
    data = bytearray(manifest.read_bytes())
    at = data.index(b'"workspace_bytes": ') + len(b'"workspace_bytes": ')
    data[at] = ord("1") if data[at] != ord("1") else ord("2")
    manifest.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict:
    """Two exports of the tiny model (other weights) sharing a fresh cache, the second made after a
    digit of the graph manifest's workspace_bytes was flipped; their folders and reports."""
    root = tmp_path_factory.mktemp("damaged-weights")
    cache, one, two = root / "cache", root / "one", root / "two"
    one.mkdir()
    two.mkdir()
    first = run_self("export", one, 1, cache=cache)[-1]
    manifests = sorted((cache / "graphs").glob("*.json"))
    assert len(manifests) == 1
    flip_workspace_digit(manifests[0])
    second = run_self("export", two, 2, cache=cache)[-1]
    return {"one": one, "two": two, "first": first, "second": second}


def test_export_from_a_damaged_manifest_rebuilds_it_and_the_library_is_right(exports):
    assert exports["first"]["warnings"] == [] and exports["first"]["error"] < 1e-5
    second = exports["second"]
    assert len(second["warnings"]) == 1, second["warnings"]
    assert "graph entry" in second["warnings"][0] and "SHA-256 seal" in second["warnings"][0]
    assert second["error"] < 1e-5                  # and its self-test passed (in the subprocess)


def header_flip(offset: int):
    def damage(data: bytearray) -> None:
        data[offset] ^= 0x01
    return damage


DAMAGES = {  # name: (damage of the file's bytes, what the message says)
    "truncated to half": (lambda d: d.__delitem__(slice(len(d) // 2, None)), "truncated"),
    "truncated to its header": (lambda d: d.__delitem__(slice(abi.WEIGHTS_HEADER_BYTES, None)), "truncated"),
    "empty": (lambda d: d.clear(), "not a lucid weights file"),
    "magic": (header_flip(3), "not a lucid weights file"),
    "version": (header_flip(8), "format version"),
    "size": (header_flip(12), "holds"),
    "crc": (header_flip(20), "fails its checksum"),
    "padding": (header_flip(40), "damaged header"),
    "payload": (lambda d: d.__setitem__(-5, d[-5] ^ 0x10), "fails its checksum"),
    "trailing byte": (lambda d: d.append(0), "trailing bytes"),
}


def test_damaged_weights_files_are_refused_naming_the_file(exports, tmp_path):
    library, good = exports["one"] / "model.so", exports["one"] / "model.weights"
    paths, messages = [], []
    for name, (damage, message) in DAMAGES.items():
        data = bytearray(good.read_bytes())
        damage(data)
        path = tmp_path / f"{name.replace(' ', '-')}.weights"
        path.write_bytes(bytes(data))
        paths.append(path)
        messages.append(message)
    paths.append(exports["two"] / "model.weights")             # another export's weights, same size
    messages.append("fails its checksum")
    paths.append(good)                                          # and the right file still loads
    lines = run_self("cases", library, *paths)
    assert len(lines) == len(paths)
    for path, message, line in zip(paths, messages, lines):
        assert line.get("refused") == "LibraryError" and line["value_or_type_error"], (path.name, line)
        assert line["names_file"] and message in line["message"], (path.name, line)
    assert lines[-1] == {"error": pytest.approx(0, abs=1e-5)}, lines[-1]


def test_fuzzed_weights_files_are_refused_or_right(exports, tmp_path):
    library, good, other = (exports["one"] / "model.so", exports["one"] / "model.weights",
                            exports["two"] / "model.weights")
    lines = run_self("fuzz", library, good, other, tmp_path, FUZZ_SEED, FUZZ_MUTATIONS)
    assert len(lines) == FUZZ_MUTATIONS
    counts = {"mutations": len(lines), "refused": 0, "accepted (right result)": 0}
    for line in lines:
        if "refused" in line:
            assert line["refused"] == "LibraryError" and line["value_or_type_error"], line
            assert line["names_file"], line
            counts["refused"] += 1
        else:
            assert line["error"] < 1e-5, line
            assert not line["changed"], line                    # every changed file is refused
            counts["accepted (right result)"] += 1
    print(f"\nweights fuzz: {counts}")
    assert counts["refused"] > FUZZ_MUTATIONS * 0.9


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    if command == "export":
        print(json.dumps(export(arguments[0], int(arguments[1]))))
    elif command == "cases":
        cases(*arguments)
    elif command == "fuzz":
        fuzz(*arguments[:4], *map(int, arguments[4:]))
