"""lucid.distributed's collectives on 2 and 3 MPI ranks, its errors, and lucid without mpi4py."""
import os
import subprocess
import sys

import pytest

from mpi_jobs import job_environment, require_mpi, run_job, run_ok


@pytest.mark.parametrize("ranks", [2, 3])
def test_collectives_on_tensors_and_arrays(ranks):
    records = run_ok(ranks, "collectives.py", "check").records()
    assert sorted(r["rank"] for r in records) == list(range(ranks))
    assert all(r["size"] == ranks and r["ok"] for r in records)


def test_a_rank_that_raises_ends_the_job_with_an_error():
    job = run_job(2, "collectives.py", "raise", timeout=60)
    assert job.returncode != 0
    assert "rank 1 fails on purpose" in job.stderr
    assert "aborting every rank" in job.stderr
    assert job.seconds < 60


def _python(code: str, **environment) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={**job_environment(), **environment},
                          capture_output=True, text=True, timeout=120)


def test_init_refuses_a_world_of_one_when_the_launcher_started_more():
    require_mpi()
    done = _python("import lucid.distributed as d; d.init()", OMPI_COMM_WORLD_SIZE="2")
    assert done.returncode != 0
    assert "expects 2 ranks (OMPI_COMM_WORLD_SIZE=2) but MPI reports 1" in done.stderr


def test_a_single_process_is_a_world_of_one():
    require_mpi()
    done = _python("import numpy as np, lucid.distributed as d; d.init(); a = np.ones(2); d.all_reduce(a); "
                   "print(d.get_rank(), d.get_world_size(), a.tolist())")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "1", "[1.0,", "1.0]"]


BLOCK_MPI4PY = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == "mpi4py" or name.startswith("mpi4py."):
            raise ImportError("No module named 'mpi4py' (blocked by the test)")
sys.meta_path.insert(0, Blocker())
"""


def test_without_mpi4py_lucid_imports_and_distributed_says_how_to_install():
    code = BLOCK_MPI4PY + """
import lucid, lucid.distributed as dist, lucid.nn
assert "mpi4py" not in sys.modules
assert not dist.is_initialized() and not dist.is_available()
for call in (dist.init, dist.get_rank, lambda: dist.all_reduce(lucid.ones(2))):
    try:
        call()
    except ImportError as exc:
        assert isinstance(exc, dist.DistributedUnavailableError)
        print(exc)
    else:
        raise AssertionError("no ImportError")
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    assert all("pip install 'lucid[distributed]'" in line for line in lines)
    assert [line.split(":")[0] for line in lines] == ["lucid.distributed.init", "lucid.distributed.get_rank",
                                                      "lucid.distributed.all_reduce"]


def test_import_lucid_does_not_load_mpi4py():
    done = _python("import sys, lucid, lucid.distributed, lucid.nn; print('mpi4py' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
