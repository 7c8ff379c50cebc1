"""The dropout family and rand_like / randn_like: eager, traced and compiled, from lucid's generator.

- Masks: the fraction kept lies within 5 binomial standard deviations of 1 - p, the kept values are
  exactly x * float(1 / (1 - p)) (odd sizes such as 7x5x3); p = 0, eval mode and empty inputs give
  the input itself, p = 1 zeros; the channel-wise variants keep or drop whole (sample, channel)
  slices, unbatched inputs included; errors for bad p (ValueError naming the layer) and bad ranks.
- AlphaDropout: a standard normal input keeps mean 0 and variance 1; dropped elements take
  a * alpha' + b, kept ones a * x + b (the constants checked against PyTorch where installed).
- Gradients: the mask times the scale (alpha: a times the mask), and central finite differences in
  float64 with the mask fixed by reseeding.
- Same seed, same numbers: eager, the interpreter and compiled code draw identical masks (normal
  numbers: to rounding, libm against NumPy); each call draws a fresh one; `manual_seed` makes runs
  repeat and another seed changes them.
- A compiled training step (forward, backward, optimiser step) with Dropout, Dropout3d and
  AlphaDropout runs, repeats bit for bit after the same seed, agrees with eager, and its backward
  applies the forward's mask; eval-mode inference and exported graphs hold no random operator.
- The viewer draws a graph with random nodes (every stage).
"""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
import lucid.viz as viz
from lucid import optim
from lucid.passes import pipeline

SATURATION = -1.0507009873554804934193349852946 * 1.6732632423543772848170429916717
CHANNEL_FUNCTIONS = [(F.dropout1d, (3, 4, 7)), (F.dropout2d, (2, 5, 3, 4)), (F.dropout3d, (2, 3, 7, 5, 3)),
                     (F.feature_alpha_dropout, (3, 6, 5))]
LAYERS = [nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout]


def normal(*shape, dtype=np.float32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def alpha_constants(p: float) -> tuple:
    a = ((1 - p) * (1 + p * SATURATION ** 2)) ** -0.5
    return a, -a * SATURATION * p


# ============================================================================ masks and values
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_keeps_about_1_minus_p_and_scales_exactly(p):
    x = normal(7, 5, 3, 101) + 3.0                           # no zeros: a zero output means dropped
    lucid.manual_seed(3)
    y = F.dropout(lucid.tensor(x), p).numpy()
    kept = y != 0
    n = x.size
    assert abs(kept.sum() - n * (1 - p)) < 5 * np.sqrt(n * p * (1 - p))
    np.testing.assert_array_equal(y[kept], x[kept] * np.float32(1 / (1 - p)))


def test_identity_cases_zeros_and_no_draw():
    x = lucid.tensor(normal(4, 3, 2, 2))
    before = lucid.random.state().copy()
    for function in (F.dropout, F.dropout2d, F.alpha_dropout, F.feature_alpha_dropout):
        assert function(x, 0.0, True) is x
        assert function(x, 0.7, False) is x
    empty = lucid.zeros(0, 3, 2)
    assert F.dropout(empty, 0.5).shape == (0, 3, 2)
    np.testing.assert_array_equal(lucid.random.state(), before)          # none of these drew
    for function in (F.dropout, F.dropout2d, F.alpha_dropout, F.feature_alpha_dropout):
        np.testing.assert_array_equal(function(x, 1.0, True).numpy(), np.zeros((4, 3, 2, 2), np.float32))
    layer = nn.Dropout(0.5).eval()
    assert layer(x) is x


@pytest.mark.parametrize("function, shape", CHANNEL_FUNCTIONS)
def test_channelwise_variants_drop_whole_channels(function, shape):
    lucid.manual_seed(9)
    x = np.abs(normal(*shape)) + 1.0
    y = function(lucid.tensor(x), 0.5, True).numpy()
    lead = 1 if (function is F.dropout1d and len(shape) == 2) else 2
    slices = y.reshape(int(np.prod(shape[:lead])), -1)
    if function is F.feature_alpha_dropout:
        a, b = alpha_constants(0.5)
        dropped = np.isclose(slices, a * SATURATION + b, rtol=1e-6)
    else:
        dropped = slices == 0
    assert np.all(dropped.all(axis=1) | ~dropped.any(axis=1))          # each channel all or nothing
    assert 0 < dropped.all(axis=1).sum() < slices.shape[0]


def test_unbatched_channel_inputs_draw_per_channel():
    lucid.manual_seed(1)
    for function, shape in [(F.dropout1d, (40, 6)), (F.dropout3d, (40, 2, 3, 2))]:
        y = function(lucid.ones(*shape), 0.5).numpy().reshape(shape[0], -1)
        assert np.all((y == 0).all(axis=1) | (y == 2).all(axis=1)) and 5 < (y[:, 0] == 0).sum() < 35
    y = F.dropout2d(lucid.ones(3, 40, 5), 0.5).numpy()                  # 3-D is (N, C, L), as PyTorch reads it
    assert np.all((y == 0).all(axis=2) | (y == 2).all(axis=2)) and 0 < (y[0, :, 0] == 0).sum() < 40


def test_bad_probabilities_and_ranks_are_refused_naming_the_layer():
    for layer in LAYERS:
        for p in (-0.1, 1.5):
            with pytest.raises(ValueError, match=f"{layer.__name__}: dropout probability has to be between 0 and 1"):
                layer(p)
    for function in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout):
        with pytest.raises(ValueError, match=f"{function.__name__}: dropout probability"):
            function(lucid.ones(2, 3, 4), 2.0)
    with pytest.raises(lucid.ShapeError, match="dropout1d: expected a 2-D or 3-D input"):
        F.dropout1d(lucid.ones(2, 3, 4, 5))
    with pytest.warns(UserWarning, match=r"dropout3d: expected a 4-D or 5-D input, got shape \(2, 30, 4\); its first"):
        y = F.dropout3d(lucid.ones(2, 30, 4))
    assert np.all((y.numpy() == 0).all(axis=2) | (y.numpy() == 2).all(axis=2))
    with pytest.raises(lucid.ShapeError, match="feature_alpha_dropout: expected an input with a channel axis"):
        F.feature_alpha_dropout(lucid.ones(5), 0.5, True)


def test_layers_take_pytorch_arguments():
    for layer in LAYERS:
        made = layer(0.25, inplace=True)
        assert made.p == 0.25 and made.inplace and repr(made) == f"{layer.__name__}(p=0.25, inplace=True)"
        assert getattr(nn.modules, layer.__name__) is layer
    x = lucid.ones(2, 3, 4, 5)
    lucid.manual_seed(0)
    y = nn.Dropout2d(0.5, inplace=True)(x)
    np.testing.assert_array_equal(x.numpy(), np.ones((2, 3, 4, 5)))     # computed out of place


# ============================================================================ alpha dropout
def test_alpha_dropout_keeps_a_standard_normal_standard():
    x = normal(1 << 20, seed=5)
    for p in (0.1, 0.5):
        lucid.manual_seed(2)
        dropped = lucid.rand_like(lucid.tensor(x)).numpy() < p      # the draw alpha_dropout makes next
        lucid.manual_seed(2)
        y = F.alpha_dropout(lucid.tensor(x), p, True).numpy().astype(np.float64)
        assert abs(y.mean()) < 0.01 and abs(y.var() - 1.0) < 0.01
        a, b = alpha_constants(p)
        assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / x.size)
        np.testing.assert_allclose(y[dropped], a * SATURATION + b, rtol=1e-6)
        np.testing.assert_allclose(y[~dropped], a * x[~dropped] + b, rtol=1e-6, atol=1e-6)


def test_alpha_dropout_constants_match_pytorch():
    torch = pytest.importorskip("torch")
    x = normal(4000, seed=8)
    for p in (0.2, 0.6):
        out = torch.nn.functional.alpha_dropout(torch.from_numpy(x), p, True).numpy()
        a, b = alpha_constants(p)
        dropped = np.isclose(out, a * SATURATION + b, rtol=1e-6)          # PyTorch's own mask, read back
        assert 0 < dropped.sum() < x.size
        np.testing.assert_allclose(out[~dropped], a * x[~dropped] + b, rtol=1e-5, atol=1e-6)
        lucid.manual_seed(4)
        ours = F.alpha_dropout(lucid.tensor(x), p, True).numpy()
        ours_dropped = np.isclose(ours, a * SATURATION + b, rtol=1e-6)
        np.testing.assert_allclose(ours[~ours_dropped], a * x[~ours_dropped] + b, rtol=1e-5, atol=1e-6)
        scaled = torch.nn.functional.dropout(torch.from_numpy(x), p, True).numpy()
        np.testing.assert_allclose(scaled[scaled != 0], x[scaled != 0] / (1 - p), rtol=1e-6)


# ============================================================================ gradients
@pytest.mark.parametrize("function, shape, p", [(F.dropout, (7, 5, 3), 0.3), (F.dropout3d, (2, 3, 3, 2, 5), 0.5),
                                                (F.alpha_dropout, (33,), 0.4),
                                                (F.feature_alpha_dropout, (2, 4, 3), 0.5)])
def test_gradient_is_the_scaled_mask_and_matches_finite_differences(function, shape, p):
    x0 = normal(*shape, dtype=np.float64, seed=11)
    weights = lucid.tensor(normal(*shape, dtype=np.float64, seed=12), dtype=lucid.float64)

    def loss(x: np.ndarray) -> float:
        lucid.manual_seed(21)                           # the same mask at every evaluation
        return float((function(lucid.tensor(x, dtype=lucid.float64), p, True) * weights).sum().item())

    x = lucid.tensor(x0, requires_grad=True, dtype=lucid.float64)
    lucid.manual_seed(21)
    y = function(x, p, True)
    assert y.dtype == lucid.float64
    (y * weights).sum().backward()
    if function in (F.alpha_dropout, F.feature_alpha_dropout):
        a, b = alpha_constants(p)
        kept = ~np.isclose(y.numpy(), a * SATURATION + b, rtol=1e-12)
        expected = weights.numpy() * a * kept
    else:
        kept = y.numpy() != 0
        expected = weights.numpy() * kept / (1 - p)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12, atol=1e-15)
    step, numeric = 1e-6, np.zeros_like(x0)
    for index in np.ndindex(*shape):
        plus, minus = x0.copy(), x0.copy()
        plus[index] += step
        minus[index] -= step
        numeric[index] = (loss(plus) - loss(minus)) / (2 * step)
    np.testing.assert_allclose(x.grad.numpy(), numeric, rtol=1e-6, atol=1e-8)


# ============================================================================ one stream: eager, traced, compiled
def random_calls(x):
    return (F.dropout(x, 0.3), F.dropout3d(x, 0.5), F.alpha_dropout(x, 0.2, True),
            F.feature_alpha_dropout(x, 0.4, True), lucid.rand_like(x), lucid.randn_like(x))


def test_eager_interpreter_and_compiled_draw_the_same_numbers():
    x = lucid.tensor(normal(2, 3, 7, 5, 3))
    lucid.manual_seed(77)
    eager = [y.numpy() for y in random_calls(x)]
    after_eager = lucid.random.state().copy()
    graph = lucid.trace(random_calls, lucid.spec(*x.shape))
    assert [n.attrs["draw"] for n in graph.nodes if n.op == "random"] == list(range(6))
    lucid.manual_seed(77)
    interpreted = lucid.ir.run(graph, x.numpy())
    np.testing.assert_array_equal(lucid.random.state(), after_eager)
    compiled = lucid.compile(random_calls)
    lucid.manual_seed(77)
    native = [y.numpy() for y in compiled(x)]
    np.testing.assert_array_equal(lucid.random.state(), after_eager)     # advanced by the graph's 6 draws
    for e, i, c in zip(eager, interpreted, native):
        np.testing.assert_array_equal(i, e)
    for e, c in zip(eager[:5], native[:5]):
        np.testing.assert_array_equal(c, e)
    np.testing.assert_allclose(native[5], eager[5], rtol=1e-6, atol=1e-7)    # randn: libm against NumPy
    again = [y.numpy() for y in compiled(x)]                             # the next call draws afresh
    assert all(not np.array_equal(a, e) for a, e in zip(again[:1] + again[4:], eager[:1] + eager[4:]))


def test_rand_like_and_randn_like():
    x = lucid.zeros(40, 50, dtype=lucid.float64)
    lucid.manual_seed(0)
    u, z = lucid.rand_like(x), lucid.randn_like(x, dtype=lucid.float32)
    assert u.dtype == lucid.float64 and z.dtype == lucid.float32 and u.shape == z.shape == (40, 50)
    assert 0 <= u.numpy().min() and u.numpy().max() < 1 and abs(u.numpy().mean() - 0.5) < 0.03
    assert abs(z.numpy().mean()) < 0.1 and abs(z.numpy().std() - 1) < 0.1
    assert lucid.rand_like(x, requires_grad=True).requires_grad
    lucid.manual_seed(0)
    np.testing.assert_array_equal(lucid.rand_like(x).numpy(), u.numpy())
    with pytest.raises(lucid.DTypeError, match="rand_like: expected a floating dtype"):
        lucid.rand_like(lucid.zeros(3, dtype=lucid.int64))
    assert lucid.rand(2, 3).shape == (2, 3) and lucid.randn(4).shape == (4,)


# ============================================================================ a compiled training step
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1)
        self.drop3d = nn.Dropout3d(0.3)
        self.conv2 = nn.Conv3d(4, 4, 3, padding=1)
        self.drop = nn.Dropout(0.4)
        self.alpha = nn.AlphaDropout(0.2)
        self.head = nn.Linear(4 * 7 * 5 * 3, 3)

    def forward(self, x):
        x = self.drop3d(self.conv(x).relu())
        x = self.alpha(self.drop(self.conv2(x)).tanh())
        return self.head(x.flatten(1))


def train(compiled: bool, seed: int, steps: int = 3):
    lucid.manual_seed(0)
    model = Net()
    step = lucid.compile(model) if compiled else model
    optimiser = optim.SGD(model.parameters(), lr=0.1)
    x = lucid.tensor(normal(2, 2, 7, 5, 3, seed=1))
    lucid.manual_seed(seed)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = (step(x) ** 2).mean()
        loss.backward()
        optimiser.step()
    return [p.numpy().copy() for p in model.parameters()], step


def test_compiled_training_step_is_reproducible_and_agrees_with_eager():
    first, step = train(True, 7)
    second, _ = train(True, 7)
    eager, _ = train(False, 7)
    other, _ = train(True, 8)
    assert step.stats()["variants"] == 1
    for a, b, e in zip(first, second, eager):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(a, o) for a, o in zip(first, other))


def test_compiled_backward_applies_the_forwards_mask():
    lucid.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 64), nn.Dropout(0.5))
    x = lucid.tensor(normal(5, 6))
    compiled = lucid.compile(model)
    lucid.manual_seed(13)
    y = compiled(x)
    y.backward(lucid.ones(5, 64))
    kept = y.numpy() != 0
    assert 0 < kept.mean() < 1
    # d(sum y)/d(bias) counts the rows where each feature was kept, times 1 / (1 - p)
    np.testing.assert_allclose(model[0].bias.grad.numpy(), kept.sum(0) * 2.0, rtol=1e-6)


def test_eval_inference_and_export_hold_no_random_operator(tmp_path):
    lucid.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 2, 3), nn.Dropout3d(0.5), nn.AlphaDropout(0.3), nn.Dropout(0.5))
    spec = lucid.spec(1, 1, 5, 5, 5)
    assert "random" in {n.op for n in lucid.trace(model, spec).nodes}
    model.eval()
    planned = pipeline.for_inference(lucid.trace(model, spec))
    assert "random" not in {n.op for n in planned.nodes} and not planned.state_updates
    before = lucid.random.state().copy()
    x = lucid.tensor(normal(1, 1, 5, 5, 5))
    np.testing.assert_allclose(lucid.compile(model)(x).numpy(), model[0](x).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(lucid.random.state(), before)
    model.train()
    written = lucid.export(model, spec, path=tmp_path / "net.so")            # exported in eval mode
    library = lucid.runtime.load(written.library)
    np.testing.assert_allclose(library(x.numpy()), model[0](x).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(lucid.errors.ExportError, match="updates state"):
        lucid.export(lambda t: t * lucid.rand_like(t), lucid.spec(3), path=tmp_path / "draws.so")


def test_viewer_draws_random_nodes_at_every_stage(tmp_path):
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.Dropout3d(0.2), nn.ReLU(), nn.Dropout(0.3))
    result = viz.render(model, lucid.spec(1, 1, 6, 6, 6), path=tmp_path / "dropout.html", stage="training")
    assert result.failure is None and "training" in result.stages
    page = (tmp_path / "dropout.html").read_text()
    assert '"random"' in page
    for stage in ("traced", "fused", "training"):
        svg = tmp_path / f"{stage}.svg"
        viz.render(model, lucid.spec(1, 1, 6, 6, 6), path=svg, stage=stage)
        assert svg.read_text().count(">random<") == 2
