"""The autodiff pass (`lucid.passes.autodiff.run`): gradient graphs against independent references.

- Every differentiable operator: each call of the shared gradient table (tests/gradient_cases.py) is
  traced, differentiated with respect to all its float inputs and run on the interpreter with a
  random seed G; the gradients must equal (a) the eager tape's gradients of `(y * G).sum()` and
  (b) central finite differences of the forward graph's interpreter (a check that shares no
  gradient rule with lucid). A guard fails when a differentiable operator has no case.
- Convolutions: 49 conv / conv_transpose configurations in 1-D/2-D/3-D (stride, symmetric,
  asymmetric and 'same'/'valid' padding, dilation, groups, output_padding, with and without bias):
  the input, weight and bias gradients of the backward graph equal the eager tape's and the
  direct-loop oracle's VJPs (tests/oracle.py).
- Module parameters: UNet3D (base=2, depth=1) and VideoClassifier in eval and train mode; the default
  `wrt` is one gradient per parameter that requires grad, equal to eager `loss.backward()`.
- Semantics: accumulation over several uses and outputs, zeros for a name with no path to the outputs,
  int/bool intermediates, module scopes of gradient nodes, the forward graph left unchanged, and the
  errors (GradientError for a non-float `wrt`, GraphError for an unknown name).

Everything is float64 and tiny.
"""
from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass
from functools import partial

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
import oracle
from gradient_cases import CASES, F64, differentiable_ops, flat_cases, forward, loss_weights
from lucid.errors import GradientError, GraphError
from lucid.ir import Scope, ops
from lucid.passes import autodiff
from model_helpers import param_copies
from models import UNet3D, VideoClassifier

# Backward graph vs eager tape: the same gradient rules on the same kernels (only the order of
# floating-point accumulation may differ).
SAME = dict(rtol=1e-10, atol=1e-12)
# Against the direct-loop oracle (a different summation order).
ORACLE = dict(rtol=1e-9, atol=1e-11)


def _spec(array):
    return lucid.spec(np.shape(array), dtype=F64)


def _float_inputs(graph) -> list[str]:
    return [v.name for v in graph.inputs if v.dtype.is_floating]


def _eager_grads(fn, arrays, G):
    """Eager tape: gradients of (fn(*tensors) * G).sum() for every input, and the output."""
    tensors = [lucid.Tensor(a, dtype=F64, requires_grad=True) for a in arrays]
    y = fn(*tensors)
    (y * lucid.Tensor(G, dtype=F64)).sum().backward()
    return [t.grad.data for t in tensors], y.data


def _check_grads(names, actual, expected, tol, what):
    for name, a, e in zip(names, actual, expected, strict=True):
        assert a.shape == e.shape, f"{what}: gradient of {name!r} has shape {a.shape}, expected {e.shape}"
        np.testing.assert_allclose(a, e, **tol, err_msg=f"{what}: gradient of {name!r}")


# ==============================================================================================
# Every differentiable operator (the shared case table)


def test_every_differentiable_op_is_covered():
    missing = sorted(differentiable_ops() - set(CASES))
    assert not missing, f"differentiable operators without a case in tests/gradient_cases.py: {missing}"
    traced = set()
    for cases in CASES.values():
        for case in cases:
            traced |= {n.op for n in lucid.trace(case.fn, *map(_spec, case.arrays)).nodes}
    assert sorted(differentiable_ops() - traced) == [], "some differentiable operators never appear in a traced case"


@pytest.mark.parametrize("op_name, case", list(flat_cases()))
def test_backward_graph_of_every_case(op_name, case):
    arrays = [np.array(a, dtype=np.float64) for a in case.arrays]
    graph = lucid.trace(case.fn, *map(_spec, arrays))
    assert op_name in {n.op for n in graph.nodes}, f"the traced graph of {case.label!r} has no {op_name} node"
    text = str(graph)
    wrt = _float_inputs(graph)
    assert len(wrt) == len(arrays)

    grad_graph = autodiff.run(graph, wrt=wrt)
    assert str(graph) == text, "autodiff modified the forward graph"
    assert [v.name for v in grad_graph.inputs] == wrt + ["grad_0"]
    assert grad_graph.returns_tuple and len(grad_graph.outputs) == 1 + len(wrt)
    assert [v.type for v in grad_graph.outputs[1:]] == [v.type for v in graph.inputs]

    y = lucid.ir.run(graph, *arrays)
    G = loss_weights(y.shape)
    y_again, *grads = lucid.ir.run(grad_graph, *arrays, G)
    np.testing.assert_array_equal(y_again, y)

    # (a) the eager tape, on the same loss
    tensors, y_eager = forward(case, arrays, True)
    (y_eager * lucid.Tensor(G, dtype=F64)).sum().backward()
    _check_grads(wrt, grads, [t.grad.data for t in tensors], SAME, f"{op_name} {case.label} vs eager")

    # (b) central finite differences of the forward graph on the interpreter
    eps = 1e-6
    for name, a, g in zip(wrt, arrays, grads):
        numeric = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            saved = a[idx]
            a[idx] = saved + eps
            up = np.sum(lucid.ir.run(graph, *arrays) * G)
            a[idx] = saved - eps
            down = np.sum(lucid.ir.run(graph, *arrays) * G)
            a[idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(g, numeric, rtol=case.rtol, atol=case.atol,
                                   err_msg=f"{op_name} {case.label}: gradient of {name!r} vs finite differences")


def test_wrt_order_and_subset():
    a, b = np.random.default_rng(1).standard_normal((2, 3, 3))
    graph = lucid.trace(ops.matmul, _spec(a), _spec(b))
    G = loss_weights((3, 3))
    (ga, gb), _ = _eager_grads(ops.matmul, [a, b], G)
    _, gb2, ga2 = lucid.ir.run(autodiff.run(graph, wrt=["b", "a"]), a, b, G)
    _, gb3 = lucid.ir.run(autodiff.run(graph, wrt=["b"]), a, b, G)
    _, ga4, ga5 = lucid.ir.run(autodiff.run(graph, wrt=["a", "a"]), a, b, G)
    for actual, expected in [(ga2, ga), (gb2, gb), (gb3, gb), (ga4, ga), (ga5, ga)]:
        np.testing.assert_allclose(actual, expected, **SAME)
    assert len(autodiff.run(graph, wrt=[]).outputs) == 1


# ==============================================================================================
# Convolutions against the direct-loop oracle


@dataclass(frozen=True)
class ConvCfg:
    transposed: bool
    x: tuple                    # input shape (N, C, *spatial)
    w: tuple                    # conv: (O, C/g, *k); transposed: (C, O/g, *k)
    bias: bool = True
    stride: object = 1
    padding: object = 0         # int, ints, 'same'/'valid' (through F), or (lo, hi) pairs (through ops)
    dilation: object = 1
    groups: int = 1
    output_padding: object = 0

    @property
    def nd(self):
        return len(self.x) - 2

    @property
    def asymmetric(self):
        return isinstance(self.padding, tuple) and isinstance(self.padding[0], tuple)

    def _tup(self, v):
        return (v,) * self.nd if isinstance(v, int) else tuple(v)

    def call(self, x, w, b=None):
        if self.asymmetric:
            common = dict(stride=self._tup(self.stride), padding=self.padding, dilation=self._tup(self.dilation),
                          groups=self.groups)
            if self.transposed:
                return ops.conv_transpose(x, w, b, output_padding=self._tup(self.output_padding), **common)
            return ops.conv(x, w, b, **common)
        if self.transposed:
            fn = getattr(F, f"conv_transpose{self.nd}d")
            return fn(x, w, b, stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                      groups=self.groups, dilation=self.dilation)
        fn = getattr(F, f"conv{self.nd}d")
        return fn(x, w, b, stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def function(self):
        if self.bias:
            def conv_fn(x, w, b):
                return self.call(x, w, b)
        else:
            def conv_fn(x, w):
                return self.call(x, w)
        return conv_fn

    def oracle_geometry(self):
        """Keyword arguments of the oracle: (lo, hi) pairs resolved from the padding argument."""
        k = self.w[2:]
        if self.transposed:
            pads, out_pad = oracle.resolve_conv_transpose_padding(self.padding, self.output_padding, self.x[2:], k,
                                                                  self.stride, self.dilation)
            return dict(stride=self.stride, padding=pads, output_padding=out_pad, dilation=self.dilation,
                        groups=self.groups)
        pads = oracle.resolve_conv_padding(self.padding, self.x[2:], k, self.stride, self.dilation)
        return dict(stride=self.stride, padding=pads, dilation=self.dilation, groups=self.groups)

    def label(self):
        parts = [f"{'convT' if self.transposed else 'conv'}{self.nd}d", f"x{self.x}", f"w{self.w}"]
        for key in ("stride", "padding", "dilation", "groups", "output_padding"):
            value = getattr(self, key)
            if value not in (0, 1) or (key == "padding" and value == 1):
                parts.append(f"{key}={value}")
        parts.append("bias" if self.bias else "nobias")
        return "-".join(parts).replace(" ", "")


C, T = partial(ConvCfg, False), partial(ConvCfg, True)

CONV_CONFIGS = [
    # ------------------------------------------------------------ conv 1-D
    C(x=(2, 2, 7), w=(3, 2, 3)),
    C(x=(1, 2, 8), w=(3, 2, 3), stride=2, padding=1),
    C(x=(2, 1, 7), w=(2, 1, 3), dilation=2, padding=2),
    C(x=(1, 4, 6), w=(2, 2, 2), groups=2),
    C(x=(1, 3, 5), w=(6, 1, 3), groups=3, padding=1),                    # depthwise, channel multiplier 2
    C(x=(1, 2, 5), w=(2, 2, 3), padding="same"),
    C(x=(1, 1, 6), w=(2, 1, 4), padding="same"),                          # even kernel: asymmetric 'same'
    C(x=(1, 2, 5), w=(1, 2, 2), padding="same", dilation=2),
    C(x=(1, 2, 7), w=(2, 2, 3), padding="valid", stride=2),
    C(x=(1, 2, 6), w=(2, 2, 3), padding=((2, 0),), stride=2),
    C(x=(1, 2, 5), w=(2, 1, 2), padding=((0, 3),), dilation=2, groups=2),
    C(x=(2, 2, 8), w=(3, 2, 2), stride=3, bias=False),
    # ------------------------------------------------------------ conv 2-D
    C(x=(1, 2, 5, 4), w=(3, 2, 2, 3), stride=(2, 1), padding=(1, 0)),
    C(x=(1, 4, 4, 6), w=(2, 2, 2, 2), dilation=(1, 2), groups=2),
    C(x=(1, 2, 4, 5), w=(2, 2, 2, 3), padding="same"),
    C(x=(1, 1, 5, 6), w=(2, 1, 3, 3), padding="same", stride=2),
    C(x=(1, 2, 4, 5), w=(2, 2, 2, 2), padding=((0, 2), (1, 0)), stride=(1, 2)),
    C(x=(1, 3, 4, 4), w=(3, 1, 3, 3), padding=1, groups=3),
    C(x=(2, 2, 5, 5), w=(2, 2, 3, 3), stride=2, padding=1, bias=False),
    C(x=(1, 3, 3, 3), w=(2, 3, 1, 1)),
    C(x=(1, 1, 6, 6), w=(1, 1, 2, 2), padding="valid", dilation=2),
    # ------------------------------------------------------------ conv 3-D
    C(x=(1, 2, 3, 3, 3), w=(2, 2, 2, 2, 2)),
    C(x=(1, 1, 3, 4, 3), w=(2, 1, 2, 2, 2), stride=(1, 2, 1), padding=(1, 0, 1)),
    C(x=(1, 2, 4, 3, 3), w=(2, 1, 2, 2, 2), dilation=(2, 1, 1), groups=2, padding=1),
    C(x=(1, 1, 3, 3, 4), w=(2, 1, 3, 2, 2), padding="same"),
    C(x=(1, 2, 3, 4, 3), w=(2, 2, 2, 2, 2), padding=((1, 0), (0, 1), (1, 1)), stride=2),
    C(x=(2, 1, 4, 4, 4), w=(2, 1, 3, 3, 3), stride=2, padding=1, bias=False),
    # ------------------------------------------------------------ conv_transpose 1-D
    T(x=(1, 2, 4), w=(2, 3, 3)),
    T(x=(1, 2, 4), w=(2, 1, 3), stride=2, padding=1, output_padding=1),
    T(x=(2, 1, 4), w=(1, 2, 2), dilation=2, output_padding=1),             # output_padding >= stride
    T(x=(1, 4, 3), w=(4, 1, 2), stride=2, groups=2),
    T(x=(1, 2, 5), w=(2, 2, 3), padding="same"),
    T(x=(1, 1, 4), w=(1, 2, 4), padding="same", stride=2),
    T(x=(1, 2, 3), w=(2, 1, 1), padding="same", stride=2),                # 'same' through output_padding
    T(x=(1, 2, 4), w=(2, 1, 3), padding=((1, 0),), stride=2, output_padding=1),
    T(x=(1, 2, 3), w=(2, 2, 2), stride=3, bias=False),
    # ------------------------------------------------------------ conv_transpose 2-D
    T(x=(1, 2, 3, 2), w=(2, 2, 3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2)),
    T(x=(1, 4, 3, 3), w=(4, 1, 2, 2), dilation=(1, 2), groups=2),
    T(x=(1, 1, 3, 3), w=(1, 2, 3, 4), padding="same", stride=2),
    T(x=(1, 2, 3, 3), w=(2, 2, 3, 3), padding=((0, 1), (2, 1)), stride=2),
    T(x=(2, 2, 3, 3), w=(2, 1, 3, 3), padding=1, bias=False),
    T(x=(1, 3, 3, 3), w=(3, 1, 2, 2), stride=2, groups=3),
    T(x=(1, 1, 3, 3), w=(1, 1, 2, 2), padding="valid", dilation=2),
    # ------------------------------------------------------------ conv_transpose 3-D
    T(x=(1, 2, 2, 2, 2), w=(2, 1, 2, 2, 2), stride=2),
    T(x=(1, 1, 2, 3, 2), w=(1, 2, 2, 3, 2), stride=(1, 2, 2), padding=(0, 1, 0), output_padding=(0, 1, 1)),
    T(x=(1, 2, 2, 2, 2), w=(2, 1, 2, 2, 2), dilation=2, groups=2),
    T(x=(1, 1, 2, 2, 3), w=(1, 1, 2, 3, 2), padding="same", stride=(1, 2, 1)),
    T(x=(1, 1, 2, 2, 2), w=(1, 2, 2, 2, 2), padding=((1, 0), (0, 0), (0, 1)), stride=2, output_padding=(1, 0, 0)),
    T(x=(1, 2, 2, 3, 2), w=(2, 2, 2, 2, 2), stride=(2, 1, 1), bias=False),
]


def test_conv_configurations_cover_the_space():
    assert len(CONV_CONFIGS) >= 40
    for transposed, nd in itertools.product((False, True), (1, 2, 3)):
        group = [c for c in CONV_CONFIGS if c.transposed == transposed and c.nd == nd]
        assert any(c.groups > 1 for c in group) and any(not c.bias for c in group)
        assert any(c.asymmetric for c in group) and any(c.padding == "same" for c in group)
        assert any(c.stride != 1 for c in group)
    assert any(c.dilation != 1 for c in CONV_CONFIGS if c.transposed)
    assert any(c.output_padding != 0 for c in CONV_CONFIGS if c.transposed)


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=[c.label() for c in CONV_CONFIGS])
def test_conv_backward_graph_matches_eager_and_oracle(cfg):
    rng = np.random.default_rng(zlib.crc32(cfg.label().encode()))
    arrays = [rng.standard_normal(cfg.x), rng.standard_normal(cfg.w)]
    if cfg.bias:
        arrays.append(rng.standard_normal(cfg.w[1] * cfg.groups if cfg.transposed else cfg.w[0]))
    fn = cfg.function()
    graph = lucid.trace(fn, *map(_spec, arrays))
    op = "conv_transpose" if cfg.transposed else "conv"
    geometry = cfg.oracle_geometry()
    (node,) = [n for n in graph.nodes if n.op == op]
    assert node.attrs["padding"] == geometry["padding"], "the traced padding is not the oracle's resolution"

    wrt = _float_inputs(graph)
    grad_graph = autodiff.run(graph, wrt=wrt)
    y = lucid.ir.run(graph, *arrays)
    G = rng.standard_normal(y.shape)
    y_again, *grads = lucid.ir.run(grad_graph, *arrays, G)

    reference, vjp = ((oracle.conv_transpose_nd, oracle.conv_transpose_nd_vjp) if cfg.transposed
                      else (oracle.conv_nd, oracle.conv_nd_vjp))
    x, w, b = arrays[0], arrays[1], arrays[2] if cfg.bias else None
    np.testing.assert_allclose(y_again, reference(x, w, b, **geometry), **ORACLE)
    expected = [g for g in vjp(G, x, w, b, **geometry) if g is not None]
    _check_grads(wrt, grads, expected, ORACLE, f"{cfg.label()} vs oracle")
    eager, _ = _eager_grads(fn, arrays, G)
    _check_grads(wrt, grads, eager, SAME, f"{cfg.label()} vs eager")


# ==============================================================================================
# Gradients with respect to module parameters


MODELS = {
    "UNet3D": (lambda: UNet3D(in_channels=1, out_channels=2, base=2, depth=1), (1, 1, 4, 4, 4)),
    "VideoClassifier": (lambda: VideoClassifier(in_channels=3, num_classes=5, width=4), (2, 3, 2, 8, 8)),
}


def _model(name, training, seed=0):
    lucid.manual_seed(seed)
    make, shape = MODELS[name]
    model = make().double().train(training)
    return model, np.random.default_rng(seed + 1).standard_normal(shape)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_module_parameter_gradients_match_eager_backward(name, training):
    model, x = _model(name, training)
    graph = lucid.trace(model, _spec(x))
    text = str(graph)
    requiring = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(autodiff.default_wrt(graph)) == sorted(requiring)

    grad_graph = autodiff.run(graph)
    assert str(graph) == text
    wrt = autodiff.default_wrt(graph)
    assert len(grad_graph.outputs) == 1 + len(requiring), "expected one gradient per parameter requiring grad"
    assert list(grad_graph.state_updates) == list(graph.state_updates)
    assert bool(graph.state_updates) == training

    params = param_copies(graph)          # the runs write BatchNorm statistics here, not into the model
    y = lucid.ir.run(graph, x, params=dict(param_copies(graph)))
    G = np.random.default_rng(5).standard_normal(y.shape)
    y_graph, *grads = lucid.ir.run(grad_graph, x, G, params=params)

    y_eager = model(lucid.Tensor(x, dtype=F64))
    (y_eager * lucid.Tensor(G, dtype=F64)).sum().backward()
    np.testing.assert_array_equal(y_graph, y_eager.data)
    named = dict(model.named_parameters())
    _check_grads(wrt, grads, [named[n].grad.data for n in wrt], SAME, f"{name} parameters vs eager")
    # The gradient graph keeps the state updates: its run moved the statistics as the eager step did.
    buffers = dict(model.named_buffers())
    for key in graph.state_updates:
        np.testing.assert_allclose(params[key], buffers[key].data, **SAME, err_msg=key)


def test_default_wrt_skips_frozen_parameters_and_buffers():
    model, x = _model("VideoClassifier", True)
    model.stem.requires_grad_(False)
    graph = lucid.trace(model, _spec(x))
    wrt = autodiff.default_wrt(graph)
    assert wrt == [n for n, p in model.named_parameters() if p.requires_grad]
    assert not any(n.startswith("stem.") for n in wrt) and "block.0.weight" in wrt
    assert len(autodiff.run(graph).outputs) == 1 + len(wrt)
    # A traced function: a captured tensor requiring grad becomes param0, one that does not a constant.
    w = lucid.Tensor(np.ones((3, 2)), dtype=F64, requires_grad=True)
    c = lucid.Tensor(np.ones(2), dtype=F64)
    graph = lucid.trace(lambda x: x @ w + c, lucid.spec(4, 3, dtype=F64))
    assert autodiff.default_wrt(graph) == ["param0"]
    xs = np.arange(12.0).reshape(4, 3)
    G = loss_weights((4, 2))
    _, gw = lucid.ir.run(autodiff.run(graph), xs, G)
    np.testing.assert_allclose(gw, xs.T @ G, **SAME)


# ==============================================================================================
# Semantics of the pass


def test_values_used_several_times_and_several_outputs_accumulate():
    def f(x):
        h = ops.tanh(x)
        return h * h + h + x, h * 2.0, x        # x read twice, h four times; three outputs

    x = np.array([-1.2, -0.3, 0.4, 1.1])
    graph = lucid.trace(f, _spec(x))
    grad_graph = autodiff.run(graph, wrt=["x"])
    assert [v.name for v in grad_graph.inputs] == ["x", "grad_0", "grad_1", "grad_2"]
    rng = np.random.default_rng(3)
    g0, g1, g2 = rng.standard_normal((3, 4))
    *_, gx = lucid.ir.run(grad_graph, x, g0, g1, g2)
    h = np.tanh(x)
    expected = g0 * ((2 * h + 1) * (1 - h * h) + 1) + g1 * 2 * (1 - h * h) + g2
    np.testing.assert_allclose(gx, expected, rtol=1e-12, atol=1e-14)

    # the same value returned twice: both seeds reach it
    graph = lucid.trace(lambda x: (lambda e: (e, e))(ops.exp(x)), _spec(x))
    assert graph.outputs[0] is graph.outputs[1]
    *_, gx = lucid.ir.run(autodiff.run(graph, wrt=["x"]), x, g0, g1)
    np.testing.assert_allclose(gx, (g0 + g1) * np.exp(x), rtol=1e-12)


def test_name_with_no_path_to_the_outputs_gets_zeros():
    def f(x, y, z, u):
        return x * 2.0 + ops.cast(y > 0.0, F64)     # y only through a comparison; z, u unused

    specs = [lucid.spec(2, 3, dtype=F64), lucid.spec(2, 3, dtype=F64), lucid.spec(4, dtype=F64),
             lucid.spec(5, dtype=lucid.float32)]
    graph = lucid.trace(f, *specs)
    grad_graph = autodiff.run(graph, wrt=["x", "y", "z", "u"])
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal((2, 3)), rng.standard_normal((2, 3)), rng.standard_normal(4),
              rng.standard_normal(5).astype(np.float32)]
    G = rng.standard_normal((2, 3))
    _, gx, gy, gz, gu = lucid.ir.run(grad_graph, *arrays, G)
    np.testing.assert_array_equal(gx, 2 * G)
    for g, a in [(gy, arrays[1]), (gz, arrays[2]), (gu, arrays[3])]:
        assert g.shape == a.shape and g.dtype == a.dtype
        np.testing.assert_array_equal(g, np.zeros_like(a))


def test_int_and_bool_intermediates_carry_no_gradient():
    def f(x, k):
        chosen = ops.cast(ops.one_hot(ops.argmax(x, 1), 3), F64)          # int argmax, float one_hot
        y = ops.where(x > 0.0, x * 2.0, x * -3.0)                          # bool condition
        return y + chosen * x + ops.cast(x > 1.0, F64) + x * k             # bool->float cast; int input

    rng = np.random.default_rng(6)
    x = rng.uniform(0.2, 1.5, (2, 3)) * rng.choice([-1.0, 1.0], (2, 3))
    k = np.array([[1, 2, 3], [4, 5, 6]])
    graph = lucid.trace(f, _spec(x), lucid.spec(2, 3, dtype=lucid.int64))
    grad_graph = autodiff.run(graph, wrt=["x"])
    assert len(grad_graph.outputs) == 2 and grad_graph.outputs[1].type == graph.inputs[0].type
    # no gradient is built for the int/bool values (nor converted to their dtypes)
    new = grad_graph.nodes[len(graph.nodes):]
    assert not [n for n in new if n.op == "cast" and not n.output.dtype.is_floating]
    G = loss_weights((2, 3))
    y, gx = lucid.ir.run(grad_graph, x, k, G)
    one_hot = np.eye(3)[np.argmax(x, 1)]
    np.testing.assert_allclose(gx, G * (np.where(x > 0, 2.0, -3.0) + one_hot + k), rtol=1e-12)
    np.testing.assert_array_equal(y, lucid.ir.run(graph, x, k))
    # the eager tape agrees
    xt = lucid.Tensor(x, dtype=F64, requires_grad=True)
    (f(xt, lucid.Tensor(k)) * lucid.Tensor(G, dtype=F64)).sum().backward()
    np.testing.assert_allclose(gx, xt.grad.data, **SAME)


def _scope_runs(nodes) -> list:
    """The scopes of `nodes` with consecutive repeats collapsed."""
    return [scope for scope, _ in itertools.groupby(n.scope for n in nodes)]


def _is_subsequence(short, long) -> bool:
    it = iter(long)
    return all(any(s == item for item in it) for s in short)


def test_gradient_nodes_carry_the_forward_nodes_scope():
    lucid.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    graph = lucid.trace(model, lucid.spec(2, 3, dtype=F64))
    grad_graph = autodiff.run(graph, wrt=["x"] + autodiff.default_wrt(graph))
    new = grad_graph.nodes[len(graph.nodes):]
    # processed in reverse: the last Linear's gradient, then Tanh's, then the first Linear's
    assert _scope_runs(new) == [Scope("2", "Linear"), Scope("1", "Tanh"), Scope("0", "Linear")]
    tanh_grad = [n.op for n in new if n.scope == Scope("1", "Tanh")]
    assert "mul" in tanh_grad and "tanh" not in tanh_grad

    # a whole UNet: every gradient node has the scope of a forward node, in reverse forward order
    model, x = _model("UNet3D", True)
    graph = lucid.trace(model, _spec(x))
    grad_graph = autodiff.run(graph)
    new = grad_graph.nodes[len(graph.nodes):]
    forward_scopes = {n.scope for n in graph.nodes}
    assert {n.scope for n in new} <= forward_scopes
    assert _is_subsequence(_scope_runs(new), _scope_runs(reversed(graph.nodes)))
    differentiated = {n.scope for n in graph.nodes if not n.is_constant and n.opdef.differentiable}
    assert {n.scope for n in new} == differentiated

    # a traced function has no scopes, and neither have its gradient nodes
    graph = lucid.trace(lambda x: ops.tanh(x) * 2.0, lucid.spec(3, dtype=F64))
    assert {n.scope for n in autodiff.run(graph, wrt=["x"]).nodes} == {None}


def test_forward_graph_is_not_modified():
    model, x = _model("UNet3D", True)
    graph = lucid.trace(model, _spec(x))
    text, nodes, outputs = str(graph), list(graph.nodes), list(graph.outputs)
    inputs, params, updates = list(graph.inputs), list(graph.params), dict(graph.state_updates)
    bindings = dict(graph.bindings)
    grad_graph = autodiff.run(graph)
    assert str(graph) == text and graph.name == "UNet3D"
    assert graph.nodes == nodes and all(a is b for a, b in zip(graph.nodes, nodes))
    assert graph.outputs == outputs and graph.inputs == inputs and graph.params == params
    assert graph.state_updates == updates and graph.bindings == bindings and not graph.returns_tuple
    assert all(n.output.graph is grad_graph for n in grad_graph.nodes)
    assert not any(n in nodes for n in grad_graph.nodes)
    # the gradient graph is a well-formed graph of its own: it verifies and its text reads back equal
    assert grad_graph.name == "UNet3D_grad"
    assert lucid.ir.parse(str(grad_graph)) == grad_graph.verify()


def test_errors():
    def f(x, i, m):
        return x * i + ops.cast(m, F64)

    graph = lucid.trace(f, lucid.spec(3, dtype=F64), lucid.spec(3, dtype=lucid.int64), lucid.spec(3, dtype=lucid.bool_))
    text = str(graph)
    with pytest.raises(GradientError, match="'i'.*int64"):
        autodiff.run(graph, wrt=["x", "i"])
    with pytest.raises(GradientError, match="'m'.*bool"):
        autodiff.run(graph, wrt=["m"])
    with pytest.raises(GraphError, match="no input or parameter named 'nope'"):
        autodiff.run(graph, wrt=["x", "nope"])
    with pytest.raises(GraphError, match="'grad_0'"):
        autodiff.run(graph, wrt=["grad_0"])          # seeds are not differentiable names
    assert str(graph) == text
    # an int input that is not in wrt is fine
    _, gx = lucid.ir.run(autodiff.run(graph, wrt=["x"]), np.ones(3), np.array([1, 2, 3]), np.ones(3, bool), np.ones(3))
    np.testing.assert_array_equal(gx, [1.0, 2.0, 3.0])


def test_seed_names_do_not_collide_and_second_order_gradients_work():
    """Seeds take fresh names, so a graph with an input called grad_0 (or a gradient graph) can be
    differentiated again; d2/dx2 tanh(x) = -2 tanh(x) (1 - tanh(x)^2)."""
    x = np.array([-0.7, 0.1, 1.3])
    first = autodiff.run(lucid.trace(lambda x: ops.tanh(x), lucid.spec(3, dtype=lucid.float64)), wrt=["x"])
    second = autodiff.run(first, wrt=["x"])
    names = [v.name for v in second.inputs]
    assert len(set(names)) == len(names) == 4
    ones = np.ones(3)
    outputs = lucid.ir.run(second, x, ones, np.zeros(3), ones)      # seed only the first-order gradient
    t = np.tanh(x)
    np.testing.assert_allclose(outputs[-1], -2 * t * (1 - t ** 2), rtol=1e-12)
