"""The disk cache of compiled code (lucid/codegen/jit.py) and the code-generation target
(lucid/codegen/target.py).

Cache: a second process running the same graphs compiles nothing and gets the same results; a changed
graph (other weight shapes, an extra operator, another constant) is never served a stale object; new
weight values reuse the cached code (weights are read at call time); damaged cache files are reported
(a CacheWarning) and rebuilt, never crashed on (test_cache_damage.py damages them in every way); an unusable cache directory only costs compilations. Each subprocess test
uses its own fresh LUCID_CACHE_DIR (a tmp dir), so these always compile a few tiny graphs. One second
process runs the base script again, then the changed graphs and the new weights, each on its own copy
of the first process's cache (each compile reads its entry from disk, as a fresh process would; its
counters are its own).

Target: in a subprocess with LUCID_CPU=x86-64-v3 (AVX2, 8 float lanes), then x86-64-v2 (SSE4.2, 4
lanes), a graph of convolutions, a transposed convolution (its kernel its stride: disjoint_blocks.py),
pools, elementwise chains and their gradients (conv_weight_grad, max_pool_grad...) gives the
interpreter's results in float32 and float64, so no kernel assumes AVX-512 (checked in the machine
code too when objdump is installed). That
subprocess uses the shared test cache (tests/conftest.py), so it is cheap once warm.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import lucid
import lucid.nn as nn
from lucid.codegen import cache, jit
from lucid.codegen.cache import CacheWarning
from lucid.runtime.executable import Executable
from lucid.codegen.target import Target, host
from lucid.passes import PassManager, dead_code, fusion, memory_planning

ROOT = pathlib.Path(__file__).resolve().parents[2]

# A small model compiled for inference (eval, no grad) and for training (input grad, backward). Each
# argument is a variant, or `variant=cache folder` to run it on that LUCID_CACHE_DIR; one JSON report
# per variant, its counters counting only its own compiles and loads.
CACHE_SCRIPT = r'''
import json, os, sys
import numpy as np
import lucid, lucid.nn as nn
from lucid.codegen import cache, jit
from lucid.codegen.cache import CacheWarning

def report(variant):
    before = dict(jit.COUNTERS)
    lucid.manual_seed(2 if variant == "reseeded" else 1)
    channels = 3 if variant == "wide" else 2
    layers = [nn.Conv3d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2)]
    if variant == "extra":
        layers.append(nn.Sigmoid())
    model = nn.Sequential(*layers)
    scale = 3.0 if variant == "constant" else 2.0
    fn = lambda x: model(x) * scale
    x_data = np.random.default_rng(0).standard_normal((1, 1, 4, 4, 4)).astype(np.float32)
    compiled = lucid.compile(fn)
    with lucid.no_grad():
        inference, expected = compiled(lucid.Tensor(x_data)).numpy(), fn(lucid.Tensor(x_data)).numpy()
    grads = []
    for f in (compiled, fn):
        x = lucid.Tensor(x_data, requires_grad=True)
        f(x).sum().backward()
        grads.append(x.grad.numpy())
    return {
        "counters": {name: jit.COUNTERS[name] - count for name, count in before.items()},
        "inference": inference.tolist(),
        "input_grad": grads[0].tolist(),
        "error": max(float(np.abs(inference - expected).max()), float(np.abs(grads[0] - grads[1]).max())),
    }

for argument in sys.argv[1:]:
    variant, _, folder = argument.partition("=")
    if folder:
        os.environ["LUCID_CACHE_DIR"] = folder
    print(json.dumps(report(variant)), flush=True)
'''

# Convolutions (12 and 20 output channels: whole vector blocks plus a remainder), a transposed
# convolution, pools, an elementwise chain, and all their gradients; float32 and float64. Each argument
# `cpu=folder` compiles and runs them for LUCID_CPU=cpu (no extra features), writes the object code to
# the folder and prints a JSON report.
TARGET_SCRIPT = r'''
import json, os, pathlib, sys
import numpy as np
import lucid
import lucid.nn.functional as F
from lucid.codegen import cache, jit
from lucid.codegen.cache import CacheWarning
from lucid.runtime.executable import Executable
from lucid.codegen.target import host
from lucid.passes import PassManager, autodiff, dead_code, fusion, memory_planning

codes = []
original = jit.NativeCode.__init__
def capture(self, objects, target):
    codes.extend(objects)
    original(self, objects, target)
jit.NativeCode.__init__ = capture

def model(x, w, b, wt, bt):
    h = F.conv3d(x, w, b, padding=1).relu()
    p = F.max_pool3d(h, 2) + F.avg_pool3d(h, 2, stride=2)
    u = F.conv_transpose3d(p, wt, bt, stride=2)
    return (u.sigmoid() * 2.0 - u.tanh()).exp().sum(axis=1) + x[:, 0]

def report(out):
    shapes = [(2, 3, 4, 6, 8), (12, 3, 3, 3, 3), (12,), (12, 20, 2, 2, 2), (20,)]
    rng = np.random.default_rng(0)
    errors, ops = {}, set()
    codes.clear()
    for dtype in ("float32", "float64"):
        graph = lucid.trace(model, *(lucid.spec(*s, dtype=getattr(lucid, dtype)) for s in shapes))
        joint = autodiff.run(graph, wrt=[v.name for v in graph.inputs])
        joint = dead_code.run(fusion.run(PassManager("simplify").run(joint)))
        ops |= {n.op for n in joint.nodes}
        arrays = [(rng.standard_normal(s) * 0.5).astype(dtype) for s in shapes]
        arrays.append(rng.standard_normal(graph.outputs[0].shape).astype(dtype))
        expected = lucid.ir.run(joint, *arrays)
        executable = Executable(memory_planning.run(joint))
        errors[dtype] = []
        for threads in (1, 2):
            got = executable(*arrays, threads=threads)
            errors[dtype] += [float(np.abs(g - e).max() / (np.abs(e).max() + 1e-30)) for g, e in zip(got, expected)]
    for k, code in enumerate(codes):
        (out / f"object{k}.o").write_bytes(code)
    t = host()
    return {"cpu": t.cpu, "features": t.features, "lanes": t.vector_floats, "errors": errors,
            "ops": sorted(ops), "objects": len(codes)}

for argument in sys.argv[1:]:
    cpu, _, folder = argument.partition("=")
    os.environ["LUCID_CPU"], os.environ["LUCID_CPU_FEATURES"] = cpu, ""
    print(json.dumps(report(pathlib.Path(folder))), flush=True)
'''


def run_script(script: str, *args, env: dict | None = None, cache: pathlib.Path | None = None) -> list[dict]:
    """The JSON reports `script` printed (one a line), run in a fresh process with `args`."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    environment.update(env or {})
    if cache is not None:
        environment["LUCID_CACHE_DIR"] = str(cache)
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout}\n{result.stderr}"
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def cache_files(cache: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file())


# ============================================================================== second process
@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A fresh cache filled by one process running the base script: (cache dir, its report)."""
    cache = tmp_path_factory.mktemp("lucid-cache")
    [first] = run_script(CACHE_SCRIPT, "base", cache=cache)
    return cache, first


@pytest.fixture(scope="module")
def second_process(warm_cache, tmp_path_factory) -> dict:
    """{variant: its report} from one second process: the base script again on the warm cache, then
    each variant on its own copy of the warm cache (left as the first process wrote it)."""
    cache, _ = warm_cache
    arguments = ["base"]
    for variant in ("reseeded", "wide", "extra", "constant"):
        own = tmp_path_factory.mktemp(f"cache-{variant}")
        shutil.copytree(cache, own, dirs_exist_ok=True)
        arguments.append(f"{variant}={own}")
    reports = run_script(CACHE_SCRIPT, *arguments, cache=cache)
    return dict(zip([argument.partition("=")[0] for argument in arguments], reports, strict=True))


def test_second_process_compiles_nothing(warm_cache, second_process):
    cache, first = warm_cache
    assert first["counters"]["compiled"] > 0
    assert first["error"] < 1e-5
    assert cache_files(cache), "the first process wrote nothing to LUCID_CACHE_DIR"
    second = second_process["base"]
    assert second["counters"]["compiled"] == 0, second["counters"]
    assert second["counters"]["loaded"] > 0
    assert second["inference"] == first["inference"]
    assert second["input_grad"] == first["input_grad"]
    assert second["error"] < 1e-5


@pytest.mark.parametrize("variant", ["wide", "extra", "constant"])
def test_changed_graph_is_not_served_a_stale_object(warm_cache, second_process, variant):
    """Other weight shapes, an extra operator, another constant: new code, correct results."""
    _, first = warm_cache
    report = second_process[variant]
    assert report["counters"]["compiled"] > 0, report["counters"]
    assert report["error"] < 1e-5
    assert report["inference"] != first["inference"]


def test_new_weight_values_reuse_the_cached_code(warm_cache, second_process):
    _, first = warm_cache
    report = second_process["reseeded"]
    assert report["counters"]["compiled"] == 0 and report["counters"]["loaded"] > 0, report["counters"]
    assert report["error"] < 1e-5                          # results of the new weights
    assert report["inference"] != first["inference"]


# ============================================================================== damaged caches
def small_graph(scale: float = 2.0):
    lucid.manual_seed(3)
    model = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool3d(2)).eval()
    graph = lucid.trace(lambda x: (model(x) * scale).tanh(), lucid.spec(1, 1, 4, 4, 4))
    return dead_code.run(fusion.run(PassManager("inference").run(graph)))


X = np.random.default_rng(0).standard_normal((1, 1, 4, 4, 4)).astype(np.float32)


def build(graph) -> tuple[dict, np.ndarray]:
    """(counter increments, output) of building `graph` and running it on X."""
    before = dict(jit.COUNTERS)
    executable = Executable(memory_planning.run(graph))
    delta = {k: jit.COUNTERS[k] - before[k] for k in before}
    return delta, executable(X)[0]


def truncate_half(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def truncate_empty(path):
    path.write_bytes(b"")


def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def garbage(path):
    path.write_bytes(b"\x00\xffnot a cache entry\n" * 3)


@pytest.mark.parametrize("damage", [truncate_half, truncate_empty, flip_last_byte, garbage])
def test_damaged_cache_files_are_ignored_and_rebuilt(monkeypatch, tmp_path, damage):
    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path))
    graph = small_graph()
    expected = lucid.ir.run(graph, X)
    delta, first = build(graph)
    assert delta["compiled"] > 0
    np.testing.assert_allclose(first, expected, rtol=1e-5, atol=1e-6)
    files = cache_files(tmp_path)
    assert files
    for path in files:                                   # every object and graph record
        damage(path)
    with pytest.warns(CacheWarning, match="lucid compile cache"):
        delta, again = build(graph)
    assert delta["compiled"] > 0, "damaged entries were used"
    np.testing.assert_array_equal(again, first)
    delta, third = build(graph)                           # the rebuilt entries are intact
    assert delta["compiled"] == 0 and delta["loaded"] > 0
    np.testing.assert_array_equal(third, first)


def test_each_damaged_file_alone_is_rebuilt(monkeypatch, tmp_path):
    """Damaging one file costs at most one module's compilation, and the file is written again."""
    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path))
    graph = small_graph(scale=5.0)
    _, first = build(graph)
    files = cache_files(tmp_path)
    assert len(files) >= 2
    for path in files:
        original = path.read_bytes()
        truncate_half(path)
        with pytest.warns(CacheWarning, match=path.name):
            delta, again = build(graph)
        np.testing.assert_array_equal(again, first, err_msg=path.name)
        assert delta["compiled"] <= 1, (path.name, delta)
        assert path.read_bytes() == original, f"{path.name} was not rebuilt"
    delta, last = build(graph)
    assert delta["compiled"] == 0
    np.testing.assert_array_equal(last, first)


def test_unusable_cache_directory_only_costs_compilations(monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("LUCID_CACHE_DIR", str(blocker))
    graph = small_graph(scale=7.0)
    expected = lucid.ir.run(graph, X)
    for _ in range(2):
        delta, out = build(graph)
        assert delta["compiled"] > 0
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert blocker.read_text() == "a file where the cache directory should be"


def test_cache_keys_depend_on_the_target_and_the_code():
    fingerprint = cache.code_fingerprint()
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    v3 = Target("x86_64-unknown-linux-gnu", "x86-64-v3", "")
    v2 = Target("x86_64-unknown-linux-gnu", "x86-64-v2", "")
    assert v3.fingerprint != v2.fingerprint
    assert cache.cache_key(fingerprint, v3.fingerprint, "g") != cache.cache_key(fingerprint, v2.fingerprint, "g")
    assert cache.cache_key("a", "bc") != cache.cache_key("ab", "c")


_SUM_OF_SQUARES = """
define double @"sum_of_squares"(double* %x, i64 %n) {
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%next, %loop]
  %acc = phi double [0.0, %entry], [%sum, %loop]
  %p = getelementptr double, double* %x, i64 %i
  %v = load double, double* %p
  %sq = fmul double %v, %v
  %sum = fadd double %acc, %sq
  %next = add i64 %i, 1
  %more = icmp slt i64 %next, %n
  br i1 %more, label %loop, label %done
done:
  ret double %sum
}
"""


def test_unoptimised_modules_are_cached_apart_and_compute_the_same(monkeypatch, tmp_path):
    """A module named in `unoptimised` (the entry module of a graph) is compiled at O0: another
    object than the same text at O3, under another cache name, computing the same values."""
    import ctypes

    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path))
    target = host()
    (fast_name, fast), = jit.objects([("m", _SUM_OF_SQUARES)], target)
    (plain_name, plain), = jit.objects([("m", _SUM_OF_SQUARES)], target, unoptimised={"m"})
    assert fast_name != plain_name and fast != plain
    assert sorted(p.name for p in (tmp_path / "objects").iterdir()) == sorted([fast_name, plain_name])
    x = np.arange(1.0, 12.0)
    for code in (fast, plain):
        native = jit.NativeCode([code], target)
        function = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_void_p, ctypes.c_int64)(native.address("sum_of_squares"))
        assert function(x.ctypes.data, x.size) == float(np.sum(x * x))


# ============================================================================== targets
def test_vector_width_follows_the_target():
    triple = host().triple
    assert Target(triple, "x86-64-v4", "").vector_floats == 16
    assert Target(triple, "x86-64-v3", "").vector_floats == 8
    assert Target(triple, "x86-64-v2", "").vector_floats == 4
    assert Target(triple, "x86-64", "").vector_floats == 4
    assert Target(triple, "skylake-avx512", "+avx,+avx2,+avx512f").vector_floats == 16
    assert Target(triple, "haswell", "+avx,+avx2,-avx512f").vector_floats == 8
    assert Target(triple, "x86-64-v3", "-avx,-avx2").vector_floats == 4


def test_lucid_cpu_overrides_the_host(monkeypatch):
    monkeypatch.setenv("LUCID_CPU", "x86-64-v2")
    monkeypatch.delenv("LUCID_CPU_FEATURES", raising=False)
    assert host().cpu == "x86-64-v2" and host().features == "" and host().vector_floats == 4
    monkeypatch.setenv("LUCID_CPU_FEATURES", "+avx,+avx2")
    assert host().vector_floats == 8 and host().features == "+avx,+avx2"


def disassembler() -> str | None:
    return shutil.which("objdump") or shutil.which("llvm-objdump")


def registers_used(directory: pathlib.Path, registers: tuple) -> list:
    """Up to a few instructions per object file of `directory` that name one of `registers`."""
    found = []
    for path in sorted(directory.glob("*.o")):
        text = subprocess.run([disassembler(), "-d", "--no-show-raw-insn", str(path)], capture_output=True,
                              text=True, check=True).stdout
        found += [line.strip() for line in text.splitlines() if any(f"%{r}" in line for r in registers)][:3]
    return found


NARROWER_TARGETS = [("x86-64-v3", 8, "ymm", ("zmm",)), ("x86-64-v2", 4, "xmm", ("ymm", "zmm"))]


@pytest.fixture(scope="module")
def narrower_target_runs(tmp_path_factory) -> dict:
    """{cpu: (its report, the folder of its object code)}: one fresh process compiling for each of
    NARROWER_TARGETS in turn."""
    folders = {cpu: tmp_path_factory.mktemp(cpu) for cpu, *_ in NARROWER_TARGETS}
    reports = run_script(TARGET_SCRIPT, *(f"{cpu}={folder}" for cpu, folder in folders.items()))
    return {cpu: (report, folders[cpu]) for cpu, report in zip(folders, reports, strict=True)}


@pytest.mark.long_running      # the fixture compiles the graphs for both targets in a subprocess
@pytest.mark.skipif(not sys.platform.startswith("linux") or os.uname().machine != "x86_64",
                    reason="x86-64 targets")
@pytest.mark.parametrize("cpu, lanes, widest, forbidden", NARROWER_TARGETS)
def test_narrower_targets_match_the_interpreter(narrower_target_runs, cpu, lanes, widest, forbidden):
    report, folder = narrower_target_runs[cpu]
    assert report["cpu"] == cpu and report["lanes"] == lanes
    for op in ("conv", "conv_transpose", "conv_weight_grad", "max_pool", "max_pool_grad", "avg_pool",
               "avg_pool_grad", "fused"):
        assert op in report["ops"], op
    for dtype, tolerance in (("float32", 2e-5), ("float64", 1e-12)):
        assert max(report["errors"][dtype]) < tolerance, (dtype, report["errors"][dtype])
    assert report["objects"] > 0
    if disassembler() is not None:
        assert registers_used(folder, (widest,)), f"{cpu} code uses no {widest} registers"
        bad = registers_used(folder, forbidden)
        assert not bad, f"{cpu} code uses {forbidden} registers: {bad}"
