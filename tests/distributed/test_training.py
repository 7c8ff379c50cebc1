"""DistributedDataParallel and SyncBatchNorm on 2 and 3 MPI ranks against one process over the global
batch: rank_scripts/training.py trains both and asserts on every rank (rtol 1e-5, atol 1e-6); here
we check that every rank reported every configuration. A compiled model trains through its staged
backward (one stage per bucket); `-twice` runs that backward twice in one backward, so each bucket's
allreduce is redone at the end."""
import pytest

from mpi_jobs import run_ok

TWO_RANKS = ["sgd-none-eager", "adam-none-eager", "sgd-sync-eager", "adam-sync-eager", "sgd-none-eager-accumulate",
             "sgd-none-compiled", "adam-none-compiled", "adam-none-compiled-accumulate", "sgd-none-compiled-twice",
             "adam-none-compiled-twice", "adam-none-stages", "unused",
             "compiled-syncbn"]
THREE_RANKS = ["adam-sync-eager", "sgd-none-compiled", "sgd-none-eager-accumulate", "unused"]


@pytest.mark.parametrize("ranks, configs", [(2, TWO_RANKS), (3, THREE_RANKS)], ids=["2 ranks", "3 ranks"])
def test_every_rank_matches_one_process_over_the_global_batch(ranks, configs):
    records = run_ok(ranks, "training.py", *configs, timeout=240).records()
    assert sorted((r["config"], r["rank"]) for r in records) == sorted((c, k) for c in configs for k in range(ranks))
    for record in records:
        if "max_abs_diff" in record:
            assert record["max_abs_diff"] <= 1e-5, record
            assert record["last_sync"]["buckets"] == 3, record
