"""lucid.utils.data.DistributedSampler against the rule written out here: every rank gets the same
count; the ranks together read each index once when the length divides evenly; otherwise the order
is padded by repeating its start (or cut with drop_last); the order is a permutation that depends on
seed + epoch only. num_replicas and rank are passed explicitly, so no MPI is needed."""
import math
from collections import Counter

import pytest

import lucid
from lucid.utils.data import DistributedSampler


def shards(length, replicas, **options):
    return [list(DistributedSampler(length, num_replicas=replicas, rank=r, **options)) for r in range(replicas)]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("length, replicas", [(12, 3), (8, 2), (5, 1), (6, 6)])
def test_divisible_lengths_cover_every_index_exactly_once(length, replicas, shuffle):
    parts = shards(length, replicas, shuffle=shuffle)
    assert all(len(part) == length // replicas for part in parts)
    assert sorted(sum(parts, [])) == list(range(length))


def test_in_order_ranks_take_every_num_replicas_th_index():
    assert shards(7, 3, shuffle=False) == [[0, 3, 6], [1, 4, 0], [2, 5, 1]]      # padded with 0, 1
    assert shards(7, 3, shuffle=False, drop_last=True) == [[0, 3], [1, 4], [2, 5]]


@pytest.mark.parametrize("length, replicas", [(10, 4), (7, 3), (2, 5), (1, 4), (11, 2)])
def test_padding_repeats_the_orders_start_so_every_rank_gets_the_same_count(length, replicas):
    for seed in (0, 3):
        samplers = [DistributedSampler(length, num_replicas=replicas, rank=r, seed=seed) for r in range(replicas)]
        parts = [list(s) for s in samplers]
        expected_count = math.ceil(length / replicas)
        assert all(len(s) == len(part) == expected_count for s, part in zip(samplers, parts))
        order = [None] * (expected_count * replicas)          # rank r holds positions r, r + replicas, ...
        for rank, part in enumerate(parts):
            order[rank::replicas] = part
        assert sorted(order[:length]) == list(range(length))  # a permutation, then its start again
        assert order[length:] == [order[i % length] for i in range(expected_count * replicas - length)]


@pytest.mark.parametrize("length, replicas", [(10, 4), (7, 3), (3, 4)])
def test_drop_last_drops_the_tail_and_reads_no_index_twice(length, replicas):
    parts = shards(length, replicas, seed=1, drop_last=True)
    assert all(len(part) == length // replicas for part in parts)
    read = sum(parts, [])
    assert len(set(read)) == len(read) == length // replicas * replicas
    assert set(read) <= set(range(length))


def test_the_order_depends_on_seed_and_epoch_and_is_the_same_on_every_rank():
    def order(seed, epoch, replicas=2):
        parts = []
        for rank in range(replicas):
            sampler = DistributedSampler(100, num_replicas=replicas, rank=rank, seed=seed)
            sampler.set_epoch(epoch)
            parts.append(list(sampler))
        return parts

    assert order(0, 0) == order(0, 0)                         # reproducible: each rank computes it alone
    assert order(0, 0) != order(0, 1)                         # another epoch, another order
    assert order(0, 0) != order(5, 0)
    assert sorted(sum(order(0, 1), [])) == list(range(100))
    assert order(0, 0)[0] != list(range(0, 100, 2))           # shuffled


def test_set_epoch_changes_the_order_of_an_existing_sampler_and_not_its_length():
    sampler = DistributedSampler(list("abcdefghij"), num_replicas=3, rank=1, seed=7)
    first = list(sampler)
    assert list(sampler) == first                             # iterating twice: the same epoch
    sampler.set_epoch(1)
    assert list(sampler) != first and len(list(sampler)) == len(first) == 4


def test_the_length_comes_from_a_data_set_or_an_int():
    assert len(DistributedSampler(range(9), num_replicas=2, rank=0)) == 5
    assert len(DistributedSampler(9, num_replicas=2, rank=1, drop_last=True)) == 4
    assert list(DistributedSampler(0, num_replicas=2, rank=0)) == []
    assert Counter(sum(shards(0, 3), [])) == Counter()


@pytest.mark.parametrize("arguments, words", [
    (dict(num_replicas=2, rank=2), "rank must be below num_replicas (2), got 2"),
    (dict(num_replicas=2, rank=-1), "rank must be an int >= 0"),
    (dict(num_replicas=0, rank=0), "num_replicas must be an int >= 1"),
    (dict(num_replicas=2.0, rank=0), "num_replicas must be an int"),
    (dict(num_replicas=2, rank=0, seed=-1), "seed must be an int >= 0"),
])
def test_bad_arguments_raise_a_value_error_naming_the_sampler(arguments, words):
    with pytest.raises(ValueError, match="DistributedSampler") as info:
        DistributedSampler(10, **arguments)
    assert words in str(info.value)


def test_a_bad_data_set_or_epoch_is_refused():
    with pytest.raises(ValueError, match="DistributedSampler: a data set length must be >= 0"):
        DistributedSampler(-1, num_replicas=1, rank=0)
    with pytest.raises(TypeError, match="DistributedSampler: expected a data set"):
        DistributedSampler(object(), num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="DistributedSampler: epoch must be an int >= 0"):
        DistributedSampler(4, num_replicas=1, rank=0).set_epoch(-1)


def test_without_an_initialised_job_the_defaults_say_what_to_pass():
    with pytest.raises(ValueError, match="DistributedSampler: .*pass num_replicas and rank"):
        DistributedSampler(10)
    with pytest.raises(ValueError, match="DistributedSampler: .*pass num_replicas and rank"):
        DistributedSampler(10, num_replicas=2)


def test_reachable_as_in_pytorch():
    assert lucid.utils.data.DistributedSampler is DistributedSampler


def test_in_a_job_the_defaults_are_the_ranks_and_world_size():
    from mpi_jobs import run_ok

    [record] = run_ok(3, "sampler_defaults.py").records()
    expected = []
    for rank in range(3):
        sampler = DistributedSampler(10, num_replicas=3, rank=rank, seed=4)
        sampler.set_epoch(2)
        expected.append(list(sampler))
    assert record == {"replicas": 3, "indices": expected}
    assert set(sum(expected, [])) == set(range(10)) and all(len(e) == 4 for e in expected)
