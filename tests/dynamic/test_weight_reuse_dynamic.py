"""Conv weights prepared once per weight version (conv/prepared.py) in graphs with symbolic sizes.

The weights of a graph compiled for every size have concrete shapes, so their kept packed and
transformed copies serve calls of any size; a wrong reuse would be a silent wrong answer. Checked
against eager lucid (NumPy kernels): a `dynamic=True` Winograd layer whose weights change between
calls of different sizes, a (2+1)-D temporal conv (3 x 1 x 1, read in place) under automatic dynamic
with a varying batch, and an exported symbolic library (whose arenas, kept by size, each keep their
own prepared weights) called at two sizes alternately, from one thread and from two at once."""
import shutil

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.runtime
from lucid.ir import symbolic
from model_helpers import calls_alternating_in_threads, kernel_labels

TOL = 1e-4

#: Two sizes (batch, (D, H, W)) taken alternately; the first is the smallest on every axis.
SMALL, LARGE = (1, (16, 16, 16)), (2, (19, 24, 17))


def assert_close(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert got.shape == expected.shape, what
    scale = max(float(np.abs(expected).max()), 1e-30)
    error = float(np.abs(got - expected).max())
    assert error <= TOL * scale, f"{what}: max error {error:.3g} > {TOL:g} x {scale:.3g}"


def eager(net: nn.Module, x: np.ndarray) -> np.ndarray:
    with lucid.no_grad():
        return net(lucid.Tensor(x)).numpy()


def data(n: int, channels: int, volume: tuple, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, channels, *volume)).astype(np.float32)


def test_dynamic_winograd_layer_sees_weight_changes_between_sizes():
    """A 3 x 3 x 3 conv of 16 channels compiled once with `dynamic=True` (Winograd at symbolic
    sizes): calls alternate between two sizes, the weights changing before some calls (an in-place
    op, an optimiser step, a single element) and not before others; every call equals eager."""
    lucid.manual_seed(11)
    net = nn.Conv3d(16, 16, 3, padding=1)
    compiled = lucid.compile(net, dynamic=True)
    optimiser = lucid.optim.SGD(net.parameters(), lr=0.1)
    rng = np.random.default_rng(11)

    def optimiser_step():
        for p in net.parameters():
            p.grad = lucid.Tensor(rng.standard_normal(p.shape).astype(np.float32))
        optimiser.step()

    def one_element():
        net.weight.data.reshape(-1)[-1] += 2.0

    def in_place():
        with lucid.no_grad():
            net.weight.mul_(-0.5)

    changes = [None, in_place, None, optimiser_step, one_element, None, in_place]
    for call, change in enumerate(changes):
        if change is not None:
            change()
        n, volume = (SMALL, LARGE)[call % 2]
        x = data(n, 16, volume, call)
        with lucid.no_grad():
            got = compiled(lucid.Tensor(x)).numpy()
        assert_close(got, eager(net, x), f"call {call} at {(n, volume)} after {getattr(change, '__name__', 'no change')}")
    assert compiled.stats()["traces"] == 1
    (variant,) = compiled.variants.values()
    assert symbolic.is_symbolic(variant.executable.graph.inputs[0].shape[2:])
    labels = kernel_labels(variant.executable)
    assert "wino_conv" in labels and "weights_check" in labels, labels


def test_temporal_conv_with_a_varying_batch_reads_its_input_in_place():
    """A (2+1)-D net's 3 x 1 x 1 conv under automatic dynamic with only the batch varying: the
    symbolic variant reads its NCDHW input where it is (no input packing), and its kept weights
    follow every change, at every batch."""
    lucid.manual_seed(12)
    net = nn.Conv3d(8, 12, (3, 1, 1), padding=(1, 0, 0))
    compiled = lucid.compile(net)
    for call, n in enumerate((1, 2, 3, 5, 2)):
        if call in (2, 4):
            with lucid.no_grad():
                net.weight.mul_(1.5)
        x = data(n, 8, (5, 6, 7), call)
        with lucid.no_grad():
            got = compiled(lucid.Tensor(x)).numpy()
        assert_close(got, eager(net, x), f"call {call}, batch {n}")
    variant = list(compiled.variants.values())[-1]
    shape = variant.executable.graph.inputs[0].shape
    assert symbolic.is_symbolic(shape[0]) and not symbolic.is_symbolic(shape[1:])
    labels = kernel_labels(variant.executable)
    assert "conv_direct" in labels and "conv_pack_input" not in labels, labels


@pytest.fixture(scope="module")
def symbolic_library(tmp_path_factory):
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) on this machine")
    lucid.manual_seed(13)
    net = nn.Sequential(nn.Conv3d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv3d(16, 8, 3, padding=1)).eval()
    spec = lucid.spec(lucid.dim("N"), 16, lucid.dim("D", min=8), lucid.dim("H", min=8), lucid.dim("W", min=8))
    files = lucid.export(net, spec, path=tmp_path_factory.mktemp("reuse_dynamic") / "wino.so")
    return net, lucid.runtime.load(files.library)


def test_exported_symbolic_library_at_two_sizes_alternately(symbolic_library):
    """Each call takes an arena large enough for its size; an arena keeps its prepared weights at the
    same place whatever the size of the call using it, so a small call in an arena a large one made
    reads weights, not the large call's intermediates."""
    net, library = symbolic_library
    assert library.symbolic
    inputs = [data(n, 16, volume, seed) for seed, (n, volume) in enumerate((SMALL, LARGE))]
    expected = [eager(net, x) for x in inputs]
    for call in range(6):
        which = call % 2
        assert_close(library(inputs[which]), expected[which], f"call {call}")
    library.selftest()


def test_exported_symbolic_library_from_two_threads(symbolic_library):
    net, library = symbolic_library
    inputs = [data(n, 16, volume, 10 + seed) for seed, (n, volume) in enumerate((SMALL, LARGE))]
    expected = [eager(net, x) for x in inputs]
    errors = [float(np.abs(got - expected[which]).max()) / float(np.abs(expected[which]).max())
              for which, got in calls_alternating_in_threads(library, inputs, repeats=4)]
    assert len(errors) == 8 and max(errors) <= TOL
