"""`lucid.compile` (lucid/compiler.py) against eager execution, on the example models of
examples/models.py and on plain functions.

Checked: eval-mode outputs under `lucid.no_grad()`; training steps (outputs, every parameter gradient,
input gradients, BatchNorm running statistics) and a few SGD steps, starting compiled and eager
models from the same state dict; lazy layers resolved by compiling; one variant per call signature
(a new shape compiles again, a repeated one compiles nothing); bad inputs rejected with the layer's
error before any native code runs; tuple outputs and captured tensors of plain functions; thread
counts; and the reported scratch memory.

Every model is tiny (UNet3D(base=2, depth=1) on 1x1x8x8x8...) and each distinct graph is compiled once
per process at most: the disk cache (tests/conftest.py) serves repeats across tests and runs.
"""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
from lucid.codegen import jit
from lucid.codegen.build import SERIAL_FLOPS
from lucid.runtime.executable import Executable
from lucid.ir.cost import estimated_flops
from lucid.errors import DTypeError, LucidError, ShapeError
from lucid.optim import SGD
from lucid.passes import memory_planning
from model_helpers import randomise_batch_norm, run_in_threads
from models import ConvAutoencoder3D, UNet3D, VideoClassifier

MODELS = {
    "unet": (lambda: UNet3D(base=2, depth=1), (1, 1, 8, 8, 8)),
    "autoencoder": (lambda: ConvAutoencoder3D(base=2, latent=4), (1, 1, 8, 8, 8)),
    "video": (lambda: VideoClassifier(width=2), (2, 3, 2, 8, 8)),
}
#: Models whose training test also asks for the input's gradient (the UNet's training variant is the
#: most expensive graph here: it is compiled once, for an input that does not require grad).
INPUT_GRAD = {"unet": False, "autoencoder": True, "video": True}


# ============================================================================== helpers
def data(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def assert_close(actual, expected, what="", rtol=1e-4):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * 0.2 * scale, err_msg=what)


def counters() -> dict:
    return dict(jit.COUNTERS)


def builds_since(before: dict) -> int:
    """Object code compiled or loaded from the disk cache since `before`."""
    return sum(jit.COUNTERS[k] - before[k] for k in ("compiled", "loaded"))


def twins(name: str, training: bool, example=None, grad: bool | None = None):
    """(compiled, model, eager): a compiled model and an eager copy with the same state. The compiled
    model is prepared for `example` (a spec or Tensor; grad mode `grad`, default: on when training)
    first, which also resolves lazy layers."""
    make, shape = MODELS[name]
    lucid.manual_seed(11)
    model = make().train(training)
    with lucid.set_grad_enabled(training if grad is None else grad):
        compiled = lucid.compile(model, example if example is not None else lucid.spec(*shape))
    randomise_batch_norm(model)
    eager = make().train(training)
    eager.load_state_dict(model.state_dict())
    return compiled, model, eager


def assert_same_state(model, eager, what):
    for (name, a), (_, b) in zip(model.named_buffers(), eager.named_buffers(), strict=True):
        assert_close(a.numpy(), b.numpy(), f"{what}: buffer {name}", rtol=1e-5)
    for (name, a), (_, b) in zip(model.named_parameters(), eager.named_parameters(), strict=True):
        assert_close(a.numpy(), b.numpy(), f"{what}: parameter {name}", rtol=1e-5)


def loss_of(y, target):
    return ((y - target) * (y - target)).mean()


# ============================================================================== eval and training
@pytest.mark.parametrize("name", list(MODELS))
def test_eval_mode_matches_eager(name):
    shape = MODELS[name][1]
    with lucid.no_grad():
        compiled, model, eager = twins(name, training=False)
        assert len(compiled.variants) == 1                           # prepared by the spec
        before = counters()
        for seed in (1, 2):
            x = lucid.Tensor(data(shape, seed))
            y = compiled(x)
            assert isinstance(y, lucid.Tensor) and not y.requires_grad
            assert_close(y.numpy(), eager(x).numpy(), f"{name} eval output")
        assert builds_since(before) == 0 and len(compiled.variants) == 1
        assert_same_state(model, eager, name)                        # eval mode changes no state
        # NumPy arrays are accepted as inputs too
        assert_close(compiled(data(shape, 3)).numpy(), eager(lucid.Tensor(data(shape, 3))).numpy(), "ndarray input")


@pytest.mark.parametrize("name", list(MODELS))
def test_training_step_matches_eager(name):
    shape = MODELS[name][1]
    wants_input_grad = INPUT_GRAD[name]
    x_data = data(shape, 5)
    xc = lucid.Tensor(x_data, requires_grad=wants_input_grad)
    xe = lucid.Tensor(x_data, requires_grad=wants_input_grad)
    compiled, model, eager = twins(name, training=True, example=xc)
    assert_same_state(model, eager, "initial")

    yc, ye = compiled(xc), eager(xe)
    assert yc.requires_grad and yc.grad_fn is not None
    assert_close(yc.numpy(), ye.numpy(), f"{name} training output")
    target = lucid.Tensor(data(ye.shape, 6))
    loss_of(yc, target).backward()
    loss_of(ye, target).backward()

    grads_c, grads_e = dict(model.named_parameters()), dict(eager.named_parameters())
    assert list(grads_c) == list(grads_e) and grads_c
    missing = [n for n, p in grads_c.items() if p.grad is None]
    assert not missing, f"compiled backward left parameters without a gradient: {missing}"
    for n in grads_c:
        assert_close(grads_c[n].grad.numpy(), grads_e[n].grad.numpy(), f"{name} grad of {n}")
    if wants_input_grad:
        assert xc.grad is not None
        assert_close(xc.grad.numpy(), xe.grad.numpy(), f"{name} input grad")
    else:
        assert xc.grad is None
    # BatchNorm running statistics (and num_batches_tracked) moved exactly as in eager mode
    for n, b in model.named_buffers():
        if n.endswith("num_batches_tracked"):
            assert int(b.numpy()) == 4, n                       # randomise_batch_norm left 3
    assert_same_state(model, eager, f"{name} after a training step")
    assert len(compiled.variants) == 1


def test_sgd_steps_match_eager():
    """A few optimiser steps on the compiled UNet (weights change between calls, read at call time),
    with an eager term in the loss (weight decay written by hand) so that gradients from the compiled
    backward and from the eager tape accumulate into the same .grad."""
    shape = MODELS["unet"][1]
    compiled, model, eager = twins("unet", training=True)
    opt_c = SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt_e = SGD(eager.parameters(), lr=0.05, momentum=0.9)
    before = None
    for step in range(3):
        x = lucid.Tensor(data(shape, 20 + step))
        target = lucid.Tensor(data((1, 2, 8, 8, 8), 30 + step))
        for net, module, opt in ((compiled, model, opt_c), (eager, eager, opt_e)):
            opt.zero_grad()
            decay = sum((p * p).sum() for p in module.parameters()) * 1e-3
            (loss_of(net(x), target) + decay).backward()
            opt.step()
        assert_same_state(model, eager, f"after SGD step {step}")
        if step == 0:
            before = counters()
    assert builds_since(before) == 0 and len(compiled.variants) == 1
    assert int(dict(model.named_buffers())["down.0.block.1.num_batches_tracked"].numpy()) == 3 + 3


def test_lazy_layers_are_resolved_by_compiling():
    make, shape = MODELS["autoencoder"]
    lucid.manual_seed(4)
    model = make().eval()
    assert not [n for n, _ in model.named_parameters() if n.startswith("decoder")]
    with lucid.no_grad():
        compiled = lucid.compile(model, lucid.spec(*shape))
    params = dict(model.named_parameters())
    assert params["decoder.0.weight"].shape == (4, 2, 4, 4, 4)
    assert params["decoder.2.weight"].shape == (2, 1, 3, 3, 3)
    # the same seed resolved eagerly draws the same weights
    lucid.manual_seed(4)
    eager = make().eval()
    with lucid.no_grad():
        expected = eager(lucid.Tensor(data(shape))).numpy()
        got = compiled(lucid.Tensor(data(shape))).numpy()
    for (n, a), (_, b) in zip(model.state_dict().items(), eager.state_dict().items(), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=n)
    assert_close(got, expected, "lazy autoencoder")


def test_train_mode_without_grad_updates_running_stats_like_eager():
    compiled, model, eager = twins("video", training=True, grad=False)
    shape = MODELS["video"][1]
    with lucid.no_grad():
        for seed in (1, 2):
            x = lucid.Tensor(data(shape, seed))
            assert_close(compiled(x).numpy(), eager(x).numpy(), "train mode, no grad")
    assert_same_state(model, eager, "running statistics")
    assert int(dict(model.named_buffers())["stem.1.num_batches_tracked"].numpy()) == 3 + 2


@pytest.mark.parametrize("options", [dict(momentum=None), dict(track_running_stats=False), dict(affine=False, momentum=0.3)],
                         ids=["cumulative", "untracked", "not-affine"])
def test_batch_norm_options_match_eager(options):
    """Cumulative running averages (momentum=None reads num_batches_tracked), no running statistics,
    no affine parameters: three training steps, then eval."""
    def make():
        lucid.manual_seed(0)
        return nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.BatchNorm3d(3, **options), nn.ReLU())

    eager, model = make(), make()
    compiled = lucid.compile(model)
    for step in range(3):
        x = lucid.Tensor(data((2, 1, 4, 4, 4), step))
        ye, yc = eager(x), compiled(x)
        assert_close(yc.numpy(), ye.numpy(), f"step {step} output")
        (ye * ye).sum().backward()
        (yc * yc).sum().backward()
    scale = max(float(np.abs(p.grad.numpy()).max()) for p in eager.parameters())
    for (n, p), q in zip(eager.named_parameters(), model.parameters(), strict=True):
        # the conv bias before a BatchNorm has a zero gradient up to rounding: compare on the common scale
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-4, atol=1e-5 * scale, err_msg=n)
    for (n, a), (_, b) in zip(eager.state_dict().items(), model.state_dict().items(), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=n)
    with lucid.no_grad():
        eager.eval()
        model.eval()
        x = lucid.Tensor(data((2, 1, 4, 4, 4), 9))
        assert_close(compiled(x).numpy(), eager(x).numpy(), "eval after training")


# ============================================================================== variants
def test_new_shapes_compile_new_variants_and_same_shapes_reuse_them():
    with lucid.no_grad():
        compiled, model, eager = twins("unet", training=False)
        x1 = lucid.Tensor(data((1, 1, 8, 8, 8), 1))
        x2 = lucid.Tensor(data((2, 1, 8, 8, 16), 2))
        assert_close(compiled(x1).numpy(), eager(x1).numpy(), "first shape")
        before = counters()
        y2 = compiled(x2)
        assert y2.shape == (2, 2, 8, 8, 16)
        assert_close(y2.numpy(), eager(x2).numpy(), "second shape")
        assert len(compiled.variants) == 2 and builds_since(before) > 0
        before = counters()
        for x in (x1, x2, lucid.Tensor(data((2, 1, 8, 8, 16), 3))):
            assert_close(compiled(x).numpy(), eager(x).numpy(), "repeated shape")
        assert builds_since(before) == 0 and len(compiled.variants) == 2
    assert compiled.peak_scratch_bytes == max(v.peak_scratch_bytes for v in compiled.variants.values())


# ============================================================================== bad inputs
@pytest.fixture
def native_calls(monkeypatch):
    """Counts calls of compiled native code (Executable.__call__)."""
    calls = []
    original = Executable.__call__

    def counted(self, *args, **kwargs):
        calls.append(self.graph.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Executable, "__call__", counted)
    return calls


BAD_INPUTS = {
    "channels": (lambda: lucid.randn(1, 3, 8, 8, 8), ShapeError, "Conv3d 'down.0.block.0'"),
    "float64": (lambda: lucid.Tensor(np.zeros((1, 1, 8, 8, 8)), dtype=lucid.float64), DTypeError, "float64"),
    "float64-ndarray": (lambda: np.zeros((1, 1, 8, 8, 8), np.float64), DTypeError, "float64"),
    "int64-ndarray": (lambda: np.zeros((1, 1, 8, 8, 8), np.int64), DTypeError, "int64"),
    "list": (lambda: data((1, 1, 8, 8, 8)).tolist(), (DTypeError, TypeError), "list"),
    "float": (lambda: 1.0, (DTypeError, TypeError), "float"),
    "none": (lambda: None, (DTypeError, TypeError), "NoneType"),
    "spec": (lambda: lucid.spec(1, 1, 8, 8, 8), LucidError, "spec"),
    "rank": (lambda: lucid.randn(8, 8), ShapeError, "5-D"),
    "size": (lambda: lucid.randn(1, 1, 7, 8, 8), ShapeError, "divisible"),
}


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_bad_inputs_fail_before_native_code(training, native_calls):
    shape = MODELS["unet"][1]
    compiled, model, eager = twins("unet", training=training)
    good = lucid.Tensor(data(shape, 1))
    with lucid.set_grad_enabled(training):
        reference = compiled(good).numpy()
    state = model.state_dict()
    native_calls.clear()
    before = counters()
    for label, (make, error, fragment) in BAD_INPUTS.items():
        with pytest.raises(error) as info:
            with lucid.set_grad_enabled(training):
                compiled(make())
        assert fragment in str(info.value), f"{label}: {info.value}"
    with pytest.raises(TypeError):
        compiled(good, good)                                   # too many inputs
    with pytest.raises(TypeError):
        compiled()
    assert native_calls == [], "native code ran for a rejected input"
    assert builds_since(before) == 0 and len(compiled.variants) == 1
    for name, array in model.state_dict().items():             # no running statistic moved
        np.testing.assert_array_equal(array, state[name], err_msg=name)
    with lucid.set_grad_enabled(training):                     # still usable afterwards
        np.testing.assert_allclose(compiled(good).numpy(), reference, rtol=1e-5 if training else 0, atol=1e-6)


def test_bad_input_of_a_function_names_the_operator():
    def f(x, y):
        return x @ y

    compiled = lucid.compile(f)
    with pytest.raises(ShapeError, match="matmul"):
        compiled(lucid.randn(2, 3), lucid.randn(4, 5))
    assert compiled.variants == {}


# ============================================================================== plain functions
def conv_pair():
    lucid.manual_seed(8)
    w = lucid.randn(3, 2, 3, 3, 3, requires_grad=True)

    def f(x, y):
        h = F.conv3d(x, w, padding=1)
        return h.relu() * y, (h.tanh() + x.sum()).mean(dim=1)

    return f, w


def test_tuple_outputs_forward_and_backward():
    f, w = conv_pair()
    x_data, y_data = data((1, 2, 4, 4, 4), 1), data((1, 3, 4, 4, 4), 2)
    compiled = lucid.compile(f)
    results = {}
    for mode in ("compiled", "eager"):
        fn = compiled if mode == "compiled" else f
        w.grad = None
        x = lucid.Tensor(x_data, requires_grad=True)
        y = lucid.Tensor(y_data, requires_grad=True)
        a, b = fn(x, y)
        assert isinstance((a, b), tuple) and a.shape == (1, 3, 4, 4, 4) and b.shape == (1, 4, 4, 4)
        (a.sum() * 2.0 + (b * b).sum()).backward()           # through both outputs
        both = [a.numpy(), b.numpy(), x.grad.numpy(), y.grad.numpy(), w.grad.numpy()]
        w.grad = None
        x = lucid.Tensor(x_data, requires_grad=True)
        y = lucid.Tensor(y_data, requires_grad=True)
        _, b = fn(x, y)
        b.sum().backward()                                     # through one output only
        assert y.grad is None or not np.any(y.grad.numpy())
        results[mode] = both + [x.grad.numpy(), w.grad.numpy()]
    labels = ["out0", "out1", "x.grad", "y.grad", "w.grad", "x.grad (one output)", "w.grad (one output)"]
    for label, got, expected in zip(labels, results["compiled"], results["eager"], strict=True):
        assert_close(got, expected, label)
    with lucid.no_grad():            # served by the training variant's forward, without a new compile
        a, b = compiled(lucid.Tensor(x_data), lucid.Tensor(y_data))
    assert not a.requires_grad and not b.requires_grad
    assert_close(a.numpy(), results["eager"][0], "no-grad out0")
    assert len(compiled.variants) == 1 and compiled.stats()["traces"] == 1
    with lucid.no_grad():                                      # an inference variant returns a tuple too
        a, b = lucid.compile(f)(lucid.Tensor(x_data), lucid.Tensor(y_data))
    assert not a.requires_grad and not b.requires_grad
    assert_close(b.numpy(), results["eager"][1], "inference variant's out1")


def test_repeated_backwards_give_each_leaf_its_own_gradient():
    """Backwards through a compiled function whose two inputs get equal gradients, seeded with
    several scales and through either output: each leaf's `.grad` (which takes the compiled
    backward's array without a copy) must be its own array, so accumulating into or editing one
    leaves the other alone, and match eager mode."""
    def f(x, y):
        return x + y, (x * y).sum(dim=0)

    x_data, y_data = data((3, 4), 1), data((3, 4), 2)
    compiled = lucid.compile(f)
    results = {}
    for mode, fn in (("compiled", compiled), ("eager", f)):
        x, y = (lucid.Tensor(d, requires_grad=True) for d in (x_data, y_data))
        steps = []
        for scale in (1.0, 1.0, 3.0, -0.5):
            a, _ = fn(x, y)
            (a.sum() * scale).backward()
            steps.append((x.grad.numpy().copy(), y.grad.numpy().copy()))
        _, b = fn(x, y)
        b.sum().backward()
        steps.append((x.grad.numpy().copy(), y.grad.numpy().copy()))
        x.grad.data[...] = 0.0
        steps.append((x.grad.numpy().copy(), y.grad.numpy().copy()))
        results[mode] = steps
    assert np.allclose(results["eager"][3][0], 4.5) and not np.any(results["eager"][-1][0])
    for step, (got, expected) in enumerate(zip(results["compiled"], results["eager"], strict=True)):
        assert_close(got[0], expected[0], f"x.grad after step {step}")
        assert_close(got[1], expected[1], f"y.grad after step {step}")


def test_uniform_seeds_are_kept_dense_and_filled_again_when_they_change():
    """A compiled backward reads a uniform seed (the gradient of sum or mean) from a dense array kept
    per output (`compiler._UniformSeeds`): the same array while the value stays, a new one when it
    changes, none for a seed that is not uniform. The gradients match eager mode's every time,
    whatever the caller writes into the `.grad` it got."""
    w = lucid.Tensor(data((3, 2, 3, 3, 3), 3), requires_grad=True)

    def f(x):
        return F.conv3d(x, w, padding=1).relu()

    compiled = lucid.compile(f)
    x_data = data((1, 2, 5, 4, 3), 1)
    losses = {"sum": lambda y: y.sum(), "sum again": lambda y: y.sum(), "sum * -2.5": lambda y: y.sum() * -2.5,
              "mean": lambda y: y.mean(), "squares": lambda y: (y * y).sum()}
    kept = []
    for label, loss in losses.items():
        grads = {}
        for mode, fn in (("compiled", compiled), ("eager", f)):
            w.grad = None
            x = lucid.Tensor(x_data, requires_grad=True)
            loss(fn(x)).backward()
            grads[mode] = (x.grad.numpy().copy(), w.grad.numpy().copy())
            x.grad.data[...] = np.nan
            w.grad.data[...] = np.nan
        assert_close(grads["compiled"][0], grads["eager"][0], f"x.grad after {label}")
        assert_close(grads["compiled"][1], grads["eager"][1], f"w.grad after {label}")
        (training,) = compiled.variants.values()
        kept.append(training.uniform_seeds._kept[0])
    assert kept[0] is kept[1] and kept[2] is not kept[1] and kept[3] is not kept[2] and kept[4] is kept[3]
    np.testing.assert_array_equal(kept[3], np.full((1, 3, 5, 4, 3), np.float32(1 / 180)))


def test_function_of_a_tensor_requiring_grad_passed_as_input():
    def f(x, w):
        return (x * w).tanh() + w

    x_data, w_data = data((3, 4), 1), data((4,), 2)
    compiled = lucid.compile(f)
    grads = []
    for fn in (compiled, f):
        w = lucid.Tensor(w_data, requires_grad=True)
        y = fn(lucid.Tensor(x_data), w)
        (y * y).sum().backward()
        grads.append((y.numpy(), w.grad.numpy()))
    assert_close(grads[0][0], grads[1][0], "output")
    assert_close(grads[0][1], grads[1][1], "w.grad")


def test_one_tensor_passed_twice_and_non_contiguous_inputs():
    def f(a, b):
        return (a * b.exp()).tanh()

    compiled = lucid.compile(f)
    results = []
    for fn in (compiled, f):
        x = lucid.Tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), requires_grad=True)
        y = fn(x, x)                                     # both gradients accumulate into x.grad
        (y * y).sum().backward()
        results.append((y.numpy(), x.grad.numpy()))
    assert_close(results[0][0], results[1][0], "output")
    assert_close(results[0][1], results[1][1], "x.grad")
    base = data((4, 3), 1)
    views = (base.T, base.T[:, ::-1])                     # NumPy views that are not C-contiguous
    assert not views[0].flags.c_contiguous
    with lucid.no_grad():
        expected = f(*(lucid.Tensor(np.ascontiguousarray(v)) for v in views)).numpy()
        assert_close(compiled(*views).numpy(), expected, "non-contiguous arrays")
        transposed = lucid.Tensor(base).T
        assert_close(compiled(transposed, transposed).numpy(), f(transposed, transposed).numpy(), "Tensor.T")


def test_scalar_outputs_and_inputs():
    """0-d tensors: a scalar loss computed inside the compiled function (its seed is 0-d), a scalar
    input, and a scalar next to a tensor in a tuple."""
    x_data = data((5,), 1)
    x = lucid.Tensor(x_data, requires_grad=True)
    loss = lucid.compile(lambda v: (v * v).sum())(x)
    assert loss.shape == ()
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x_data, rtol=1e-6)

    def f(v, s):
        return v * s, (v * s).mean()

    compiled = lucid.compile(f)
    grads = []
    for fn in (compiled, f):
        v = lucid.Tensor(x_data, requires_grad=True)
        s = lucid.Tensor(np.float32(1.5), requires_grad=True)
        a, b = fn(v, s)
        assert b.shape == () and s.shape == ()
        (a.sum() + b * 3.0).backward()
        grads.append((a.numpy(), b.numpy(), v.grad.numpy(), s.grad.numpy()))
    for label, got, expected in zip(["a", "b", "v.grad", "s.grad"], *grads, strict=True):
        assert_close(got, expected, label)


def test_function_capturing_a_tensor_requiring_grad():
    w = lucid.Tensor(data((4,), 2), requires_grad=True)

    def f(x):
        return (x * w).relu()

    x = lucid.Tensor(data((3, 4), 1))
    y = lucid.compile(f)(x)
    assert y.requires_grad, "eager f(x) requires grad; the compiled result does not"
    y.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), (x.numpy() * (x.numpy() * w.numpy() > 0)).sum(0), rtol=1e-6)


def test_unfreezing_a_layer_after_compiling():
    lucid.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv3d(2, 1, 1))
    model[0].requires_grad_(False)
    compiled = lucid.compile(model)
    x = lucid.Tensor(data((1, 1, 4, 4, 4)))
    compiled(x).sum().backward()
    assert model[0].weight.grad is None and model[2].weight.grad is not None
    model[0].requires_grad_(True)
    compiled(x).sum().backward()
    assert model[0].weight.grad is not None, "unfrozen layer got no gradient from the compiled backward"


# ============================================================================== threads and memory
def unet_variants(training: bool):
    compiled, model, eager = twins("unet", training=training)
    (variant,) = compiled.variants.values()
    executables = [variant.forward, variant.backward] if training else [variant.executable]
    return compiled, model, executables


def test_thread_counts_give_identical_results(monkeypatch):
    shape = MODELS["unet"][1]
    compiled, model, executables = unet_variants(training=False)
    assert all(e.serial == (estimated_flops(e.graph) < SERIAL_FLOPS) for e in executables)
    for e in executables:
        e.serial = False                  # tiny graphs run on one thread unless told otherwise
    x = lucid.Tensor(data(shape, 3))
    outputs = {}
    with lucid.no_grad():
        for threads in ("1", "2", "3"):
            monkeypatch.setenv("LUCID_NUM_THREADS", threads)
            outputs[threads] = compiled(x).numpy()
    np.testing.assert_array_equal(outputs["1"], outputs["2"])
    np.testing.assert_array_equal(outputs["1"], outputs["3"])
    # an explicit thread count (more threads than work items in some kernels)
    (executable,) = executables
    for threads in (1, 2, 7):
        np.testing.assert_array_equal(executable(x.numpy(), threads=threads)[0], outputs["1"])


def test_thread_counts_give_identical_gradients(monkeypatch):
    shape = MODELS["unet"][1]
    results = {}
    for threads in ("1", "2"):
        monkeypatch.setenv("LUCID_NUM_THREADS", threads)
        compiled, model, executables = unet_variants(training=True)
        for e in executables:
            e.serial = False
        y = compiled(lucid.Tensor(data(shape, 4)))
        (y * y).sum().backward()
        results[threads] = [y.numpy()] + [p.grad.numpy() for p in model.parameters()] + \
                           [b.numpy() for b in model.buffers()]
    for a, b in zip(results["1"], results["2"], strict=True):
        np.testing.assert_array_equal(a, b)


def intermediate_bytes(graph, alignment: int = 1) -> int:
    """The bytes of every intermediate, each rounded up to a multiple of `alignment`."""
    outputs = set(graph.outputs)
    return sum(-(-n.output.type.size * n.output.dtype.numpy.itemsize // alignment) * alignment
               for n in graph.nodes if not n.is_constant and n.output not in outputs)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_peak_scratch_bytes(training):
    compiled, model, executables = unet_variants(training)
    (variant,) = compiled.variants.values()
    peak = compiled.peak_scratch_bytes
    assert peak == variant.peak_scratch_bytes == max(e.peak_scratch_bytes for e in executables)
    assert peak > 0
    for e in executables:
        assert e.peak_scratch_bytes == e.plan.arena_bytes + e.workspace_bytes
        assert 0 < e.plan.arena_bytes <= intermediate_bytes(e.graph, memory_planning.ALIGNMENT)
    # reuse by liveness: far less than every intermediate of the traced graph (or of the joint
    # forward + backward graph) held at once
    if training:
        split = variant.split
        total = intermediate_bytes(split.forward) + intermediate_bytes(split.backward)
    else:
        total = intermediate_bytes(variant.graph)
    assert peak < total, (peak, total)


def test_concurrent_calls_from_python_threads():
    shape = MODELS["unet"][1]
    compiled, model, eager = twins("unet", training=False)
    xs = [lucid.Tensor(data(shape, seed)) for seed in range(4)]
    with lucid.no_grad():
        expected = [compiled(x).numpy() for x in xs]
    wrong = []

    def work(k):
        with lucid.no_grad():
            for _ in range(150):
                if not np.array_equal(compiled(xs[k]).numpy(), expected[k]):
                    wrong.append(k)

    run_in_threads(work, 4)
    assert not wrong, f"{len(wrong)} of 600 concurrent calls returned another call's results"
