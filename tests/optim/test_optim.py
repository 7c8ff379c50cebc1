"""lucid.optim: SGD and Adam against the published update rules, torch.optim, and in training."""
import numpy as np
import pytest

import lucid
from lucid import nn
from lucid.optim import SGD, Adam, Optimizer

SHAPES = [(3, 4), (4,), ()]
STEPS = 25


def param(array):
    """A Parameter holding a copy of ``array``, keeping its dtype."""
    return nn.Parameter(lucid.Tensor(array, dtype=np.asarray(array).dtype))


def start_and_grads(seed=0, dtype=np.float64):
    """Initial values for each shape in SHAPES and STEPS gradients for each of them."""
    rng = np.random.default_rng(seed)
    start = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(STEPS)]
    return start, grads


def run_lucid(make_opt, start, grads):
    params = [param(a) for a in start]
    opt = make_opt(params)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = lucid.Tensor(g, dtype=g.dtype)
        opt.step()
    return [p.data for p in params]


# Reference implementations, written from the update equations in the PyTorch documentation.

def reference_sgd(x, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                  maximize=False):
    b = None
    for g in grads:
        g = -g if maximize else g
        g = g + weight_decay * x
        if momentum != 0:
            b = g if b is None else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        x = x - lr * g
    return x


def reference_adam(x, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                   maximize=False):
    beta1, beta2 = betas
    m = v = v_max = np.zeros_like(x)
    for t, g in enumerate(grads, start=1):
        g = -g if maximize else g
        g = g + weight_decay * x
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g ** 2
        m_hat = m / (1 - beta1 ** t)
        if amsgrad:
            v_max = np.maximum(v_max, v)
            v_hat = v_max / (1 - beta2 ** t)
        else:
            v_hat = v / (1 - beta2 ** t)
        x = x - lr * m_hat / (np.sqrt(v_hat) + eps)
    return x


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, weight_decay=0.1, nesterov=True),
    dict(lr=0.1, momentum=0.5, maximize=True),
    dict(lr=0.02, momentum=0.9, dampening=0.5, weight_decay=0.05, maximize=True),
]
ADAM_CONFIGS = [
    dict(),
    dict(lr=0.01),
    dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.01, amsgrad=True),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.02, weight_decay=0.05, amsgrad=True, maximize=True),
    dict(lr=0.1, betas=(0.0, 0.5)),
]
CASES = ([(SGD, reference_sgd, c) for c in SGD_CONFIGS]
         + [(Adam, reference_adam, c) for c in ADAM_CONFIGS])
IDS = [f"{cls.__name__}-{config}" for cls, _, config in CASES]


@pytest.mark.parametrize("cls,reference,config", CASES, ids=IDS)
def test_matches_reference_equations(cls, reference, config):
    start, grads = start_and_grads()
    got = run_lucid(lambda ps: cls(ps, **config), start, grads)
    for i, (x, g, p) in enumerate(zip(start, zip(*grads), got)):
        assert p.dtype == np.float64
        np.testing.assert_allclose(p, reference(x, g, **config), rtol=1e-10, atol=1e-12,
                                   err_msg=f"parameter {i}")


@pytest.mark.parametrize("cls,reference,config", CASES, ids=IDS)
def test_matches_torch(cls, reference, config):
    torch = pytest.importorskip("torch")
    start, grads = start_and_grads(seed=1)
    got = run_lucid(lambda ps: cls(ps, **config), start, grads)
    tparams = [torch.tensor(x, requires_grad=True) for x in start]
    topt = getattr(torch.optim, cls.__name__)(tparams, **config)
    for step_grads in grads:
        for p, g in zip(tparams, step_grads):
            p.grad = torch.tensor(g)
        topt.step()
    for p, t in zip(got, tparams):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls,reference,config", CASES, ids=IDS)
def test_float32_stays_float32_and_close(cls, reference, config):
    start, grads = start_and_grads(seed=2, dtype=np.float32)
    got = run_lucid(lambda ps: cls(ps, **config), start, grads)
    for x, g, p in zip(start, zip(*grads), got):
        assert p.dtype == np.float32
        expected = reference(x.astype(np.float64), [gi.astype(np.float64) for gi in g], **config)
        np.testing.assert_allclose(p, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make_opt", [lambda ps: SGD(ps, lr=0.1, momentum=0.9),
                                      lambda ps: Adam(ps, lr=0.1)], ids=["SGD", "Adam"])
def test_linear_regression_loss_falls(make_opt):
    lucid.manual_seed(0)
    x = lucid.randn(64, 3)
    y = x @ lucid.Tensor([[1.5], [-2.0], [0.5]]) + 0.3
    w = nn.Parameter(lucid.zeros(3, 1))
    b = nn.Parameter(lucid.zeros(1))
    opt = make_opt([w, b])
    losses = []
    for _ in range(100):
        loss = ((x @ w + b - y) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 1e-3 * losses[0]
    assert all(p.grad is None for p in (w, b))
    np.testing.assert_allclose(w.data.ravel(), [1.5, -2.0, 0.5], atol=0.05)


def test_updates_in_place_and_skip_params_without_grad():
    a, b = param(np.ones(3)), param(np.ones(2))
    data_a = a.data
    opt = Adam([a, b], lr=0.1)
    a.grad = lucid.Tensor(np.ones(3))
    opt.step()
    assert a.data is data_a and a.is_leaf and a.grad is not None
    np.testing.assert_allclose(a.data, 0.9)
    np.testing.assert_array_equal(b.data, 1.0)
    assert opt.state_dict()["state"].keys() == {0}


def test_zero_grad():
    p = param(np.ones(3))
    opt = SGD([p], lr=0.1)
    opt.zero_grad()
    assert p.grad is None
    p.grad = lucid.Tensor(np.ones(3))
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.data, np.zeros(3))
    opt.zero_grad()
    assert p.grad is None


def test_step_with_closure_returns_the_loss_and_records_grads():
    w = nn.Parameter(lucid.Tensor([2.0], dtype=lucid.float32))
    opt = SGD([w], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    with lucid.no_grad():               # as in PyTorch, the closure runs with grad enabled
        loss = opt.step(closure)
    assert loss.item() == 4.0
    np.testing.assert_allclose(w.data, [1.0])  # 2 - 0.25 * (2 * 2)


def test_gradient_of_the_wrong_shape_is_refused():
    p = param(np.zeros((2, 3)))
    p.grad = lucid.Tensor(np.ones(3))
    with pytest.raises(ValueError, match=r"SGD.step.*shape \(2, 3\).*gradient of shape \(3,\)"):
        SGD([p], lr=0.1).step()
    np.testing.assert_array_equal(p.data, 0.0)


def test_param_groups_have_their_own_options():
    a, b = param(np.zeros(2)), param(np.zeros(2))
    opt = SGD([{"params": [a], "lr": 0.5}, {"params": b, "momentum": 0.9}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.1]
    assert [g["momentum"] for g in opt.param_groups] == [0, 0.9]
    assert opt.param_groups[1]["params"][0] is b
    for _ in range(2):
        a.grad = b.grad = lucid.Tensor(np.ones(2))
        opt.step()
    np.testing.assert_allclose(a.data, -1.0)            # 2 steps of 0.5
    np.testing.assert_allclose(b.data, -0.1 - 0.19)     # momentum: buffer 1, then 1.9
    opt.param_groups[0]["lr"] = 0.25                    # schedulers change lr this way
    opt.step()
    np.testing.assert_allclose(a.data, -1.25)


@pytest.mark.parametrize("make_opt", [
    lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    lambda ps: Adam([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.02}], lr=0.01, amsgrad=True),
], ids=["SGD", "Adam-groups"])
def test_state_dict_round_trip_gives_identical_steps(make_opt, tmp_path):
    start, grads = start_and_grads(seed=3)
    first = [param(x) for x in start]
    opt = make_opt(first)

    def train(params, optimizer, step_grads):
        for gs in step_grads:
            for p, g in zip(params, gs):
                p.grad = lucid.Tensor(g, dtype=g.dtype)
            optimizer.step()

    train(first, opt, grads[:10])
    state = opt.state_dict()
    for s in state["state"].values():
        assert all(isinstance(v, (np.ndarray, int)) for v in s.values())
    lucid.save(state, tmp_path / "opt.lucid")
    second = [param(p.data) for p in first]
    opt2 = make_opt(second)
    opt2.load_state_dict(lucid.load(tmp_path / "opt.lucid"))
    assert opt2.param_groups[-1]["lr"] == opt.param_groups[-1]["lr"]
    train(first, opt, grads[10:])
    train(second, opt2, grads[10:])
    for p, q in zip(first, second):
        np.testing.assert_array_equal(p.data, q.data)
    # The saved dict was a snapshot: later steps did not change it.
    key = "exp_avg" if "exp_avg" in state["state"][0] else "momentum_buffer"
    assert not np.array_equal(state["state"][0][key], opt.state_dict()["state"][0][key])


def test_load_state_dict_refuses_mismatches():
    a, b = param(np.zeros(2)), param(np.zeros(3))
    opt = Adam([a, b])
    a.grad, b.grad = lucid.Tensor(np.ones(2)), lucid.Tensor(np.ones(3))
    opt.step()
    state = opt.state_dict()
    with pytest.raises(ValueError, match="Adam.*2 parameters, got 1"):
        Adam([a, b]).load_state_dict({**state, "param_groups": [{**state["param_groups"][0],
                                                                  "params": [0]}]})
    with pytest.raises(ValueError, match="Adam.*1 parameter group.*got 2"):
        Adam([a, b]).load_state_dict({**state, "param_groups": state["param_groups"] * 2})
    with pytest.raises(ValueError, match="Adam.*'exp_avg' expected shape \\(3,\\), got \\(2,\\)"):
        Adam([b, a]).load_state_dict(state)
    with pytest.raises(ValueError, match="Adam.*'state'"):
        Adam([a]).load_state_dict({"param_groups": []})


@pytest.mark.parametrize("make_opt,match", [
    (lambda ps: SGD(ps, lr=-0.1), r"SGD.*lr.*>= 0.*-0.1"),
    (lambda ps: SGD(ps, momentum=-0.5), r"SGD.*momentum.*>= 0.*-0.5"),
    (lambda ps: SGD(ps, weight_decay=-1e-4), r"SGD.*weight_decay.*>= 0.*-0.0001"),
    (lambda ps: SGD(ps, nesterov=True), r"SGD.*nesterov.*momentum > 0.*momentum=0"),
    (lambda ps: SGD(ps, momentum=0.9, dampening=0.1, nesterov=True), r"SGD.*dampening=0.1"),
    (lambda ps: SGD([{"params": ps, "lr": -1.0}]), r"SGD.*lr.*-1.0"),
    (lambda ps: Adam(ps, lr=-1e-3), r"Adam.*lr.*>= 0.*-0.001"),
    (lambda ps: Adam(ps, eps=-1e-8), r"Adam.*eps.*>= 0.*-1e-08"),
    (lambda ps: Adam(ps, betas=(1.0, 0.999)), r"Adam.*beta1.*\[0.0, 1.0\).*1.0"),
    (lambda ps: Adam(ps, betas=(0.9, -0.1)), r"Adam.*beta2.*\[0.0, 1.0\).*-0.1"),
    (lambda ps: Adam(ps, betas=(0.9,)), r"Adam.*betas.*pair"),
    (lambda ps: Adam(ps, weight_decay=-0.1), r"Adam.*weight_decay.*>= 0.*-0.1"),
    (lambda ps: Adam(ps, lr=float("nan")), r"Adam.*lr.*nan"),
    (lambda ps: Adam([]), r"Adam.*empty parameter list"),
    (lambda ps: Adam(ps + ps), r"Adam.*more than once"),
    (lambda ps: SGD([{"params": ps, "momentun": 0.9}]), r"SGD.*unknown option.*momentun"),
])
def test_bad_arguments_raise_value_error(make_opt, match):
    with pytest.raises(ValueError, match=match):
        make_opt([param(np.zeros(2))])


@pytest.mark.parametrize("params", [lambda p: p, lambda p: [np.zeros(2)], lambda p: [{"params": 3}]])
def test_bad_params_raise_type_error(params):
    with pytest.raises(TypeError, match="SGD"):
        SGD(params(param(np.zeros(2))))


def test_optimizers_are_optimizers():
    p = param(np.zeros(2))
    assert isinstance(SGD([p]), Optimizer) and isinstance(Adam([p]), Optimizer)
    assert SGD([p]).defaults["lr"] == 1e-3 and Adam([p]).defaults["betas"] == (0.9, 0.999)
    assert "lr: 0.001" in repr(Adam([p]))


def test_adam_parameters_at_different_steps_and_groups_each_follow_their_own_count():
    """Adam steps the parameters of a group at one step count in one native call: a parameter that
    had no gradient on the first step (one step behind), and one in another group, still follow
    their own step count and options (the reference equations, parameter by parameter)."""
    start, grads = start_and_grads(seed=3)
    params = [param(a) for a in start]
    opt = Adam([{"params": params[:2]}, {"params": params[2:], "lr": 0.05, "amsgrad": True}], lr=0.01)
    for step, step_grads in enumerate(grads):
        for k, (p, g) in enumerate(zip(params, step_grads)):
            p.grad = None if (k == 1 and step == 0) else lucid.Tensor(g, dtype=g.dtype)
        opt.step()
    np.testing.assert_allclose(params[0].data, reference_adam(start[0], [g[0] for g in grads], lr=0.01), rtol=1e-12)
    np.testing.assert_allclose(params[1].data, reference_adam(start[1], [g[1] for g in grads[1:]], lr=0.01),
                               rtol=1e-12)
    np.testing.assert_allclose(params[2].data, reference_adam(start[2], [g[2] for g in grads], lr=0.05, amsgrad=True),
                               rtol=1e-12)


def test_adam_steps_the_parameters_before_a_refused_gradient():
    """As when each parameter stepped alone: the ones before the refused one have stepped."""
    a, b = param(np.ones(3)), param(np.zeros((2, 3)))
    a.grad, b.grad = lucid.Tensor(np.ones(3)), lucid.Tensor(np.ones(3))
    with pytest.raises(ValueError, match=r"Adam.step.*shape \(2, 3\).*gradient of shape \(3,\)"):
        Adam([a, b], lr=0.1).step()
    np.testing.assert_allclose(a.data, 0.9)
    np.testing.assert_array_equal(b.data, 0.0)
