"""SyncBatchNorm's global statistics and its synchronised path, in one process: the sums over ranks
are replaced by the identity (a world whose other ranks contribute nothing), so the synchronised path
must give BatchNorm's results exactly as far as float64 statistics allow. The multi-rank runs are in
test_training.py."""
import numpy as np
import pytest

import lucid
import lucid.nn as nn
from lucid import distributed
from lucid.nn.modules.syncbatchnorm import global_statistics


@pytest.fixture
def one_rank_pretending_two(monkeypatch):
    monkeypatch.setattr(distributed, "all_reduce", lambda array, *args, **kwargs: array)
    monkeypatch.setattr(distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed, "get_world_size", lambda: 2)


def test_global_statistics_are_two_pass_in_float64(one_rank_pretending_two):
    rng = np.random.default_rng(0)
    # far from zero: E[x^2] - E[x]^2 in float32 would lose every digit of the variance
    x = (1e3 + rng.standard_normal((4, 3, 5, 6)) * [[[[1e-2]], [[1.0]], [[10.0]]]]).astype(np.float32)
    mean, var, count = global_statistics(lucid.Tensor(x))
    reference = x.astype(np.float64)
    assert count == 4 * 5 * 6
    np.testing.assert_allclose(mean.numpy(), reference.mean(axis=(0, 2, 3)), rtol=1e-7)
    np.testing.assert_allclose(var.numpy(), reference.var(axis=(0, 2, 3)), rtol=1e-4)


def test_synchronised_path_equals_batch_norm_with_its_gradients(one_rank_pretending_two):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5, 2, 3)).astype(np.float32) * 2 + 0.5
    g = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for layer in (nn.SyncBatchNorm(4), nn.BatchNorm3d(4)):
        lucid.manual_seed(0)
        layer.weight.data[...] = rng.standard_normal(4)
        layer.bias.data[...] = rng.standard_normal(4)
        if results:
            layer.weight.data[...], layer.bias.data[...] = results[0][4], results[0][5]
        xt = lucid.Tensor(x, requires_grad=True)
        (layer(xt) * lucid.Tensor(g)).sum().backward()
        results.append((layer(lucid.Tensor(x)).numpy(), xt.grad.numpy(), layer.weight.grad.numpy(),
                        layer.running_var.numpy(), layer.weight.numpy().copy(), layer.bias.numpy().copy()))
    for got, expected in zip(results[0][:4], results[1][:4]):
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)
