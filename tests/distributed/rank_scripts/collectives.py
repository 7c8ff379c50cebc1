"""Run on N ranks: `collectives.py check` checks every collective against values each rank can compute
alone (rank r contributes r + 1...); `collectives.py raise` makes rank 1 raise while the others wait
in an all_reduce (the job must end with an error). Each rank asserts; the exit status says."""
import json
import sys

import numpy as np

import lucid
import lucid.distributed as dist


def expect_error(kind, words, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except kind as exc:
        assert all(w in str(exc) for w in words), str(exc)
        return
    raise AssertionError(f"{fn.__name__}{args} did not raise {kind.__name__}")


def check_all_reduce(rank, size):
    ranks = np.arange(1, size + 1, dtype=np.float64)
    t = lucid.Tensor([rank + 1.0, 2.0 * (rank + 1)])
    dist.all_reduce(t)
    np.testing.assert_array_equal(t.numpy(), np.float32([ranks.sum(), 2 * ranks.sum()]))
    assert t.dtype == lucid.float32
    for dtype in (np.float64, np.int64, np.int32, np.uint8):
        a = np.full((2, 3), rank + 1, dtype)
        dist.all_reduce(a)
        np.testing.assert_array_equal(a, np.full((2, 3), ranks.sum(), dtype))
    for op, expected in ((dist.ReduceOp.MAX, size), (dist.ReduceOp.MIN, 1),
                         (dist.ReduceOp.PRODUCT, np.prod(ranks)), (dist.ReduceOp.AVG, ranks.mean())):
        a = np.array([rank + 1.0])
        dist.all_reduce(a, op=op)
        np.testing.assert_allclose(a, [expected], rtol=1e-12)
    transposed = lucid.zeros(3, 2)
    transposed.data = (np.arange(6.0).reshape(2, 3) * (rank + 1)).T        # a non-contiguous view
    assert not transposed.data.flags.c_contiguous
    dist.all_reduce(transposed)
    np.testing.assert_array_equal(transposed.numpy(), np.arange(6.0).reshape(2, 3).T * ranks.sum())
    work = dist.all_reduce(a := np.array([float(rank)]), async_op=True)
    work.wait()
    assert work.is_completed() and a[0] == sum(range(size))


def check_broadcast_and_gather(rank, size):
    t = lucid.Tensor(np.full(4, float(rank)))
    dist.broadcast(t, src=size - 1)
    np.testing.assert_array_equal(t.numpy(), np.full(4, size - 1.0, np.float32))
    a = np.arange(3) * (rank + 1)
    dist.broadcast(a, src=0)
    np.testing.assert_array_equal(a, np.arange(3))
    outputs = [lucid.zeros(2, 2) for _ in range(size - 1)] + [np.zeros((2, 2), np.float32)]
    dist.all_gather(outputs, lucid.full((2, 2), float(rank)))
    for r, out in enumerate(outputs):
        np.testing.assert_array_equal(np.asarray(out), np.full((2, 2), float(r)))
    gathered = np.zeros((size * 2, 3), np.int64)
    dist.all_gather_into_tensor(gathered, np.full((2, 3), rank, np.int64))
    np.testing.assert_array_equal(gathered, np.repeat(np.arange(size), 2)[:, None] * np.ones((1, 3), np.int64))


def check_refusals(size):
    read_only = np.zeros(3)
    read_only.flags.writeable = False
    expect_error(ValueError, ["all_reduce", "non-contiguous"], dist.all_reduce, np.zeros((3, 4)).T)
    expect_error(ValueError, ["all_reduce", "read-only"], dist.all_reduce, read_only)
    expect_error(TypeError, ["all_reduce", "float16"], dist.all_reduce, np.zeros(3, np.float16))
    expect_error(TypeError, ["all_reduce", "list"], dist.all_reduce, [1.0, 2.0])
    expect_error(TypeError, ["all_reduce", "AVG"], dist.all_reduce, np.zeros(3, np.int64), op=dist.ReduceOp.AVG)
    expect_error(ValueError, ["all_gather", f"({size})", str(size + 1)], dist.all_gather,
                 [np.zeros(2) for _ in range(size + 1)], np.zeros(2))
    expect_error(ValueError, ["all_gather", "tensor_list[0]"], dist.all_gather,
                 [np.zeros(3) for _ in range(size)], np.zeros(2))
    expect_error(ValueError, ["broadcast", "src=7"], dist.broadcast, np.zeros(2), src=7)
    expect_error(ValueError, ["all_gather_into_tensor"], dist.all_gather_into_tensor, np.zeros(3), np.zeros(2))


def main(mode):
    assert not dist.is_initialized()
    expect_error(RuntimeError, ["get_rank", "init()"], dist.get_rank)
    dist.init()
    dist.init()                               # a second call does nothing
    rank, size = dist.get_rank(), dist.get_world_size()
    if mode == "raise":
        if rank == 1:
            raise RuntimeError("rank 1 fails on purpose")
        dist.all_reduce(np.zeros(1))          # never completes: rank 1 is gone
        return
    check_all_reduce(rank, size)
    check_broadcast_and_gather(rank, size)
    check_refusals(size)
    dist.barrier()
    print(json.dumps({"rank": rank, "size": size, "ok": True}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
