"""What `lucid.compile`'s object re-checks and how it behaves as a module (lucid/compiler.py, lucid/guard.py).

Checked:
- a replaced parameter, submodule or buffer is used by the next call, in eager mode, compiled
  inference and compiled training (outputs and the new tensors' `.grad` against the NumPy oracle of
  tests/oracle.py; the old tensors' `.grad` untouched); in-place updates (optimiser steps,
  `load_state_dict`, `p.data = ...` of the same shape) re-trace nothing, yet are seen; flags flipped
  and arrays swapped on every call refresh the guard in place, never remaking it;
- the guard's cost per call on the seed's small transposed conv (under 2 us);
- an executable given unknown parameter names refuses them;
- the compiled module passes attributes, parameters, state dicts and train/eval through, can be saved
  and traced; a compiled function stays a plain callable;
- a call without gradients on a signature compiled for training compiles nothing (`stats()`), and
  each trace and compile is logged with its reason.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import oracle
from lucid.codegen import jit
from lucid.errors import GraphError
from lucid.guard import Snapshot

SHAPE = (1, 1, 4, 4, 4)


class Net(nn.Module):
    """conv -> BatchNorm -> ReLU -> 2x transposed conv, small enough to compile in seconds."""

    def __init__(self):
        super().__init__()
        self.block = nn.Conv3d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm3d(2)
        self.up = nn.ConvTranspose3d(2, 1, 2, stride=2)

    def forward(self, x):
        return self.up(self.bn(self.block(x)).relu())


def data(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def make_net(training: bool) -> Net:
    lucid.manual_seed(3)
    net = Net().train(training)
    net.bn.running_mean.data[...] = data(2, 20) * 0.1
    net.bn.running_var.data[...] = 1.0 + np.abs(data(2, 21))
    return net


def expected(net: Net, x: np.ndarray, seed: np.ndarray) -> dict:
    """The oracle's output and parameter gradients of sum(net(x) * seed), from the module's current
    tensors (float64; eval-mode BatchNorm uses the running statistics, training mode the batch's)."""
    p = {name: t.numpy().astype(np.float64) for name, t in list(net.named_parameters()) + list(net.named_buffers())}
    h = oracle.conv_nd(x, p["block.weight"], p["block.bias"], padding=1)
    if net.training:
        mean, var = h.mean(axis=(0, 2, 3, 4)), h.var(axis=(0, 2, 3, 4))
    else:
        mean, var = p["bn.running_mean"], p["bn.running_var"]
    inv = 1.0 / np.sqrt(var + net.bn.eps)
    normal = (h - mean[:, None, None, None]) * inv[:, None, None, None]
    z = normal * p["bn.weight"][:, None, None, None] + p["bn.bias"][:, None, None, None]
    r = np.maximum(z, 0.0)
    y = oracle.conv_transpose_nd(r, p["up.weight"], p["up.bias"], stride=2)
    grad_r, grad_up_w, grad_up_b = oracle.conv_transpose_nd_vjp(seed, r, p["up.weight"], p["up.bias"], stride=2)
    grad_z = grad_r * (z > 0)
    grad_normal = grad_z * p["bn.weight"][:, None, None, None]
    axes = (0, 2, 3, 4)
    if net.training:        # through the batch statistics
        grad_h = inv[:, None, None, None] * (grad_normal - grad_normal.mean(axis=axes)[:, None, None, None]
                                             - normal * (grad_normal * normal).mean(axis=axes)[:, None, None, None])
    else:
        grad_h = grad_normal * inv[:, None, None, None]
    _, grad_block_w, grad_block_b = oracle.conv_nd_vjp(grad_h, x, p["block.weight"], p["block.bias"], padding=1)
    return {"output": y, "up.weight": grad_up_w, "up.bias": grad_up_b, "block.weight": grad_block_w,
            "block.bias": grad_block_b, "bn.weight": (grad_z * normal).sum(axis=axes), "bn.bias": grad_z.sum(axis=axes)}


def close(actual, wanted, what):
    np.testing.assert_allclose(np.asarray(actual, np.float64), wanted, rtol=2e-4,
                               atol=2e-5 * max(1.0, float(np.abs(wanted).max())), err_msg=what)


def run(fn, net: Net, form: str, x: np.ndarray, seed: np.ndarray):
    """One call of `fn` in `form` ("eager", "inference" or "training"), checked against the oracle."""
    wanted = expected(net, x, seed)
    if form == "inference":
        with lucid.no_grad():
            close(fn(lucid.Tensor(x)).numpy(), wanted["output"], "inference output")
        return
    net.zero_grad()
    y = fn(lucid.Tensor(x))
    close(y.numpy(), wanted["output"], f"{form} output")
    (y * lucid.Tensor(seed)).sum().backward()
    for name, p in net.named_parameters():
        close(p.grad.numpy(), wanted[name], f"{form} gradient of {name}")


def replace_parameter(net: Net) -> list:
    old = net.up.weight
    net.up.weight = nn.Parameter(data(old.shape, 30))
    return [old]


def replace_submodule(net: Net) -> list:
    old = net.block
    lucid.manual_seed(31)
    net.block = nn.Conv3d(1, 2, 3, padding=1)
    return [old.weight, old.bias]


@pytest.mark.parametrize("replace", [replace_parameter, replace_submodule], ids=["parameter", "submodule"])
@pytest.mark.parametrize("form", ["eager", "inference", "training"])
def test_a_replaced_tensor_is_used_by_the_next_call(replace, form):
    net = make_net(training=form == "training")
    fn = net if form == "eager" else lucid.compile(net)
    x, seed = data(SHAPE, 1), data((1, 1, 8, 8, 8), 2)
    run(fn, net, form, x, seed)
    old_grads = {id(p): None if p.grad is None else p.grad.numpy().copy() for p in net.parameters()}
    old_tensors = replace(net)
    assert all(net_p is not old for net_p in net.parameters() for old in old_tensors)
    run(fn, net, form, x, seed)                      # the oracle reads the new tensors
    for old in old_tensors:                          # the old ones' .grad is as the first call left it
        before = old_grads[id(old)]
        assert (old.grad is None) if before is None else np.array_equal(old.grad.numpy(), before)
    if form != "eager":
        assert fn.stats()["traces"] == 2


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_a_replaced_buffer_is_used_and_updated(training):
    net = make_net(training)
    fast = lucid.compile(net)
    x = data(SHAPE, 4)
    with lucid.no_grad():
        fast(lucid.Tensor(x))
    old_mean = net.bn.running_mean
    before = old_mean.numpy().copy()
    net.bn.running_mean = lucid.Tensor(data(2, 40))                 # a new buffer (nn.Module.__setattr__)
    new_mean = net.bn.running_mean.numpy().copy()
    with lucid.no_grad():
        if training:
            fast(lucid.Tensor(x))
            h = oracle.conv_nd(x, net.block.weight.numpy(), net.block.bias.numpy(), padding=1)
            close(net.bn.running_mean.numpy(), 0.9 * new_mean + 0.1 * h.mean(axis=(0, 2, 3, 4)), "updated running_mean")
        else:
            close(fast(lucid.Tensor(x)).numpy(), expected(net, x, np.zeros((1, 1, 8, 8, 8)))["output"], "output")
    np.testing.assert_array_equal(old_mean.numpy(), before)         # the replaced buffer is left alone
    assert fast.stats()["traces"] == 2


def test_in_place_updates_are_seen_without_a_retrace():
    net = make_net(training=True)
    fast = lucid.compile(net)
    x, seed = data(SHAPE, 5), data((1, 1, 8, 8, 8), 6)
    optimisers = [lucid.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), lucid.optim.Adam(net.parameters(), lr=0.01)]
    for optimiser in optimisers:
        for _ in range(2):
            run(fast, net, "training", x, seed)
            optimiser.step()
    state = make_net(training=True).state_dict()
    state["up.weight"] = data(state["up.weight"].shape, 7)
    fast.load_state_dict(state)
    run(fast, net, "training", x, seed)
    net.up.bias.data = data(net.up.bias.shape, 8)                  # a new array of the same shape and dtype
    run(fast, net, "training", x, seed)
    assert fast.stats()["traces"] == 1 and fast.stats()["variants"] == 1


def test_guard_of_the_seed_transposed_conv():
    """The seed's first example (examples/seeds.py): ConvTranspose3d(4, 2, 3, stride=2, padding=1,
    output_padding=1). The check that runs before every call holds until the weight is replaced (its
    cost is measured in benchmarks/guard.py)."""
    deconv = nn.ConvTranspose3d(4, 2, kernel_size=3, stride=2, padding=1, output_padding=1)
    fast = lucid.compile(deconv, lucid.spec(1, 4, 8, 8, 8))
    guard = fast._snapshot
    assert guard.holds()
    deconv.weight = nn.Parameter(deconv.weight.numpy())
    assert not guard.holds() and guard.change() == "parameter 'weight' was replaced"


def test_changes_the_guard_names():
    net = make_net(training=False)
    fast = lucid.compile(net)
    cases = [
        (lambda: net.block.bias.__setattr__("data", np.zeros(3, np.float32)),
         "tensor 'block.bias' changed from float32[2] to float32[3]"),
        (lambda: delattr(net.bn, "running_var"), "buffer 'bn.running_var' was deleted"),
        (lambda: net.add_module("extra", nn.ReLU()), "submodule 'extra' was added"),
        (lambda: net.__setattr__("up", nn.ConvTranspose3d(2, 1, 2, stride=2)), "submodule 'up' was replaced"),
        (lambda: net.bn.train(), None),                                        # a flag: a new key, not a change
        (lambda: net.up.weight.__setattr__("data", data(net.up.weight.shape)), None),   # same shape and dtype
    ]
    for act, words in cases:
        fast._take_snapshot(None)
        assert fast._snapshot.holds()
        act()
        assert not fast._snapshot.holds()
        assert fast._snapshot.change() == words



def test_flags_flipped_and_arrays_swapped_on_every_call_refresh_the_guard_without_remaking_it(monkeypatch):
    """A model switched between train() and eval() on every call, or whose arrays are swapped on every
    call, keeps its snapshot: the guard's expression is made once (making it costs milliseconds for a
    real network), refreshed in place, and each call still runs the right variant on the new arrays."""
    net = make_net(training=True)
    fast = lucid.compile(net)
    x, seed = data(SHAPE, 9), data((1, 1, 8, 8, 8), 10)
    run(fast, net, "training", x, seed)
    net.eval()
    run(fast, net, "inference", x, seed)
    made = []
    real = Snapshot._check
    monkeypatch.setattr(Snapshot, "_check", lambda self: made.append(1) or real(self))
    for round_ in range(3):
        net.train()
        net.up.bias.data = data(net.up.bias.shape, 11 + round_)     # a new array of the same shape and dtype
        run(fast, net, "training", x, seed)
        assert fast._snapshot.holds()
        net.eval()
        net.block.weight.data = data(net.block.weight.shape, 21 + round_)
        run(fast, net, "inference", x, seed)
        assert fast._snapshot.holds()
    assert not made and fast.stats()["traces"] == 2
    net.block.bias.data = np.zeros(3, np.float32)                   # another shape: the variants are void
    with pytest.raises(lucid.ShapeError):
        fast(lucid.Tensor(x))
    assert made


# ============================================================================== executables
def test_executable_refuses_unknown_parameter_names():
    net = make_net(training=False)
    fast = lucid.compile(net)
    with lucid.no_grad():
        fast(lucid.Tensor(data(SHAPE)))
    (variant,) = fast.variants.values()
    executable, x = variant.executable, data(SHAPE, 1)
    with pytest.raises(GraphError) as info:
        executable(x, params={"block.wieght": net.block.weight.numpy(), "bogus": np.zeros(2, np.float32)})
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert executable.graph.name in message and "'block.wieght'" in message and "'bogus'" in message
    weight = data(net.block.weight.shape, 9)                       # a known name is used for this call
    overridden = executable(x, params={"block.weight": weight})[0]
    net.block.weight.data[...] = weight
    np.testing.assert_allclose(overridden, executable(x)[0], rtol=1e-6)


# ============================================================================== the module it wraps
def test_a_compiled_module_behaves_as_its_module(tmp_path):
    net = make_net(training=True)
    fast = lucid.compile(net)
    assert isinstance(fast, nn.Module) and fast.block is net.block and fast.bn.eps == net.bn.eps
    assert [id(p) for p in fast.parameters()] == [id(p) for p in net.parameters()]
    assert [n for n, _ in fast.named_buffers()] == [n for n, _ in net.named_buffers()]
    assert fast.eval() is fast and not net.training and not net.bn.training and not fast.training
    x = data(SHAPE, 10)
    with lucid.no_grad():
        close(fast(lucid.Tensor(x)).numpy(), expected(net, x, np.zeros((1, 1, 8, 8, 8)))["output"], "eval output")
    assert fast.train() is fast and net.training
    fast.scale = 3                                               # attributes land on the module
    assert net.scale == 3
    # state dicts: the module's keys, saved and loaded as the module's
    assert list(fast.state_dict()) == list(net.state_dict())
    path = tmp_path / "fast.lucid"
    lucid.save(fast.state_dict(), path)
    other = Net()
    other.load_state_dict(lucid.load(path))
    for (name, a), b in zip(net.state_dict().items(), other.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    fast.load_state_dict(make_net(training=True).state_dict())
    # tracing it traces the module (lucid.trace, lucid.export and lucid.viz take it)
    traced, plain = (str(lucid.trace(m, lucid.spec(*SHAPE))) for m in (fast, net))
    assert traced == plain                                      # the graph is named after the module too
    assert "lucid.compile(Net(" in repr(fast)


def test_a_compiled_function_stays_a_callable():
    def double(x):
        return x * 2.0

    fast = lucid.compile(double)
    assert callable(fast) and not isinstance(fast, nn.Module)
    np.testing.assert_array_equal(fast(lucid.Tensor([1.0, 2.0])).numpy(), [2.0, 4.0])
    with pytest.raises(AttributeError):
        fast.parameters


# ============================================================================== compiles: counted and logged
def test_no_grad_call_reuses_the_training_forward(compile_log):
    net = make_net(training=True)
    x = data(SHAPE, 11)
    fast = lucid.compile(net, lucid.spec(*SHAPE))                     # grad mode: the training variant
    stats = fast.stats()
    assert stats["traces"] == 1 and stats["variants"] == 1
    assert stats["native_compiles"] + stats["cache_loads"] > 0
    before = dict(jit.COUNTERS)
    with lucid.no_grad():
        close(fast(lucid.Tensor(x)).numpy(), expected(net, x, np.zeros((1, 1, 8, 8, 8)))["output"], "no-grad call")
    assert dict(jit.COUNTERS) == before and fast.stats() == stats
    lines = [r.getMessage() for r in compile_log]
    assert len(lines) == 2, lines
    assert "tracing for (float32[1, 1, 4, 4, 4]), training mode: first call" in lines[0]
    assert "compiled the training variant" in lines[1] and "LLVM module(s) compiled" in lines[1]
    compile_log.clear()
    net.up.weight = nn.Parameter(net.up.weight.numpy())
    with lucid.no_grad():
        fast(lucid.Tensor(x))
    assert any("parameter 'up.weight' was replaced" in r.getMessage() for r in compile_log)


def test_lucid_log_prints_each_compile():
    script = ("import lucid\n"
              "f = lucid.compile(lambda x: x * 3.0)\n"
              "f(lucid.randn(2, 3)); f(lucid.randn(2, 3)); f(lucid.randn(4, 3))\n")
    env = dict(os.environ, LUCID_LOG="compile", LUCID_QUIET="1")    # the log only, no progress line
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 4, lines                                   # two traces, two compiles
    assert "tracing for (float32[2, 3]), a function: first call" in lines[0]
    assert "compiled the inference variant" in lines[1]
    # a second batch size: automatic dynamic traces the batch as a symbolic dimension
    assert "tracing for (float32[N, 3]), a function: new input shapes or dtypes; symbolic sizes (sizes vary)" in lines[2]
