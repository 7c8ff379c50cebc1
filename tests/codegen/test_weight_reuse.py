"""Conv weights packed and transformed once per weight version (lucid/codegen/kernels/conv/prepared.py).

A compiled conv keeps its packed (direct) or transformed (Winograd) weights between calls and makes
them again only when a check finds the weights changed. A wrong reuse would be a silent wrong
answer, so every way of changing a weight is tried here, and each result is compared with the
plain-loop oracle (`oracle.py`, float64) at the weights of that moment."""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import oracle
from lucid.codegen.kernels.conv import winograd
from model_helpers import kernel_labels, run_in_threads

TOL = 1e-4

#: name: (module factory, input shape, the kernel that shows the algorithm taken)
CASES = {
    "winograd conv": (lambda: nn.Conv2d(32, 40, 3, padding=1), (1, 32, 8, 9), "wino_conv"),
    "winograd transposed": (lambda: nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1), (1, 32, 4, 5), "wino_conv"),
    "planes conv (3x1x1)": (lambda: nn.Conv3d(5, 12, (3, 1, 1), padding=(1, 0, 0)), (2, 5, 4, 3, 6), "conv_planes"),
    "direct conv (1x3x3)": (lambda: nn.Conv3d(5, 12, (1, 3, 3), padding=(0, 1, 1)), (2, 5, 4, 3, 6), "conv_direct"),
    "direct transposed": (lambda: nn.ConvTranspose3d(8, 16, 3, stride=2, padding=1), (1, 8, 3, 3, 4), "convT_direct"),
    "disjoint blocks": (lambda: nn.ConvTranspose3d(8, 12, 2, stride=2), (1, 8, 3, 3, 4), "convT_blocks"),
}


@pytest.fixture(autouse=True)
def few_items_suffice(monkeypatch):
    """Small shapes (cheap to compile) on the Winograd path, as in test_winograd.py."""
    monkeypatch.setattr(winograd, "MIN_ITEMS_PER_CORE", 0)
    monkeypatch.setattr(winograd, "WEIGHT_TRANSFORM_CYCLES", 0)


def expected(module, x: np.ndarray) -> np.ndarray:
    """The oracle's output of `module` at its current weights."""
    w, b = (np.asarray(p.data, np.float64) for p in (module.weight, module.bias))
    if isinstance(module, (nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return oracle.conv_transpose_nd(x.astype(np.float64), w, b, stride=module.stride, padding=module.padding)
    return oracle.conv_nd(x.astype(np.float64), w, b, stride=module.stride, padding=module.padding)


def assert_close(actual, wanted, what: str) -> None:
    scale = max(float(np.max(np.abs(wanted))), 1e-30)
    error = float(np.max(np.abs(np.asarray(actual, np.float64) - wanted)))
    assert error <= TOL * scale, f"{what}: max error {error:.3g} > {TOL:g} x {scale:.3g}"


def fresh_weights(module, rng) -> np.ndarray:
    return rng.standard_normal(module.weight.shape).astype(np.float32) * 0.2


def optimiser_step(module, rng):
    optimiser = lucid.optim.SGD(module.parameters(), lr=0.5)
    for p in module.parameters():
        p.grad = lucid.Tensor(rng.standard_normal(p.shape).astype(np.float32))
    optimiser.step()


def in_place_op(module, rng):
    with lucid.no_grad():
        module.weight.mul_(-1.5)


def load_state_dict(module, rng):
    state = module.state_dict()
    state["weight"] = fresh_weights(module, rng)
    module.load_state_dict(state)


def data_assignment(module, rng):
    module.weight.data = fresh_weights(module, rng)


def param_copy(module, rng):
    with lucid.no_grad():
        module.weight.copy_(lucid.Tensor(fresh_weights(module, rng)))


def numpy_view_write(module, rng):
    module.weight.numpy()[...] = fresh_weights(module, rng)


def first_element(module, rng):
    module.weight.data.reshape(-1)[0] += 1.0


def last_element(module, rng):
    """The last chunk's last element (a chunk of the check holds CHECK_CHUNK elements)."""
    module.weight.data.reshape(-1)[-1] -= 1.0


def one_element_in_the_middle(module, rng):
    flat = module.weight.data.reshape(-1)
    flat[flat.size // 2 + 1] *= -3.0


def sign_of_zero(module, rng):
    """-0.0 == 0.0 as floats, but not as bits: the check compares bits, and both give the same output."""
    flat = module.weight.data.reshape(-1)
    flat[3] = 0.0
    flat[4] = -0.0


MUTATIONS = [optimiser_step, in_place_op, load_state_dict, data_assignment, param_copy, numpy_view_write,
             first_element, last_element, one_element_in_the_middle, sign_of_zero]


def compiled_case(name: str, seed: int):
    make, shape, kernel = CASES[name]
    lucid.manual_seed(seed)
    module = make()
    module.eval()
    compiled = lucid.compile(module)
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    with lucid.no_grad():
        compiled(lucid.Tensor(x))
    executable = list(compiled.variants.values())[-1].executable
    assert kernel in kernel_labels(executable), name
    return module, compiled, executable, x


@pytest.mark.parametrize("name", list(CASES))
def test_every_way_of_changing_a_weight_gives_fresh_results(name):
    module, compiled, _, x = compiled_case(name, 1)
    rng = np.random.default_rng(2)

    def call():
        with lucid.no_grad():
            return compiled(lucid.Tensor(x)).numpy()

    assert_close(call(), expected(module, x), f"{name}: first call")
    for mutation in MUTATIONS:
        mutation(module, rng)
        assert_close(call(), expected(module, x), f"{name}: after {mutation.__name__}")
        assert_close(call(), expected(module, x), f"{name}: called again after {mutation.__name__}")


@pytest.mark.parametrize("name", ["winograd conv", "planes conv (3x1x1)", "direct conv (1x3x3)"])
def test_unchanged_weights_reuse_the_kept_results(name):
    """After a call, the arena's persistent memory holds the check's flags, the weights' copy and the
    prepared weights, in that order. Spoil what follows the copy: a call with the same weights reads
    it (so the preparation really is skipped: NaN outputs), and a call with changed weights makes it
    again (the oracle's result)."""
    module, compiled, executable, x = compiled_case(name, 3)
    (arena,) = executable._free_arenas
    memory = arena.persistent[-arena.persistent.ctypes.data % 64:]
    weights = np.ascontiguousarray(module.weight.data).tobytes()
    start = memory.tobytes().find(weights)
    assert start > 0
    memory[start + len(weights):].view(np.uint8)[:] = 0xFF           # NaN bits in every float
    with lucid.no_grad():
        spoilt = compiled(lucid.Tensor(x)).numpy()
    assert np.isnan(spoilt).any()
    last_element(module, None)
    with lucid.no_grad():
        assert_close(compiled(lucid.Tensor(x)).numpy(), expected(module, x), f"{name}: after a change")


def test_weights_passed_as_params_and_concurrent_calls():
    """Calls from several threads at once (each its own arena, so its own kept weights) with other
    weight arrays each time (`params=`), against the oracle."""
    module, _, executable, x = compiled_case("winograd conv", 4)
    name = next(v.name for v in executable.graph.params if v.shape == tuple(module.weight.shape))
    rngs = [np.random.default_rng(10 + k) for k in range(3)]
    errors = []

    def work(k):
        for _ in range(4):
            w = fresh_weights(module, rngs[k])
            got = executable(x, params={name: w}, threads=1)[0]
            want = oracle.conv_nd(x.astype(np.float64), w.astype(np.float64), np.asarray(module.bias.data, np.float64),
                                  padding=1)
            errors.append(float(np.max(np.abs(got - want))) / float(np.max(np.abs(want))))

    run_in_threads(work, 3)
    assert len(errors) == 12 and max(errors) <= TOL


def test_each_call_reads_the_weight_arrays_it_is_given():
    """An executable keeps the address of the array each parameter had on the last call: arrays
    taking turns (the module's, another through params=, a Fortran-ordered copy of it, the module's
    again) must each be read where they are at that call."""
    module, _, executable, x = compiled_case("planes conv (3x1x1)", 5)
    name = next(v.name for v in executable.graph.params if v.shape == tuple(module.weight.shape))
    other = fresh_weights(module, np.random.default_rng(6))
    for given in [None, other, np.asfortranarray(other), None, other, None]:
        got = executable(x, params=None if given is None else {name: given}, threads=1)[0]
        weight = module.weight.data if given is None else given
        want = oracle.conv_nd(x.astype(np.float64), np.asarray(weight, np.float64),
                              np.asarray(module.bias.data, np.float64), padding=module.padding)
        assert_close(got, want, "the module's weights" if given is None else f"given {given.flags.f_contiguous=}")


def steps_alongside_eager(model, seed: int):
    """Three optimiser steps (SGD on the parameters that require grad), each taken after a training
    step eager and one compiled from the same weights, whose losses and gradients (of the input and
    of those parameters) must match; returns the compiled model's training variant."""
    compiled = lucid.compile(model)
    trained = [p for p in model.parameters() if p.requires_grad]
    x = lucid.Tensor(np.random.default_rng(seed).standard_normal((1, 32, 8, 9)).astype(np.float32), requires_grad=True)
    optimiser = lucid.optim.SGD(trained, lr=0.05)
    for step in range(3):
        gradients = []
        for run in (model, compiled):
            optimiser.zero_grad()
            x.grad = None
            loss = (run(x) ** 2).mean()
            loss.backward()
            gradients.append([loss.numpy().copy(), x.grad.numpy().copy()] + [p.grad.numpy().copy() for p in trained])
        for eager, compiled_value in zip(*gradients):
            assert_close(compiled_value, eager.astype(np.float64), f"step {step}")
        optimiser.step()
    return [v for v in compiled.variants.values() if hasattr(v, "backward")][-1]


def two_convs(seed: int):
    lucid.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1))


def test_training_steps_match_eager():
    """A compiled training step per optimiser step: the forward's Winograd conv and the backward's
    transposed conv (the input gradient) each make their weights again after every step; the loss and
    the gradients match eager mode (NumPy reference kernels) at every step."""
    variant = steps_alongside_eager(two_convs(5), 5)
    assert "wino_conv" in kernel_labels(variant.forward) and "wino_conv" in kernel_labels(variant.backward)


def test_a_training_step_checks_only_the_weights_it_does_not_update():
    """The training executables prepare the weights of the parameters they differentiate on every
    call (no check: each optimiser step changes them); a frozen conv's weights keep their check and
    kept results. Losses and gradients match eager mode at every step."""
    model = two_convs(6)
    model[0].weight.requires_grad = False
    variant = steps_alongside_eager(model, 6)
    for executable in (variant.forward, variant.backward):      # the frozen conv's, and its input gradient's
        assert kernel_labels(executable).count("weights_check") == 1, executable.graph.name
        (node,) = [node for kernel, node in executable.kernels() if kernel.label == "weights_check"]
        params = [v.name for v in node.inputs if any(v is p for p in executable.graph.params)]
        assert "0.weight" in params and "2.weight" not in params, params


def test_exported_library_reuses_and_stays_right(tmp_path):
    """An exported library keeps its prepared weights per arena as well (the weights are baked in)."""
    module, _, _, x = compiled_case("winograd conv", 6)
    files = lucid.export(module, lucid.spec(*x.shape), path=tmp_path / "conv.so")
    library = lucid.runtime.load(files.library)
    for _ in range(3):
        assert_close(library(x), expected(module, x), "exported")

