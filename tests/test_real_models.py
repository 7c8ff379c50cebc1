"""Real model code runs on lucid taken as its users have it: the INSTALLED sources of MONAI's UNet,
BasicUNet, SegResNet and DynUNet and torchvision's video r3d_18 and r2plus1d_18, rewritten torch ->
lucid at import (examples/real_models.py), are built, given the PyTorch model's weights by
`load_state_dict(strict=True)`, and must give PyTorch's outputs. Optional: each package's tests skip
when it is not installed.
"""
from __future__ import annotations

import numpy as np
import pytest

import lucid
from real_models import monai_networks, torchvision_video_resnets  # examples/real_models.py

torch = pytest.importorskip("torch")


def assert_same_outputs(make, real_module, lucid_module, shape):
    """`make(module)` built from both, the PyTorch weights loaded strictly, eval-mode outputs equal."""
    torch.manual_seed(0)
    reference = make(real_module).eval()
    model = make(lucid_module).eval()
    model.load_state_dict({k: lucid.tensor(v.numpy()) for k, v in reference.state_dict().items()}, strict=True)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(lucid.tensor(x)).numpy(), expected, rtol=1e-4,
                               atol=1e-5 * np.abs(expected).max())
    return model, reference, x


MONAI_NETWORKS = {
    "UNet": (lambda nets: nets.UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2),
                                    num_res_units=2), (2, 1, 16, 16, 16)),
    "BasicUNet": (lambda nets: nets.BasicUNet(spatial_dims=3, in_channels=1, out_channels=2,
                                              features=(4, 4, 8, 8, 16, 4), upsample="nontrainable"),
                  (1, 1, 32, 32, 32)),
    "SegResNet": (lambda nets: nets.SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=8,
                                              blocks_down=(1, 2, 2), blocks_up=(1, 1)), (1, 1, 16, 16, 16)),
    "DynUNet": (lambda nets: nets.DynUNet(spatial_dims=3, in_channels=1, out_channels=2, kernel_size=[3, 3, 3],
                                          strides=[1, 2, 2], upsample_kernel_size=[2, 2], filters=[4, 8, 16],
                                          res_block=True), (1, 1, 16, 16, 16)),
}


@pytest.fixture(scope="module")
def monai_pair():
    pytest.importorskip("monai")
    return monai_networks()


@pytest.mark.parametrize("name", MONAI_NETWORKS)
def test_monai_networks_match_pytorch(monai_pair, name):
    make, shape = MONAI_NETWORKS[name]
    assert_same_outputs(make, monai_pair[0], monai_pair[1], shape)


def test_monai_unet_compiled_training_step_matches_pytorch(monai_pair):
    make, shape = MONAI_NETWORKS["UNet"]
    model, reference, x = assert_same_outputs(make, monai_pair[0], monai_pair[1], shape)
    model.train(), reference.train()
    y = reference(torch.from_numpy(x))
    (y * y).mean().backward()
    compiled_y = lucid.compile(model)(lucid.tensor(x))
    np.testing.assert_allclose(compiled_y.numpy(), y.detach().numpy(), rtol=1e-4, atol=1e-5)
    (compiled_y * compiled_y).mean().backward()
    gradients = dict(model.named_parameters())
    scale = max(p.grad.abs().max().item() for p in reference.parameters())
    for name, parameter in reference.named_parameters():
        np.testing.assert_allclose(gradients[name].grad.numpy(), parameter.grad.numpy(), rtol=1e-3, atol=1e-4 * scale,
                                   err_msg=name)


@pytest.mark.parametrize("name", ["r3d_18", "r2plus1d_18"])
def test_torchvision_video_resnets_match_pytorch(name):
    try:
        real_resnets, lucid_resnets = torchvision_video_resnets()
    except Exception as error:    # not installed, or built for another torch (its operators fail to load)
        pytest.skip(f"torchvision does not import: {error}")
    assert_same_outputs(lambda m: getattr(m, name)(num_classes=5), real_resnets, lucid_resnets, (2, 3, 8, 32, 32))
