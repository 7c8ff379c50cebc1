"""Convolutions with run-time extents (issue 21, stage 3): conv, conv_transpose and the weight gradient
compiled once (`lucid.compile(..., dynamic=True)`) serve every batch and volume size.

Oracles: eager lucid (NumPy kernels) at every size, and the direct-loop NumPy oracle of
tests/oracle.py (float64, shares nothing with lucid) at one odd size per layer (it is slow).
Tolerances as tests/codegen/test_conv_compiled.py: relative to each output's largest magnitude."""
from typing import NamedTuple

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
import oracle
from lucid.codegen.kernels.conv import winograd
from lucid.errors import ShapeError
from lucid.ir import symbolic
from lucid.passes import memory_planning
from lucid.runtime.executable import Executable
from model_helpers import kernel_labels

TOL = 1e-4

#: (batch, (D, H, W)): the first call is the smallest on every axis (dynamic=True takes its sizes as
#: the minimum); then batches up to 8, volumes 16..48 in steps of 8, and odd sizes.
SIZES = [(1, (16, 16, 16)), (3, (17, 23, 33)), (8, (24, 16, 17)), (2, (48, 40, 23)), (5, (32, 17, 16))]
ORACLE_SIZE = (2, (17, 16, 19))

class Layer(NamedTuple):
    name: str
    transposed: bool
    kernel: int
    stride: int
    padding: int
    output_padding: int
    groups: int
    bias: bool

    def module(self, seed: int, out_channels: int = 6) -> nn.Module:
        """The layer (4 input channels), its parameters drawn from `seed`."""
        lucid.manual_seed(seed)
        if self.transposed:
            return nn.ConvTranspose3d(4, out_channels, self.kernel, stride=self.stride, padding=self.padding,
                                      output_padding=self.output_padding, groups=self.groups, bias=self.bias)
        return nn.Conv3d(4, out_channels, self.kernel, stride=self.stride, padding=self.padding, groups=self.groups,
                         bias=self.bias)

    def oracle(self, net: nn.Module, x: np.ndarray) -> np.ndarray:
        """The layer's output by tests/oracle.py's direct loops, in float64."""
        w = net.weight.numpy().astype(np.float64)
        b = None if net.bias is None else net.bias.numpy().astype(np.float64)
        if self.transposed:
            return oracle.conv_transpose_nd(x.astype(np.float64), w, b, stride=self.stride, padding=self.padding,
                                            output_padding=self.output_padding, groups=self.groups)
        return oracle.conv_nd(x.astype(np.float64), w, b, stride=self.stride, padding=self.padding, groups=self.groups)


LAYERS = [
    Layer("conv k3 s1 p1", False, 3, 1, 1, 0, 1, True),
    Layer("conv k3 s2 p1 groups 2", False, 3, 2, 1, 0, 2, True),
    Layer("conv k1 s1 no bias", False, 1, 1, 0, 0, 1, False),
    Layer("conv k3 s2 p0 (16 -> 7)", False, 3, 2, 0, 0, 1, True),
    Layer("conv_transpose k3 s1 p1", True, 3, 1, 1, 0, 1, True),
    Layer("conv_transpose k3 s2 p1 op1 groups 2", True, 3, 2, 1, 1, 2, True),
    Layer("conv_transpose k1 s2 no bias", True, 1, 2, 0, 0, 1, False),
]


def built(compiled) -> int:
    """LLVM modules the compiled object compiled or loaded from the disk cache."""
    stats = compiled.stats()
    return stats["native_compiles"] + stats["cache_loads"]


def assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    scale = max(float(np.abs(expected).max()), 1e-30)
    assert float(np.abs(got - expected).max()) <= TOL * scale, (float(np.abs(got - expected).max()), scale)


def assert_one_compile_serves(net: nn.Module, sizes: list, oracle_size: tuple, oracle_output):
    """`net` compiled once with `dynamic=True`: at each (batch, volume) of `sizes` and `oracle_size`
    its output equals eager's, at `oracle_size` also `oracle_output(x)`'s, and nothing is compiled
    or loaded after the first call. Returns the compiled object."""
    compiled = lucid.compile(net, dynamic=True)
    modules = None
    with lucid.no_grad():
        for n, volume in sizes + [oracle_size]:
            x = lucid.randn(n, net.in_channels, *volume)
            got = compiled(x).numpy()
            if modules is None:
                modules = built(compiled)
            assert_close(got, net(x).numpy())
            if (n, volume) == oracle_size:
                assert_close(got, oracle_output(x.numpy()))
    stats = compiled.stats()
    assert stats["traces"] == 1 and stats["variants"] == stats["dynamic_variants"] == 1
    assert built(compiled) == modules                      # nothing compiled or loaded after the first call
    return compiled


@pytest.mark.parametrize("spec", LAYERS, ids=[spec.name for spec in LAYERS])
def test_one_compile_serves_every_batch_and_volume_size(spec):
    net = spec.module(seed=7)
    assert_one_compile_serves(net, SIZES, ORACLE_SIZE, lambda x: spec.oracle(net, x))


def assert_gradients_equal_eager(net: nn.Module, sizes: list):
    """`net` compiled once with `dynamic=True`: at each (batch, volume) of `sizes` its output and
    input, weight and bias gradients equal eager's, and nothing is compiled after the first call.
    Returns the compiled object."""
    compiled = lucid.compile(net, dynamic=True)
    modules = None
    for n, volume in sizes:
        data = lucid.randn(n, net.in_channels, *volume).numpy()
        gradients = []
        for run in (compiled, net):
            x = lucid.tensor(data, requires_grad=True)
            y = run(x)
            (y * y).sum().backward()
            gradients.append([y.detach().numpy(), x.grad.numpy(), net.weight.grad.numpy(), net.bias.grad.numpy()])
            net.zero_grad()
        if modules is None:
            modules = built(compiled)
        for got, expected in zip(*gradients, strict=True):
            assert_close(got, expected)
    assert compiled.stats()["traces"] == 1 and built(compiled) == modules
    return compiled


@pytest.mark.parametrize("spec", [LAYERS[1], LAYERS[5]], ids=[LAYERS[1].name, LAYERS[5].name])
def test_input_weight_and_bias_gradients_equal_eager_at_every_size(spec):
    assert_gradients_equal_eager(spec.module(seed=3), [(1, (16, 16, 16)), (3, (17, 24, 19)), (2, (23, 16, 32))])


@pytest.mark.parametrize("spec, out_channels", [(LAYERS[0], 20), (LAYERS[5], 6)], ids=["conv", "conv_transpose"])
def test_rows_of_every_length_from_1_to_30(spec, out_channels):
    """The run-time tiling of a row (balanced tiles of the sizes a static compile would take, bits
    of the length for a row shorter than a tile) on every remainder of every tile size (20 output
    channels: tiles of two vectors)."""
    compiled_for_every_row_length(spec.module(seed=4, out_channels=out_channels), 4, range(1, 31))


def compiled_for_every_row_length(net, in_channels: int, widths, check=lambda width, x, got: None):
    """`net` compiled once for symbolic N, D, H, W, run at every row length of `widths` (batch,
    depth varying too) against eager, `check(width, x, got)` besides; nothing compiled after the
    first call. Returns the compiled object."""
    graph_spec = lucid.spec(lucid.dim("N"), in_channels, lucid.dim("D"), lucid.dim("H"), lucid.dim("W"))
    compiled = lucid.compile(net, graph_spec, dynamic=False)
    modules = built(compiled)
    with lucid.no_grad():
        for width in widths:
            x = lucid.randn(1 + width % 2, in_channels, 1 + width % 3, 2, width)
            got = compiled(x).numpy()
            assert_close(got, net(x).numpy())
            check(width, x, got)
    assert compiled.stats()["traces"] == 1 and built(compiled) == modules
    return compiled


@pytest.mark.long_running                   # a static and a symbolic training variant, cold: 8-14 s each
@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "conv_transpose"])
def test_a_varying_batch_keeps_winograd(transposed):
    """Automatic dynamic with only the batch varying: the symbolic variant still takes Winograd
    (3 x 3 stride 1, or 4 x 4 stride 2 transposed, 16+ channels), forward and backward."""
    lucid.manual_seed(6)
    net = nn.ConvTranspose3d(16, 16, 4, stride=2, padding=1) if transposed else nn.Conv3d(16, 16, 3, padding=1)
    compiled = lucid.compile(net)
    for n in (1, 2, 3, 5):
        data = lucid.randn(n, 16, 6, 8, 8).numpy()
        results = []
        for run in (compiled, net):
            x = lucid.tensor(data, requires_grad=True)
            y = run(x)
            (y * y).sum().backward()
            results.append([y.detach().numpy(), x.grad.numpy(), net.weight.grad.numpy()])
            net.zero_grad()
        for got, expected in zip(*results, strict=True):
            assert_close(got, expected)
    stats = compiled.stats()
    assert stats["traces"] == 2 and stats["dynamic_variants"] == 1          # batch 1, then every batch
    variant = list(compiled.variants.values())[-1]
    graph = variant.forward.graph
    assert [str(d) for d in graph.inputs[0].shape[:1]] == ["N"] and not symbolic.is_symbolic(graph.inputs[0].shape[1:])
    labels = kernel_labels(variant.forward) + kernel_labels(variant.backward)
    assert labels.count("wino_conv") == 2, labels                          # the forward and the input gradient


#: Winograd layers' sizes (batch, (D, H, W)): volumes 16..48 in steps of 8 and odd sizes, batches 1..3;
#: the first call is the smallest on every axis.
WINOGRAD_SIZES = [(1, (16, 16, 16)), (2, (17, 23, 33)), (3, (24, 16, 17)), (1, (32, 40, 16)), (2, (48, 19, 24))]
WINOGRAD_ORACLE_SIZE = (1, (17, 16, 18))


def symbolic_variant_kernels(compiled) -> list:
    """The kernel labels of the compiled object's last variant (forward and backward of a training
    one), after checking that its input's batch and spatial sizes are all symbolic."""
    variant = list(compiled.variants.values())[-1]
    executables = [variant.forward, variant.backward] if hasattr(variant, "forward") else [variant.executable]
    shape = executables[0].graph.inputs[0].shape
    assert [symbolic.is_symbolic(size) for size in shape] == [True, False, True, True, True], shape
    return [label for executable in executables for label in kernel_labels(executable)]


@pytest.mark.parametrize("padding", [1, 0])
def test_winograd_layers_compiled_once_serve_every_size(padding):
    """A 3 x 3 x 3 conv of 16 channels, stride 1, compiled with `dynamic=True`: its symbolic variant
    takes Winograd, every size equals eager (and the oracle at one odd size), nothing compiled after
    the first call."""
    lucid.manual_seed(8)
    net = nn.Conv3d(16, 16, 3, padding=padding)
    w, b = (t.numpy().astype(np.float64) for t in (net.weight, net.bias))
    compiled = assert_one_compile_serves(net, WINOGRAD_SIZES, WINOGRAD_ORACLE_SIZE,
                                         lambda x: oracle.conv_nd(x.astype(np.float64), w, b, padding=padding))
    assert "wino_conv" in symbolic_variant_kernels(compiled)


@pytest.mark.long_running                   # a symbolic training variant with Winograd kernels, cold: ~10 s
def test_winograd_gradients_equal_eager_at_every_size():
    """Forward and backward of a Winograd layer compiled with `dynamic=True`: the forward and the
    input gradient (a stride-1 transposed conv) take Winograd at symbolic sizes."""
    lucid.manual_seed(9)
    compiled = assert_gradients_equal_eager(nn.Conv3d(16, 16, 3, padding=1),
                                            [(1, (16, 16, 16)), (2, (17, 23, 33)), (3, (24, 16, 19))])
    assert symbolic_variant_kernels(compiled).count("wino_conv") == 2


@pytest.fixture
def small_layers_take_winograd(monkeypatch):
    """Let small shapes (cheap to check against the oracle) take Winograd, which otherwise needs
    enough work items per core and enough tiles to repay its weight transform: for speed, not for
    correctness."""
    monkeypatch.setattr(winograd, "MIN_ITEMS_PER_CORE", 0)
    monkeypatch.setattr(winograd, "WEIGHT_TRANSFORM_CYCLES", 0)


def symbolic_executable(fn, channels: int, weight_shape: tuple, name: str) -> Executable:
    """`fn(x, w, b)` traced for inputs (N, channels, H, W), H and W at least 4, lowered."""
    spec = lucid.spec(lucid.dim("N"), channels, lucid.dim("H", min=4), lucid.dim("W", min=4))
    return Executable(memory_planning.run(lucid.trace(fn, spec, lucid.spec(weight_shape),
                                                      lucid.spec(weight_shape[1] if "transpose" in name else
                                                                 weight_shape[0]), name=name)))


@pytest.mark.parametrize("kind", ["conv", "conv_transpose", "conv_transpose output_padding"])
def test_winograd_rows_of_every_length(small_layers_take_winograd, kind):
    """A symbolic row is taken in balanced chunks of at most `Plan.chunk` tiles (24 to 28), each in
    GEMM tiles chosen per call: rows of 2 to 55 tiles (up to 3 chunks), odd and even widths, one
    compile, against the oracle (a 3 x 3 conv, padding 1; a 4 x 4 stride-2 transposed conv's phases,
    with output_padding 1 the even phases one position longer than the odd ones)."""
    rng = np.random.default_rng(10)
    transposed = kind != "conv"
    weight_shape = (16, 24, 4, 4) if transposed else (24, 16, 3, 3)
    attrs = dict(stride=2, padding=1) if transposed else dict(padding=1)
    if kind == "conv_transpose output_padding":
        attrs["output_padding"] = 1
    fn = F.conv_transpose2d if transposed else F.conv2d
    executable = symbolic_executable(lambda x, w, b: fn(x, w, b, **attrs), 16, weight_shape,
                                     f"dyn_wino_{kind.replace(' ', '_')}")
    assert "wino_conv" in kernel_labels(executable)
    w = (rng.standard_normal(weight_shape) * 0.2).astype("float32")
    b = rng.standard_normal(24).astype("float32")
    reference = oracle.conv_transpose_nd if transposed else oracle.conv_nd
    for width in list(range(4, 16)) + list(range(16, 111, 7)):         # tile rows of 2 to 55 tiles
        x = rng.standard_normal((1 + width % 2, 16, 4 + width % 3, width)).astype("float32")
        expected = reference(*(a.astype(np.float64) for a in (x, w, b)), **attrs)
        assert_close(executable(x, w, b, threads=2)[0], expected)


@pytest.mark.parametrize("what", ["input", "overflow"])
def test_winograd_non_finite_values_at_symbolic_sizes(small_layers_take_winograd, what):
    """An infinite input, or huge finite inputs that overflow inside the transforms, in the second
    chunk of a long symbolic row: the item is computed again directly, so NaN and infinities land
    where the direct sums put them and the rest is finite and close."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 16, 6, 90)).astype("float32")
    w = (rng.standard_normal((16, 16, 3, 3)) * 0.2).astype("float32")
    if what == "input":
        x[0, 3, 2, 60] = np.inf
    else:
        x[0, :, 2:4, 60:62] = np.float32(3e38) * np.sign(rng.standard_normal((16, 2, 2))).astype("float32")
        w *= np.float32(1e-4)
    b = np.zeros(16, "float32")
    # one graph for both cases (its name too): the second reads it from the disk cache
    executable = symbolic_executable(lambda x, w, b: F.conv2d(x, w, b, padding=1), 16, w.shape, "dyn_wino_non_finite")
    assert "wino_conv" in kernel_labels(executable)
    got = executable(x, w, b, threads=2)[0]
    with np.errstate(invalid="ignore", over="ignore"):
        expected = oracle.conv_nd(x.astype(np.float64), w.astype(np.float64), padding=1).astype(np.float32)
    for kind in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(kind(got), kind(expected), err_msg=kind.__name__)
    finite = np.isfinite(expected)
    assert finite.any() and (what == "input" or finite.all())
    assert_close(got[finite], expected[finite].astype(np.float64))


class SmallNet(nn.Module):
    """Conv3d + BatchNorm3d + ReLU + MaxPool3d, concatenated with a pooled 1 x 1 conv branch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(4, 8, 3, padding=1)
        self.norm = nn.BatchNorm3d(8)
        self.skip = nn.Conv3d(4, 4, 1)
        self.pool = nn.MaxPool3d(2)

    def forward(self, x):
        return lucid.cat([self.pool(F.relu(self.norm(self.conv(x)))), self.pool(self.skip(x))], dim=1)


def test_a_small_conv_model_compiled_once_serves_several_sizes():
    lucid.manual_seed(5)
    net = SmallNet()
    net.norm.running_mean.copy_(lucid.randn(8) * 0.1)        # eval mode with statistics that are not (0, 1)
    net.norm.running_var.copy_(lucid.rand(8) + 0.5)
    net.eval()
    compiled = lucid.compile(net, dynamic=True)
    modules = None
    with lucid.no_grad():
        for n, volume in SIZES[:4]:
            x = lucid.randn(n, 4, *volume)
            got = compiled(x).numpy()
            if modules is None:
                modules = built(compiled)
            assert_close(got, net(x).numpy())
    assert compiled.stats()["traces"] == 1 and built(compiled) == modules


class DownUp(nn.Module):
    """A UNet level: a stride-2 conv down, a stride-2 transposed conv up, concatenated with its input
    (which needs even sizes: the constraint its trace records)."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv3d(4, 4, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose3d(4, 4, 2, stride=2)

    def forward(self, x):
        return lucid.cat([x, self.up(F.relu(self.down(x)))], dim=1)


def test_sizes_breaking_a_constraint_are_shape_errors_naming_the_dimension():
    lucid.manual_seed(2)
    net = DownUp()
    compiled = lucid.compile(net, dynamic=True)
    with lucid.no_grad():
        for n, volume in [(1, (16, 16, 16)), (2, (24, 18, 40))]:
            x = lucid.randn(n, 4, *volume)
            assert_close(compiled(x).numpy(), net(x).numpy())
        with pytest.raises(ShapeError, match=r"H = 17 violates the constraint .*H.*, required by concat"):
            compiled(lucid.randn(1, 4, 16, 17, 16))
        small = lucid.compile(LAYERS[3].module(seed=7), dynamic=True)    # as compiled above: the disk cache's
        small(lucid.randn(1, 4, 16, 16, 16))
        with pytest.raises(ShapeError, match=r"smaller than the dilated kernel \(3, 3, 3\).*D = 2"):
            small(lucid.randn(1, 4, 2, 16, 16))
