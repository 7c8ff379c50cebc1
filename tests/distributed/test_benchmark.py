"""benchmarks/distributed.py: its --quick run starts both configurations and prints the throughput,
the overlap table and the scaling model; the model's formulas on values worked out by hand."""
import importlib.util
import re
import subprocess
import sys

import pytest

from mpi_jobs import ROOT, job_environment, require_mpi

SCRIPT = ROOT / "benchmarks" / "distributed.py"
_spec = importlib.util.spec_from_file_location("distributed_benchmark", SCRIPT)
benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(benchmark)
efficiency, overlap_fraction, ring_allreduce_seconds = (benchmark.efficiency, benchmark.overlap_fraction,
                                                        benchmark.ring_allreduce_seconds)


def test_the_ring_allreduce_model_on_values_worked_out_by_hand():
    assert abs(ring_allreduce_seconds(1e6, 2, 1e9, 0.0) - 1e-3) < 1e-12          # 2 * 1/2 * 1 MB at 1 GB/s
    assert abs(ring_allreduce_seconds(0.0, 5, 1e9, 1e-6) - 8e-6) < 1e-12         # 2 * 4 steps of 1 us
    assert efficiency(0.09, 0.01, 0.0) == 0.9 and efficiency(0.09, 0.01, 1.0) == 1.0
    assert overlap_fraction(10, 4, 11) == 0.75                                   # 3 of the 4 ms hidden
    assert overlap_fraction(10, 4, 20) == 0.0 and overlap_fraction(10, 4, 5) == 1.0


@pytest.mark.long_running
def test_the_quick_run_reports_both_configurations_the_overlap_and_the_scaling_table():
    require_mpi()
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick"],
                          env=job_environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout
    for label in ("2 ranks x 1 thread", "1 process x 2 threads"):
        step, rate = re.search(rf"^{label} +([\d.]+) +([\d.]+)$", out, re.M).groups()
        assert float(step) > 0 and abs(float(rate) - 4 / (float(step) / 1e3)) < 0.01 * float(rate) + 0.01
    assert re.search(r"^throughput, 2 ranks / 1 process: [\d.]+$", out, re.M)
    for model in ("compiled", "eager"):
        assert re.search(rf"^{model} +1 +[\d.]+ +[\d.]+ +[\d.]+ +\d+%$", out, re.M), out
    rows = re.findall(r"^(100 Gb/s|10 Gb/s).*?((?: +[\d.]+%){6})$", out, re.M)
    assert [network for network, _ in rows] == ["100 Gb/s", "10 Gb/s"]
    for _, cells in rows:
        values = [float(cell.rstrip("%")) for cell in cells.split()]
        assert all(0 < v <= 100 for v in values) and values == sorted(values, reverse=True)
