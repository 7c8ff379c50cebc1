"""What the benchmark scripts tell a user: every shape's geometry in --help, and without PyTorch its
columns say n/a with one line on how to install it (never a bare nan); rates are labelled effective;
compile_time.py's breakdown fits in the compile it breaks down."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.long_running       # each test runs a benchmark script in a subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184"   # as conv.py sets them


def run_benchmark(script: str, *args: str, without_torch: bool = False, without: tuple = ()) -> subprocess.CompletedProcess:
    """Run benchmarks/<script> in a fresh process (with the glibc settings it would re-execute itself
    with), optionally as if PyTorch (or the modules `without`) were not installed."""
    hidden = "".join(f"sys.modules[{name!r}] = None; " for name in ("torch",) * without_torch + tuple(without))
    code = (f"import runpy, sys; {hidden}sys.argv = [{script!r}] + {list(args)!r}; "
            f"sys.path.insert(0, {str(BENCHMARKS)!r}); runpy.run_path({str(BENCHMARKS / script)!r}, run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, GLIBC_TUNABLES=TUNABLES))


def test_help_gives_every_shapes_geometry():
    for script in ("conv.py", "kernels.py"):
        done = run_benchmark(script, "--help")
        assert done.returncode == 0, done.stderr
        assert "B     conv_transpose3d input (2, 64, 4, 8, 8) -> 32 channels, kernel 4, stride 2, padding 1" in done.stdout
        assert "G2    conv_transpose2d input (16, 64, 28, 28) -> 32 channels, kernel 4, stride 2, padding 1" in done.stdout
        assert ("F     conv3d           input (8, 3, 16, 112, 112) -> 64 channels, kernel (3, 7, 7), "
                "stride (1, 2, 2), padding (1, 3, 3)") in done.stdout
        assert len(re.findall(r"^  (B|C|D|E|F|G1|G2|seed) +conv", done.stdout, re.M)) == 8


def test_conv_without_torch_says_n_a_and_how_to_install_it():
    done = run_benchmark("conv.py", "--shapes", "seed", "--threads", "1", "--quick", without_torch=True)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "nan" not in out
    assert out.count("PyTorch is not installed") == 1 and ".venv/bin/pip install torch" in out
    assert out.count("effective rates") == 1 and "can pass 100% of peak" in out
    header = next(line for line in out.splitlines() if line.startswith("shape"))
    assert "eff GFLOP/s" in header and "eff % peak" in header
    rows = [line.split() for line in out.splitlines() if line.startswith("seed ")]
    assert [row[:3] for row in rows] == [["seed", "fwd", "1"], ["seed", "fwd+bwd", "1"]]
    for row in rows:
        assert float(row[3]) > 0 and row[4:7] == ["n/a"] * 3 and row[9:] == ["n/a", "n/a"]
        assert float(row[7]) > 0 and row[8].endswith("%")


def test_networks_without_torch_times_lucid_and_says_where_the_time_goes():
    done = run_benchmark("networks.py", "--tiny", "--quick", "--threads", "1", "--networks", "GroupNormUNet",
                         without_torch=True)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "nan" not in out
    assert out.count("PyTorch is not installed") == 1 and ".venv/bin/pip install torch" in out
    assert re.search(r"^memory bandwidth \(one-thread NumPy copy, read \+ write\): [\d.]+ GB/s$", out, re.M)
    rows = [line.split() for line in out.splitlines() if line.startswith("GroupNormUNet ")]
    assert [row[:3] for row in rows] == [["GroupNormUNet", "train", "1"], ["GroupNormUNet", "infer", "1"]]
    for row in rows:
        assert float(row[3]) > 0 and row[4:] == ["n/a"] * 4
    for title in ("training step (forward + backward graphs)", "inference"):
        section = out.split(f"where the time goes, {title}: ")[1].split("where the time goes")[0]
        shares = dict(re.findall(r"^    (\w+) +[\d.]+ ms +([\d.]+)%", section, re.M))
        assert {"conv", "norm", "resampling"} <= set(shares)
        assert abs(sum(map(float, shares.values())) - 100) < 1
        assert re.search(r"^    norm .*% +[\d.]+ GB/s \(\d+% of the copy's\)$", section, re.M)
        assert re.search(r"^    resampling .*% +[\d.]+ GB/s \(\d+% of the copy's\)$", section, re.M)


def test_memory_bound_reports_bandwidth_and_each_layers_share_of_it():
    for without_torch in (False, True):
        done = run_benchmark("memory_bound.py", "--quick", "--layers", "GroupNorm", "upsample-nearest",
                             "--threads", "1", without_torch=without_torch)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert "nan" not in out
        assert float(re.search(r"memory bandwidth .* 1 thread\(s\) ([0-9.]+) GB/s", out).group(1)) > 0
        assert ("PyTorch is not installed" in out) == without_torch
        rows = [line.split() for line in out.splitlines() if line.startswith(("GroupNorm ", "upsample-nearest "))]
        assert [row[:3] for row in rows] == [[layer, mode, "1"] for layer in ("GroupNorm", "upsample-nearest")
                                             for mode in ("fwd", "fwd+bwd")]
        for row in rows:
            assert float(row[3]) > 0 and float(row[5]) >= 0 and row[6].endswith("%")
            if without_torch:
                assert row[4] == row[7] == row[8] == "n/a"


def test_onnx_unet_compares_lucid_with_each_installed_runtime_on_one_file():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    done = run_benchmark("onnx_unet.py", "--quick", "--threads", "1", "--shape", "1,1,4,4,4", without=("openvino",))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "nan" not in out
    assert out.count("OpenVINO is not installed") == 1 and ".venv/bin/pip install openvino" in out
    assert "ONNX Runtime is not installed" not in out and out.count("effective rates") == 1
    header = next(line for line in out.splitlines() if line.startswith("thr"))
    assert header.split() == ["thr", "lucid", "ms", "ort", "ms", "ov", "ms", "eff", "GFLOP/s", "eff", "%", "peak",
                              "ort/lucid", "ov/lucid"]
    rows = [line.split() for line in out.splitlines() if re.match(r"^ +1 ", line)]
    assert len(rows) == 1
    row = rows[0]
    assert float(row[1]) > 0 and float(row[2]) > 0 and row[3] == "n/a" and float(row[4]) > 0
    assert row[5].endswith("%") and float(row[6]) > 0 and row[7] == "n/a"


def test_compile_time_reports_cold_warm_and_where_a_cold_compile_goes():
    done = run_benchmark("compile_time.py", "--cases", "unet3d-infer", "--runs", "1", without_torch=True)
    assert done.returncode == 0, done.stderr
    header, row = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith(("case |", "unet3d-infer |"))]
    values = dict(zip(header, row))
    phases = [float(values[p]) for p in ("trace+passes", "lowering", "llvm opt", "llvm emit", "link")]
    assert int(values["modules"]) > 0 and all(p >= 0 for p in phases)
    assert sum(phases) <= float(values["cold 1 job"])            # the breakdown is of that run
    assert float(values["warm"]) < float(values["cold 1 job"])   # a second process skips lowering and LLVM
    caller, workers = map(float, values["cold CPU (caller + workers)"].split(" + "))
    assert caller > 0 and workers >= 0


def test_conv_peers_names_every_missing_peer_and_shows_n_a():
    done = run_benchmark("conv_peers.py", "--shapes", "seed", "--threads", "1", "--quick",
                         without=("torch", "onnxruntime", "openvino"))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "nan" not in out
    for missing in ("no torch.compile column", "no ort column", "no ov column"):
        assert out.count(missing) == 1, out
    rows = [line.split() for line in out.splitlines() if line.startswith("seed")]
    assert [row[1] for row in rows] == ["fwd", "fwd+bwd"]
    assert all(row[4:] == ["n/a"] * 7 for row in rows), rows


def test_conv_peers_times_onnx_runtime_and_openvino_on_the_forward():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    done = run_benchmark("conv_peers.py", "--shapes", "seed", "--threads", "1", "--quick", without_torch=True)
    assert done.returncode == 0, done.stderr
    forward = next(line.split() for line in done.stdout.splitlines() if line.startswith("seed") and " fwd " in line)
    lucid_ms, compile_ms, ort_ms, ov_ms = forward[3:7]
    assert compile_ms == "n/a" and float(lucid_ms) > 0 and float(ort_ms) > 0 and float(ov_ms) > 0
    assert float(forward[-1]) == min(float(forward[-3]), float(forward[-2]))   # best/lucid is the better peer's
