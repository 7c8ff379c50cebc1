"""How long lucid takes to compile a network: cold (empty disk cache) and warm (a second process).

    python benchmarks/compile_time.py                       # every case, 3 runs each
    python benchmarks/compile_time.py --cases unet3d-train --runs 1
    python benchmarks/compile_time.py --cases unet3d-train --modules 20   # where the LLVM time goes

Each case is the first compiled call of a model at its `example_shape()`: `unet3d-train` is
examples/models.py's UNet3D, a forward and `.sum().backward()` (the training forward and backward
graphs), `unet3d-infer` its eval-mode forward without gradients, and `<Network>-train` the networks of
examples/networks.py the same way (`tiny-train` and `tiny-infer`, a small UNet3D, are only asked for by
the benchmark's smoke test). Every run is a fresh subprocess (so imports, LLVM's
initialisation and the worker processes are paid each time, as a user pays them):
- **cold**: a fresh `LUCID_CACHE_DIR`, with the default compile jobs (every core: this process and
  worker processes, `lucid/codegen/compile_worker.py`) and with `LUCID_COMPILE_JOBS=1` (this process
  alone; its breakdown below adds up to the call);
- **warm**: a second process on the cache the cold run filled.
The CPU seconds of the cold run (the calling process's, and its compile workers', the run with the
least in all) show how the work splits between the cores, which a loaded machine's wall times do not.
The breakdown of the one-job cold run: tracing and the pass pipelines, lowering to LLVM IR (Python;
"ir printing": llvmlite writing the modules' text, which names and hashes each kernel and is
what LLVM reads; the entry module's printing, after lowering, counts here too), LLVM's parsing of
that text, its optimisation pipeline and its code emission (object code), and linking the objects
in the JIT engine. Seconds are medians over `--runs` runs. `torch.compile` (Inductor) compiling the same UNet3D
(examples/torch_models.py, a forward and backward, its own cache in a fresh directory) is the
comparison, when PyTorch is installed; without it the column says n/a.

`--modules N` profiles instead, module by module: a fresh process compiles the case with one job
on an empty cache, noting each module it hands to LLVM (its level, which lowering made its kernel,
for which operator), then compiles each of them again alone, timing LLVM's parsing, optimisation
and emission in CPU seconds; it prints the totals per level, per lowering and level, and the N
costliest modules.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CASES = ["unet3d-train", "unet3d-infer", "ResidualUNet-train", "GroupNormUNet-train", "R2Plus1dNet-train"]
#: Cases not run by default: `tiny-*` is a small UNet3D (base 4, depth 1, an 8^3 volume), for the
#: benchmark's smoke test (tests/test_benchmarks.py), whose numbers say nothing of a real network.
EXTRA_CASES = ["tiny-train", "tiny-infer"]
TINY_SHAPE = (1, 1, 8, 8, 8)
PHASES = ["trace+passes", "lowering", "ir printing", "llvm parse", "llvm opt", "llvm emit", "link"]


# ---------------------------------------------------------------------------------------------- child
def _timed(owner, name: str, totals: dict, phase: str, clock=time.perf_counter) -> None:
    """Wrap `owner.name` so the seconds spent in it (outermost calls only, by `clock`) add to
    `totals[phase]`."""
    original, depth = getattr(owner, name), [0]

    def wrapper(*args, **kwargs):
        depth[0] += 1
        started = clock()
        try:
            return original(*args, **kwargs)
        finally:
            depth[0] -= 1
            if not depth[0]:
                totals[phase] += clock() - started

    setattr(owner, name, wrapper)


def _instrument() -> dict:
    import importlib

    import llvmlite.binding as llvm
    import llvmlite.ir as ir
    from lucid.codegen import jit
    from lucid.codegen.lowering import Lowering
    from lucid.passes import pipeline

    totals = dict.fromkeys(PHASES, 0.0)
    _timed(importlib.import_module("lucid.compiler"), "trace", totals, "trace+passes")
    _timed(pipeline, "for_training", totals, "trace+passes")
    _timed(pipeline, "for_inference", totals, "trace+passes")
    _timed(Lowering, "lower", totals, "lowering")
    _timed(ir.Module, "__repr__", totals, "ir printing")
    _timed(llvm, "parse_assembly", totals, "llvm parse")
    _timed(llvm.ModulePassManager, "run", totals, "llvm opt")
    _timed(llvm.TargetMachine, "emit_object", totals, "llvm emit")
    _timed(jit.NativeCode, "__init__", totals, "link")
    return totals


def _model(case: str):
    sys.path.insert(0, str(ROOT / "examples"))
    name, mode = case.rsplit("-", 1)
    if name == "tiny":
        from models import UNet3D
        return UNet3D(in_channels=1, out_channels=2, base=4, depth=1), TINY_SHAPE, mode
    if name == "unet3d":
        from models import UNet3D as network
    else:
        import networks
        network = getattr(networks, name)
    model = network()
    return model, network.example_shape(), mode


def _first_call(case: str):
    """The case's compiled model and the function making its first call (which compiles it)."""
    import lucid

    model, shape, mode = _model(case)
    if mode == "infer":
        model.eval()
    fast = lucid.compile(model)
    x = lucid.randn(*shape)

    def call() -> None:
        if mode == "train":
            fast(x).sum().backward()
        else:
            with lucid.no_grad():
                fast(x)
    return fast, call


def child(case: str) -> None:
    """Compile `case` in this process (the environment chooses the cache and jobs); print JSON."""
    import resource

    from lucid.codegen import compile_worker

    totals = _instrument()
    fast, call = _first_call(case)
    started, cpu = time.perf_counter(), time.process_time()
    call()
    total, cpu = time.perf_counter() - started, time.process_time() - cpu
    compile_worker.close()
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"total": total, "cpu": cpu, "workers cpu": workers.ru_utime + workers.ru_stime,
                      "phases": totals, "stats": fast.stats()}))


def _noting_modules() -> list:
    """Make `jit.Compilation.add` note each module it is given, once: (LLVM text or texts, level, the
    lowering's name of its kernel, the operator of the node it belongs to)."""
    from lucid.codegen import jit
    from lucid.codegen.lowering import Lowering

    noted, making = [], ["", ""]              # the kernel being made: the lowering's name, the operator
    kernel, add = Lowering.kernel, jit.Compilation.add

    def noting_kernel(self, name, *args, **kwargs):
        making[:] = [name, self.node.op if self.node is not None else ""]
        kernel(self, name, *args, **kwargs)

    def noting_add(self, text, level=3):
        what = [f"entry + {len(text) - 1} level-0 kernels", ""] if isinstance(text, list) \
            else ["shared function", ""] if 'define void @"lucid_f_' in text else making
        if not any(text == other and level == at for other, at, *_ in noted):   # another graph's: loaded
            noted.append((text, level, *what))
        return add(self, text, level)

    Lowering.kernel, jit.Compilation.add = noting_kernel, noting_add
    return noted


def profile_child(case: str) -> None:
    """Compile `case` noting its modules, then compile each again alone, timed; print JSON."""
    import llvmlite.binding as llvm

    from lucid.codegen import compile_worker, target

    noted = _noting_modules()
    _first_call(case)[1]()
    totals = dict.fromkeys(["parse", "opt", "emit"], 0.0)
    for owner, name, phase in [(llvm, "parse_assembly", "parse"), (llvm.ModulePassManager, "run", "opt"),
                               (llvm.TargetMachine, "emit_object", "emit")]:
        _timed(owner, name, totals, phase, time.process_time)
    rows, host = [], target.host()
    for text, level, lowering, op in noted:
        before = dict(totals)
        compile_worker.compile_module(text, host, level)
        rows.append({"lowering": lowering, "op": op, "level": level, "chars": sum(map(len, compile_worker.module_texts(text))),
                     **{phase: totals[phase] - before[phase] for phase in totals}})
    print(json.dumps(rows))


def print_profile(case: str, top: int) -> None:
    with tempfile.TemporaryDirectory() as cache:
        rows = _run(["--profile-child", case], {"LUCID_CACHE_DIR": cache, "LUCID_COMPILE_JOBS": "1"})
    cost = lambda row: row["parse"] + row["opt"] + row["emit"]            # noqa: E731
    print(f"{case}: {len(rows)} modules, {sum(map(cost, rows)):.2f} CPU-s of LLVM "
          f"(parse {sum(r['parse'] for r in rows):.2f}, opt {sum(r['opt'] for r in rows):.2f}, "
          f"emit {sum(r['emit'] for r in rows):.2f})")
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["lowering"], row["level"]), []).append(row)
    for level in sorted({row["level"] for row in rows}, reverse=True):
        at = [row for row in rows if row["level"] == level]
        print(f"  level {level}: {len(at)} modules, {sum(map(cost, at)):.2f} s")
    print("\nby lowering and level: CPU s, modules, IR characters")
    for (lowering, level), group in sorted(groups.items(), key=lambda item: -sum(map(cost, item[1]))):
        print(f"  {sum(map(cost, group)):6.2f} {len(group):4d}  level {level}  {lowering}"
              f"  ({sum(r['chars'] for r in group) // 1000}k)")
    print(f"\nthe {top} costliest modules: CPU s (opt + emit), level, IR characters, lowering, operator")
    for row in sorted(rows, key=cost, reverse=True)[:top]:
        print(f"  {cost(row):.3f} ({row['opt']:.3f} + {row['emit']:.3f})  level {row['level']}  "
              f"{row['chars'] // 1000}k  {row['lowering']}  {row['op']}")


def torch_child() -> None:
    """torch.compile's cold compile of the UNet3D twin (forward and backward); print JSON."""
    import torch

    sys.path.insert(0, str(ROOT / "examples"))
    from models import UNet3D
    from torch_models import torch_mirrors

    torch.manual_seed(0)
    model = torch_mirrors(torch)["UNet3D"](in_channels=1, out_channels=2, base=8, depth=2)
    fast = torch.compile(model)
    x = torch.randn(*UNet3D.example_shape())
    started = time.perf_counter()
    fast(x).sum().backward()
    print(json.dumps({"total": time.perf_counter() - started}))


# --------------------------------------------------------------------------------------------- parent
def _run(args: list[str], env: dict) -> dict:
    environment = dict(os.environ, **env)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    environment.setdefault("LUCID_QUIET", "1")
    result = subprocess.run([sys.executable, __file__, *args], env=environment, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(case: str, runs: int) -> dict:
    """Medians over `runs` of: cold with the default jobs, cold with one job (and its breakdown), warm."""
    cold, cpu, serial, warm, phases = [], [], [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as parallel_cache, tempfile.TemporaryDirectory() as serial_cache:
            parallel = _run(["--child", case], {"LUCID_CACHE_DIR": parallel_cache})
            cold.append(parallel["total"])
            cpu.append((parallel["cpu"], parallel["workers cpu"]))
            one = _run(["--child", case], {"LUCID_CACHE_DIR": serial_cache, "LUCID_COMPILE_JOBS": "1"})
            serial.append(one["total"])
            phases.append(one["phases"])
            warm.append(_run(["--child", case], {"LUCID_CACHE_DIR": parallel_cache})["total"])
    return {"cold": statistics.median(cold), "cold 1 job": statistics.median(serial),
            "warm": statistics.median(warm), "modules": one["stats"]["native_compiles"],
            "cpu": "{:.2f} + {:.2f}".format(*min(cpu, key=sum)),
            "phases": {p: statistics.median(run[p] for run in phases) for p in PHASES}}


def measure_torch(runs: int) -> float | None:
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as cache:
            fresh = {"TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": cache}
            times.append(_run(["--torch-child"], fresh)["total"])
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=CASES + EXTRA_CASES, default=CASES,
                        help="the cases to measure (default: all but the tiny-* smoke-test cases)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modules", type=int, metavar="N", help="profile module by module instead; print the N costliest")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--profile-child", help=argparse.SUPPRESS)
    parser.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    if args.profile_child:
        return profile_child(args.profile_child)
    if args.modules is not None:
        for case in args.cases:
            print_profile(case, args.modules)
        return None
    if args.torch_child:
        return torch_child()
    print(f"{os.cpu_count()} cores; seconds, medians of {args.runs} fresh processes\n")
    header = ["case", "modules", "cold", "cold CPU (caller + workers)", "cold 1 job", "warm", *PHASES]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for case in args.cases:
        row = measure(case, args.runs)
        print(" | ".join([case, str(row["modules"]), f"{row['cold']:.2f}", row["cpu"]]
                         + [f"{row[k]:.2f}" for k in ("cold 1 job", "warm")]
                         + [f"{row['phases'][p]:.2f}" for p in PHASES]), flush=True)
    if "unet3d-train" in args.cases:
        torch_time = measure_torch(args.runs)
        print(f"\ntorch.compile (Inductor), UNet3D forward + backward, cold: "
              f"{'n/a (PyTorch is not installed)' if torch_time is None else f'{torch_time:.2f} s'}")


if __name__ == "__main__":
    main()
