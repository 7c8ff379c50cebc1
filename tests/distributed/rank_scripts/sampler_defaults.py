"""A rank of tests/distributed/test_sampler.py: a DistributedSampler over 10 samples that takes
num_replicas and rank from lucid.distributed; rank 0 gathers every rank's indices and prints them as
one JSON line."""
import json

import numpy as np

import lucid.distributed as dist
from lucid.utils.data import DistributedSampler

dist.init()
sampler = DistributedSampler(10, seed=4)
sampler.set_epoch(2)
mine = np.array(list(sampler), np.int64)
everyone = np.empty((dist.get_world_size(), len(mine)), np.int64)
dist.all_gather_into_tensor(everyone, mine)
if dist.get_rank() == 0:
    print(json.dumps({"replicas": sampler.num_replicas, "indices": everyone.tolist()}), flush=True)
