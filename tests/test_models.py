"""The example models of examples/models.py: output shapes, gradients, errors, lazy layers, and
parity with PyTorch mirrors (same module names, so lucid's state dict loads into them directly).
PyTorch comparisons use pytest.importorskip("torch") inside the test functions."""

import numpy as np
import pytest

import lucid
import lucid.nn as nn
from models import ConvAutoencoder3D, UNet3D, VideoClassifier
from torch_models import torch_mirrors

# The output shape each model gives for its example_shape(batch=2).
EXPECTED_OUTPUT = {
    UNet3D: (2, 2, 16, 16, 16),
    ConvAutoencoder3D: (2, 1, 8, 8, 8),
    VideoClassifier: (2, 5),
}
MODELS = list(EXPECTED_OUTPUT)


def build(model_class, **kwargs):
    lucid.manual_seed(0)
    return model_class(**kwargs)


def example_input(model_class, batch=2):
    lucid.manual_seed(1)
    return lucid.randn(*model_class.example_shape(batch))


def sum_of_squares(y):
    return (y * y).sum()


# =========================================================================== eager behaviour
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("model_class", MODELS, ids=lambda m: m.__name__)
def test_output_shape(model_class, training):
    model = build(model_class).train(training)
    y = model(example_input(model_class))
    assert y.shape == EXPECTED_OUTPUT[model_class]
    assert np.isfinite(y.numpy()).all()


@pytest.mark.parametrize("model_class", MODELS, ids=lambda m: m.__name__)
def test_backward_fills_every_parameter_grad(model_class):
    model = build(model_class).train()
    sum_of_squares(model(example_input(model_class))).backward()
    params = dict(model.named_parameters())  # after the call: lazy layers exist by now
    assert params
    missing = [name for name, p in params.items() if p.grad is None]
    assert not missing, f"parameters without grad: {missing}"
    assert all(p.grad.shape == p.shape for p in params.values())


def test_autoencoder_sigmoid_output_in_unit_interval():
    y = build(ConvAutoencoder3D)(example_input(ConvAutoencoder3D))
    assert ((y.numpy() > 0) & (y.numpy() < 1)).all()


def test_unet_configuration():
    model = build(UNet3D, in_channels=2, out_channels=3, base=4, depth=3, batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    assert len(model.down) == len(model.up) == len(model.decode) == 3
    assert model(lucid.randn(1, 2, 8, 8, 16)).shape == (1, 3, 8, 8, 16)


def test_unet_module_paths():
    names = dict(build(UNet3D).named_modules())
    assert isinstance(names["down.0.block.0"], nn.Conv3d)
    assert isinstance(names["down.0.block.1"], nn.BatchNorm3d)
    assert isinstance(names["up.0"], nn.ConvTranspose3d)
    assert isinstance(names["decode.1.block.3"], nn.Conv3d)
    assert isinstance(names["head"], nn.Conv3d)


@pytest.mark.parametrize("shape", [(1, 1, 16, 10, 16), (1, 1, 6, 8, 8), (1, 16, 16, 16)])
def test_unet_rejects_bad_input_shape(shape):
    with pytest.raises(lucid.ShapeError, match=r"UNet3D.*divisible by 4.*") as info:
        build(UNet3D)(lucid.randn(*shape))
    assert str(shape) in str(info.value)


def test_autoencoder_lazy_layers_resolve_in_channels():
    model = build(ConvAutoencoder3D, in_channels=2, base=4, latent=6)
    lazy = [m for m in model.modules() if isinstance(m, nn.LazyConvTranspose3d)]
    assert len(lazy) == 2
    assert all(m.in_channels is None and m.weight is None for m in lazy)
    y = model(lucid.randn(1, 2, 8, 8, 12))
    assert y.shape == (1, 2, 8, 8, 12)
    assert [m.in_channels for m in lazy] == [6, 4]
    assert [m.weight.shape for m in lazy] == [(6, 4, 4, 4, 4), (4, 2, 3, 3, 3)]


# =========================================================================== PyTorch parity
def assert_close(actual, expected, what):
    """float32 agreement: rtol 1e-4, atol 1e-4 relative to the largest expected magnitude."""
    expected = np.asarray(expected)
    scale = max(float(np.abs(expected).max()), 1.0)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-4, atol=1e-4 * scale, err_msg=what)


PARITY_CASES = [
    pytest.param(UNet3D, dict(in_channels=1, out_channels=2, base=4, depth=2), (2, 1, 8, 8, 8), id="UNet3D"),
    pytest.param(VideoClassifier, dict(in_channels=3, num_classes=5, width=4), (2, 3, 4, 16, 16),
                 id="VideoClassifier"),
]


@pytest.mark.parametrize("model_class, kwargs, shape", PARITY_CASES)
def test_pytorch_parity(model_class, kwargs, shape):
    torch = pytest.importorskip("torch")
    model = build(model_class, **kwargs)
    mirror = torch_mirrors(torch)[model_class.__name__](**kwargs)
    mirror.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})  # strict
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)

    # train mode: batch statistics, gradients of a sum-of-squares loss, running statistics updated
    y = model.train()(lucid.Tensor(x))
    sum_of_squares(y).backward()
    ty = mirror.train()(torch.from_numpy(x))
    (ty * ty).sum().backward()
    assert_close(y.numpy(), ty.detach().numpy(), "train-mode output")
    torch_params = dict(mirror.named_parameters())
    assert set(torch_params) == {name for name, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        assert_close(p.grad.numpy(), torch_params[name].grad.numpy(), f"grad of {name}")
    torch_state = mirror.state_dict()
    for name, value in model.state_dict().items():
        assert_close(value, torch_state[name].numpy(), f"state {name} after a training step")

    # eval mode: running statistics
    with lucid.no_grad(), torch.no_grad():
        y = model.eval()(lucid.Tensor(x))
        ty = mirror.eval()(torch.from_numpy(x))
    assert_close(y.numpy(), ty.numpy(), "eval-mode output")
