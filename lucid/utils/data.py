"""``torch.utils.data``'s ``DistributedSampler``: which samples of a data set each rank of a
data-parallel job reads.

``DistributedSampler(dataset_or_length, num_replicas=None, rank=None, shuffle=True, seed=0,
drop_last=False)`` gives each of ``num_replicas`` ranks ``len(sampler)`` indices, the same count on
every rank (so every rank runs the same number of steps and no collective waits forever):

- the order is ``range(n)``, or with ``shuffle`` a permutation drawn from a NumPy generator seeded
  with ``seed + epoch``: the same on every rank for the same seed and epoch, another one after
  ``set_epoch(epoch)`` (call it at the start of each epoch);
- without ``drop_last`` the order is padded by repeating its first indices (over and over if the
  data set is smaller than the number of ranks) up to a multiple of ``num_replicas``; with it, the
  tail that does not fill a round is dropped;
- rank ``r`` takes the positions ``r, r + num_replicas, r + 2 num_replicas, ...`` of that order.

So when ``n`` is a multiple of ``num_replicas`` the ranks' indices cover ``range(n)`` exactly once.
``num_replicas`` and ``rank`` default to ``lucid.distributed``'s world size and rank once
``lucid.distributed.init()`` has run.
"""
from __future__ import annotations

import math

import numpy as np


class DistributedSampler:
    """The indices of `dataset_or_length` (anything with ``len()``, or an int) this rank reads in
    the current epoch; see the module's docstring."""

    def __init__(self, dataset_or_length, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        self.length = _length_of(dataset_or_length)
        if num_replicas is None or rank is None:
            world_size, own_rank = _distributed_defaults()
            num_replicas = world_size if num_replicas is None else num_replicas
            rank = own_rank if rank is None else rank
        _check_int("num_replicas", num_replicas, minimum=1)
        _check_int("rank", rank, minimum=0)
        _check_int("seed", seed, minimum=0)
        if rank >= num_replicas:
            raise ValueError(f"DistributedSampler: rank must be below num_replicas ({num_replicas}), got {rank}")
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        self.num_samples = self.length // self.num_replicas if drop_last else math.ceil(self.length / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of `epoch` from now on (every rank must set the same epoch)."""
        _check_int("epoch", epoch, minimum=0)
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        return iter(self._indices().tolist())

    def _indices(self) -> np.ndarray:
        """This rank's indices: the epoch's order, padded or cut to `total_size`, every
        `num_replicas`-th position from `rank` on."""
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(self.length)
        else:
            order = np.arange(self.length)
        if self.total_size > self.length and self.length:
            order = np.resize(order, self.total_size)          # repeats the order from its start
        return order[:self.total_size][self.rank::self.num_replicas]


def _length_of(dataset_or_length) -> int:
    if isinstance(dataset_or_length, (int, np.integer)) and not isinstance(dataset_or_length, bool):
        if dataset_or_length < 0:
            raise ValueError(f"DistributedSampler: a data set length must be >= 0, got {dataset_or_length}")
        return int(dataset_or_length)
    try:
        return len(dataset_or_length)
    except TypeError:
        raise TypeError("DistributedSampler: expected a data set (anything with len()) or its length, "
                        f"got {type(dataset_or_length).__name__}") from None


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"DistributedSampler: {name} must be an int >= {minimum}, got {value!r}")


def _distributed_defaults() -> tuple[int, int]:
    """(world size, rank) of the initialised lucid.distributed job, or a ValueError saying what to pass."""
    advice = "pass num_replicas and rank, or call lucid.distributed.init() first"
    try:
        from .. import distributed
    except ImportError as error:
        raise ValueError(f"DistributedSampler: lucid.distributed is not available ({error}); {advice}") from None
    if not distributed.is_initialized():
        raise ValueError(f"DistributedSampler: lucid.distributed is not initialised; {advice}")
    return distributed.get_world_size(), distributed.get_rank()
