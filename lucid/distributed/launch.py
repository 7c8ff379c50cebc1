"""Starting N ranks: `python -m lucid.distributed.launch -n 4 train.py [args...]`.

It runs the `mpiexec` installed with the MPI library mpi4py loads (`pip install 'lucid[distributed]'`
puts MPICH's next to the Python interpreter, in the venv's bin/), with this Python, adding the flags
that implementation needs: Open MPI refuses to run as root and to start more ranks than cores
without `--allow-run-as-root` and `--oversubscribe`; MPICH's hydra needs none. `mpiexec_command`
is the same recipe as a list, for programs (and lucid's tests) that start the job themselves.
"""
from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys


def find_mpiexec() -> str | None:
    """The `mpiexec` next to this Python interpreter (a venv's bin/), else the first on PATH, else None."""
    beside_python = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.access(beside_python, os.X_OK):
        return beside_python
    return shutil.which("mpiexec")


@functools.lru_cache(maxsize=None)
def is_open_mpi(mpiexec: str) -> bool:
    """Whether `mpiexec` is Open MPI's (its --version names Open MPI or its runtime, OpenRTE/PRRTE)."""
    try:
        version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(word in version for word in ("Open MPI", "OpenRTE", "prte", "PRRTE"))


def mpiexec_command(ranks: int, argv: list, mpiexec: str | None = None) -> list:
    """The command that runs `python argv...` on `ranks` ranks of this machine."""
    mpiexec = mpiexec or find_mpiexec()
    if mpiexec is None:
        raise FileNotFoundError("lucid.distributed.launch: no mpiexec found next to this Python or on PATH; "
                                "install one with pip install 'lucid[distributed]'")
    flags = []
    if is_open_mpi(mpiexec):
        flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    return [mpiexec, *flags, "-n", str(ranks), sys.executable, *argv]


def main(arguments=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lucid.distributed.launch",
                                     description="Run a Python script on N MPI ranks of this machine.")
    parser.add_argument("-n", "--ranks", type=int, required=True, help="number of ranks")
    parser.add_argument("script", help="the Python script")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    options = parser.parse_args(arguments)
    return subprocess.call(mpiexec_command(options.ranks, [options.script, *options.args]))


if __name__ == "__main__":
    sys.exit(main())
