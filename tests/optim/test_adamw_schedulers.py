"""AdamW and lucid.optim.lr_scheduler: against the update rule / closed forms written here from the
published definitions, and against torch.optim where installed (exact rate sequences, trajectories)."""
import copy
import math

import numpy as np
import pytest

import lucid
from lucid import nn
from lucid.optim import SGD, Adam, AdamW, lr_scheduler

STEPS = 12


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    start = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    grads = [[rng.standard_normal(a.shape) for a in start] for _ in range(STEPS)]
    return start, grads


def lucid_trajectory(config, start, grads):
    params = [nn.Parameter(lucid.Tensor(a, dtype="float64")) for a in start]
    opt = AdamW(params, **config)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = lucid.Tensor(g, dtype="float64")
        opt.step()
    return [p.data for p in params]


def reference_adamw(x, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
    """Loshchilov & Hutter's AdamW, in the bias-corrected form of the PyTorch documentation."""
    m, v, v_max = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    for t, g in enumerate(grads, start=1):
        x = x - lr * weight_decay * x
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        v_max = np.maximum(v_max, v)
        v_hat = (v_max if amsgrad else v) / (1 - betas[1] ** t)
        x = x - lr * (m / (1 - betas[0] ** t)) / (np.sqrt(v_hat) + eps)
    return x


CONFIGS = [dict(), dict(lr=0.05, weight_decay=0.1), dict(lr=0.02, weight_decay=0.3, amsgrad=True),
           dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.0)]


@pytest.mark.parametrize("config", CONFIGS)
def test_adamw_matches_its_update_rule(config):
    start, grads = make_params()
    got = lucid_trajectory(config, start, grads)
    for i, x in enumerate(start):
        want = reference_adamw(x, [g[i] for g in grads], **config)
        np.testing.assert_allclose(got[i], want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("config", CONFIGS)
def test_adamw_matches_torch(config):
    torch = pytest.importorskip("torch")
    start, grads = make_params(1)
    tparams = [torch.tensor(a, requires_grad=True) for a in start]
    topt = torch.optim.AdamW(tparams, **config)
    for step_grads in grads:
        for p, g in zip(tparams, step_grads):
            p.grad = torch.tensor(g)
        topt.step()
    for got, want in zip(lucid_trajectory(config, start, grads), tparams):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_adamw_decay_is_decoupled_from_adam():
    """With a zero gradient Adam's step is zero, so only the decay moves the weights."""
    p = nn.Parameter(lucid.Tensor(np.full(3, 2.0), dtype="float64"))
    opt = AdamW([p], lr=0.1, weight_decay=0.5)
    p.grad = lucid.Tensor(np.zeros(3), dtype="float64")
    opt.step()
    np.testing.assert_allclose(p.data, 2.0 * (1 - 0.1 * 0.5))
    with pytest.raises(ValueError, match="AdamW: invalid weight_decay"):
        AdamW([p], weight_decay=-1)


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_one_optimiser_over_parameters_of_mixed_sizes_and_dtypes_steps_each_as_alone(cls):
    """The native step keeps each parameter's array addresses and a group's scalars from call to call
    (large, then small, then of the other dtype, then large again): each parameter ends bit for bit
    where an optimiser of its own takes it, and the state holds only Adam's moments."""
    rng = np.random.default_rng(5)
    shapes = [((40, 30), "float32"), ((7,), "float32"), ((3, 5), "float64"), ((2, 3, 4), "float32"), ((), "float64")]
    starts = [rng.standard_normal(shape).astype(dtype) for shape, dtype in shapes]
    grads = [[rng.standard_normal(a.shape).astype(a.dtype) for a in starts] for _ in range(4)]

    def run(groups: list) -> list:
        params = [nn.Parameter(lucid.Tensor(a.copy(), dtype=a.dtype.name)) for a in starts]
        optimisers = [cls([params[k] for k in group], lr=0.05, weight_decay=0.1, amsgrad=True) for group in groups]
        for step in grads:
            for p, g in zip(params, step):
                p.grad = lucid.Tensor(g, dtype=g.dtype.name)
            for opt in optimisers:
                opt.step()
        assert all(set(state) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
                   for opt in optimisers for state in opt.state.values())
        return [p.data for p in params]

    together, alone = run([range(len(starts))]), run([[k] for k in range(len(starts))])
    for k, (a, b) in enumerate(zip(together, alone)):
        np.testing.assert_array_equal(a, b, err_msg=f"parameter {k} {shapes[k]}")


def pytorch_order_step(cls, x, m, v, v_max, g, t, lr, betas, eps, weight_decay, amsgrad, maximize):
    """One step the way PyTorch's single-tensor Adam/AdamW writes it, one NumPy operation at a time
    at the arrays' precision (the sequence lucid's native step must equal bit for bit)."""
    dtype = x.dtype.type
    g = -g if maximize else g
    if cls is AdamW:
        x = x * dtype(1 - lr * weight_decay)
    elif weight_decay:
        g = g + dtype(weight_decay) * x
    m = m + (g - m) * dtype(1 - betas[0])
    v = v * dtype(betas[1]) + g * dtype(1 - betas[1]) * g
    if amsgrad:
        v_max = np.maximum(v_max, v)
    denominator = np.sqrt(v_max if amsgrad else v) / dtype(math.sqrt(1 - betas[1] ** t)) + dtype(eps)
    return x - m / denominator * dtype(lr / (1 - betas[0] ** t)), m, v, v_max


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls, config", [
    (AdamW, dict(lr=0.05, weight_decay=0.1)), (AdamW, dict(lr=0.02, weight_decay=0.3, amsgrad=True, maximize=True)),
    (Adam, dict(lr=0.01, weight_decay=0.2)), (Adam, dict(lr=0.03, betas=(0.5, 0.7), eps=1e-3, amsgrad=True))])
def test_the_native_step_is_pytorchs_operation_sequence_bit_for_bit(cls, config, dtype):
    """Odd sizes (a vector loop's remainder), NaN, infinities and magnitudes from 1e-20 to 1e20, a
    Fortran-ordered parameter, a gradient that is its parameter's own array (taken as it was before
    the step) and a parameter array replaced between steps."""
    settings = dict(dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False),
                    **config)
    rng = np.random.default_rng(8)
    starts = [rng.standard_normal(1021), np.asfortranarray(rng.standard_normal((7, 9))), rng.standard_normal(3)]
    starts = [a.astype(dtype) for a in starts]
    starts[0][[5, 9, 13]] = np.nan, np.inf, -np.inf
    params = [nn.Parameter(lucid.Tensor(a.copy(), dtype=dtype)) for a in starts]
    params[1].data = starts[1].copy(order="F")                  # Tensor() makes a C copy: put it back
    opt = cls(params, **config)
    want = [[a.copy(), np.zeros_like(a), np.zeros_like(a), np.zeros_like(a)] for a in starts]
    for t in range(1, 6):
        grads = [(rng.standard_normal(a.shape) * 10.0 ** rng.integers(-20, 20, a.shape)).astype(dtype) for a in starts]
        grads[2] = params[2].data if t == 3 else grads[2]        # the parameter's own array
        if t == 4:
            params[0].data = params[0].data.copy()             # a new array for the parameter
        expected_grads = [np.array(g) for g in grads]
        for p, g in zip(params, grads):
            p.grad = lucid.Tensor(g, dtype=dtype) if g is not params[2].data else p
        with np.errstate(all="ignore"):
            opt.step()
            for k, g in enumerate(expected_grads):
                want[k] = list(pytorch_order_step(cls, *want[k], g, t, **settings))
        for k, p in enumerate(params):
            np.testing.assert_array_equal(p.data, want[k][0], err_msg=f"{cls.__name__} step {t} parameter {k}")
            np.testing.assert_array_equal(opt.state[p]["exp_avg_sq"], want[k][2], err_msg=f"step {t} v {k}")


# --------------------------------------------------------------------------- schedulers

def optimiser(kind="sgd", lrs=(0.1, 0.02)):
    """Two parameter groups with different base rates."""
    groups = [{"params": [nn.Parameter(lucid.zeros(2))], "lr": lr} for lr in lrs]
    return SGD(groups, lr=lrs[0], momentum=0.9) if kind == "sgd" else Adam(groups, lr=lrs[0])


def rates(scheduler, steps):
    seen = [scheduler.get_last_lr()]
    for _ in range(steps):
        scheduler.optimizer.step()
        scheduler.step()
        seen.append(scheduler.get_last_lr())
        assert seen[-1] == [g["lr"] for g in scheduler.optimizer.param_groups]
    return np.array(seen)


def one_cycle_reference(step, total, max_lr, pct=0.3, div=25.0, final_div=1e4, strategy="cos",
                        three_phase=False):
    """The one-cycle rate, from Smith & Topin and PyTorch's documented phase boundaries."""
    start, low = max_lr / div, max_lr / div / final_div
    rise = pct * total - 1
    phases = ([(rise, start, max_lr), (2 * rise, max_lr, start), (total - 1, start, low)] if three_phase
              else [(rise, start, max_lr), (total - 1, max_lr, low)])
    first = 0.0
    for i, (last, a, b) in enumerate(phases):
        if step <= last or i == len(phases) - 1:
            f = (step - first) / (last - first)
            return b + (a - b) / 2 * (1 + math.cos(math.pi * f)) if strategy == "cos" else a + (b - a) * f
        first = last


BASE = np.array([0.1, 0.02])
SCHEDULES = {
    "StepLR": (dict(step_size=3, gamma=0.5), lambda t: BASE * 0.5 ** (t // 3)),
    "MultiStepLR": (dict(milestones=[2, 5, 5, 9], gamma=0.3), lambda t: BASE * 0.3 ** sum(m <= t for m in [2, 5, 5, 9])),
    "ExponentialLR": (dict(gamma=0.9), lambda t: BASE * 0.9 ** t),
    "CosineAnnealingLR": (dict(T_max=7, eta_min=0.001),
                          lambda t: 0.001 + (BASE - 0.001) * (1 + math.cos(math.pi * t / 7)) / 2),
    "LambdaLR": (dict(lr_lambda=lambda t: 1 / (1 + t)), lambda t: BASE / (1 + t)),
    "OneCycleLR": (dict(max_lr=[0.5, 0.05], total_steps=20),
                   lambda t: [one_cycle_reference(t, 20, m) for m in (0.5, 0.05)]),
    "OneCycleLR-linear-3": (dict(max_lr=0.4, total_steps=20, anneal_strategy="linear", three_phase=True,
                                 pct_start=0.25, div_factor=10, final_div_factor=100),
                            lambda t: [one_cycle_reference(t, 20, 0.4, 0.25, 10, 100, "linear", True)] * 2),
}


def make_scheduler(name, module, opt):
    config, _ = SCHEDULES[name]
    return getattr(module, name.split("-")[0])(opt, **config)


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedules_follow_their_definition(name):
    steps = 19 if name.startswith("OneCycle") else 16
    got = rates(make_scheduler(name, lr_scheduler, optimiser()), steps)
    want = np.array([SCHEDULES[name][1](t) for t in range(steps + 1)])
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("name", SCHEDULES)
def test_schedules_match_torch(name, kind):
    torch = pytest.importorskip("torch")
    steps = 19 if name.startswith("OneCycle") else 16
    got = rates(make_scheduler(name, lr_scheduler, optimiser(kind)), steps)
    params = [torch.zeros(2, requires_grad=True) for _ in BASE]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, BASE)]
    topt = (torch.optim.SGD(groups, lr=0.1, momentum=0.9) if kind == "sgd"
            else torch.optim.Adam(groups, lr=0.1))
    tsched = make_scheduler(name, torch.optim.lr_scheduler, topt)
    want = [tsched.get_last_lr()]
    for _ in range(steps):
        topt.step()
        tsched.step()
        want.append(tsched.get_last_lr())
    np.testing.assert_allclose(got, np.array(want), rtol=1e-12)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_one_cycle_momentum_matches_torch(kind):
    torch = pytest.importorskip("torch")
    opt = optimiser(kind)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=15, three_phase=True)
    params = [torch.zeros(2, requires_grad=True) for _ in BASE]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, BASE)]
    topt = (torch.optim.SGD(groups, lr=0.1, momentum=0.9) if kind == "sgd"
            else torch.optim.Adam(groups, lr=0.1))
    tsched = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=0.3, total_steps=15, three_phase=True)
    key = "momentum" if kind == "sgd" else "betas"
    for _ in range(14):
        for g, tg in zip(opt.param_groups, topt.param_groups):
            np.testing.assert_allclose(np.ravel(g[key]), np.ravel(tg[key]), rtol=1e-12)
        opt.step(), sched.step(), topt.step(), tsched.step()


def test_one_cycle_refuses_stepping_past_the_end_and_momentum_free_optimisers():
    sched = lr_scheduler.OneCycleLR(optimiser(), max_lr=0.1, total_steps=3)
    for _ in range(3):
        sched.step()
    with pytest.raises(ValueError, match="past total_steps=3"):
        sched.step()
    with pytest.raises(ValueError, match="total_steps"):
        lr_scheduler.OneCycleLR(optimiser(), max_lr=0.1)


def reference_plateau(metrics, lr, mode, factor, patience, threshold, threshold_mode, cooldown, min_lr):
    """ReduceLROnPlateau as PyTorch documents it."""
    best, bad, cool, out = (math.inf if mode == "min" else -math.inf), 0, 0, []
    for m in metrics:
        if mode == "min":
            better = m < (best * (1 - threshold) if threshold_mode == "rel" else best - threshold)
        else:
            better = m > (best * (1 + threshold) if threshold_mode == "rel" else best + threshold)
        best, bad = (m, 0) if better else (best, bad + 1)
        if cool > 0:
            cool, bad = cool - 1, 0
        if bad > patience:
            new = max(lr * factor, min_lr)
            lr = new if lr - new > 1e-8 else lr
            cool, bad = cooldown, 0
        out.append(lr)
    return out


PLATEAUS = [dict(mode="min", factor=0.5, patience=2, threshold=0.01, threshold_mode="rel", cooldown=1, min_lr=0.01),
            dict(mode="max", factor=0.2, patience=1, threshold=0.1, threshold_mode="abs", cooldown=0, min_lr=0.0)]


@pytest.mark.parametrize("config", PLATEAUS)
def test_reduce_on_plateau(config):
    metrics = [5, 4, 4.5, 4.2, 4.1, 4.0, 4.3, -1, -1.005, -0.9, -0.99, 3, 3, 3, 3, 3]
    opt = optimiser(lrs=(0.1,))
    sched = lr_scheduler.ReduceLROnPlateau(opt, **config)
    got = []
    for m in metrics:
        sched.step(m)
        got.append(sched.get_last_lr()[0])
    np.testing.assert_allclose(got, reference_plateau(metrics, 0.1, **config), rtol=1e-12)
    torch = pytest.importorskip("torch")
    topt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **config)
    want = []
    for m in metrics:
        tsched.step(m)
        want.append(topt.param_groups[0]["lr"])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_scheduler_state_dict_resumes(tmp_path):
    opt = optimiser()
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for _ in range(4):
        sched.step()
    lucid.save(sched.state_dict(), tmp_path / "sched.lucid")
    fresh_opt = optimiser()
    fresh = lr_scheduler.CosineAnnealingLR(fresh_opt, T_max=10)
    fresh.load_state_dict(lucid.load(tmp_path / "sched.lucid"))
    sched.step(), fresh.step()
    assert fresh.get_last_lr() == sched.get_last_lr() and fresh.last_epoch == 5
    with pytest.raises(ValueError, match="unknown entries"):
        fresh.load_state_dict({"bogus": 1})
    assert "lr_lambdas" not in lr_scheduler.LambdaLR(optimiser(), lambda t: 1.0).state_dict()


def test_the_native_step_follows_the_target_named_when_it_runs(monkeypatch):
    """The step is compiled for the target `LUCID_CPU` names at each step (as graphs are), so a
    process that narrows it later gets code for the narrower CPU, with the same results; an
    optimiser that has stepped can be deep-copied (it holds no compiled code) and the copy steps."""
    from lucid.codegen.adam_step import AdamRule, adam_step, named_target

    rule = AdamRule(np.dtype("float32"), True, True, False, False)
    here = adam_step(rule, named_target())
    monkeypatch.setenv("LUCID_CPU", "x86-64-v2")
    narrower = adam_step(rule, named_target())
    assert narrower is not here and adam_step(rule, named_target()) is narrower
    monkeypatch.delenv("LUCID_CPU")
    assert adam_step(rule, named_target()) is here
    results = []
    for cpu in (None, "x86-64-v2"):
        if cpu:
            monkeypatch.setenv("LUCID_CPU", cpu)
        p = nn.Parameter(lucid.Tensor(np.linspace(-1, 1, 37), dtype="float32"))
        opt = AdamW([p], lr=0.1)
        for step in range(3):
            p.grad = lucid.Tensor(np.cos(np.arange(37.0) + step), dtype="float32")
            opt.step()
        results.append(p.data.copy())
    np.testing.assert_array_equal(results[0], results[1])
    copied = copy.deepcopy(opt)
    copied.param_groups[0]["params"][0].grad = lucid.Tensor(np.ones(37), dtype="float32")
    copied.step()
    assert not np.array_equal(copied.param_groups[0]["params"][0].data, p.data)
