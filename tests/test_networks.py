"""The three networks of examples/networks.py (a residual-unit UNet with InstanceNorm + PReLU + Dropout,
a GroupNorm encoder-decoder with trilinear upsampling, a (2+1)-D video ResNet with adaptive pooling):
eager and compiled training against PyTorch running the same weights (examples/torch_networks.py),
compiled training that lowers the loss, and export through `lucid.runtime` against eager inference.

One small input shape per network, so the suite compiles few kernels. The comparisons with PyTorch
run ResidualUNet with dropout=0.0 (the two frameworks draw different masks); its dropout is checked
against lucid's own eager run, which draws the same masks after the same `manual_seed`.
"""
import numpy as np
import pytest

import lucid
import lucid.nn.functional as F
from networks import GroupNormUNet, R2Plus1dNet, ResidualUNet
from torch_networks import torch_networks


class Case:
    """A network at a small size, its batch and its labels (per voxel for the UNets, per clip for video)."""

    def __init__(self, network, options, shape, label_shape, classes):
        self.network, self.options, self.shape = network, options, shape
        rng = np.random.default_rng(3)
        self.images = rng.standard_normal(shape).astype(np.float32)
        self.labels = rng.integers(0, classes, label_shape)

    def build(self, **overrides):
        lucid.manual_seed(0)
        return self.network(**{**self.options, **overrides})

    def torch_twin(self, torch, model):
        """The PyTorch network with `model`'s parameters and buffers (loaded strictly)."""
        twin = torch_networks(torch)[self.network.__name__](**self.options)
        twin.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in model.state_dict().items()})
        return twin

    def loss(self, model):
        return F.cross_entropy(model(lucid.Tensor(self.images)), lucid.Tensor(self.labels))

    def torch_loss(self, torch, twin):
        return torch.nn.functional.cross_entropy(twin(torch.from_numpy(self.images)), torch.from_numpy(self.labels))


CASES = {
    "ResidualUNet": Case(ResidualUNet, dict(channels=(8, 16), dropout=0.0), (2, 1, 8, 8, 8), (2, 8, 8, 8), 2),
    "GroupNormUNet": Case(GroupNormUNet, dict(channels=(8, 16)), (2, 1, 8, 8, 8), (2, 8, 8, 8), 2),
    "R2Plus1dNet": Case(R2Plus1dNet, dict(widths=(8, 16)), (2, 3, 4, 16, 16), (2,), 5),
}
each_network = pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))


def assert_close(actual, expected, what, floor=0.0):
    """float32 agreement: rtol 1e-4, atol 1e-4 of the largest expected magnitude (at least `floor`)."""
    expected = np.asarray(expected)
    scale = max(float(np.abs(expected).max()), floor, 1e-30)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-4, atol=1e-4 * scale, err_msg=what)


def assert_gradients_close(actual: dict, expected: dict, what: str):
    """Each parameter's gradient as assert_close. The scale has a floor of 1e-2 of the largest gradient
    in the model: a conv bias before InstanceNorm or GroupNorm has an exact gradient of 0 (the norm
    removes any per-channel shift), so what both sides compute for it is rounding of sums of the
    large gradients around it."""
    assert set(actual) == set(expected)
    floor = 1e-2 * max(float(np.abs(g).max()) for g in expected.values())
    for name, gradient in expected.items():
        assert_close(actual[name], gradient, f"{what}: gradient of {name}", floor)


def gradients(model) -> dict:
    return {name: p.grad.numpy().copy() for name, p in model.named_parameters()}


def torch_gradients(twin) -> dict:
    return {name: p.grad.numpy().copy() for name, p in twin.named_parameters()}


def parameter_values(model) -> dict:
    return {name: p.numpy().copy() for name, p in model.named_parameters()}


def assert_steps_close(after: dict, expected_after: dict, before: dict):
    """Each parameter after one optimiser step: its change compared like gradients (assert_gradients_close:
    SGD's first step is -lr x gradient), plus one float32 rounding of the largest value on each side."""
    expected_changes = {name: expected_after[name] - value for name, value in before.items()}
    floor = 1e-2 * max(float(np.abs(change).max()) for change in expected_changes.values())
    for name, value in before.items():
        rounding = 2 * float(np.spacing(np.abs(value).max()))
        atol = 1e-4 * max(float(np.abs(expected_changes[name]).max()), floor) + rounding
        np.testing.assert_allclose(after[name], expected_after[name], rtol=0, atol=atol, err_msg=f"{name} after a step")


# =========================================================================== eager vs PyTorch
@each_network
def test_eager_training_and_inference_match_pytorch(case):
    torch = pytest.importorskip("torch")
    model = case.build()
    twin = case.torch_twin(torch, model)

    loss = case.loss(model.train())
    loss.backward()
    torch_loss = case.torch_loss(torch, twin.train())
    torch_loss.backward()
    assert_close(loss.item(), torch_loss.item(), "training loss")
    assert_gradients_close(gradients(model), torch_gradients(twin), "eager")
    torch_state = twin.state_dict()
    for name, value in model.state_dict().items():          # BatchNorm's running statistics
        assert_close(value, torch_state[name].numpy(), f"{name} after a training forward")

    with lucid.no_grad(), torch.no_grad():
        y = model.eval()(lucid.Tensor(case.images))
        ty = twin.eval()(torch.from_numpy(case.images))
    assert_close(y.numpy(), ty.numpy(), "eval-mode output")


# =========================================================================== compiled training
@pytest.mark.long_running
@each_network
def test_compiled_training_step_matches_eager_and_pytorch(case):
    torch = pytest.importorskip("torch")
    eager = case.build()
    eager_loss = case.loss(eager.train())
    eager_loss.backward()

    model = case.build().train()
    twin = case.torch_twin(torch, model)
    compiled = lucid.compile(model)
    loss = case.loss(compiled)
    loss.backward()
    assert compiled.stats()["traces"] == 1
    assert_close(loss.item(), eager_loss.item(), "compiled loss vs eager")
    assert_gradients_close(gradients(model), gradients(eager), "compiled vs eager")

    torch_loss = case.torch_loss(torch, twin.train())
    torch_loss.backward()
    assert_close(loss.item(), torch_loss.item(), "compiled loss vs PyTorch")
    assert_gradients_close(gradients(model), torch_gradients(twin), "compiled vs PyTorch")

    before = parameter_values(model)
    lucid.optim.SGD(model.parameters(), lr=0.01, momentum=0.9).step()
    torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9).step()
    torch_state = {name: value.numpy() for name, value in twin.state_dict().items()}
    assert_steps_close(parameter_values(model), torch_state, before)
    for name, value in model.named_buffers():                # running statistics
        assert_close(value.numpy(), torch_state[name], f"{name} after a training step")


@each_network
def test_compiled_adamw_steps_lower_the_loss(case):
    model = case.build().train()
    compiled = lucid.compile(model)
    optimizer = lucid.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = case.loss(compiled)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert compiled.stats()["traces"] == 1
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.9 * losses[0], losses


def test_compiled_training_with_dropout_is_reproducible():
    case = CASES["ResidualUNet"]

    def one_step(compiled: bool):
        model = case.build(dropout=0.1).train()
        lucid.manual_seed(5)
        loss = case.loss(lucid.compile(model) if compiled else model)
        loss.backward()
        return loss.item(), gradients(model)

    first_loss, first_gradients = one_step(compiled=True)
    second_loss, second_gradients = one_step(compiled=True)
    assert first_loss == second_loss
    for name, gradient in first_gradients.items():
        np.testing.assert_array_equal(second_gradients[name], gradient, err_msg=name)
    eager_loss, eager_gradients = one_step(compiled=False)          # the same masks, drawn eagerly
    np.testing.assert_allclose(first_loss, eager_loss, rtol=1e-4)
    assert_gradients_close(first_gradients, eager_gradients, "compiled vs eager with dropout")
    model = case.build(dropout=0.0).train()
    assert case.loss(model).item() != first_loss                 # the masks did drop something


# =========================================================================== export and lucid.runtime
@each_network
def test_exported_library_matches_eager_inference(case, tmp_path):
    model = case.build(**({"dropout": 0.1} if case.network is ResidualUNet else {}))
    case.loss(model.train())           # a training forward first: BatchNorm's running statistics move
    model.eval()
    files = lucid.export(model, lucid.spec(*case.shape), path=tmp_path / f"{case.network.__name__}.so")
    library = lucid.runtime.load(files.library)
    with lucid.no_grad():
        expected = model(lucid.Tensor(case.images)).numpy()
    assert_close(library(case.images), expected, "exported library vs eager")
    assert not model.training                                # export gave the module its mode back
