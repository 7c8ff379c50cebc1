"""Run on N ranks: `compiled_overlap.py CONFIG...`, each CONFIG `order` or `twice-OPTIMIZER`.

`order`: DistributedDataParallel over a compiled model with several buckets compiles its backward
as one stage per bucket; one synchronised backward records, in order, each stage executable's run
and each bucket allreduce's start. Every rank asserts that there is one stage per bucket and that an
allreduce started before the backward's last stage ran (an event order, not a timing), then that
the averaged gradients equal the single-process ones over the global batch.

`twice-OPTIMIZER` (sgd|adam): the compiled model is called twice per forward (two halves of the
rank's batch), so its staged backward runs twice in one backward and each bucket's allreduce is
redone from the complete gradients; the parameters after STEPS steps must equal the single-process
run. Tolerances are training.py's (rtol 1e-5, atol 1e-6)."""
import json
import sys

import numpy as np

import lucid
import lucid.distributed as dist
from lucid.nn import functional as F
from lucid.nn.parallel import DistributedDataParallel
from training import ATOL, PER_RANK, RTOL, STEPS, global_batch, make_model, make_optimizer


def recording(events: list, name: str, fn):
    def recorded(*args, **kwargs):
        events.append(name)
        return fn(*args, **kwargs)

    return recorded


def check_order(rank: int, size: int) -> dict:
    reference, model = make_model(100, "none"), make_model(100 + rank, "none")
    ddp = DistributedDataParallel(lucid.compile(model), bucket_cap_mb=0.001)
    x, y = global_batch(0, size)
    mine = slice(PER_RANK * rank, PER_RANK * (rank + 1))
    variant_output = ddp(x[mine])                       # compiles the staged variant
    (variant,) = ddp.module.variants.values()
    events: list = []
    variant.backward.stages = [(stage, recording(events, f"stage {k}", executable))
                               for k, (stage, executable) in enumerate(variant.backward.stages)]
    all_reduce = dist.all_reduce
    dist.all_reduce = recording(events, "allreduce", all_reduce)
    try:
        F.mse_loss(variant_output, y[mine]).backward()
    finally:
        dist.all_reduce = all_reduce
    stages = len(variant.backward.stages)
    assert stages == len(ddp.reducer.buckets) > 1, (stages, len(ddp.reducer.buckets))
    assert events.index("allreduce") < events.index(f"stage {stages - 1}"), events
    F.mse_loss(reference(x), y).backward()
    for name, p in ddp.module.named_parameters():
        expected = dict(reference.named_parameters())[name].grad.numpy()
        np.testing.assert_allclose(p.grad.numpy(), expected, rtol=RTOL, atol=ATOL, err_msg=name)
    return {"config": "order", "rank": rank, "events": events, "last_sync": ddp.last_sync}


def check_called_twice(optimizer_name: str, rank: int, size: int) -> dict:
    reference, model = make_model(100, "none"), make_model(100 + rank, "none")
    ddp = DistributedDataParallel(lucid.compile(model), bucket_cap_mb=0.001)
    ref_opt, opt = make_optimizer(optimizer_name, reference), make_optimizer(optimizer_name, ddp)
    for step in range(STEPS):
        x, y = global_batch(step, size)
        ref_opt.zero_grad()
        F.mse_loss(reference(x), y).backward()
        ref_opt.step()
        opt.zero_grad()
        first, second = PER_RANK * rank, PER_RANK * rank + 1
        (F.mse_loss(ddp(x[first:second]), y[first:second]) / 2 +
         F.mse_loss(ddp(x[second:second + 1]), y[second:second + 1]) / 2).backward()
        opt.step()
    for (name, ours), theirs in zip(ddp.module.state_dict().items(), reference.state_dict().values()):
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=f"{name} on rank {rank}")
    return {"config": f"twice-{optimizer_name}", "rank": rank, "last_sync": ddp.last_sync}


def main(configs):
    dist.init()
    rank, size = dist.get_rank(), dist.get_world_size()
    for config in configs:
        record = check_order(rank, size) if config == "order" else \
            check_called_twice(config.split("-")[1], rank, size)
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
