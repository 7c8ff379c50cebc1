"""nn.init: fans and gains as PyTorch defines them, and the statistics of every initialiser's draws
on large tensors (mean, spread, bounds), reproducible under lucid.manual_seed."""
import math

import numpy as np
import pytest

import lucid
from lucid import nn
from lucid.nn import init

WEIGHTS = {"Conv3d": (16, 8, 3, 5, 2), "Conv2d": (6, 4, 3, 3), "Conv1d": (5, 2, 7), "Linear": (30, 20)}


@pytest.mark.parametrize("name", WEIGHTS)
def test_fans_include_the_receptive_field(name):
    shape = WEIGHTS[name]
    receptive = math.prod(shape[2:])
    assert init._calculate_fan_in_and_fan_out(lucid.zeros(*shape)) == (shape[1] * receptive, shape[0] * receptive)


def test_fans_and_gains_equal_torch():
    torch = pytest.importorskip("torch")
    for shape in WEIGHTS.values():
        assert (init._calculate_fan_in_and_fan_out(lucid.zeros(*shape))
                == torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(*shape)))
    for args in [("linear",), ("conv3d",), ("sigmoid",), ("tanh",), ("relu",), ("selu",), ("leaky_relu",),
                 ("leaky_relu", 0.2), ("leaky_relu", 1), ("conv_transpose2d",)]:
        assert init.calculate_gain(*args) == pytest.approx(torch.nn.init.calculate_gain(*args), rel=1e-15)


def test_gains_and_refusals():
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain("swishy")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.xavier_uniform_(lucid.zeros(5))
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_normal_(lucid.zeros(4, 4), mode="fan_avg")


SHAPE = (64, 32, 3, 3, 3)        # 55296 values; fan_in 864, fan_out 1728


def uniform_checks(values, bound):
    assert values.min() >= -bound and values.max() <= bound and values.max() > 0.99 * bound
    assert abs(values.mean()) < 0.02 * bound
    assert values.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)


def normal_checks(values, std, mean=0.0):
    assert abs(values.mean() - mean) < 0.02 * std
    assert values.std() == pytest.approx(std, rel=0.02)


@pytest.mark.parametrize("mode,fan", [("fan_in", 864), ("fan_out", 1728)])
@pytest.mark.parametrize("nonlinearity,a,gain", [("relu", 0, math.sqrt(2)), ("leaky_relu", 0.1, math.sqrt(2 / 1.01)),
                                                 ("linear", 0, 1.0), ("tanh", 0, 5 / 3), ("selu", 0, 0.75)])
def test_kaiming(mode, fan, nonlinearity, a, gain):
    w = lucid.zeros(*SHAPE)
    assert init.kaiming_uniform_(w, a=a, mode=mode, nonlinearity=nonlinearity) is w
    uniform_checks(w.data, math.sqrt(3) * gain / math.sqrt(fan))
    init.kaiming_normal_(w, a=a, mode=mode, nonlinearity=nonlinearity)
    normal_checks(w.data, gain / math.sqrt(fan))


def test_xavier_normal_uniform_constant():
    w = lucid.zeros(*SHAPE)
    std = 1.5 * math.sqrt(2 / (864 + 1728))
    uniform_checks(init.xavier_uniform_(w, gain=1.5).data, math.sqrt(3) * std)
    normal_checks(init.xavier_normal_(w, gain=1.5).data, std)
    normal_checks(init.normal_(w, mean=3.0, std=0.5).data, 0.5, mean=3.0)
    values = init.uniform_(w, -2.0, 6.0).data
    assert values.min() >= -2 and values.max() <= 6 and abs(values.mean() - 2) < 0.05
    assert (init.constant_(w, 0.25).data == 0.25).all()
    assert (init.zeros_(w).data == 0).all() and (init.ones_(w).data == 1).all()


def truncated_moments(mean, std, a, b):
    """Mean and standard deviation of N(mean, std) truncated to [a, b] (closed form)."""
    alpha, beta = (a - mean) / std, (b - mean) / std
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))
    mass = cdf(beta) - cdf(alpha)
    shift = (pdf(alpha) - pdf(beta)) / mass
    var = 1 + (alpha * pdf(alpha) - beta * pdf(beta)) / mass - shift ** 2
    return mean + std * shift, std * math.sqrt(var)


@pytest.mark.parametrize("mean,std,a,b", [(0, 1, -2, 2), (0, 0.02, -2, 2), (1, 2, 0, 3), (0, 1, 4, 5), (0, 1, -0.1, 0.1)])
def test_trunc_normal(mean, std, a, b):
    w = init.trunc_normal_(lucid.zeros(*SHAPE), mean=mean, std=std, a=a, b=b)
    values = w.data.astype(np.float64)
    assert values.min() >= a and values.max() <= b
    want_mean, want_std = truncated_moments(mean, std, a, b)
    assert abs(values.mean() - want_mean) < 0.02 * want_std
    assert values.std() == pytest.approx(want_std, rel=0.03)


def test_in_place_without_grad_and_reproducible():
    layer = nn.Conv3d(4, 8, 3)
    weight = layer.weight
    lucid.manual_seed(3)
    nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    first = layer.weight.data.copy()
    assert layer.weight is weight and weight.requires_grad and weight.grad is None and weight._node is None
    lucid.manual_seed(3)
    nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    np.testing.assert_array_equal(layer.weight.data, first)
    assert layer.weight.dtype == lucid.float32
