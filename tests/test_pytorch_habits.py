"""What a PyTorch user types first works in lucid: devices (the CPU only), `.to(...)`, `.cpu()`,
`.dim()`, `device=`/`dtype=` keywords, the grad-mode switches as decorators, and `lucid.stack`."""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn as nn
from lucid import DeviceError, DTypeError, ShapeError

# ----------------------------------------------------------------------------------------------
# Devices


def test_the_device_is_the_cpu_and_other_devices_are_refused_clearly():
    cpu = lucid.device("cpu")
    assert cpu == lucid.device() == lucid.device("cpu:0") == "cpu"
    assert repr(cpu) == "device(type='cpu')" and str(cpu) == "cpu" and cpu.type == "cpu"
    assert isinstance(cpu, lucid.device)
    for name in ("cuda", "cuda:0", "mps", "meta"):
        with pytest.raises(DeviceError, match=f"lucid runs on the CPU only; got device '{name}'"):
            lucid.device(name)
    assert issubclass(DeviceError, ValueError)


def test_a_torch_device_object_is_read_by_its_type():
    torch = pytest.importorskip("torch")
    assert lucid.randn(2).to(torch.device("cpu")).shape == (2,)
    with pytest.raises(DeviceError):
        lucid.randn(2).to(torch.device("meta"))


# ----------------------------------------------------------------------------------------------
# Tensor methods


def test_tensor_to_takes_pytorchs_forms():
    x = lucid.tensor([[1.5, 2.0, -3.0]])
    assert x.to("cpu") is x and x.cpu() is x and x.to(lucid.float32) is x
    assert x.to(lucid.device("cpu")) is x
    for converted in (x.to(lucid.float64), x.to("cpu", lucid.float64), x.to(device="cpu", dtype=lucid.float64),
                      x.to("float64"), x.to(np.float64), x.to(lucid.zeros(1, dtype=lucid.float64)),
                      x.to(dtype=lucid.float64, non_blocking=True), x.double()):
        assert converted.dtype == lucid.float64
        np.testing.assert_array_equal(converted.numpy(), x.numpy().astype(np.float64))
    assert x.to(lucid.int64).tolist() == [[1, 2, -3]]
    assert x.device == "cpu"


def test_tensor_to_another_device_or_a_bad_argument_is_refused():
    x = lucid.randn(2, 3)
    with pytest.raises(DeviceError, match="Tensor.to: lucid runs on the CPU only; got device 'cuda'"):
        x.to("cuda")
    with pytest.raises(DeviceError, match="'cuda:1'"):
        x.to(device="cuda:1", dtype=lucid.float64)
    with pytest.raises(DeviceError, match="Tensor.cuda"):
        x.cuda()
    with pytest.raises(TypeError, match="Tensor.to"):
        x.to(lucid.float64, copy=True, memory_format=None)


def test_the_gradient_flows_through_to():
    x = lucid.tensor([1.0, 2.0], requires_grad=True)
    (x.to(lucid.float64) * 3).sum().backward()
    assert x.grad.dtype == lucid.float32 and x.grad.tolist() == [3.0, 3.0]


def test_dim_ndimension_and_size():
    x = lucid.zeros(2, 3, 5)
    assert x.dim() == x.ndimension() == x.ndim == 3
    assert x.size() == (2, 3, 5) and x.size(1) == 3 and x.size(-1) == 5
    assert lucid.tensor(4.0).dim() == 0


def test_the_same_methods_work_while_tracing():
    def fn(x):
        assert x.dim() == 2 and x.ndimension() == 2 and x.size(-1) == 3 and x.device == "cpu"
        return x.cpu().to("cpu", lucid.float64) * 2

    x = lucid.randn(4, 3)
    graph = lucid.trace(fn, x)
    out = lucid.ir.run(graph, x.numpy())
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, fn(x).numpy())


# ----------------------------------------------------------------------------------------------
# device= and dtype= keywords


@pytest.mark.parametrize("make", [
    lambda d: lucid.zeros(2, 3, device=d), lambda d: lucid.ones(2, device=d), lambda d: lucid.full((2,), 1.0, device=d),
    lambda d: lucid.arange(3, device=d), lambda d: lucid.randn(2, device=d), lambda d: lucid.rand(2, device=d),
    lambda d: lucid.tensor([1.0], device=d), lambda d: lucid.zeros_like(lucid.ones(2), device=d),
    lambda d: lucid.ones_like(lucid.ones(2), device=d),
])
def test_creation_functions_take_device(make):
    assert make("cpu").device == "cpu"
    assert make(lucid.device("cpu")).device == "cpu"
    assert make(None).device == "cpu"
    with pytest.raises(DeviceError, match="lucid runs on the CPU only"):
        make("cuda")


@pytest.mark.parametrize("make", [
    lambda **kw: nn.Conv3d(2, 4, 3, **kw), lambda **kw: nn.ConvTranspose2d(2, 4, 3, **kw),
    lambda **kw: nn.LazyConv1d(4, 3, **kw), lambda **kw: nn.LazyConvTranspose3d(4, 3, **kw),
    lambda **kw: nn.Linear(3, 4, **kw), lambda **kw: nn.LazyLinear(4, **kw), lambda **kw: nn.BatchNorm2d(4, **kw),
])
def test_layers_take_device_and_dtype(make):
    layer = make(device="cpu", dtype=lucid.float64)
    if hasattr(layer, "materialize"):
        layer.materialize(2)
    elif getattr(layer, "in_features", 0) is None:
        layer(lucid.zeros(1, 3, dtype=lucid.float64))
    assert {t.dtype for t in layer.state_dict().values() if t.dtype.kind == "f"} == {np.dtype(np.float64)}
    with pytest.raises(DeviceError, match=f"{type(layer).__name__}: lucid runs on the CPU only; got device 'cuda'"):
        make(device="cuda")


# ----------------------------------------------------------------------------------------------
# Module.to / cpu


def small_model():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))


def test_module_to_cpu_returns_the_module_unchanged():
    model = small_model()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    assert model.to("cpu") is model and model.cpu() is model and model.to(device="cpu") is model
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
        assert value.dtype == before[key].dtype


@pytest.mark.parametrize("call", [
    lambda m: m.to(lucid.float64), lambda m: m.to("cpu", lucid.float64), lambda m: m.to(device="cpu", dtype="float64"),
    lambda m: m.to(lucid.zeros(1, dtype=lucid.float64)), lambda m: m.double(),
])
def test_module_to_a_dtype_converts_floating_state_keeping_the_tensors(call):
    model = small_model()
    params = list(model.parameters())
    assert call(model) is model
    assert list(model.parameters()) == params and all(a is b for a, b in zip(model.parameters(), params))
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    assert dtypes["1.num_batches_tracked"] == np.int64
    assert {d for k, d in dtypes.items() if k != "1.num_batches_tracked"} == {np.dtype(np.float64)}
    y = model(lucid.randn(2, 1, 5, 5, dtype=lucid.float64))     # the lazy layer is made in the new dtype
    assert y.dtype == lucid.float64 and model[4].weight.dtype == lucid.float64


def test_module_to_a_device_other_than_the_cpu_or_a_non_float_dtype_is_refused():
    model = small_model()
    with pytest.raises(DeviceError, match="Sequential.to: lucid runs on the CPU only; got device 'cuda'"):
        model.to("cuda")
    with pytest.raises(DeviceError, match="Sequential.cuda"):
        model.cuda()
    with pytest.raises(DTypeError, match="Sequential.to: expected a floating dtype, got int64"):
        model.to(lucid.int64)


# ----------------------------------------------------------------------------------------------
# Grad-mode switches


@pytest.mark.parametrize("switch", [lucid.no_grad, lucid.no_grad(), lucid.inference_mode, lucid.inference_mode()],
                         ids=["no_grad", "no_grad()", "inference_mode", "inference_mode()"])
def test_the_switches_that_stop_gradients_decorate_with_or_without_parentheses(switch):
    x = lucid.ones(2, requires_grad=True)

    @switch
    def double(t):
        """Doubles."""
        return t * 2

    assert not double(x).requires_grad
    assert double.__name__ == "double" and double.__doc__ == "Doubles."
    assert lucid.is_grad_enabled() and (x * 2).requires_grad


def test_a_decorated_function_restores_the_mode_through_recursion_and_exceptions():
    @lucid.enable_grad
    def inner():
        return lucid.is_grad_enabled()

    @lucid.no_grad
    def recurse(depth):
        assert not lucid.is_grad_enabled()
        assert inner()
        if depth:
            recurse(depth - 1)
        assert not lucid.is_grad_enabled()
        return depth

    recurse(3)
    assert lucid.is_grad_enabled()

    @lucid.no_grad
    def fails():
        raise KeyError("boom")

    with pytest.raises(KeyError):
        fails()
    assert lucid.is_grad_enabled()


def test_one_switch_object_can_be_entered_twice():
    switch = lucid.no_grad()
    with switch:
        with lucid.enable_grad():
            with switch:
                assert not lucid.is_grad_enabled()
            assert lucid.is_grad_enabled()
        assert not lucid.is_grad_enabled()
    assert lucid.is_grad_enabled()


def test_inference_mode_and_enable_grad():
    x = lucid.ones(2, requires_grad=True)
    with lucid.inference_mode():
        assert not (x * 2).requires_grad
        with lucid.enable_grad():
            assert (x * 2).requires_grad
    with lucid.inference_mode(False):
        assert (x * 2).requires_grad


# ----------------------------------------------------------------------------------------------
# lucid.stack


@pytest.mark.parametrize("shape, dim", [((), 0), ((3,), 0), ((3,), 1), ((3,), -1), ((2, 5), 1), ((2, 5), -3),
                                        ((3, 1, 4), 3)])
def test_stack_matches_numpy_and_its_gradient_slices_the_seed(shape, dim):
    arrays = [np.random.default_rng(i).standard_normal(shape) for i in range(3)]
    tensors = [lucid.tensor(a, requires_grad=True, dtype=lucid.float64) for a in arrays]
    out = lucid.stack(tensors, dim)
    expected = np.stack(arrays, dim)
    np.testing.assert_array_equal(out.numpy(), expected)
    seed = np.random.default_rng(9).standard_normal(expected.shape)
    out.backward(seed)
    for i, t in enumerate(tensors):
        np.testing.assert_array_equal(t.grad.numpy(), np.take(seed, i, axis=dim))


def test_stack_takes_axis_and_tuples():
    a, b = lucid.ones(2), lucid.zeros(2)
    assert lucid.stack((a, b), axis=1).tolist() == [[1.0, 0.0], [1.0, 0.0]]


def test_stack_traced_and_compiled():
    def fn(a, b):
        return lucid.stack([a, b * 2, a - b], dim=1).sum(-1)

    a, b = lucid.randn(3, 5, requires_grad=True), lucid.randn(3, 5, requires_grad=True)
    expected = np.stack([a.numpy(), 2 * b.numpy(), a.numpy() - b.numpy()], 1).sum(-1)
    np.testing.assert_allclose(lucid.ir.run(lucid.trace(fn, a, b), a.numpy(), b.numpy()), expected, atol=1e-5)
    compiled = lucid.compile(fn)(a, b)
    np.testing.assert_allclose(compiled.numpy(), expected, atol=1e-5)
    compiled.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), np.full((3, 5), 2.0), rtol=1e-6)
    np.testing.assert_allclose(b.grad.numpy(), np.full((3, 5), 1.0), rtol=1e-6)


@pytest.mark.parametrize("args, words", [
    (([],), ["stack", "non-empty"]),
    (([lucid.ones(2), lucid.ones(3)],), ["stack", "one shape", "(2,)", "(3,)"]),
    (([lucid.ones(2)], 2), ["stack", "dim 2", "out of range"]),
    (([lucid.ones(2)], -3), ["stack", "dim -3"]),
])
def test_stack_refuses_bad_input_clearly(args, words):
    with pytest.raises(ShapeError) as info:
        lucid.stack(*args)
    for word in words:
        assert word in str(info.value)


def test_softmax_methods_take_dim_as_a_keyword():
    x = np.random.default_rng(3).standard_normal((2, 5, 3)).astype(np.float32)
    t = lucid.Tensor(x)
    shifted = np.exp(x - x.max(axis=1, keepdims=True))
    expected = shifted / shifted.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(t.softmax(dim=1).numpy(), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(t.log_softmax(dim=1).numpy(), np.log(expected), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# PyTorch's dtype names and torch.utils.checkpoint, which model libraries use at import time


def test_pytorchs_dtype_names_are_lucids_dtypes():
    assert lucid.float is lucid.float32 and lucid.double is lucid.float64 and lucid.long is lucid.int64
    assert all(isinstance(t, lucid.dtype) for t in (lucid.float, lucid.double, lucid.long, lucid.bool_))
    assert lucid.zeros(2, dtype=lucid.double).numpy().dtype == np.float64
    assert lucid.tensor([1.5], dtype=lucid.float).numpy().dtype == np.float32
    assert lucid.tensor([3], dtype=lucid.long).numpy().dtype == np.int64


class _CheckpointedBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 3)

    def forward(self, x):
        from lucid.utils.checkpoint import checkpoint

        return checkpoint(lambda v, scale: (self.linear(v) * scale).tanh(), x, 2.0, use_reentrant=False)


@pytest.mark.parametrize("compiled", [False, True])
def test_checkpoint_gives_the_values_and_gradients_of_the_plain_call(compiled):
    rng = np.random.default_rng(5)
    block = _CheckpointedBlock()
    weight, bias = rng.standard_normal((3, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    block.load_state_dict({"linear.weight": weight, "linear.bias": bias})
    x = rng.standard_normal((4, 3)).astype(np.float32)
    run = lucid.compile(block) if compiled else block
    y = run(lucid.tensor(x))
    y.sum().backward()
    expected = np.tanh((x @ weight.T + bias) * 2.0)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-6)
    # d/dW sum(tanh(2(xW^T + b))) = (2 (1 - y^2))^T x
    np.testing.assert_allclose(block.linear.weight.grad.numpy(), (2 * (1 - expected**2)).T @ x, rtol=1e-4, atol=1e-5)


def test_as_tensor_returns_a_tensor_itself_so_in_place_initialisers_reach_it():
    weight = nn.Conv3d(2, 3, 3).weight
    assert lucid.as_tensor(weight) is weight and lucid.as_tensor(weight, dtype=lucid.float32) is weight
    nn.init.constant_(lucid.as_tensor(weight), 1.5)
    assert np.all(weight.numpy() == 1.5)
    converted = lucid.as_tensor(weight, dtype=lucid.float64)
    assert converted is not weight and converted.numpy().dtype == np.float64
    np.testing.assert_array_equal(lucid.as_tensor([[1, 2]]).numpy(), np.array([[1, 2]]))


@pytest.mark.parametrize("start, end, steps", [(0, 1, 5), (-2.5, 3.0, 7), (1, 1, 1), (0, 1, 0)])
def test_linspace_matches_numpy(start, end, steps):
    values = lucid.linspace(start, end, steps)
    assert values.dtype == lucid.float32
    np.testing.assert_allclose(values.numpy(), np.linspace(start, end, steps), rtol=1e-7)
    assert lucid.linspace(start, end, steps, dtype=lucid.float64).numpy().dtype == np.float64


def test_uniform_and_normal_fill_in_place_from_the_global_generator():
    parameter = nn.Linear(40, 50).weight
    with lucid.no_grad():
        lucid.manual_seed(7)
        assert parameter.uniform_(-0.5, 2.0) is parameter
        first = parameter.numpy().copy()
        lucid.manual_seed(7)
        parameter.uniform_(-0.5, 2.0)
    np.testing.assert_array_equal(parameter.numpy(), first)
    assert first.min() >= -0.5 and first.max() < 2.0 and abs(first.mean() - 0.75) < 0.05
    with lucid.no_grad():
        parameter.normal_(3.0, 0.5)
    assert abs(parameter.numpy().mean() - 3.0) < 0.05 and abs(parameter.numpy().std() - 0.5) < 0.05
    with pytest.raises(lucid.GradientError):
        parameter.normal_()


@pytest.mark.parametrize("indexing", ["ij", "xy"])
def test_meshgrid_matches_numpy_eager_and_compiled(indexing):
    rng = np.random.default_rng(2)
    a, b, c = (rng.standard_normal(n).astype(np.float32) for n in (2, 3, 4))
    expected = np.meshgrid(a, b, c, indexing=indexing)
    grids = lucid.meshgrid(lucid.tensor(a), lucid.tensor(b), lucid.tensor(c), indexing=indexing)
    for grid, want in zip(grids, expected):
        np.testing.assert_array_equal(grid.numpy(), want)
    weighted = lucid.compile(
        lambda x, y, z: sum(g * (k + 1) for k, g in enumerate(lucid.meshgrid([x, y, z], indexing=indexing))))
    np.testing.assert_allclose(weighted(lucid.tensor(a), lucid.tensor(b), lucid.tensor(c)).numpy(),
                               sum(g * (k + 1) for k, g in enumerate(expected)), rtol=1e-6)


def test_meshgrid_gradient_sums_over_the_broadcast_axes():
    x, y = lucid.tensor([1.0, 2.0], requires_grad=True), lucid.tensor([3.0, 4.0, 5.0], requires_grad=True)
    gx, gy = lucid.meshgrid(x, y, indexing="ij")
    (gx * gy).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [12.0, 12.0])     # sum of y, for each x
    np.testing.assert_allclose(y.grad.numpy(), [3.0, 3.0, 3.0])  # sum of x, for each y
