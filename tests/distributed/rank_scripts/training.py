"""Run on N ranks: `training.py CONFIG...`, each CONFIG `optimizer-norm-mode[-accumulate|-twice]`
(optimizer sgd|adam, norm none|sync, mode eager|compiled|stages: the model compiled whole or as
two separately compiled stages; `accumulate`: two micro-batches, the first under no_sync; `twice`:
the model called on each half of the rank's batch in one forward, so a compiled model's staged
backward runs twice in one backward), or `unused`, or `compiled-syncbn`.

For each config every rank trains a DistributedDataParallel replica (built from its own seed: the wrap
must broadcast rank 0's weights) on its slice of a global batch for STEPS steps, and trains, alone, a
reference model (rank 0's seed, plain BatchNorm) on the whole global batch. Every rank asserts that
its parameters (and running statistics) equal the reference's within rtol 1e-5 / atol 1e-6 (float32;
the allreduce sums in another order) and prints one JSON line per config."""
import json
import sys

import numpy as np

import lucid
import lucid.distributed as dist
from lucid import nn
from lucid.nn import functional as F
from lucid.nn.parallel import DistributedDataParallel

STEPS, PER_RANK = 3, 2
RTOL, ATOL = 1e-5, 1e-6


def make_model(seed: int, norm: str) -> nn.Module:
    lucid.manual_seed(seed)
    # Before a BatchNorm the conv has no bias: its gradient would be zero up to rounding, which Adam
    # turns into full-size steps of random sign.
    layers = [nn.Conv3d(1, 4, 3, padding=1, bias=False), nn.BatchNorm3d(4)] if norm == "sync" else \
        [nn.Conv3d(1, 4, 3, padding=1)]
    return nn.Sequential(*layers, nn.ReLU(), nn.MaxPool3d(2), nn.Flatten(), nn.Linear(4 * 4 * 4 * 4, 3))


def make_optimizer(name: str, model: nn.Module):
    if name == "sgd":
        return lucid.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return lucid.optim.Adam(model.parameters(), lr=1e-2)


def global_batch(step: int, size: int):
    rng = np.random.default_rng(1000 + step)
    x = rng.standard_normal((PER_RANK * size, 1, 8, 8, 8)).astype(np.float32)
    return lucid.Tensor(x), lucid.Tensor(rng.standard_normal((PER_RANK * size, 3)).astype(np.float32))


def in_two_stages(model: nn.Sequential) -> nn.Sequential:
    layers = list(model)
    return nn.Sequential(nn.Sequential(*layers[:-2]), nn.Sequential(*layers[-2:]))


def ddp_step(ddp, x, y, split: str | None) -> None:
    if split == "accumulate":             # one sample at a time: the first backward without the allreduce
        with ddp.no_sync():
            (F.mse_loss(ddp(x[:1]), y[:1]) / 2).backward()
        (F.mse_loss(ddp(x[1:]), y[1:]) / 2).backward()
    elif split == "twice":                # one sample at a time, one backward
        (F.mse_loss(ddp(x[:1]), y[:1]) / 2 + F.mse_loss(ddp(x[1:]), y[1:]) / 2).backward()
    else:
        F.mse_loss(ddp(x), y).backward()


def train_config(config: str, rank: int, size: int) -> dict:
    optimizer_name, norm, mode, *rest = config.split("-")
    split = rest[0] if rest else None
    reference = make_model(100, norm)          # rank 0's replica
    model = make_model(100 + rank, norm)
    if norm == "sync":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if mode == "stages":                       # two separately compiled stages: two backward calls
        reference, model = in_two_stages(reference), in_two_stages(model)
        model = nn.Sequential(*(lucid.compile(stage) for stage in model))
    ddp = DistributedDataParallel(lucid.compile(model) if mode == "compiled" else model, bucket_cap_mb=0.001)
    assert all(k.startswith("module.") for k in ddp.state_dict())
    assert [k[len("module."):] for k in ddp.state_dict()] == list(reference.state_dict())
    ref_opt, opt = make_optimizer(optimizer_name, reference), make_optimizer(optimizer_name, ddp)
    for step in range(STEPS):
        x, y = global_batch(step, size)
        ref_opt.zero_grad()
        F.mse_loss(reference(x), y).backward()
        ref_opt.step()
        opt.zero_grad()
        mine = slice(PER_RANK * rank, PER_RANK * (rank + 1))
        ddp_step(ddp, x[mine], y[mine], split)
        opt.step()
    worst = 0.0
    for (name, ours), theirs in zip(ddp.module.state_dict().items(), reference.state_dict().values()):
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=f"{config}: {name} on rank {rank}")
        worst = max(worst, float(np.max(np.abs(np.asarray(ours, np.float64) - theirs), initial=0.0)))
    reference.eval(), ddp.eval()
    x, _ = global_batch(STEPS, size)
    np.testing.assert_allclose(ddp(x).numpy(), reference(x).numpy(), rtol=RTOL, atol=ATOL)
    sync = ddp.last_sync
    assert sync["buckets"] > 1 and sync["started_in_backward"] >= 1, sync
    return {"config": config, "rank": rank, "max_abs_diff": worst, "last_sync": sync}


class PartlyUsed(nn.Module):
    """`extra` takes part on rank 0 only: the other ranks contribute zeros to its gradient."""

    def __init__(self, rank: int):
        super().__init__()
        lucid.manual_seed(7)
        self.first, self.extra, self.last = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)
        self.rank = rank

    def forward(self, x):
        h = self.first(x)
        return self.last(self.extra(h) if self.rank == 0 else h)


def check_unused(rank: int, size: int) -> dict:
    ddp = DistributedDataParallel(PartlyUsed(rank), bucket_cap_mb=0.00002)      # one parameter per bucket
    x = lucid.Tensor(np.random.default_rng(rank).standard_normal((3, 4)).astype(np.float32))
    ddp(x).sum().backward()
    # rank 0's gradient of extra, computed alone: the synced one is it divided by the world size
    alone = PartlyUsed(0)
    alone.load_state_dict(ddp.module.state_dict())
    alone(lucid.Tensor(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))).sum().backward()
    for p, q in zip(ddp.module.extra.parameters(), alone.extra.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy() / size, rtol=RTOL, atol=ATOL)
    assert all(p.grad is not None for p in ddp.parameters())
    return {"config": "unused", "rank": rank}


def check_compiled_syncbn_refused(rank: int, size: int) -> dict:
    model = nn.SyncBatchNorm.convert_sync_batchnorm(make_model(0, "sync"))
    compiled = lucid.compile(model)
    try:
        compiled(global_batch(0, size)[0][:2])
    except lucid.TraceError as exc:
        assert "SyncBatchNorm" in str(exc), str(exc)
    else:
        raise AssertionError("compiling SyncBatchNorm in training on several ranks did not raise")
    model.eval()
    compiled(global_batch(0, size)[0][:2])            # eval mode: BatchNorm, compiles
    return {"config": "compiled-syncbn", "rank": rank}


def main(configs):
    dist.init()
    rank, size = dist.get_rank(), dist.get_world_size()
    for config in configs:
        if config == "unused":
            record = check_unused(rank, size)
        elif config == "compiled-syncbn":
            record = check_compiled_syncbn_refused(rank, size)
        else:
            record = train_config(config, rank, size)
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
