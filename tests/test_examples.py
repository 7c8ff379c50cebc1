"""Smoke tests of the example scripts: each runs end to end in a fresh process and shows what it claims."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(name, *args, timeout=300):
    """Run examples/<name> with this interpreter from the repository root; the environment (and so
    LUCID_CACHE_DIR, set by conftest.py) is inherited."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args],
                          cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=timeout)


def test_unet3d_train_quick_loss_falls():
    proc = run_example("unet3d_train.py", "--quick")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]

    steps = [int(s) for s in re.findall(r"^step\s+(\d+)\s+loss [\d.]+$", proc.stdout, re.M)]
    assert steps and steps[-1] == 30, output[-4000:]

    summary = re.search(r"^loss: first \d+ steps ([\d.]+) -> last \d+ steps ([\d.]+) \(fell by ([\d.]+)%\)$",
                        proc.stdout, re.M)
    assert summary, output[-4000:]
    first, last, percent = map(float, summary.groups())
    assert last < first and percent > 0

    assert re.search(r"^held-out batch: accuracy [\d.]+ .*foreground Dice [\d.]+$", proc.stdout, re.M)
    assert re.search(r"^first compiled training step: [\d.]+ s", proc.stdout, re.M)
    assert re.search(r"^training step \(median\), batch \d+: compiled [\d.]+ ms, eager [\d.]+ ms", proc.stdout, re.M)
