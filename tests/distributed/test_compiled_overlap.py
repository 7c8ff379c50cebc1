"""DistributedDataParallel over a compiled model overlaps its allreduces with the staged compiled
backward (rank_scripts/compiled_overlap.py asserts on every rank): an allreduce starts before the
backward's last stage runs (a recorded event order), and the gradients equal one process's over the
global batch. (test_training.py trains compiled models with SGD and Adam, with accumulation and
with the compiled module called twice per forward, through the same staged backward.)"""
from mpi_jobs import run_ok


def test_allreduces_start_between_the_compiled_backward_stages_and_results_match_one_process():
    records = run_ok(2, "compiled_overlap.py", timeout=240).records()
    assert sorted(r["rank"] for r in records) == [0, 1]
    for record in records:
        assert record["last_sync"]["buckets"] == 3 and record["last_sync"]["started_in_backward"] >= 1, record
        events = record["events"]
        assert events == ["stage 0", "allreduce", "stage 1", "allreduce", "stage 2", "allreduce"], events
