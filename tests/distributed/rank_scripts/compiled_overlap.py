"""Run on N ranks: `compiled_overlap.py`. DistributedDataParallel over a compiled model with
several buckets compiles its backward as one stage per bucket; one synchronised backward records, in order, each stage executable's run
and each bucket allreduce's start. Every rank asserts that there is one stage per bucket and that an
allreduce started before the backward's last stage ran (an event order, not a timing), then that
the averaged gradients equal the single-process ones over the global batch (training.py's
tolerance, rtol 1e-5 and atol 1e-6). Prints one JSON line per rank."""
import json

import numpy as np

import lucid
import lucid.distributed as dist
from lucid.nn import functional as F
from lucid.nn.parallel import DistributedDataParallel
from training import ATOL, PER_RANK, RTOL, global_batch, make_model


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
    output = ddp(x[mine])                               # compiles the staged variant
    (variant,) = ddp.module.variants.values()
    events: list = []
    variant.backward.stages = [(stage, recording(events, f"stage {k}", executable))
                               for k, (stage, executable) in enumerate(variant.backward.stages)]
    all_reduce = dist.all_reduce
    dist.all_reduce = recording(events, "allreduce", all_reduce)
    try:
        F.mse_loss(output, y[mine]).backward()
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


def main():
    dist.init()
    print(json.dumps(check_order(dist.get_rank(), dist.get_world_size())), flush=True)


if __name__ == "__main__":
    main()
