"""What the benchmark scripts tell a user: every shape's geometry in --help, and without PyTorch its
columns say n/a with one line on how to install it (never a bare nan); rates are labelled effective;
compile_time.py's breakdown fits in the compile it breaks down."""
import importlib.util
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


#: networks.py's row: network, mode, threads, then lucid's and each peer's ms, then each peer's ratio and the best.
NETWORK_PEERS = ("torch", "torch CL", "torch.compile", "ort", "ov")
#: One kernel family of networks.py's breakdown: name, ms, share, MFLOP, MB, FLOP/B, GFLOP/s, % peak, GB/s,
#: % bandwidth, the roof that bounds it and the fraction of that roof reached.
FAMILY_ROW = re.compile(r"^    (\w+) +([\d.]+) +([\d.]+)% +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+) +(\d+)% +([\d.]+) "
                        r"+(\d+)% +(compute|memory) +(\d+)%$", re.M)


def network_rows(out: str, name: str) -> list:
    """networks.py's rows of one network: [mode, threads, {column: ms or None}, {column: ratio or None}]."""
    rows = []
    for line in out.splitlines():
        if line.startswith(name + " "):
            fields = line.split()
            cells = [None if c == "n/a" else float(c) for c in fields[3:]]
            assert len(cells) == 12, line
            times = dict(zip(("lucid",) + NETWORK_PEERS, cells[:6]))
            rows.append([fields[1], int(fields[2]), times, dict(zip(NETWORK_PEERS + ("best",), cells[6:]))])
    return rows


def check_ratios(times: dict, ratios: dict) -> None:
    """Each ratio is its peer's time over lucid's (to the printed digits: times and ratios are rounded
    to 0.01, so 0.41 ms over 0.42 ms may print as 1.00), and `best` the smallest."""
    for peer in NETWORK_PEERS:
        assert (ratios[peer] is None) == (times[peer] is None)
        if times[peer] is not None:
            peer_ms, lucid_ms = times[peer], times["lucid"]
            low, high = (peer_ms - 0.005) / (lucid_ms + 0.005), (peer_ms + 0.005) / max(lucid_ms - 0.005, 1e-9)
            assert low - 0.005 <= ratios[peer] <= high + 0.005, (peer, times, ratios)
    measured = [ratios[peer] for peer in NETWORK_PEERS if ratios[peer] is not None]
    assert ratios["best"] == (min(measured) if measured else None)


def breakdown(out: str, network: str, title: str) -> dict:
    """{family: its row's cells} of one of networks.py's "where the time goes" tables, checked for
    consistency with the machine's roofline line."""
    balance = float(re.search(r"below ([\d.]+) FLOP/byte a kernel is memory-bound", out).group(1))
    section = out.split(f"\n{network}, input")[1].split(f"where the time goes, {title}: ")[1]
    section = section.split("where the time goes")[0].split("\n\n")[0]
    families = {row[0]: row[1:] for row in FAMILY_ROW.findall(section)}
    assert abs(sum(float(row[1]) for row in families.values()) - 100) < 1
    for ms, _, mflop, mbytes, intensity, *_, bound, _ in families.values():
        mflop, mbytes = float(mflop), float(mbytes)               # printed to 0.01 MFLOP and 0.01 MB
        assert float(ms) > 0 and mbytes >= 0
        assert (mflop - 0.005) / (mbytes + 0.005) - 0.005 <= float(intensity)
        assert mbytes < 0.01 or float(intensity) <= (mflop + 0.005) / (mbytes - 0.005) + 0.005
        assert bound == ("compute" if float(intensity) >= balance else "memory")
    step = re.search(r"the (?:step|call) on one thread: ([\d.]+) ms = ([\d.]+) ms in the compiled executables "
                     r"\+ ([\d.]+) ms outside them", section)
    total, inside, outside = map(float, step.groups())
    assert 0 < inside <= total and total == pytest.approx(inside + outside, abs=0.11)
    return families


def test_networks_without_peers_times_lucid_names_each_missing_peer_and_says_where_the_time_goes():
    done = run_benchmark("networks.py", "--tiny", "--quick", "--threads", "1", "--networks", "GroupNormUNet",
                         without=("torch", "onnxruntime", "openvino"))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "nan" not in out
    assert out.count("PyTorch is not installed") == 1 and ".venv/bin/pip install torch" in out
    assert out.count("no ort column") == 1 and out.count("no ov column") == 1
    assert re.search(r"^machine, one thread: peak [\d.]+ GFLOP/s .*, memory bandwidth [\d.]+ GB/s", out, re.M)
    rows = network_rows(out, "GroupNormUNet")
    assert [row[:2] for row in rows] == [["train", 1], ["infer", 1]]
    for _, _, times, ratios in rows:
        assert times["lucid"] > 0 and set(times.values()) == {times["lucid"], None}
        assert set(ratios.values()) == {None}
    for title in ("training step (forward + backward graphs)", "inference"):
        families = breakdown(out, "GroupNormUNet", title)
        assert {"conv", "norm", "resampling"} <= set(families)
        assert families["conv"][-2] == "compute" and families["norm"][-2] == "memory"
    assert re.search(r"outside them \(autograd, zero_grad and AdamW\); AdamW's step alone "
                     r"[\d.]+ ms$", out, re.M)


def test_networks_checks_onnx_runtime_and_openvino_against_lucid_and_times_them():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    done = run_benchmark("networks.py", "--tiny", "--quick", "--threads", "1", "--networks", "GroupNormUNet", "UNet3D",
                         "--modes", "infer", without=("torch",))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "nan" not in out and "no ort column" not in out and "no ov column" not in out
    assert "first training loss" not in out and "where the time goes, training" not in out
    for name in ("GroupNormUNet", "UNet3D"):
        [[mode, threads, times, ratios]] = network_rows(out, name)
        assert (mode, threads) == ("infer", 1)
        assert times["torch"] is times["torch CL"] is times["torch.compile"] is None
        assert times["lucid"] > 0 and times["ort"] > 0 and times["ov"] > 0
        check_ratios(times, ratios)
    # UNet3D(base=4, depth=1) on 2 x 1 x 8^3, its convolutions' multiply-adds counted by hand: 3x3x3 convs
    # 1->4, 4->4 and (decoder) 8->4, 4->4 on 8^3; 4->8, 8->8 on 4^3; the k2 s2 transposed conv 8->4 from 4^3
    # and the 1x1x1 head 4->2 on 8^3. The conv family has them (and the elementwise work fused into them).
    outputs = 2 * 8 ** 3
    macs = outputs * 27 * (4 * 1 + 4 * 4 + 4 * 8 + 4 * 4) + outputs // 8 * 27 * (8 * 4 + 8 * 8) + \
        outputs // 8 * 8 * 4 * 8 + outputs * 2 * 4
    conv_mflop = float(breakdown(out, "UNet3D", "inference")["conv"][2])
    assert 2 * macs / 1e6 <= conv_mflop + 0.005 <= 1.1 * 2 * macs / 1e6


def test_networks_times_torch_eager_and_compiled_and_says_how_long_compiling_took():
    """The torch.compile column's plumbing, with the aot_eager backend: Inductor's C++ compiles of even
    the tiny UNet3D (19 g++ runs) would cost the test run 17 s of CPU, and the benchmark itself runs them."""
    pytest.importorskip("torch")
    done = run_benchmark("networks.py", "--tiny", "--quick", "--threads", "1", "--networks", "UNet3D",
                         "--modes", "infer", "--torch-compile-backend", "aot_eager", without=("onnxruntime", "openvino"))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "nan" not in out and "PyTorch is not installed" not in out
    assert out.count("no ort column") == 1 and out.count("no ov column") == 1
    [[_, _, times, ratios]] = network_rows(out, "UNet3D")
    assert all(times[column] > 0 for column in ("lucid", "torch", "torch CL", "torch.compile"))
    assert times["ort"] is times["ov"] is None
    check_ratios(times, ratios)
    assert re.search(r"^torch\.compile's first call \(the compile, backend aot_eager, not Inductor\): infer 1 thr "
                     r"[\d.]+ s$", out, re.M)


def test_networks_times_monais_networks_as_monai_builds_them():
    """MONAI's DynUNet from its installed source on lucid: the same network as MONAI's own (the first
    training losses agree), timed against PyTorch eager and compiled (aot_eager: see above)."""
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    done = run_benchmark("networks.py", "--tiny", "--quick", "--threads", "1", "--networks", "MONAI-DynUNet",
                         "--modes", "train", "--torch-compile-backend", "aot_eager", without=("onnxruntime", "openvino"))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "MONAI-DynUNet, input (1, 1, 32, 32, 32)" in out
    lucid_loss, torch_loss = map(float, re.search(r"first training loss ([\d.]+) \(lucid compiled\) vs ([\d.]+) "
                                                  r"\(torch\)", out).groups())
    assert lucid_loss == pytest.approx(torch_loss, abs=2e-6)
    [[mode, _, times, ratios]] = network_rows(out, "MONAI-DynUNet")
    assert mode == "train" and all(times[column] > 0 for column in ("lucid", "torch", "torch.compile"))
    check_ratios(times, ratios)
    assert {"conv", "norm"} <= set(breakdown(out, "MONAI-DynUNet", "training step (forward + backward graphs)"))


def test_networks_names_monai_when_it_is_missing():
    done = run_benchmark("networks.py", "--tiny", "--quick", "--threads", "1", "--networks", "MONAI-UNet",
                         without=("monai", "torch"))
    assert done.returncode == 0, done.stderr
    assert "MONAI-UNet: MONAI is not installed, so this network is not timed (pip install monai)" in done.stdout
    assert network_rows(done.stdout, "MONAI-UNet") == []


def test_memory_bound_reports_bandwidth_and_each_layers_share_of_it():
    torch_installed = importlib.util.find_spec("torch") is not None
    for without_torch in (False, True):
        done = run_benchmark("memory_bound.py", "--quick", "--layers", "GroupNorm", "upsample-nearest",
                             "--threads", "1", without_torch=without_torch)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert "nan" not in out
        assert float(re.search(r"memory bandwidth .* 1 thread\(s\) ([0-9.]+) GB/s", out).group(1)) > 0
        torch_missing = without_torch or not torch_installed
        assert ("PyTorch is not installed" in out) == torch_missing
        rows = [line.split() for line in out.splitlines() if line.startswith(("GroupNorm ", "upsample-nearest "))]
        assert [row[:3] for row in rows] == [[layer, mode, "1"] for layer in ("GroupNorm", "upsample-nearest")
                                             for mode in ("fwd", "fwd+bwd")]
        for row in rows:
            assert float(row[3]) > 0 and float(row[5]) >= 0 and row[6].endswith("%")
            if torch_missing:
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
    done = run_benchmark("compile_time.py", "--cases", "tiny-infer", "--runs", "1", without_torch=True)
    assert done.returncode == 0, done.stderr
    header, row = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith(("case |", "tiny-infer |"))]
    values = dict(zip(header, row))
    phases = [float(values[p]) for p in ("trace+passes", "lowering", "llvm opt", "llvm emit", "link")]
    assert int(values["modules"]) > 0 and all(p >= 0 for p in phases)
    assert sum(phases) <= float(values["cold 1 job"])            # the breakdown is of that run
    assert float(values["warm"]) < float(values["cold 1 job"])   # a second process skips lowering and LLVM
    caller, workers = map(float, values["cold CPU (caller + workers)"].split(" + "))
    assert caller > 0 and workers >= 0
    assert_profile_lists_each_module_once(int(values["modules"]))


def assert_profile_lists_each_module_once(modules: int) -> None:
    """`compile_time.py --modules`: the module-by-module profile of a cold compile lists each module
    the timed cold compile above compiled once (`modules`, counted in another process), its levels add
    up to that count, its phases to its total, and it names the costliest modules it was asked for."""
    done = run_benchmark("compile_time.py", "--cases", "tiny-infer", "--modules", "3", without_torch=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    totals = re.fullmatch(r"tiny-infer: (\d+) modules, ([\d.]+) CPU-s of LLVM \(parse ([\d.]+), opt ([\d.]+), "
                          r"emit ([\d.]+)\)", lines[0])
    assert totals, lines[0]
    count, total, phases = int(totals[1]), float(totals[2]), [float(totals[i]) for i in (3, 4, 5)]
    assert count == modules
    assert total > 0 and abs(total - sum(phases)) <= 0.015
    levels = re.findall(r"^  level (\d): (\d+) modules, [\d.]+ s$", done.stdout, re.M)
    assert {level for level, _ in levels} <= {"0", "2", "3"} and sum(int(n) for _, n in levels) == count
    costliest = lines[lines.index(next(line for line in lines if line.startswith("the 3 costliest"))) + 1:]
    assert len(costliest) == 3 and all(re.match(r"  [\d.]+ \([\d.]+ \+ [\d.]+\)  level \d  ", line) for line in costliest)


KERNEL_ARRAYS_FINITE = """
import os, sys
import numpy as np
network_benchmark = __import__("conv").sibling_script("networks")
from kernels import kernel_arrays
network = network_benchmark.Network(sys.argv[1], network_benchmark.TINY, None, 0.0)
network.lucid_training_step()()
for executable in network.executables(True):
    inputs, params = kernel_arrays(executable)
    outputs = executable(*inputs, params={v.name: a for v, a in zip(executable.graph.params, params)})
    print(executable.graph.name, all(np.isfinite(o).all() for o in outputs if o.dtype.kind == "f"))
"""


@pytest.mark.parametrize("network", ["UNet3D", "MONAI-UNet"])
def test_kernels_are_timed_on_arrays_that_keep_a_training_step_finite(network, tmp_path):
    """kernels.kernel_times' arrays: a non-finite value sends Winograd's weight gradient down its exact,
    scalar path (MONAI's UNet: 0.8 s of kernels "each alone" for a 74 ms step, on zero-filled arrays)."""
    if network.startswith("MONAI"):
        pytest.importorskip("monai")
    script = tmp_path / "arrays.py"
    script.write_text(KERNEL_ARRAYS_FINITE)
    done = run_benchmark(str(script), network)
    assert done.returncode == 0, done.stderr
    assert [line.split()[1] for line in done.stdout.splitlines() if line.startswith("lambda")] == ["True", "True"], \
        done.stdout


def test_conv_step_splits_a_step_into_its_parts():
    done = run_benchmark("conv_step.py", "--shapes", "seed", "--threads", "1", "--steps", "3", without_torch=True)
    assert done.returncode == 0, done.stderr
    (row,) = [line.split() for line in done.stdout.splitlines() if line.startswith("seed")]
    assert row[:2] == ["seed", "1"] and row[-2].endswith("%") and row[-1].endswith("%"), row
    step, forward, summed, backward, rest, forward_alone, backward_alone, kernels = map(float, row[2:10])
    assert min(step, forward, summed, backward, forward_alone, backward_alone, kernels) > 0, row
    assert forward + backward + summed <= 1.2 * step and abs(rest) <= step, row
    assert float(row[-2][:-1]) > 0 and float(row[-1][:-1]) > 0, row


def test_recycled_outputs_times_both_sides_in_processes_with_glibcs_defaults():
    """Started with conv.py's GLIBC_TUNABLES (as run_benchmark does), its sides still run without them
    (a side refuses to run with them set)."""
    done = run_benchmark("recycled_outputs.py", "--tiny", "--networks", "UNet3D", "--threads", "1", "--rounds", "1",
                         "--warm-up", "1", "--steps", "2")
    assert done.returncode == 0, done.stderr
    (row,) = [line.split() for line in done.stdout.splitlines() if line.startswith("UNet3D")]
    recycled, fresh, torch_ms, ratio, torch_ratio, *faults = (None if v == "n/a" else float(v) for v in row[2:])
    assert row[1] == "1" and recycled > 0 and fresh > 0 and abs(ratio - fresh / recycled) <= 0.05 * ratio + 0.01, row
    assert faults[0] >= 0 and faults[1] >= 0, row
    if importlib.util.find_spec("torch") is None:
        assert torch_ms is torch_ratio is faults[2] is None, row
    else:
        assert torch_ms > 0 and abs(torch_ratio - torch_ms / recycled) <= 0.05 * torch_ratio + 0.01, row


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


def test_threads_times_each_executable_on_one_and_two_threads():
    done = run_benchmark("threads.py", "--tiny", "--quick", "--networks", "UNet3D", "R2Plus1dNet")
    assert done.returncode == 0, done.stderr
    assert re.search(r"FMA peak: 1 thread \d+ GFLOP/s, 2 threads \d+ GFLOP/s", done.stdout)
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith(("UNet3D ", "R2Plus1dNet "))]
    # a training variant's forward and backward, then inference's one executable, per network
    assert [row[:2] for row in rows] == [[name, mode] for name in ("UNet3D", "R2Plus1dNet")
                                         for mode in ("train", "train", "infer")]
    for row in rows:
        kernels, few, one, two, speedup = int(row[3]), int(row[4]), float(row[5]), float(row[6]), float(row[7])
        assert kernels > few >= 0 and one > 0 and two > 0 and speedup > 0
        # the printed numbers are rounded to 0.01: the speedup, within 0.005 of the true ratio, which
        # lies between the ratios of the printed times moved by their rounding
        assert (one - 0.005) / (two + 0.005) - 0.005 <= speedup <= (one + 0.005) / (two - 0.005) + 0.005, row


def test_threads_by_family_accounts_for_each_executables_kernels():
    """--by-family: under each executable's row, one row per kernel family whose kernel counts add up
    to the executable's, and whose times at 1 and 2 threads are positive."""
    done = run_benchmark("threads.py", "--tiny", "--quick", "--networks", "R2Plus1dNet", "--modes", "infer",
                         "--by-family")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    at = next(k for k, line in enumerate(lines) if line.startswith("R2Plus1dNet "))
    kernels = int(lines[at].split()[3])
    assert lines[at + 1].split() == ["family", "kernels", "1", "thr", "ms", "2", "thr", "ms", "speedup", "idle", "ms"]
    families = [line.split() for line in lines[at + 2:] if line.startswith("    ")]
    assert {row[0] for row in families} <= {"conv", "norm", "resampling", "elementwise", "copies", "other"}
    assert sum(int(row[1]) for row in families) == kernels
    assert all(float(row[2]) >= 0 and float(row[3]) >= 0 and float(row[5]) >= 0 for row in families)
    assert any(row[0] == "conv" and float(row[2]) > 0 and float(row[3]) > 0 for row in families)


def test_openvino_layers_matches_each_conv_with_openvinos_layer():
    pytest.importorskip("onnx")
    pytest.importorskip("openvino")
    done = run_benchmark("openvino_layers.py", "--tiny", "--rounds", "1", "--repeats", "1", "--network", "R2Plus1dNet")
    assert done.returncode == 0, done.stderr
    rows = [line.split(") ") for line in done.stdout.splitlines() if line.startswith("(")]
    assert len(rows) >= 5                   # the stem's two convs and each block's
    for shape, cells in rows:
        channels, ours, theirs, ratio, mflop, our_share, their_share = cells.split()
        assert int(channels) > 0 and float(ours) > 0 and float(theirs) > 0 and float(ratio) > 0, (shape, cells)
        assert float(mflop) > 0 and float(our_share) > 0 and float(their_share) > 0, (shape, cells)
        # both shares come from the same times as the ratio (each printed to 0.05)
        ours_over_theirs = float(our_share) / float(their_share)
        rounding = 0.05 / float(our_share) + 0.05 / float(their_share)
        assert abs(ours_over_theirs - float(ratio)) <= 0.005 + rounding * float(ratio) * 1.1, (shape, cells)
    assert re.search(r"lucid: convolutions [0-9.]+ ms, everything else [0-9.]+ ms", done.stdout)
    assert re.search(r"ov: convolutions [0-9.]+ ms, everything else [0-9.]+ ms", done.stdout)
