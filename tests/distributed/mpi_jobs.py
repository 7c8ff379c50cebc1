"""Running a script on N MPI ranks from a test: `run_job(2, script, args...)`.

The job is started with `lucid.distributed.launch.mpiexec_command` (the mpiexec installed with mpi4py's
MPI library, with the flags it needs), one compute thread per rank, this checkout's lucid importable,
in its own process group: on timeout the whole group is killed and the test fails. Tests skip when
mpi4py or mpiexec is missing.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lucid.distributed.launch import find_mpiexec, mpiexec_command

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "rank_scripts"


def require_mpi() -> None:
    """Skip the calling test when mpi4py or an mpiexec is not installed."""
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed (pip install 'lucid[distributed]')")
    if find_mpiexec() is None:
        pytest.skip("no mpiexec next to this Python or on PATH (pip install 'lucid[distributed]')")


@dataclass
class Job:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def records(self) -> list:
        """The JSON objects the ranks printed (the launcher may join two ranks' lines into one)."""
        decoder, found, start = json.JSONDecoder(), [], self.stdout.find("{")
        while start >= 0:
            record, end = decoder.raw_decode(self.stdout, start)
            found.append(record)
            start = self.stdout.find("{", end)
        return found


def job_environment() -> dict:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    environment["LUCID_NUM_THREADS"] = "1"
    return environment


def run_job(ranks: int, script: str, *args, timeout: float = 120) -> Job:
    """Run rank_scripts/`script` on `ranks` ranks; fails the test if it outlives `timeout` seconds."""
    require_mpi()
    command = mpiexec_command(ranks, [str(SCRIPTS / script), *map(str, args)])
    started = time.monotonic()
    process = subprocess.Popen(command, env=job_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{script} {args} on {ranks} ranks still ran after {timeout} s (killed):\n{stderr[-3000:]}")
    return Job(process.returncode, stdout, stderr, time.monotonic() - started)


def run_ok(ranks: int, script: str, *args, timeout: float = 120) -> Job:
    """`run_job`, asserting that every rank exited cleanly."""
    job = run_job(ranks, script, *args, timeout=timeout)
    assert job.returncode == 0, f"{script} {args} on {ranks} ranks: exit {job.returncode}\n{job.stderr[-4000:]}"
    return job
