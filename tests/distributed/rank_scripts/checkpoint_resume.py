"""A rank of tests/distributed/test_checkpoint.py: data-parallel Adam training of a small conv net that
saves a checkpoint from rank 0 or resumes from one.

    checkpoint_resume.py train FOLDER FIRST_STEP STEPS      # fresh weights, then save to FOLDER
    checkpoint_resume.py resume FOLDER FIRST_STEP STEPS     # load FOLDER's checkpoint, then train on

Steps FIRST_STEP .. FIRST_STEP + STEPS - 1 run on the global batch of each step (`batch(step)`), each
rank on its equal share of the rows. Both phases end by writing this rank's parameters to
FOLDER/<phase>-rank<r>.lucid and saving the checkpoint (weights as safetensors, optimiser state and
step with lucid.save) with save_on_rank0.
"""
import sys
from pathlib import Path

import numpy as np

import lucid
import lucid.distributed as dist
import lucid.nn as nn
import lucid.nn.functional as F
from lucid.distributed.checkpoint import save_on_rank0
from lucid.nn.parallel import DistributedDataParallel

GLOBAL_BATCH = 6                       # divisible by 1, 2 and 3 ranks


def make_model(seed: int) -> nn.Module:
    lucid.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))


def batch(step: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + step)
    return (rng.standard_normal((GLOBAL_BATCH, 1, 4, 4, 4)).astype(np.float32),
            rng.standard_normal((GLOBAL_BATCH, 2, 4, 4, 4)).astype(np.float32))


def make_optimizer(model: nn.Module):
    return lucid.optim.Adam(model.parameters(), lr=1e-2)


def train_step(model, optimizer, step: int, rows: slice) -> None:
    """One step on `rows` of the step's global batch; the loss is their mean squared error."""
    images, targets = batch(step)
    optimizer.zero_grad()
    F.mse_loss(model(lucid.tensor(images[rows])), lucid.tensor(targets[rows])).backward()
    optimizer.step()


def main(phase: str, folder: Path, first_step: int, steps: int) -> None:
    dist.init()
    rank, ranks = dist.get_rank(), dist.get_world_size()
    share = GLOBAL_BATCH // ranks
    model = make_model(seed=rank + 1)                  # different on each rank: the wrapper or the load fixes it
    optimizer = make_optimizer(model)
    if phase == "resume":
        model.load_state_dict(lucid.load_safetensors(folder / "weights.safetensors"))
        state = lucid.load(folder / "state.lucid")
        optimizer.load_state_dict(state["optimizer"])
        assert state["step"] == first_step, (state["step"], first_step)
    ddp = DistributedDataParallel(model)
    for step in range(first_step, first_step + steps):
        train_step(ddp, optimizer, step, slice(rank * share, (rank + 1) * share))
    lucid.save(model.state_dict(), folder / f"{phase}-rank{rank}.lucid")
    save_on_rank0(model.state_dict(), folder / "weights.safetensors")
    save_on_rank0({"optimizer": optimizer.state_dict(), "step": first_step + steps}, folder / "state.lucid")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
