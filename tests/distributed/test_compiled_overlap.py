"""DistributedDataParallel over a compiled model overlaps its allreduces with the staged compiled
backward (rank_scripts/compiled_overlap.py asserts on every rank): an allreduce starts before the
backward's last stage runs, the gradients equal one process's over the global batch, and a
compiled model called twice per forward still trains like one process (SGD and Adam).
(tests/distributed/test_training.py trains compiled models with SGD and Adam through the same
staged backward.)"""
from mpi_jobs import run_ok

CONFIGS = ["order", "twice-sgd", "twice-adam"]


def test_allreduces_start_between_the_compiled_backward_stages_and_results_match_one_process():
    records = run_ok(2, "compiled_overlap.py", *CONFIGS, timeout=240).records()
    assert sorted((r["config"], r["rank"]) for r in records) == sorted((c, k) for c in CONFIGS for k in range(2))
    for record in records:
        assert record["last_sync"]["buckets"] == 3 and record["last_sync"]["started_in_backward"] >= 1, record
        if record["config"] == "order":
            events = record["events"]
            assert events.count("allreduce") == 3 and events.index("allreduce") < events.index("stage 2"), events
