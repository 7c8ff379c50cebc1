"""`lucid.export` of graphs with symbolic dimensions (lucid/aot/, issue 21): one library for every size.

Checked against eager lucid (eval mode) at every size: a model of the families codegen takes
symbolically (group norm, activations, max and average pooling, softmax, reductions; two outputs)
exported once runs batch sizes 1..8 and volumes 16..48 (and odd sizes) through `lucid.runtime` and
through a C program calling `N_run_dims` (tests/aot/run_dims.c), with calls of different sizes from
two threads at once; two inputs sharing a dimension, and an output that is an input (copied at
the call's size); `N_input_shape` reports the symbolic dimensions as -1; the self-test runs and checks
both of its sizes (wrong golden data at the second size fails it); a size outside a dimension's range, and one violating a constraint the trace recorded,
are refused before any kernel runs (Python: a ShapeError naming the dimension and the constraint; C:
-1 and the message); the library exports the concrete ABI plus `N_run_dims` and
`N_output_shape_dims`; `lucid export --input N,2,D:8,...`. A Conv3d model runs the same way.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
import lucid.runtime
from lucid.cli import main
from lucid.errors import LibraryError, ShapeError
from model_helpers import calls_alternating_in_threads

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) on this machine")

#: (batch, (D, H, W)): batches 1..8, volumes 16..48 in steps of 8, and odd sizes
SIZES = [(1, (16, 16, 16)), (2, (24, 17, 32)), (5, (32, 40, 23)), (8, (48, 16, 31)), (3, (17, 33, 48)),
         (7, (40, 24, 16)), (4, (31, 48, 40))]


class PoolNet(nn.Module):
    """Group norm, SiLU, max and average pooling, softmax and a mean: two outputs."""

    def __init__(self):
        super().__init__()
        self.norm = nn.GroupNorm(2, 4)

    def forward(self, x):
        a = F.silu(self.norm(x))
        pooled = F.max_pool3d(a, 2) + F.avg_pool3d(a, 2)
        return pooled.softmax(dim=1), (x * 0.5).relu().mean(dim=(2, 3, 4))


def volume_spec(channels: int):
    return lucid.spec(lucid.dim("N"), channels, lucid.dim("D", min=8), lucid.dim("H", min=8), lucid.dim("W", min=8))


def data(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def eager(model, x: np.ndarray):
    with lucid.no_grad():
        result = model(lucid.Tensor(x))
    return [r.numpy() for r in result] if isinstance(result, tuple) else [result.numpy()]


def assert_close(actual, expected, what=""):
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5, err_msg=what)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("export_dynamic")


@pytest.fixture(scope="module")
def pool_net(folder):
    lucid.manual_seed(3)
    model = PoolNet().eval()
    files = lucid.export(model, volume_spec(4), path=folder / "poolnet.so")
    return model, files, lucid.runtime.load(files.library)


def build_program(files, folder: Path) -> Path:
    program = folder / f"run_dims_{files.name}"
    subprocess.run(["cc", "-O1", "-Wall", f"-DMODEL={files.name}", "-include", str(files.header),
                    str(HERE / "run_dims.c"), str(files.library), f"-Wl,-rpath,{files.library.parent}",
                    "-o", str(program)], check=True, capture_output=True)
    return program


# ============================================================================== Python
def test_one_library_serves_every_batch_and_volume_size(pool_net):
    model, _, library = pool_net
    assert library.symbolic and library.input_shapes == [(-1, 4, -1, -1, -1)]
    assert library.output_shapes == [(-1, 4, -1, -1, -1), (-1, 4)]
    for n, volume in SIZES:
        x = data((n, 4, *volume), n)
        got = library(x)
        assert isinstance(got, tuple) and len(got) == 2
        for actual, expected in zip(got, eager(model, x), strict=True):
            assert_close(actual, expected, f"batch {n}, volume {volume}")
    library.selftest()


def test_calls_of_different_sizes_from_two_threads_at_once(pool_net):
    """Each call takes an arena large enough for its own sizes; the results stay right."""
    model, _, library = pool_net
    inputs = [data((1, 4, 8, 9, 10), 1), data((3, 4, 20, 17, 16), 2)]
    expected = [eager(model, x) for x in inputs]
    library.set_num_threads(2)
    try:
        results = calls_alternating_in_threads(library, inputs, repeats=6)
    finally:
        library.set_num_threads(0)
    assert len(results) == 12
    for which, got in results:
        assert all(np.allclose(a, e, rtol=1e-4, atol=1e-5) for a, e in zip(got, expected[which], strict=True))


def test_sizes_outside_the_range_or_the_constraints_are_refused(pool_net, folder):
    _, _, library = pool_net
    with pytest.raises(ShapeError, match=r"dimension H = 7 \(input 0, axis 3\) is outside its range \(>= 8\)"):
        library(data((2, 4, 16, 7, 16)))
    for shape in [(2, 3, 16, 16, 16), (2, 4, 16, 16)]:
        with pytest.raises(ShapeError, match=r"input 0 must have shape \(-1, 4, -1, -1, -1\) \(-1: any size"):
            library(data(shape))

    def even_rows(x):
        assert x.shape[2] % 2 == 0                  # recorded as the constraint L % 2 == 0
        return x.softmax(dim=2)

    files = lucid.export(even_rows, lucid.spec(lucid.dim("N"), 3, lucid.dim("L", min=2)), path=folder / "even.so")
    even = lucid.runtime.load(files.library)
    x = data((2, 3, 6))
    assert_close(even(x), eager(even_rows, x)[0])
    with pytest.raises(ShapeError, match=r"dimension L = 7 \(input 0, axis 2\) violates the constraint L % 2 == 0"):
        even(data((2, 3, 7)))
    assert "Constraint: L % 2 == 0" in files.header.read_text()
    even.selftest()                                 # its two sizes: L = 2 and L = 6
    program = build_program(files, folder)          # a C caller gets -1 and the same message
    data((2, 3, 7)).tofile(folder / "even_in.bin")
    done = subprocess.run([str(program), str(folder / "even_in.bin"), str(folder / "even_out.bin"), "2", "3", "7"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout.startswith(
        "refused -1: even: even_run_dims: dimension L = 7 (input 0, axis 2) violates the constraint L % 2 == 0"), \
        done.stdout + done.stderr


def test_two_inputs_share_a_dimension_and_an_input_is_an_output(folder):
    """N read from input 0 and checked in input 1; the output that is input 0 is copied at its size."""
    def fn(x, y):
        return (x * y).relu().sum(dim=2), x

    files = lucid.export(fn, lucid.spec(lucid.dim("N"), 3, lucid.dim("L")), lucid.spec(lucid.dim("N"), 3, 1),
                         path=folder / "pair.so")
    library = lucid.runtime.load(files.library)
    for n, length in [(1, 1), (4, 7), (2, 300)]:
        x, y = data((n, 3, length), n), data((n, 3, 1), n + 1)
        reduced, same = library(x, y)
        assert_close(reduced, np.maximum(x * y, 0).sum(axis=2))
        np.testing.assert_array_equal(same, x)
    with pytest.raises(ShapeError, match=r"input 1 has size 3 on axis 0; the model needs 2 there \(N\)"):
        library(data((2, 3, 4)), data((3, 3, 1)))


def test_selftest_runs_two_sizes(folder, monkeypatch):
    """The golden data of both sizes is checked: a library whose second size's golden outputs are
    wrong fails its self-test there, while its code is right."""
    import lucid.ir.interpreter as interpreter
    from lucid.aot.exporter import selftest_sizes

    def even_rows(x):
        assert x.shape[2] % 2 == 0
        return x.tanh()

    spec = lucid.spec(lucid.dim("N"), 3, lucid.dim("L", min=2))
    assert selftest_sizes(lucid.trace(even_rows, spec)) == [{"L": 2, "N": 1}, {"L": 6, "N": 4}]
    honest, calls = interpreter.run, []

    def second_call_wrong(graph, *xs):
        calls.append(xs[0].shape)
        return honest(graph, *xs) + np.float32(0.5 if len(calls) == 2 else 0)

    monkeypatch.setattr(interpreter, "run", second_call_wrong)
    library = lucid.runtime.load(lucid.export(even_rows, spec, path=folder / "wrong_second.so").library)
    assert calls == [(1, 3, 2), (4, 3, 6)]
    with pytest.raises(LibraryError, match=r"wrong_second_selftest: output 0 element 0 is .*, expected"):
        library.selftest()
    x = data((4, 3, 6))
    np.testing.assert_allclose(library(x), np.tanh(x), rtol=1e-5, atol=1e-6)


# ============================================================================== C
def test_c_program_runs_every_size_through_run_dims(pool_net, folder):
    model, files, _ = pool_net
    program = build_program(files, folder)
    assert subprocess.run([str(program)], capture_output=True, text=True, timeout=120).stdout.strip() == "ok"
    for n, volume in SIZES[:3] + [(6, (19, 45, 27))]:
        shape = (n, 4, *volume)
        x = data(shape, 7 * n)
        x.tofile(folder / "in.bin")
        done = subprocess.run([str(program), str(folder / "in.bin"), str(folder / "out.bin"), *map(str, shape)],
                              capture_output=True, text=True, timeout=120)
        expected = eager(model, x)
        shapes = " ".join(",".join(map(str, e.shape)) for e in expected)
        assert done.returncode == 0 and done.stdout.strip() == f"ok {shapes}", done.stdout + done.stderr
        flat = np.fromfile(folder / "out.bin", np.float32)
        first = expected[0].size
        assert_close(flat[:first].reshape(expected[0].shape), expected[0], f"C, {shape}")
        assert_close(flat[first:].reshape(expected[1].shape), expected[1], f"C, {shape}")
    for shape, message in [((2, 4, 16, 16, 5), r"dimension W = 5 \(input 0, axis 4\) is outside its range"),
                           ((2, 5, 16, 16, 16), r"input 0 has size 5 on axis 1; the model needs 4")]:
        data(shape).tofile(folder / "in.bin")
        done = subprocess.run([str(program), str(folder / "in.bin"), str(folder / "out.bin"), *map(str, shape)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and re.search(r"^refused -1: poolnet: poolnet_run_dims: " + message, done.stdout), \
            done.stdout + done.stderr


def test_library_exports_run_dims_beside_the_concrete_abi(pool_net):
    _, files, _ = pool_net
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("no readelf")
    symbols = subprocess.run([readelf, "--dyn-syms", "-W", str(files.library)], capture_output=True, text=True).stdout
    defined = {line.split()[-1] for line in symbols.splitlines()
               if re.search(r"\b(FUNC|OBJECT)\s+GLOBAL\b", line) and " UND " not in line}
    assert defined == {f"poolnet_{f}" for f in ("run", "run_dims", "output_shape_dims", "num_inputs", "num_outputs",
                                                 "input_shape", "output_shape", "last_error", "set_num_threads",
                                                 "selftest", "abi_version")} | {"lucid_aot_info"}
    header = files.header.read_text()
    for declaration in ["int poolnet_run_dims(const int64_t *shapes, const float *const *inputs, float *const *outputs);",
                        "int poolnet_output_shape_dims(const int64_t *shapes, int i, int64_t *dims);",
                        "#define POOLNET_INPUT_DIMS 5", "input 0 (x): float32 [N, 4, D, H, W]",
                        "Ranges: D >= 8; H >= 8; N >= 1; W >= 8."]:
        assert declaration in header


# ============================================================================== command line, conv
def test_export_command_with_symbolic_sizes(folder, capsys):
    source = folder / "pool_model.py"
    source.write_text("import lucid.nn as nn\n"
                      "def make():\n"
                      "    return nn.Sequential(nn.MaxPool3d(2), nn.Sigmoid())\n")
    out = folder / "cli.so"
    assert main(["export", f"{source}:make", "--input", "N,2,D:4:64,8,8", "-o", str(out)]) == 0
    assert "cli_run_dims" in capsys.readouterr().out
    library = lucid.runtime.load(out)
    assert library.input_shapes == [(-1, 2, -1, 8, 8)]
    for shape in [(1, 2, 4, 8, 8), (3, 2, 9, 8, 8)]:
        x = data(shape)
        pooled = x[:, :, :shape[2] // 2 * 2].reshape(shape[0], 2, shape[2] // 2, 2, 4, 2, 4, 2).max(axis=(3, 5, 7))
        assert_close(library(x), 1 / (1 + np.exp(-pooled)))
    with pytest.raises(ShapeError, match=r"dimension D = 65 .* outside its range \(>= 4 and <= 64\)"):
        library(data((1, 2, 65, 8, 8)))
    with pytest.raises(SystemExit):
        main(["export", f"{source}:make", "--input", "N,2,D:x,8,8", "-o", str(out)])
    assert "NAME:MIN:MAX" in capsys.readouterr().err


def test_conv3d_model_exports_with_symbolic_sizes(folder):
    lucid.manual_seed(4)
    model = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
                          nn.Conv3d(4, 3, 3, stride=2, padding=1)).eval()
    files = lucid.export(model, volume_spec(2), path=folder / "conv.so")
    library = lucid.runtime.load(files.library)
    for n, volume in SIZES:
        x = data((n, 2, *volume), n)
        assert_close(library(x), eager(model, x)[0], f"batch {n}, volume {volume}")
    library.selftest()
