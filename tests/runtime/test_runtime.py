"""`lucid.runtime` (lucid/runtime/): loading exported libraries with numpy and ctypes only.

Checked: it works in a process where llvmlite cannot be imported (and imports no part of lucid's
code generator, nor the in-process runtime of `lucid.compile`, nor the emitter); files that are not
lucid libraries (garbage, empty, truncated, text, another shared library) and libraries of another
ABI version are refused with a LibraryError naming the file, in the test process itself (nothing
crashes); an error reported by the library reaches Python.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.runtime
from lucid.errors import LibraryError
from lucid.runtime import abi

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) on this machine")


def tiny_model():
    lucid.manual_seed(2)
    return nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv3d(2, 1, 1), nn.Tanh())


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runtime")
    return lucid.export(tiny_model(), lucid.spec(1, 1, 4, 4, 4), path=folder / "tiny.so")


def eager(x):
    with lucid.no_grad():
        return tiny_model().eval()(lucid.Tensor(x)).numpy()


def test_runtime_works_without_llvmlite(library, tmp_path):
    x = np.random.default_rng(0).standard_normal((1, 1, 4, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys

        class NoLLVM:                                   # any import of llvmlite fails
            def find_spec(self, name, path=None, target=None):
                if name == "llvmlite" or name.startswith("llvmlite."):
                    raise ImportError("llvmlite is unimportable in this test")

        sys.meta_path.insert(0, NoLLVM())
        import numpy as np
        import lucid.runtime

        model = lucid.runtime.load({str(library.library)!r})
        np.save({str(tmp_path / 'y.npy')!r}, model(np.load({str(tmp_path / 'x.npy')!r})))
        model.selftest()
        heavy = sorted(m for m in sys.modules if m.startswith(("llvmlite", "lucid.codegen", "networkx",
                                                              "lucid.runtime.executable", "lucid.runtime.workers",
                                                              "lucid.aot.emitter")))
        print("imported:", heavy)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "imported: []" in done.stdout
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), eager(x), rtol=1e-5, atol=1e-6)


def test_files_that_are_not_lucid_libraries_are_refused(library, tmp_path):
    real = library.library.read_bytes()
    cases = {
        "garbage.so": (np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes(), "not an ELF"),
        "empty.so": (b"", "not an ELF"),
        "text.so": (b"#!/bin/sh\necho hello\n", "not an ELF"),
        "truncated.so": (real[:3000], "truncated"),
        "truncated_header.so": (real[:40], "not an ELF"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(LibraryError, match=message):
            lucid.runtime.load(tmp_path / name)
    with pytest.raises(LibraryError, match="cannot read library"):
        lucid.runtime.load(tmp_path / "missing.so")
    (tmp_path / "other.c").write_text("int answer(void) { return 42; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", str(tmp_path / "other.c"), "-o", str(tmp_path / "other.so")], check=True)
    with pytest.raises(LibraryError, match="not one lucid.export wrote"):
        lucid.runtime.load(tmp_path / "other.so")


def test_a_library_of_another_abi_version_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(abi, "ABI_VERSION", abi.ABI_VERSION + 1)
    files = lucid.export(lambda x: x * 2, lucid.spec(3), path=tmp_path / "future.so")
    monkeypatch.undo()
    with pytest.raises(LibraryError, match=f"ABI version {abi.ABI_VERSION + 1}; this lucid reads version {abi.ABI_VERSION}"):
        lucid.runtime.load(files.library)


def test_info_string_round_trips():
    text = abi.info_text("unet", True, False)
    assert abi.parse_info(text) == {"abi": str(abi.ABI_VERSION), "name": "unet", "weights": "file", "outputs": "single"}
    assert abi.parse_info("something else") == {}
    assert abi.c_name("my model-2") == "my_model_2" and abi.c_name("2x") == "_2x" and abi.is_c_name("_2x")
