"""The project's own 3-D models (their PyTorch mirrors, examples/torch_models.py) exported with
`torch.onnx.export`, imported, run eagerly and compiled, and compared with PyTorch; plus a small
model of every norm and resampling PyTorch exports (GroupNorm comes out as Reshape /
InstanceNormalization / Shape arithmetic, which the import folds), and a dynamic batch fixed at import."""
import io
import warnings

import numpy as np
import pytest

from onnx_helpers import check     # skips the module without onnx

import onnx  # noqa: E402

torch = pytest.importorskip("torch")

from models import UNet3D, VideoClassifier  # noqa: E402
from networks import GroupNormUNet, R2Plus1dNet, ResidualUNet  # noqa: E402
from torch_models import torch_mirrors  # noqa: E402
from torch_networks import torch_networks  # noqa: E402

import lucid  # noqa: E402
import lucid.onnx  # noqa: E402


def exported(module, x: np.ndarray, opset: int = 17, dynamic_axes=None) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.from_numpy(x),), buffer, dynamo=False, opset_version=opset,
                          input_names=["image"], dynamic_axes=dynamic_axes)
    return buffer.getvalue()


def torch_output(module, x: np.ndarray):
    with torch.no_grad():
        y = module.eval()(torch.from_numpy(x))
    return tuple(t.numpy() for t in y) if isinstance(y, tuple) else y.numpy()


@pytest.mark.parametrize("model_class, kwargs, shape", [
    (UNet3D, dict(in_channels=1, out_channels=2, base=4, depth=2), (1, 1, 8, 8, 8)),
    (VideoClassifier, dict(in_channels=3, num_classes=5, width=4), (2, 3, 4, 16, 16)),
])
def test_project_models_round_trip_through_torch_onnx_export(model_class, kwargs, shape):
    torch.manual_seed(0)
    mirror = torch_mirrors(torch)[model_class.__name__](**kwargs)
    with torch.no_grad():          # statistics and affine parameters a trained model would have
        for module in mirror.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    graph = check(exported(mirror, x), [x], expected=[torch_output(mirror, x)], rtol=1e-4, atol=1e-4)
    assert {v.name for v in graph.params} <= set(graph.onnx_names)


@pytest.mark.parametrize("network, options, shape", [
    (ResidualUNet, dict(channels=(8, 16), dropout=0.0), (2, 1, 8, 8, 8)),
    (GroupNormUNet, dict(channels=(8, 16)), (2, 1, 8, 8, 8)),
    (R2Plus1dNet, dict(widths=(8, 16)), (2, 3, 4, 16, 16)),
], ids=["ResidualUNet", "GroupNormUNet", "R2Plus1dNet"])
def test_project_networks_round_trip_through_torch_onnx_export(network, options, shape):
    """examples/networks.py's PyTorch twins: PReLU, InstanceNorm, GroupNorm (its decomposed chain fused
    back), trilinear upsampling, adaptive pooling."""
    torch.manual_seed(0)
    twin = torch_networks(torch)[network.__name__](**options)
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    graph = check(exported(twin, x, opset=13), [x], expected=[torch_output(twin, x)], rtol=1e-4, atol=1e-4)
    assert {v.name for v in graph.params} <= set(graph.onnx_names)


class NormsAndResampling(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(2, 4, 3, padding=1)
        self.group = torch.nn.GroupNorm(2, 4)
        self.instance = torch.nn.InstanceNorm3d(4, affine=True)
        self.layer = torch.nn.LayerNorm(8)
        self.up = torch.nn.ConvTranspose3d(4, 2, 2, stride=2)

    def forward(self, x):
        x = torch.nn.functional.leaky_relu(self.group(self.conv(x)), 0.1)
        x = torch.nn.functional.gelu(self.instance(x))
        x = torch.nn.functional.interpolate(self.layer(x), scale_factor=2, mode="trilinear")
        x = torch.nn.functional.avg_pool3d(x, 2)
        y = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        return torch.cat([self.up(x), y[:, :2]], dim=1).flatten(2).softmax(-1)


def test_norms_and_resampling_exported_by_pytorch():
    torch.manual_seed(0)
    module = NormsAndResampling()
    x = np.random.default_rng(5).standard_normal((1, 2, 4, 8, 8)).astype(np.float32)
    check(exported(module, x, opset=18), [x], expected=[torch_output(module, x)], rtol=1e-4, atol=1e-5)


class ShapeArithmetic(torch.nn.Module):
    """Python shape arithmetic on a dynamic batch: PyTorch exports Shape / Gather / Concat chains."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(2, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        n, c, d, h, w = y.shape
        y = y.view(n, c, d * h, w).transpose(2, 3).reshape(n, -1, 2)
        z = torch.nn.functional.interpolate(x, size=(d * 2, h, w // 2), mode="nearest")
        return y.softmax(-1), z.flatten(1)[:, : c * 3]


def test_a_symbolic_batch_is_fixed_by_input_shapes_and_its_shape_arithmetic_folded():
    module = ShapeArithmetic()
    x = np.random.default_rng(6).standard_normal((3, 2, 2, 3, 4)).astype(np.float32)
    data = exported(module, x[:1], dynamic_axes={"image": {0: "batch"}})
    assert {"Shape", "Gather", "Concat"} <= {n.op_type for n in onnx.load_from_string(data).graph.node}
    with pytest.raises(ValueError, match="'image'.*symbolic.*batch"):
        lucid.onnx.load(data)
    graph = lucid.onnx.load(data, input_shapes={"image": x.shape})
    got, expected = lucid.ir.run(graph, x), torch_output(module, x)
    assert len(got) == len(expected) == 2
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
