"""Checkpoints of a data-parallel job (lucid.distributed.checkpoint.save_on_rank0): 2 ranks train
N steps of Adam and save; the job resumes on 3 ranks, and on 1, and trains M more steps. Every rank's
parameters then equal an uninterrupted single-process run of N + M steps on the global batch.

Tolerance: rtol 1e-5, atol 1e-6. The ranks average their shares' gradients (a sum of per-rank means
over the world size) where the single process takes one mean over the global batch: float32 rounding
differences of ~1e-7, which a few Adam steps (lr 1e-2) carry into the weights without growing much."""
import shutil

import numpy as np
import pytest

import lucid
from mpi_jobs import SCRIPTS, require_mpi, run_ok

FIRST, MORE = 3, 3
TOLERANCE = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def rank_script():
    """The rank script's model, data and step, to run the single-process oracle in this process."""
    require_mpi()
    import importlib.util

    spec = importlib.util.spec_from_file_location("checkpoint_resume", SCRIPTS / "checkpoint_resume.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def uninterrupted(script, steps: int) -> dict:
    """The state dict after `steps` steps of one process on the whole global batch, from rank 0's
    initial weights (the ones the wrapper broadcasts)."""
    model = script.make_model(seed=1)
    optimizer = script.make_optimizer(model)
    for step in range(steps):
        script.train_step(model, optimizer, step, slice(None))
    return {name: np.array(value) for name, value in model.state_dict().items()}


def assert_state_equal(path, expected: dict):
    state = lucid.load(path)
    assert set(state) == set(expected)
    for name, value in state.items():
        np.testing.assert_allclose(np.asarray(value), expected[name], err_msg=f"{path.name}: {name}", **TOLERANCE)


def test_a_checkpoint_of_two_ranks_resumes_on_three_ranks_and_on_one_process(tmp_path, rank_script):
    saved = tmp_path / "two-ranks"
    saved.mkdir()
    run_ok(2, "checkpoint_resume.py", "train", saved, 0, FIRST, timeout=180)
    after_first = uninterrupted(rank_script, FIRST)
    for rank in range(2):
        assert_state_equal(saved / f"train-rank{rank}.lucid", after_first)
    assert sorted(p.name for p in saved.iterdir()) == ["state.lucid", "train-rank0.lucid", "train-rank1.lucid",
                                                        "weights.safetensors"]   # no partial file left
    assert lucid.load(saved / "state.lucid")["step"] == FIRST

    expected = uninterrupted(rank_script, FIRST + MORE)
    for ranks in (3, 1):
        resumed = tmp_path / f"resumed-on-{ranks}"
        shutil.copytree(saved, resumed)
        run_ok(ranks, "checkpoint_resume.py", "resume", resumed, FIRST, MORE, timeout=180)
        for rank in range(ranks):
            assert_state_equal(resumed / f"resume-rank{rank}.lucid", expected)
        assert lucid.load(resumed / "state.lucid")["step"] == FIRST + MORE


def test_the_resumed_run_did_train_on(rank_script):
    """The oracle's steps change the weights: equal results above are not equal because nothing moved."""
    before, after = uninterrupted(rank_script, FIRST), uninterrupted(rank_script, FIRST + MORE)
    assert all(np.abs(before[name] - after[name]).max() > 1e-4 for name in before)
