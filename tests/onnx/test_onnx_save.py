"""`lucid.onnx.save`: lucid models written as ONNX run in ONNX Runtime with lucid's eager outputs, and
read back by `lucid.onnx.load` to the same outputs."""
import numpy as np
import pytest

from onnx_helpers import reference

from models import ConvAutoencoder3D, UNet3D, VideoClassifier
from networks import GroupNormUNet, R2Plus1dNet, ResidualUNet

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
import lucid.onnx
from lucid.errors import OnnxError


class EveryActivation(nn.Module):
    """Activations, norms, resampling, padding and pooling of the real-models issue in one model."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, padding_mode="reflect")
        self.group = nn.GroupNorm(3, 6)
        self.instance = nn.InstanceNorm2d(6, affine=True)
        self.layer = nn.LayerNorm(8)
        self.prelu = nn.PReLU(6)
        self.up = nn.ConvTranspose2d(6, 4, 2, stride=2)
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        x = self.prelu(self.group(self.conv(x)))
        x = F.silu(x) + F.mish(x) - F.hardswish(x) * F.hardsigmoid(x) + F.selu(x) + F.celu(x, 0.5)
        x = F.gelu(self.instance(x), approximate="tanh") + F.gelu(x) + F.softplus(x, beta=2.0) + F.elu(x, 0.3)
        x = F.leaky_relu(self.layer(x), 0.1) + F.relu6(x) + x.clamp(-0.5, 0.5) + F.tanh(x) * F.sigmoid(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear") + F.interpolate(x, size=(16, 16), mode="nearest")
        x = F.avg_pool2d(F.max_pool2d(x, 2, ceil_mode=True), 3, stride=1, padding=1, count_include_pad=False)
        x = F.pad(self.up(x), (1, 0, 0, 1), mode="replicate")
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return F.log_softmax(self.linear(x), dim=1), F.softmax(x.exp().sqrt().abs(), dim=-1)


@pytest.mark.parametrize("make, shape", [
    (lambda: UNet3D(base=2), (1, 1, 8, 8, 8)),
    (ConvAutoencoder3D, ConvAutoencoder3D.example_shape()),
    (lambda: VideoClassifier(in_channels=3, num_classes=5, width=4), (2, 3, 4, 16, 16)),
    (EveryActivation, (2, 3, 8, 8)),
    (lambda: ResidualUNet(channels=(8, 16)), (2, 1, 8, 8, 8)),
    (lambda: GroupNormUNet(channels=(8, 16)), (2, 1, 8, 8, 8)),
    (lambda: R2Plus1dNet(widths=(8, 16)), (2, 3, 4, 16, 16)),
], ids=["UNet3D", "ConvAutoencoder3D", "VideoClassifier", "EveryActivation", "ResidualUNet", "GroupNormUNet",
        "R2Plus1dNet"])
def test_saved_models_run_in_onnxruntime_and_load_back(make, shape, tmp_path):
    lucid.manual_seed(0)
    model = make().eval()
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    path = tmp_path / "model.onnx"
    lucid.onnx.save(model, lucid.spec(*shape), path=path)
    with lucid.no_grad():
        expected = model(lucid.tensor(x))
    expected = [t.numpy() for t in expected] if isinstance(expected, tuple) else [expected.numpy()]
    data = path.read_bytes()
    assert len(reference(data, [x])) == len(expected)
    for got, want in zip(reference(data, [x]), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    back = lucid.ir.run(lucid.onnx.load(str(path)), x)
    for got, want in zip(back if isinstance(back, tuple) else (back,), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert model.training is False


def test_a_graph_is_saved_as_it_is_and_training_state_is_refused(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    graph = lucid.trace(model.eval(), lucid.spec(1, 1, 5, 5))
    lucid.onnx.save(graph, path=tmp_path / "g.onnx")
    x = np.random.default_rng(1).standard_normal((1, 1, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(reference((tmp_path / "g.onnx").read_bytes(), [x])[0], lucid.ir.run(graph, x),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(OnnxError, match="updates state"):
        lucid.onnx.save(lucid.trace(model.train(), lucid.spec(2, 1, 5, 5)), path=tmp_path / "t.onnx")
    with pytest.raises(OnnxError, match="divisor_override"):
        lucid.onnx.save(lambda x: F.avg_pool2d(x, 2, divisor_override=3), lucid.spec(1, 1, 4, 4),
                        path=tmp_path / "d.onnx")


def test_batch_statistics_are_saved_as_reductions_over_their_axes(tmp_path):
    """F.batch_norm with batch statistics is `moments` over (N, H, W): ONNX Runtime's result equals
    a float64 NumPy batch norm."""
    path = tmp_path / "bn.onnx"
    lucid.onnx.save(lambda x: F.batch_norm(x, None, None, training=True, eps=1e-3), lucid.spec(2, 3, 4, 5), path=path)
    x = np.random.default_rng(2).normal(1.5, 2.0, (2, 3, 4, 5)).astype(np.float32)
    x64 = x.astype(np.float64)
    mean, var = x64.mean((0, 2, 3), keepdims=True), x64.var((0, 2, 3), keepdims=True)
    np.testing.assert_allclose(reference(path.read_bytes(), [x])[0], (x64 - mean) / np.sqrt(var + 1e-3),
                               rtol=1e-4, atol=1e-5)


def test_an_asymmetric_linear_resampling_is_saved_as_the_resize_it_was_imported_from(tmp_path):
    from lucid.ir import ops

    upsample = lambda x: ops.resample(x, axis=2, size=7, mode="linear-asymmetric", scale=0.4)
    lucid.onnx.save(upsample, lucid.spec(1, 2, 3), path=tmp_path / "r.onnx")
    x = np.random.default_rng(2).standard_normal((1, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(reference((tmp_path / "r.onnx").read_bytes(), [x])[0],
                               lucid.ir.run(lucid.trace(upsample, lucid.spec(1, 2, 3)), x), rtol=1e-5, atol=1e-6)
