"""The module paths PyTorch code reaches into (torch.nn.modules.X, torch.nn.modules.conv.Conv3d,
torch.nn.parameter.Parameter), and SyncBatchNorm: a BatchNorm of any rank in one process."""
import numpy as np
import pytest

import lucid
from lucid import nn


def test_every_layer_class_is_also_under_nn_modules():
    layers = {name: value for name, value in vars(nn).items()
              if isinstance(value, type) and issubclass(value, nn.Module) and value is not nn.Module}
    assert {"Conv3d", "BatchNorm3d", "SyncBatchNorm", "Sequential"} <= set(layers)
    for name, cls in layers.items():
        assert getattr(nn.modules, name) is cls, name
    assert nn.modules.conv.Conv3d is nn.Conv3d and nn.modules.batchnorm.BatchNorm3d is nn.BatchNorm3d
    assert nn.modules.batchnorm.SyncBatchNorm is nn.SyncBatchNorm
    assert nn.parameter.Parameter is nn.Parameter


@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 5), (2, 3, 4, 5), (2, 3, 2, 3, 4), (2, 3, 2, 2, 2, 2)])
def test_sync_batch_norm_is_batch_norm_over_any_rank(shape):
    x = lucid.tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    layer = nn.SyncBatchNorm(3, momentum=0.2)
    out = layer(x).data
    axes = (0,) + tuple(range(2, len(shape)))
    want = (x.data - x.data.mean(axes, keepdims=True)) / np.sqrt(x.data.var(axes, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.running_mean.data, 0.2 * x.data.mean(axes), rtol=1e-5, atol=1e-7)
    with pytest.raises(lucid.ShapeError, match="rank >= 2 with 3 channels"):
        layer(lucid.zeros(4, 2))


def test_convert_sync_batchnorm_keeps_the_tensors():
    model = nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2), nn.Sequential(nn.BatchNorm1d(2, affine=False)))
    model.eval()
    weight, running = model[1].weight, model[1].running_mean
    keys = list(model.state_dict())
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert converted is model and type(model[1]) is nn.SyncBatchNorm and type(model[2][0]) is nn.SyncBatchNorm
    assert model[1].weight is weight and model[1].running_mean is running and not model[1].training
    assert model[2][0].weight is None and list(model.state_dict()) == keys
    single = nn.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm2d(4))
    assert type(single) is nn.SyncBatchNorm and single.num_features == 4


def test_sync_batch_norm_state_dict_keys_equal_torch():
    torch = pytest.importorskip("torch")
    assert list(nn.SyncBatchNorm(3).state_dict()) == list(torch.nn.SyncBatchNorm(3).state_dict())
    ours = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)))
    theirs = torch.nn.SyncBatchNorm.convert_sync_batchnorm(
        torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2)))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert type(theirs[1]).__name__ == type(ours[1]).__name__
