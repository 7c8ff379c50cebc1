"""benchmarks/dynamic.py in a smoke run (tiny rows, no time budget): every row prints either its
numbers (static and dynamic times, their ratio, the first-call overhead and the modules compiled and
loaded by the first calls at new sizes: none) or the reason `dynamic=True` refuses it, never both."""
import re

import pytest

from test_benchmarks import run_benchmark

pytestmark = pytest.mark.long_running       # runs the benchmark script in a subprocess

NUMBERS = re.compile(r"^(\w+) +(fwd|fwd\+bwd|step) +1 +([\d.]+) +([\d.]+) +([\d.]+) +(-?[\d.]+) +(-?[\d.]+) +(\d+)/(\d+)$")
REFUSED = re.compile(r"^(\w+) +(fwd|fwd\+bwd|step) +1  refused: \S.*$")


def test_dynamic_benchmark_prints_numbers_or_the_refusal_of_every_row():
    done = run_benchmark("dynamic.py", "--shapes", "seed", "--tiny", "--quick", "--threads", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("row "))
    assert "static/dyn" in header and "1st call +ms" in header and "host +ms" in header and "compiled/loaded" in header
    rows = {}
    for line in lines:
        match = NUMBERS.match(line) or REFUSED.match(line)
        if match:
            rows[(match.group(1), match.group(2))] = match
    assert set(rows) == {("seed", "fwd"), ("seed", "fwd+bwd"), ("norm", "fwd"), ("unet", "step")}, done.stdout
    norm = rows[("norm", "fwd")]                      # families that take symbolic sizes: numbers
    assert norm.re is NUMBERS and float(norm.group(3)) > 0 and float(norm.group(4)) > 0
    assert norm.group(8) == "0" and norm.group(9) == "0"          # a new size compiles and loads nothing
    for key, match in rows.items():
        if match.re is NUMBERS:                       # the ratio of the times as printed (2 decimals)
            static, dynamic, ratio = (float(match.group(k)) for k in (3, 4, 5))
            assert (static - 0.005) / (dynamic + 0.005) - 0.005 <= ratio <= (static + 0.005) / (dynamic - 0.005) + 0.005, key
            assert match.group(8) == "0", key
