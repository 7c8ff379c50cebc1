"""Smoke tests of the example scripts: each runs end to end in a fresh process and shows what it claims."""

import os
import re
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.long_running       # each test runs an example script in a subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(name, *args, timeout=300):
    """Run examples/<name> with this interpreter from the repository root; the environment (and so
    LUCID_CACHE_DIR, set by conftest.py) is inherited."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args],
                          cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=timeout)


def run_training_example(name, steps):
    """Run a training example with --quick; check it logged `steps` steps, the loss fell and it timed
    compiled vs eager steps. Returns its standard output."""
    proc = run_example(name, "--quick")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]

    logged = [int(s) for s in re.findall(r"^step\s+(\d+)\s+loss [\d.]+$", proc.stdout, re.M)]
    assert logged and logged[-1] == steps, output[-4000:]

    summary = re.search(r"^loss: first \d+ steps ([\d.]+) -> last \d+ steps ([\d.]+) \(fell by ([\d.]+)%\)$",
                        proc.stdout, re.M)
    assert summary, output[-4000:]
    first, last, percent = map(float, summary.groups())
    assert last < first and percent > 0

    assert re.search(r"^first compiled training step: [\d.]+ s", proc.stdout, re.M)
    assert re.search(r"^training step \(median\), batch \d+: compiled [\d.]+ ms, eager [\d.]+ ms", proc.stdout, re.M)
    return proc.stdout


def test_unet3d_train_quick_loss_falls():
    output = run_training_example("unet3d_train.py", steps=30)
    assert re.search(r"^held-out batch: accuracy [\d.]+ .*foreground Dice [\d.]+$", output, re.M)


def test_autoencoder3d_quick_resolves_lazy_layers_and_loss_falls():
    output = run_training_example("autoencoder3d.py", steps=150)
    assert re.search(r"lazy layers \{'decoder.0': 8, 'decoder.2': 4\} \(in_channels resolved by tracing", output)
    held_out = re.search(r"^held-out batch: reconstruction error ([\d.]+), predicting the mean voxel ([\d.]+) "
                         r"\(([\d.]+)x better\)$", output, re.M)
    assert held_out, output
    error, baseline, _ = map(float, held_out.groups())
    assert error < 0.5 * baseline          # it learned the spheres, not just the mean (0.0097 vs 0.0282 measured)


def test_video_classifier_quick_learns_motion():
    output = run_training_example("video_classifier.py", steps=40)
    accuracy = re.search(r"^held-out batch of 64 clips: accuracy ([\d.]+) \(chance: 0.200\)$", output, re.M)
    assert accuracy, output
    assert float(accuracy.group(1)) > 0.4      # well above chance after 40 quick steps (1.0 measured)


def test_quickstart_runs_every_step_and_agrees_with_eager(tmp_path):
    proc = run_example("quickstart.py", "--quick", "--out", str(tmp_path))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    steps = [int(k) for k in re.findall(r"^\[(\d)/8\] ", proc.stdout, re.M)]
    assert steps == list(range(1, 9)), output[-4000:]
    assert "lazy layers resolved by shape inference: decoder.0: in_channels 32, decoder.2: in_channels 16" in output
    assert "lucid.spec(1, 1, 16, 16, 16)" in output                                         # --quick: 16^3
    # The IR is summarised in a few lines, not dumped: counts, the operator histogram, the first nodes.
    assert re.search(r"^      1 input\(s\), 8 parameters, 8 nodes: conv 2, relu 3, conv_transpose 2, sigmoid 1$",
                     proc.stdout, re.M), output[-4000:]
    assert re.search(r"^        %0: f32\[1, 16, 8, 8, 8\] = conv\(%x, ", proc.stdout, re.M)
    assert "... 5 more nodes (the whole IR: --ir here, print(graph) in Python)" in proc.stdout
    assert "param %" not in proc.stdout and "conv_transpose(" not in proc.stdout
    assert re.search(r"^      memory plan: 40\.0 KiB arena for the intermediates$", proc.stdout, re.M)
    differences = [float(d) for d in re.findall(r"largest difference from eager ([\d.e+-]+)", proc.stdout)]
    assert len(differences) == 2 and max(differences) < 1e-4
    assert re.search(r"^      compiled [\d.]+ ms, eager [\d.]+ ms: [\d.]+x faster$", proc.stdout, re.M)
    assert proc.stdout.rstrip().endswith("all steps agree with eager mode")
    assert (tmp_path / "autoencoder.so").stat().st_size > 0 and (tmp_path / "autoencoder.h").exists()
    assert (tmp_path / "autoencoder.html").read_text().startswith("<!DOCTYPE html>")


def test_help_texts_cite_only_what_the_repository_has():
    seeds = run_example("seeds.py", "--help", timeout=60)
    assert seeds.returncode == 0 and "usage:" in seeds.stdout and "SPEC" not in seeds.stdout
    quickstart = run_example("quickstart.py", "--help", timeout=60)
    assert quickstart.returncode == 0 and "--quick" in quickstart.stdout and "--size 16" in quickstart.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_aot_makefile_exports_with_the_checkouts_venv_without_activation():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV", "MAKEFLAGS")}
    env["PATH"] = "/usr/bin:/bin"                                   # no venv on the PATH
    done = subprocess.run(["make", "-n", "-B", "run"], cwd=os.path.join(ROOT, "examples", "aot"), env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    venv_python = "../../.venv/bin/python" if os.path.exists(os.path.join(ROOT, ".venv", "bin", "python")) else "python3"
    assert re.search(rf"^PYTHONPATH=\.\./\.\.\S* {re.escape(venv_python)} -m lucid export \.\./models\.py:UNet3D "
                     r"--input 1,1,32,32,32 --seed 0 -o unet\.so$", done.stdout, re.M), done.stdout
