"""Compile worker processes (lucid/codegen/compile_worker.py), the compilation that feeds them
(`jit.Compilation`) and the progress line of a long compile (lucid/codegen/progress.py).

The oracle of every compile here is the same module compiled in this process by
`compile_module`: LLVM is deterministic, so a worker's object code must be byte for byte the same.
Workers that die, answer garbage or cannot compile a module never make a compilation fail or hang:
their modules are compiled in the calling process (reported once), and a module no one can compile
raises the calling process's own error. Each test uses a fresh cache directory, so its modules are
really compiled.
"""
from __future__ import annotations

import io
import os
import pathlib
import subprocess
import sys
import warnings

import pytest

from lucid.codegen import compile_worker, jit
from lucid.codegen.compile_worker import compile_module
from lucid.codegen.target import host

ROOT = pathlib.Path(__file__).resolve().parents[2]


def distinct_modules(count: int, salt: int = 0) -> list[str]:
    """`count` small modules that differ (so each is its own cache entry): f(x) = x * k + salt."""
    return [f"define i64 @f{k}(i64 %x) {{\n  %y = mul i64 %x, {k + 2}\n  %z = add i64 %y, {salt}\n"
            f"  ret i64 %z\n}}\n" for k in range(count)]


@pytest.fixture
def fresh_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def compiled(texts: list[str], jobs: int, monkeypatch) -> list[bytes]:
    monkeypatch.setenv("LUCID_COMPILE_JOBS", str(jobs))
    with jit.Compilation(host()) as compilation:
        for text in texts:
            compilation.add(text)
        return [code for _, code in compilation.results()]


def test_workers_compile_the_same_code_as_this_process(fresh_cache, monkeypatch):
    texts = distinct_modules(8, salt=1)
    expected = [compile_module(text, host()) for text in texts]
    before = jit.COUNTERS["compiled"]
    assert compiled(texts, 2, monkeypatch) == expected
    assert jit.COUNTERS["compiled"] - before == len(texts)
    assert compile_worker._WORKERS.started and all(w.process.poll() is None for w in compile_worker._WORKERS.started)
    assert compiled(texts, 2, monkeypatch) == expected          # from the cache now
    assert jit.COUNTERS["compiled"] - before == len(texts)


def test_modules_linked_into_one_object_compile_alike_here_and_in_a_worker(fresh_cache, monkeypatch):
    linked = [distinct_modules(3, salt=11), distinct_modules(2, salt=12)]
    for texts in linked:
        for k, text in enumerate(texts):              # each module's function its own name, as kernels have
            texts[k] = text.replace("@f", f"@g{k}_")
    expected = [compile_module(texts, host()) for texts in linked]
    assert all(code.count(b"g0_") and code.count(b"g1_") for code in expected)    # every module is in it
    worker = compile_worker.workers(1)[0]
    assert [worker.compile(texts, host(), 3) for texts in linked] == expected
    assert compiled(linked, 1, monkeypatch) == expected


def test_a_worker_answers_requests_in_order():
    texts = distinct_modules(2, salt=2)
    requests = io.BytesIO()
    for k, text in enumerate(texts):
        compile_worker.send(requests, {"id": k, "target": host().__dict__, "level": 3}, text.encode())
    compile_worker.send(requests, {"id": 9, "target": host().__dict__, "level": 3}, b"not LLVM")
    requests.seek(0)
    answers = io.BytesIO()
    compile_worker.serve(requests, answers)
    answers.seek(0)
    for k, text in enumerate(texts):
        header, code = compile_worker.receive(answers)
        assert header["id"] == k and code == compile_module(text, host())
    header, code = compile_worker.receive(answers)
    assert header["id"] == 9 and "error" in header and code == b""
    assert compile_worker.receive(answers) is None


@pytest.mark.parametrize("message", [b"\x00\x00\x00\x00\x00\x00\x00\x05[1, 2", b"\xff" * 8, b"\x00\x00\x00"])
def test_malformed_messages_are_refused(message):
    with pytest.raises(ValueError):
        compile_worker.receive(io.BytesIO(message))


def replaced_worker(script: str) -> compile_worker.Worker:
    """A worker whose process is `script` instead of the real one."""
    return compile_worker.Worker([sys.executable, "-c", script])


GARBAGE = "import sys\nsys.stdin.buffer.read(8)\nsys.stdout.buffer.write(b'garbage!' * 4)\nsys.stdout.flush()\n"
WRONG_DIGEST = r'''
import hashlib, sys
from lucid.codegen import compile_worker
while (message := compile_worker.receive(sys.stdin.buffer)) is not None:
    compile_worker.send(sys.stdout.buffer, {"id": message[0]["id"], "sha256": "0" * 64}, b"\x7fELF flipped")
'''


@pytest.mark.parametrize("script", ["import sys; sys.exit(3)", GARBAGE, WRONG_DIGEST, "import time; time.sleep(60)"],
                         ids=["dies", "garbage", "wrong-digest", "hangs"])
def test_a_failing_worker_costs_only_a_warning(fresh_cache, monkeypatch, script):
    monkeypatch.setattr(jit, "_WARNED", [])
    monkeypatch.setattr(compile_worker, "ANSWER_WITHIN", 2)
    monkeypatch.setattr(compile_worker, "_WORKERS", compile_worker._Workers())
    broken = replaced_worker(script)
    compile_worker._WORKERS.started.append(broken)
    texts = distinct_modules(6, salt=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert compiled(texts, 2, monkeypatch) == [compile_module(text, host()) for text in texts]
    assert [w.category for w in caught] == [jit.CompileWorkerWarning]
    assert broken not in compile_worker._WORKERS.started and broken.process.poll() is not None
    compile_worker._WORKERS.close()


def test_workers_that_cannot_start_cost_only_a_warning(fresh_cache, monkeypatch, tmp_path):
    monkeypatch.setattr(jit, "_WARNED", [])
    monkeypatch.setattr(compile_worker, "_WORKERS", compile_worker._Workers())
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    texts = distinct_modules(5, salt=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert compiled(texts, 2, monkeypatch) == [compile_module(text, host()) for text in texts]
    assert [w.category for w in caught] == [jit.CompileWorkerWarning]
    assert "FileNotFoundError" in str(caught[0].message)


def test_a_module_no_one_can_compile_raises_this_process_error(fresh_cache, monkeypatch):
    texts = distinct_modules(5, salt=4) + ["define i64 @broken( {"]
    with pytest.raises(RuntimeError, match="LLVM IR parsing error"):
        compiled(texts, 2, monkeypatch)
    assert all(w.process.poll() is None for w in compile_worker._WORKERS.started)   # they stay usable
    texts = distinct_modules(5, salt=5)
    assert compiled(texts, 2, monkeypatch) == [compile_module(text, host()) for text in texts]


def test_closing_reaps_the_workers(monkeypatch):
    monkeypatch.setattr(compile_worker, "_WORKERS", compile_worker._Workers())
    started = compile_worker.workers(2)
    compile_worker.close()
    assert [w.process.returncode for w in started] == [0, 0]              # they exited when told
    for worker in started:
        with pytest.raises(ChildProcessError):                              # and were reaped: no zombie
            os.waitpid(worker.process.pid, os.WNOHANG)


def test_a_worker_loads_llvmlite_and_the_target_not_the_framework():
    command = compile_worker.worker_command()
    started = subprocess.run([command[0], "-X", "importtime", *command[1:]], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    imported = {line.split("|")[-1].strip() for line in started.stderr.splitlines() if line.startswith("import time:")}
    assert {"llvmlite.binding", "lucid.codegen.target", "lucid.codegen.cpu_model"} <= imported
    assert not {"numpy", "lucid.tensor", "lucid.ir", "lucid.nn"} & imported


FORK_SCRIPT = r'''
import os, sys
from lucid.codegen import compile_worker, jit
from lucid.codegen.target import host
texts = [f"define i64 @f{k}(i64 %x) {{\n  %y = mul i64 %x, {k + 7}\n  ret i64 %y\n}}\n" for k in range(6)]
def compile_all():
    with jit.Compilation(host()) as compilation:
        for text in texts:
            compilation.add(text)
        return [code for _, code in compilation.results()]
expected = compile_all()
parents = [w.process.pid for w in compile_worker._WORKERS.started]
os.environ["LUCID_CACHE_DIR"] += "-child"
pid = os.fork()
if pid == 0:
    ok = compile_all() == expected and not set(parents) & {w.process.pid for w in compile_worker._WORKERS.started}
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
os.environ["LUCID_CACHE_DIR"] += "-again"
print(os.waitstatus_to_exitcode(status), parents == [w.process.pid for w in compile_worker._WORKERS.started],
      compile_all() == expected)
'''


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_its_own_workers(tmp_path):
    result = run(FORK_SCRIPT, {"LUCID_CACHE_DIR": str(tmp_path / "cache"), "LUCID_COMPILE_JOBS": "2"})
    assert result.stdout.split() == ["0", "True", "True"], result.stderr


def run(script: str, env: dict) -> subprocess.CompletedProcess:
    environment = dict(os.environ, **env)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return result


# ============================================================================== progress line
PROGRESS_SCRIPT = r'''
import numpy as np
import lucid, lucid.nn as nn
model = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2))
fast = lucid.compile(model)
x = lucid.Tensor(np.ones((1, 1, 4, 4, 4), np.float32), requires_grad=True)
fast(x).sum().backward()
print(fast.stats()["native_compiles"])
'''


def test_a_long_compile_prints_one_progress_line(tmp_path):
    result = run(PROGRESS_SCRIPT, {"LUCID_CACHE_DIR": str(tmp_path / "cache"), "LUCID_PROGRESS_AFTER": "0"})
    compiled_modules = int(result.stdout.split()[-1])
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and compiled_modules > 0, result.stderr
    assert lines[0].startswith(f"lucid: compiling lucid.compile(Sequential) training variant: "
                               f"{compiled_modules}/{compiled_modules} LLVM modules compiled")


def test_quiet_and_short_compiles_print_nothing(tmp_path):
    quiet = run(PROGRESS_SCRIPT, {"LUCID_CACHE_DIR": str(tmp_path / "cache"), "LUCID_PROGRESS_AFTER": "0",
                                  "LUCID_QUIET": "1"})
    assert quiet.stderr == ""
    warm = run(PROGRESS_SCRIPT, {"LUCID_CACHE_DIR": str(tmp_path / "cache"), "LUCID_PROGRESS_AFTER": "60"})
    assert warm.stderr == "" and warm.stdout.split()[-1] == "0"


def test_the_line_updates_in_place_on_a_terminal():
    from lucid.codegen import progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    line = progress.Progress("a model", screen)
    line.after = 0.0
    for _ in range(3):
        line.count("missing")
    line._drawn = 0.0
    line.count("compiled")
    line.finish()
    parts = screen.getvalue().split("\r")
    assert parts[0] == "" and len(parts) == 4
    assert parts[1].startswith("lucid: compiling a model: 0/1 LLVM modules compiled (")
    assert parts[2].startswith("lucid: compiling a model: 1/3 LLVM modules compiled (")
    assert parts[3].startswith("lucid: compiling a model: 1/3 LLVM modules compiled (")
    assert all(part.endswith("\033[K") for part in parts[1:3]) and parts[3].endswith("\033[K\n")
