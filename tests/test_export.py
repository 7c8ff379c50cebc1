"""`lucid.export` (lucid/aot/exporter.py, lucid/aot/emitter.py) and the libraries it writes, against eager
execution of the same model in eval mode.

Checked: exported outputs equal eager outputs for the UNet, the autoencoder (lazy layers) and the
video classifier; a C program compiled with `cc` (tests/aot_harness.c) gives the same outputs, gets
identical results from two threads calling `N_run` at once, and passes `N_selftest`; two libraries
linked into one C program each run their own code (internal symbols are local); a C program
dlopens the library, runs it on the worker pool, dlcloses it (no thread left), loads and runs it
again, and so does a forked child; Python threads calling the library at once (calls on the worker pool and beside it); the library needs only libc, libm and libpthread and exports only its
C ABI; weights in a separate file (loaded, checked, refused when missing, corrupt or another
model's); damaged embedded weights refused; the model's train/eval mode restored; bad models and
arguments refused; the `lucid export` command and examples/aot.

One export per model serves every test of this module (module-scoped fixtures); models are tiny.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
import lucid.runtime
from lucid.cli import main
from lucid.errors import DTypeError, ExportError, LibraryError, ShapeError
from model_helpers import randomise_batch_norm, run_in_threads
from models import ConvAutoencoder3D, UNet3D, VideoClassifier

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "unet": (lambda: UNet3D(base=2, depth=1), (1, 1, 8, 8, 8)),
    "autoencoder": (lambda: ConvAutoencoder3D(base=2, latent=4), (1, 1, 8, 8, 8)),
    "video": (lambda: VideoClassifier(width=2), (2, 3, 2, 8, 8)),
}
needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) on this machine")
pytestmark = needs_cc


def data(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def assert_close(actual, expected, what=""):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=2e-5 * scale, err_msg=what)


class Exported:
    """A model (left in training mode, as users hold it), its library, and eager eval-mode outputs."""

    def __init__(self, key: str, folder: Path, **options):
        make, self.shape = MODELS[key]
        lucid.manual_seed(5)
        self.model = randomise_batch_norm(make())      # the autoencoder's lazy layers: resolved by export
        self.files = lucid.export(self.model, lucid.spec(*self.shape), path=folder / f"{key}.so", **options)
        self.library = lucid.runtime.load(self.files.library)

    def eager(self, x: np.ndarray) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        try:
            with lucid.no_grad():
                return self.model(lucid.Tensor(x)).numpy()
        finally:
            self.model.train(was_training)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def exported(folder):
    return {key: Exported(key, folder) for key in MODELS}


@pytest.fixture(scope="module")
def weights_in_file(folder):
    separate = folder / "separate"
    separate.mkdir()
    return Exported("autoencoder", separate, weights_in_file=True)


# ============================================================================== outputs
@pytest.mark.parametrize("key", list(MODELS))
def test_exported_library_equals_eager(exported, key):
    model = exported[key]
    assert model.model.training                       # exported in eval mode, given its mode back
    assert model.library.input_shapes == [model.shape]
    for seed in (1, 2):
        x = data(model.shape, seed)
        y = model.library(x)
        assert_close(y, model.eager(x), f"{key}, seed {seed}")
    assert_close(model.library(lucid.Tensor(x)), model.eager(x), f"{key}, a Tensor input")
    model.library.selftest()


def test_tuple_outputs_and_captured_constants(folder):
    scale = lucid.Tensor(np.arange(4, dtype=np.float32).reshape(1, 4, 1))

    def fn(x, y):
        return x * scale + y, (x - y).relu().sum(dim=2), x        # the last output is an input: copied

    x, y = data((2, 4, 3), 1), data((2, 4, 3), 2)
    files = lucid.export(fn, lucid.spec(2, 4, 3), lucid.spec(2, 4, 3), path=folder / "tuple.so", name="pair")
    assert files.name == "pair"
    library = lucid.runtime.load(files.library)
    got = library(x, y)
    assert isinstance(got, tuple) and len(got) == 3
    for actual, expected in zip(got, fn(lucid.Tensor(x), lucid.Tensor(y)), strict=True):
        assert_close(actual, expected.numpy())
    library.selftest()


# ============================================================================== C
def build_harness(files, folder: Path) -> Path:
    program = folder / f"harness_{files.name}"
    subprocess.run(["cc", "-O1", f"-DMODEL={files.name}", "-include", str(files.header),
                    str(ROOT / "tests" / "aot_harness.c"), str(files.library), "-lpthread",
                    f"-Wl,-rpath,{files.library.parent}", "-o", str(program)], check=True, capture_output=True)
    return program


@pytest.mark.parametrize("key", ["unet", "video"])
def test_c_program_equals_eager_and_runs_two_threads_at_once(exported, folder, key):
    model = exported[key]
    program = build_harness(model.files, folder)
    x = data(model.shape, 3)
    x.tofile(folder / f"{key}_in.bin")
    done = subprocess.run([str(program), str(folder / f"{key}_in.bin"), str(folder / f"{key}_out.bin")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
    expected = model.eager(x)
    assert_close(np.fromfile(folder / f"{key}_out.bin", np.float32).reshape(expected.shape), expected)


def test_two_libraries_linked_into_one_c_program(exported, folder):
    unet, video = exported["unet"].files, exported["video"].files
    source = folder / "two_models.c"
    source.write_text(f"""
#include <stdio.h>
#include "{unet.header}"
#include "{video.header}"
int main(void) {{
    int a = unet_selftest(), b = video_selftest();
    printf("%d %d %s%s\\n", a, b, unet_last_error(), video_last_error());
    return a || b;
}}
""")
    program = folder / "two_models"
    subprocess.run(["cc", str(source), str(unet.library), str(video.library), f"-Wl,-rpath,{folder}",
                    "-o", str(program)], check=True, capture_output=True)
    done = subprocess.run([str(program)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "0 0", done.stdout + done.stderr


def test_c_program_dlopens_runs_dlcloses_and_loads_again(exported, folder):
    model = exported["unet"]
    program = folder / "dlopen"
    subprocess.run(["cc", "-O1", str(ROOT / "tests" / "aot_dlopen.c"), "-ldl", "-lpthread", "-o", str(program)],
                   check=True, capture_output=True)
    x = data(model.shape, 6)
    x.tofile(folder / "dlopen_in.bin")
    done = subprocess.run([str(program), str(model.files.library), model.files.name, str(folder / "dlopen_in.bin"),
                           str(folder / "dlopen_out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
    expected = model.eager(x)
    for load in (0, 1, 2):                            # first load, second load, a forked child
        got = np.fromfile(folder / f"dlopen_out{load}.bin", np.float32).reshape(expected.shape)
        assert_close(got, expected, f"load {load}")


def test_concurrent_calls_on_and_beside_the_worker_pool(exported):
    """Four threads calling with two threads each: one call at a time has the pool, the others
    start threads of their own; every result is right."""
    model = exported["video"]
    model.library.set_num_threads(2)
    inputs = [data(model.shape, seed) for seed in range(10, 14)]
    expected = [model.eager(x) for x in inputs]
    wrong = []

    def work(k):
        for _ in range(10):
            if not np.allclose(model.library(inputs[k]), expected[k], rtol=1e-4, atol=1e-5):
                wrong.append(k)

    try:
        run_in_threads(work, len(inputs))
    finally:
        model.library.set_num_threads(0)
    assert not wrong


def test_python_threads_call_the_library_at_once(exported):
    model = exported["unet"]
    model.library.set_num_threads(2)                  # each call on two threads, two calls at once
    inputs = [data(model.shape, seed) for seed in (4, 5)]
    expected = [model.eager(x) for x in inputs]
    failures = []

    def work(k):
        for _ in range(15):
            y = model.library(inputs[k])
            if not np.allclose(y, expected[k], rtol=1e-4, atol=1e-5):
                failures.append(k)

    run_in_threads(work, 2)
    model.library.set_num_threads(0)
    assert not failures


def test_library_needs_only_libc_and_exports_only_its_abi(exported):
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("no readelf")
    allowed = {"libc.so.6", "libm.so.6", "libpthread.so.0", "ld-linux-x86-64.so.2"}
    for key, model in exported.items():
        dynamic = subprocess.run([readelf, "-d", "-W", str(model.files.library)], capture_output=True, text=True).stdout
        needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic))
        assert needed and needed <= allowed, (key, needed)
        symbols = subprocess.run([readelf, "--dyn-syms", "-W", str(model.files.library)], capture_output=True,
                                 text=True).stdout
        defined = {line.split()[-1] for line in symbols.splitlines()
                   if re.search(r"\b(FUNC|OBJECT)\s+GLOBAL\b", line) and " UND " not in line}
        assert defined == {f"{key}_{f}" for f in ("run", "num_inputs", "num_outputs", "input_shape", "output_shape",
                                                  "last_error", "set_num_threads", "selftest", "abi_version")} | {"lucid_aot_info"}


def test_header_declares_the_abi(exported):
    header = exported["unet"].files.header.read_text()
    for declaration in ["int unet_run(const float *const *inputs, float *const *outputs);",
                        "int unet_input_shape(int i, int64_t *dims);", "const char *unet_last_error(void);",
                        "void unet_set_num_threads(int threads);", "int unet_selftest(void);",
                        "int unet_abi_version(void);",
                        "#define UNET_INPUT0_ELEMENTS 512", "#define UNET_OUTPUT0_ELEMENTS 1024"]:
        assert declaration in header


# ============================================================================== weights
def test_weights_in_a_separate_file(weights_in_file, folder):
    model = weights_in_file
    assert model.files.weights.is_file() and model.files.weights.name == "autoencoder.weights"
    x = data(model.shape, 6)
    assert_close(model.library(x), model.eager(x))
    model.library.selftest()
    # a library without its weights file, or with a damaged or foreign one, refuses to load
    moved = folder / "moved"
    moved.mkdir()
    shutil.copy(model.files.library, moved / "autoencoder.so")
    with pytest.raises(LibraryError, match="cannot open weights file .*autoencoder.weights"):
        lucid.runtime.load(moved / "autoencoder.so")
    weights = bytearray(model.files.weights.read_bytes())
    for damage, message in [(lambda w: w.__setitem__(200, w[200] ^ 1), "fails its checksum"),
                            (lambda w: w.__delitem__(slice(-8, None)), "truncated"),
                            (lambda w: w.__setitem__(0, ord("X")), "not a lucid weights file")]:
        bad = bytearray(weights)
        damage(bad)
        (folder / "bad.weights").write_bytes(bytes(bad))
        with pytest.raises(LibraryError, match=message):
            lucid.runtime.load(moved / "autoencoder.so", weights=folder / "bad.weights")
    shutil.copy(model.files.weights, folder / "elsewhere.weights")
    library = lucid.runtime.load(moved / "autoencoder.so", weights=folder / "elsewhere.weights")
    assert_close(library(x), model.eager(x))


def test_weights_of_another_model_are_refused(weights_in_file, folder):
    other = folder / "other"
    other.mkdir()
    lucid.manual_seed(99)
    files = lucid.export(ConvAutoencoder3D(base=2, latent=4), lucid.spec(1, 1, 8, 8, 8),
                         path=other / "autoencoder.so", weights_in_file=True)
    with pytest.raises(LibraryError, match="fails its checksum"):
        lucid.runtime.load(weights_in_file.files.library, weights=files.weights)


def test_damaged_embedded_weights_are_refused(exported, folder):
    model = exported["unet"]
    image = bytearray(model.files.library.read_bytes())
    first_weight = np.asarray(model.model.down[0].block[0].weight.numpy()).tobytes()
    at = image.find(first_weight)
    assert at > 0
    image[at + 1] ^= 0x40
    (folder / "damaged.so").write_bytes(bytes(image))
    library = lucid.runtime.load(folder / "damaged.so")
    with pytest.raises(LibraryError, match="embedded weights fail their checksum"):
        library(data(model.shape))


# ============================================================================== bad input
def test_calls_with_wrong_inputs_are_refused(exported):
    library = exported["unet"].library
    with pytest.raises(ShapeError, match=r"input 0 must have shape \(1, 1, 8, 8, 8\), got \(1, 1, 8, 8, 4\)"):
        library(data((1, 1, 8, 8, 4)))
    with pytest.raises(DTypeError, match="input 0 must have dtype float32, got float64"):
        library(data((1, 1, 8, 8, 8)).astype(np.float64))
    with pytest.raises(ShapeError, match="expected 1 input"):
        library()
    assert_close(library(np.asfortranarray(data((1, 1, 8, 8, 8), 7))), exported["unet"].eager(data((1, 1, 8, 8, 8), 7)))


def test_export_refuses_what_it_cannot_export(folder, monkeypatch):
    with pytest.raises(ExportError, match="dtype int64"):
        lucid.export(lambda x: x.argmax(1), lucid.spec(2, 3), path=folder / "argmax.so")
    with pytest.raises(ExportError, match="C identifier"):
        lucid.export(lambda x: x.relu(), lucid.spec(2, 3), path=folder / "relu.so", name="not-valid")
    with pytest.raises(ExportError, match="example inputs"):
        lucid.export(lambda x: x.relu(), path=folder / "relu.so")
    with pytest.raises(ExportError, match="input 0 must be"):
        lucid.export(lambda x: x.relu(), [2, 3], path=folder / "relu.so")
    norm = nn.BatchNorm1d(3)                           # in training mode, inside a function: state updates
    with pytest.raises(ExportError, match="updates state"):
        lucid.export(lambda x: norm(x), lucid.spec(4, 3), path=folder / "norm.so")
    with pytest.raises(ExportError, match="does not exist"):
        lucid.export(lambda x: x.relu(), lucid.spec(2, 3), path=folder / "missing" / "relu.so")
    with pytest.raises(ShapeError, match="Conv3d"):
        lucid.export(nn.Conv3d(2, 4, 3), lucid.spec(1, 3, 8, 8, 8), path=folder / "conv.so")
    monkeypatch.setenv("CC", "no-such-compiler-lucid")
    with pytest.raises(ExportError, match="no C compiler found"):
        lucid.export(lambda x: x.relu(), lucid.spec(2, 3), path=folder / "relu.so")


def test_default_name_is_the_file_stem_as_a_c_identifier(folder):
    files = lucid.export(lambda x: F.relu(x) * 2, lucid.spec(3), path=folder / "3d-model.v1.so")
    assert files.name == "_3d_model_v1" and files.header == folder / "3d-model.v1.h"
    library = lucid.runtime.load(files.library)
    np.testing.assert_array_equal(library(np.array([-1, 0, 2], np.float32)), [0, 0, 4])


# ============================================================================== command line, example
def test_export_command(folder, capsys):
    source = folder / "tiny_model.py"
    source.write_text("import lucid.nn as nn\n"
                      "def make():\n"
                      "    return nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.Sigmoid())\n")
    out = folder / "cli" / "tiny.so"
    out.parent.mkdir()
    assert main(["export", f"{source}:make", "--input", "1,1,4,4,4", "--seed", "3", "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    lucid.manual_seed(3)
    model = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.Sigmoid())
    x = data((1, 1, 4, 4, 4))
    with lucid.no_grad():
        assert_close(lucid.runtime.load(out)(x), model(lucid.Tensor(x)).numpy())
    assert main(["export", f"{source}:make", "--input", "1,2,4,4,4", "-o", str(folder / "cli" / "bad.so")]) == 1
    assert "Conv3d" in capsys.readouterr().err


@pytest.mark.long_running
@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_examples_aot_builds_and_prints_the_unet_checksum(tmp_path):
    for name in ("main.c", "Makefile"):
        shutil.copy(ROOT / "examples" / "aot" / name, tmp_path / name)
    done = subprocess.run(["make", "run", f"PYTHON={sys.executable}", f"MODELS={ROOT / 'examples' / 'models.py'}",
                           "SHAPE=1,1,16,16,16"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "output shape: 1 2 16 16 16" in done.stdout and "selftest: passed" in done.stdout
    checksum = float(re.search(r"^checksum: (-?[\d.]+)$", done.stdout, re.M).group(1))
    lucid.manual_seed(0)
    model = UNet3D().eval()
    pattern = (np.arange(16 ** 3, dtype=np.int64) * 7919 % 1000).astype(np.float32) / np.float32(500) - np.float32(1)
    with lucid.no_grad():
        expected = model(lucid.Tensor(pattern.reshape(1, 1, 16, 16, 16))).numpy().astype(np.float64).sum()
    assert checksum == pytest.approx(expected, rel=1e-4, abs=1e-3)


# ============================================================================== targets
def test_export_for_another_cpu_level_runs_here(folder, monkeypatch):
    from lucid.aot.emitter import _required_features
    from lucid.codegen.target import Target

    monkeypatch.setenv("LUCID_CPU", "x86-64-v3")          # the AVX2 code path, 8-lane vectors
    monkeypatch.delenv("LUCID_CPU_FEATURES", raising=False)
    lucid.manual_seed(4)
    model = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.ReLU())
    files = lucid.export(model, lucid.spec(1, 2, 5, 5, 5), path=folder / "avx2.so")
    x = data((1, 2, 5, 5, 5), 8)
    library = lucid.runtime.load(files.library)
    with lucid.no_grad():
        assert_close(library(x), model(lucid.Tensor(x)).numpy())
    library.selftest()
    # the features a library checks for before running: the target's, or its x86-64 level's
    assert _required_features(Target("x86_64", "x86-64-v3", "")) == ["popcnt", "sse4.1", "sse4.2", "avx", "avx2",
                                                                      "fma", "bmi", "bmi2"]
    assert _required_features(Target("x86_64", "znver3", "+avx2,-avx512f,+fma,+sse4.2")) == ["sse4.2", "avx2", "fma"]


def test_selftest_reports_outputs_that_differ_from_the_golden_ones(folder, monkeypatch):
    import lucid.ir.interpreter as interpreter

    honest = interpreter.run
    monkeypatch.setattr(interpreter, "run", lambda graph, *xs: honest(graph, *xs) + np.float32(0.5))
    files = lucid.export(lambda x: x.tanh(), lucid.spec(4, 5), path=folder / "wrong_golden.so")
    library = lucid.runtime.load(files.library)
    with pytest.raises(LibraryError, match=r"wrong_golden_selftest: output 0 element 0 is .*, expected"):
        library.selftest()
    x = data((4, 5), 9)
    np.testing.assert_allclose(library(x), np.tanh(x), rtol=1e-5, atol=1e-6)     # the code itself is right
