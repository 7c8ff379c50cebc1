"""`benchmarks/compile_time.py --modules`: the module-by-module profile of a cold compile.

Oracle: the same case compiled cold in this process, on an empty cache, counting the modules LLVM
compiled (`jit.COUNTERS`): the profile lists each of them once, its levels add up to that count,
its phases to its total, and it names the costliest modules it was asked for.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import lucid
from lucid.codegen import jit
from models import UNet3D

COMPILE_TIME = Path(__file__).resolve().parents[2] / "benchmarks" / "compile_time.py"


def test_the_profile_lists_each_module_a_cold_compile_compiles_once(monkeypatch, tmp_path):
    done = subprocess.run([sys.executable, str(COMPILE_TIME), "--cases", "unet3d-infer", "--modules", "3"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    totals = re.fullmatch(r"unet3d-infer: (\d+) modules, ([\d.]+) CPU-s of LLVM \(parse ([\d.]+), opt ([\d.]+), "
                          r"emit ([\d.]+)\)", lines[0])
    assert totals, lines[0]
    count, total, phases = int(totals[1]), float(totals[2]), [float(totals[i]) for i in (3, 4, 5)]
    assert total > 0 and abs(total - sum(phases)) <= 0.015
    levels = re.findall(r"^  level (\d): (\d+) modules, [\d.]+ s$", done.stdout, re.M)
    assert {level for level, _ in levels} <= {"0", "2", "3"} and sum(int(n) for _, n in levels) == count
    costliest = lines[lines.index(next(line for line in lines if line.startswith("the 3 costliest"))) + 1:]
    assert len(costliest) == 3 and all(re.match(r"  [\d.]+ \([\d.]+ \+ [\d.]+\)  level \d  ", line) for line in costliest)

    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LUCID_COMPILE_JOBS", "1")
    before = jit.COUNTERS["compiled"]
    lucid.manual_seed(0)
    with lucid.no_grad():
        lucid.compile(UNet3D().eval())(lucid.randn(*UNet3D.example_shape()))
    assert count == jit.COUNTERS["compiled"] - before
