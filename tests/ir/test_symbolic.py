"""Symbolic dimensions (`lucid.ir.symbolic`, `lucid.dim`): expressions, shape rules, constraints, the
text form and files, `graph.specialize`, the interpreter and the refusals.

Oracles: a size expression is checked against the same arithmetic done on Python ints (hypothesis);
a symbolic graph specialised to sizes is checked against a trace at those concrete sizes (types) and
against eager execution (values).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
from lucid.errors import CompileError, GraphError, ShapeError, TraceError
from lucid.ir import symbolic
from lucid.ir.symbolic import ceil_div, dim, evaluate, parse_expression
from models import UNet3D

D, H = dim("D", min=8), dim("H", min=8)
N = dim("N")
DIMS = {"D": D.symbol, "H": H.symbol, "N": N.symbol}


# ---------------------------------------------------------------------------------------------
# Expressions


def _expressions():
    """(expression, the same arithmetic on ints as a function of the sizes)."""
    leaves = st.sampled_from([(D, lambda s: s["D"]), (H, lambda s: s["H"]), (N, lambda s: s["N"])]) | \
        st.integers(-20, 20).map(lambda k: (k, lambda s, k=k: k))

    def grow(children):
        pair = st.tuples(children, children)
        divisor = st.integers(1, 7)
        return (pair.map(lambda p: (p[0][0] + p[1][0], lambda s, p=p: p[0][1](s) + p[1][1](s)))
                | pair.map(lambda p: (p[0][0] - p[1][0], lambda s, p=p: p[0][1](s) - p[1][1](s)))
                | pair.map(lambda p: (p[0][0] * p[1][0], lambda s, p=p: p[0][1](s) * p[1][1](s)))
                | st.tuples(children, divisor).map(lambda p: (p[0][0] // p[1], lambda s, p=p: p[0][1](s) // p[1]))
                | st.tuples(children, divisor).map(lambda p: (ceil_div(p[0][0], p[1]), lambda s, p=p: -(-p[0][1](s) // p[1])))
                | st.tuples(children, divisor).map(lambda p: (p[0][0] % p[1], lambda s, p=p: p[0][1](s) % p[1])))
    return st.recursive(leaves, grow, max_leaves=8)


SIZES = st.fixed_dictionaries({"D": st.integers(8, 70), "H": st.integers(8, 70), "N": st.integers(1, 9)})


@settings(max_examples=300, deadline=None)
@given(_expressions(), SIZES)
def test_canonical_form_evaluates_as_the_arithmetic_on_ints(pair, sizes):
    expr, on_ints = pair
    assert evaluate(expr, sizes) == on_ints(sizes)


@settings(max_examples=200, deadline=None)
@given(st.lists(_expressions(), min_size=1, max_size=4), SIZES)
def test_the_generated_evaluator_computes_the_arithmetic_on_ints(pairs, sizes):
    """`symbolic.evaluator` (one compiled function for many sizes, the executable's per-size layout)."""
    at = symbolic.evaluator([expr for expr, _ in pairs], ("N", "H", "D"))
    assert at(sizes["N"], sizes["H"], sizes["D"]) == tuple(on_ints(sizes) for _, on_ints in pairs)


@settings(max_examples=300, deadline=None)
@given(_expressions(), SIZES)
def test_printing_and_parsing_round_trip(pair, sizes):
    expr, _ = pair
    parsed = parse_expression(str(expr), DIMS)
    assert parsed == expr and hash(parsed) == hash(expr)
    assert evaluate(parsed, sizes) == evaluate(expr, sizes)


@settings(max_examples=300, deadline=None)
@given(_expressions(), st.integers(-30, 30), st.sampled_from(["<", "<=", ">", ">=", "==", "equal", "!="]), SIZES)
def test_recorded_constraints_guard_the_answer(pair, bound, op, sizes):
    """Where a question was answered (by the ranges, or at the reference point and recorded), every
    size meeting the recorded constraints gives the same answer."""
    expr, on_ints = pair
    ask = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
           ">=": lambda a, b: a >= b, "equal": lambda a, b: symbolic.equal(a, b),
           "==": lambda a, b: a == b, "!=": lambda a, b: a != b}[op]
    with symbolic.recording() as recorded:
        try:
            answer = ask(expr, bound)
        except ShapeError:
            assume(False)                                   # refused: two symbols, or a pinned one
    assume(all(c.holds(sizes) for c in recorded))
    assert ask(on_ints(sizes), bound) == answer


@settings(max_examples=300, deadline=None)
@given(_expressions(), _expressions(), st.sampled_from(["==", "!="]), SIZES)
def test_comparing_two_sizes_is_guarded_by_what_it_recorded(left, right, op, sizes):
    ask = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b}[op]
    with symbolic.recording() as recorded:
        try:
            answer = ask(left[0], right[0])
        except ShapeError:
            assume(False)
    assert isinstance(answer, bool)
    assume(all(c.holds(sizes) for c in recorded))
    assert ask(left[1](sizes), right[1](sizes)) == answer


def test_canonical_forms_compare_equal_only_where_proved():
    assert (D - 1) // 2 + 1 == (D + 1) // 2 and hash((D - 1) // 2 + 1) == hash((D + 1) // 2)
    assert str((D - 1) // 2 + 1) == "(D + 1) // 2"
    assert D // 2 // 2 == D // 4
    assert (2 * D + 3) // 2 == D + 1
    assert D * H * N // N == D * H
    assert D - D == 0 and isinstance(D - D, int)           # no symbol left: a plain int
    assert not symbolic.same(2 * (D // 2), D)               # true only for even D: not claimed
    assert str(D - 4 * (D // 4)) == "D % 4" and D % 4 == D - 4 * (D // 4)
    assert symbolic.bounds(D % 4 + 1) == (1, 4)
    assert (D + 1) * (H - 1) == D * H - D + H - 1


def test_parser_evaluates_nothing():
    for text in ("__import__('os')", "D.__class__", "D ** 2", "D / 2", "E + 1", "D // 0", "[D]"):
        with pytest.raises(ShapeError):
            parse_expression(text, DIMS)


def test_comparisons_decided_by_ranges_record_nothing():
    with symbolic.recording() as recorded:
        assert D >= 8 and D + 1 > 8 and not D < 1 and D * H >= 64 and (D != 3)
    assert recorded == []


def test_comparisons_decided_at_the_minimum_are_recorded():
    with symbolic.recording() as recorded:
        assert not (D - 9) // 2 + 1 >= 1                    # true from D = 9 on: false at the minimum 8
        assert symbolic.equal(2 * (D // 4), D // 2)
    assert [str(c) for c in recorded] == ["D <= 8", "D // 2 - 2*(D // 4) == 0"]
    assert recorded[0].holds({"D": 8}) and not recorded[0].holds({"D": 9})


def test_undecidable_comparisons_are_refused_naming_the_dimensions():
    with pytest.raises(ShapeError, match="depends on the symbolic dimensions D and H"):
        symbolic.equal(D, H)
    with pytest.raises(ShapeError, match="D and H"):
        min(D, H)
    with pytest.raises(ShapeError, match="fix the symbolic dimension D to one value"):
        symbolic.equal(D, 12)


def test_broadcasting():
    assert symbolic.broadcast_shapes((N, 1, D), (1, 3, 1), (D,)) == (N, 3, D)
    with pytest.raises(ShapeError, match="cannot broadcast N against 3"):
        symbolic.broadcast_shapes((N, 2), (3, 2))
    with pytest.raises(ShapeError, match="cannot broadcast"):
        symbolic.broadcast_shapes((D,), (H,))


def test_dim_declarations_are_checked():
    for bad in (lambda: dim("2x"), lambda: dim("D", min=-1), lambda: dim("D", min=4, max=3), lambda: dim("None")):
        with pytest.raises(ShapeError):
            bad()
    with pytest.raises(TraceError, match="declared twice"):
        lucid.trace(lambda a, b: a + b, lucid.spec(dim("D"), 2), lucid.spec(dim("D", min=4), 2))


# ---------------------------------------------------------------------------------------------
# Shape rules: symbolic type at a size == the concrete rule at that size; values == eager

FAMILIES = {
    "broadcasting": (lambda x: x + x.mean(dim=1, keepdim=True) * 2.0, (N, 3, D)),
    "conv2d stride dilation": (nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=2), (N, 3, D, H)),
    "conv3d same": (nn.Conv3d(2, 2, 4, padding="same"), (N, 2, D, H, 8)),
    "conv1d groups": (nn.Conv1d(4, 4, 3, groups=2), (N, 4, D)),
    "conv1d unpadded": (nn.Conv1d(2, 2, 5), (N, 2, dim("L", min=5))),
    "conv_transpose2d": (nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1), (N, 3, D, H)),
    "conv_transpose3d": (nn.ConvTranspose3d(2, 2, 2, stride=2), (N, 2, D, H, 8)),
    "max_pool ceil_mode": (nn.MaxPool2d(3, stride=2, ceil_mode=True), (N, 2, D, H)),
    "max_pool padding": (nn.MaxPool3d(3, stride=2, padding=1), (N, 2, D, H, 8)),
    "avg_pool": (nn.AvgPool3d(2), (N, 2, D, H, 8)),
    "adaptive to 1": (nn.AdaptiveAvgPool2d(1), (N, 2, D, H)),
    "adaptive to 2": (nn.AdaptiveAvgPool2d(2), (N, 2, D, H)),
    "adaptive keep": (nn.AdaptiveMaxPool2d((None, 1)), (N, 2, D, H)),
    "reductions": (lambda x: x.sum(dim=(2,)) + x.amax(dim=2) + x.var(dim=2, correction=0), (N, 3, D)),
    "mean of all": (lambda x: x.mean(), (N, 3, D)),
    "view": (lambda x: x.view(x.shape[0], -1), (N, 3, D)),
    "flatten": (lambda x: x.flatten(1), (N, 3, D, H)),
    "permute": (lambda x: x.permute(0, 2, 1), (N, 3, D)),
    "expand": (lambda x: x[:, :1].expand(-1, 3, -1), (N, 3, D)),
    "slice and cat": (lambda x: lucid.cat([x, x[:, :, 1:-1], x[:, :, ::3]], dim=2), (N, 3, D)),
    "pad": (lambda x: F.pad(x, (1, 2)), (N, 3, D)),
    "pad reflect": (lambda x: F.pad(x, (1, 2), mode="reflect"), (N, 3, D)),
    "batch_norm": (nn.BatchNorm2d(3).eval(), (N, 3, D, H)),
    "group_norm": (nn.GroupNorm(2, 4), (N, 4, D, H)),
    "instance_norm": (nn.InstanceNorm2d(4), (N, 4, D, H)),
    "layer_norm": (nn.LayerNorm(8), (N, D, 8)),
    "interpolate nearest": (lambda x: F.interpolate(x, scale_factor=2), (N, 2, D, H)),
    "interpolate bilinear": (lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"), (N, 2, D, H)),
    "interpolate size": (lambda x: F.interpolate(x, size=(5, 7)), (N, 2, D, H)),
    "linear": (nn.Linear(8, 5), (N, D, 8)),
    "matmul": (lambda x: x @ x.transpose(1, 2), (N, 3, D)),
    "softmax": (lambda x: F.softmax(x, dim=-1), (N, 3, D)),
    "dropout": (nn.Dropout(0.5), (N, 3, D)),
}
SIZE_POINTS = [{"N": 1, "D": 8, "H": 9, "L": 5}, {"N": 2, "D": 13, "H": 16, "L": 7}, {"N": 3, "D": 16, "H": 11, "L": 20}]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_shape_rule_symbolic_equals_concrete(family):
    fn, shape = FAMILIES[family]
    graph = lucid.trace(fn, lucid.spec(*shape))
    assert graph.symbols() and lucid.ir.parse(str(graph)) == graph
    for sizes in SIZE_POINTS:
        concrete = evaluate(tuple(shape), sizes)
        own = {s.name: sizes[s.name] for s in graph.symbols()}
        specialised = graph.specialize(**own)
        assert [v.type for v in specialised.outputs] == [v.type for v in lucid.trace(fn, lucid.spec(*concrete)).outputs]
        assert not specialised.symbols()
        if family != "dropout":                                 # its draws differ from eager's by design
            x = np.random.default_rng(0).standard_normal(concrete).astype(np.float32)
            np.testing.assert_allclose(lucid.ir.run(graph, x), fn(lucid.tensor(x)).numpy(), rtol=1e-5, atol=1e-5)


REFUSALS = {
    "constant from a shape": (lambda x: x + lucid.ones(x.shape), TraceError, r"ones: the shape \(N, 2, D, H\) holds a symbolic size"),
    "constant like a value": (lambda x: x + lucid.zeros_like(x), TraceError, "zeros: the shape"),
    "a loop over a size": (lambda x: sum(x[:, :, i] for i in range(x.shape[2])), TraceError, "symbolic size D has no value"),
    "broadcast against a size": (lambda x: x + lucid.ones(3, 1, 1, 1), ShapeError, "cannot broadcast N against 3"),
    "unbiased variance": (lambda x: x.var(dim=2), ShapeError, "does not support the symbolic dimension D"),
    "chunk": (lambda x: x.chunk(2, dim=2), ShapeError, "symbolic dimension D"),
    "symbolic reflect padding": (lambda x: F.pad(x, (0, x.shape[2] % 2), mode="reflect"), ShapeError, "mode 'constant'"),
    "fractional scale": (lambda x: F.interpolate(x, scale_factor=1.5), ShapeError, "not a whole number"),
    "linear over a symbol": (nn.Linear(8, 2), ShapeError, r"last dimension 8 \(in_features\), got shape \(N, 2, D, H\)"),
    "two symbols compared": (lambda x: x[:, :, :, 0] + x[:, :, 0, :], ShapeError, "D and H"),
}


def test_a_minimum_too_small_for_the_model_is_named():
    with pytest.raises(ShapeError, match=r"minimum, L = 1, N = 1: if the model needs larger sizes"):
        lucid.trace(nn.Conv1d(2, 2, 5), lucid.spec(N, 2, dim("L")))


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_are_clear(case):
    fn, error, message = REFUSALS[case]
    with pytest.raises(error, match=message):
        lucid.trace(fn, lucid.spec(N, 2, D, H))


# ---------------------------------------------------------------------------------------------
# A UNet over every batch size and volume size


@pytest.fixture(scope="module")
def unet():
    lucid.manual_seed(3)
    model = UNet3D().eval()
    spec = lucid.spec(dim("N"), 1, dim("D", min=16), dim("H", min=16), dim("W", min=16))
    return model, lucid.trace(model, spec)


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("d, h, w", [(16, 16, 16), (24, 16, 20), (16, 24, 32)])
def test_unet_symbolic_graph_runs_every_size_like_eager(unet, n, d, h, w):
    model, graph = unet
    x = np.random.default_rng(n + d).standard_normal((n, 1, d, h, w)).astype(np.float32)
    np.testing.assert_allclose(lucid.ir.run(graph, x), model(lucid.tensor(x)).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("d, h, w, bad", [(17, 16, 16, "D = 17 violates the constraint D % 4 == 0, required by concat"),
                                         (16, 18, 16, "H = 18 violates the constraint H // 2 - 2")])
def test_unet_sizes_that_do_not_survive_the_poolings_are_refused(unet, d, h, w, bad):
    model, graph = unet
    x = np.zeros((1, 1, d, h, w), np.float32)
    with pytest.raises(ShapeError, match=bad):
        lucid.ir.run(graph, x)
    with pytest.raises(ShapeError):                             # eager refuses them too
        model(lucid.tensor(x))


def test_sizes_below_a_declared_minimum_are_refused(unet):
    with pytest.raises(ShapeError, match=r"W = 12 is outside its range \(an int >= 16\)"):
        lucid.ir.run(unet[1], np.zeros((1, 1, 16, 16, 12), np.float32))


class PaddingUNet(nn.Module):
    """One UNet level that pads the upsampled map to its skip's size (odd sizes welcome), as many
    PyTorch UNets do."""

    def __init__(self):
        super().__init__()
        self.down, self.pool = nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2)
        self.up, self.head = nn.ConvTranspose2d(4, 4, 2, stride=2), nn.Conv2d(8, 1, 1)

    def forward(self, x):
        skip = self.down(x).relu()
        y = self.up(self.pool(skip))
        dy, dx = skip.shape[2] - y.shape[2], skip.shape[3] - y.shape[3]
        y = F.pad(y, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.head(lucid.cat([skip, y], dim=1))


def test_a_unet_padding_to_its_skips_holds_for_every_size():
    lucid.manual_seed(4)
    model = PaddingUNet().eval()
    graph = lucid.trace(model, lucid.spec(dim("N"), 1, dim("H", min=2), dim("W", min=2)))
    assert graph.constraints == ()                              # D - 2*(D // 2) is D % 2: exact, no assumption
    assert "hi=(0, 0, H % 2, W % 2)" in str(graph)
    for n, h, w in [(1, 8, 9), (2, 17, 4), (3, 5, 6)]:
        x = np.random.default_rng(h).standard_normal((n, 1, h, w)).astype(np.float32)
        np.testing.assert_allclose(lucid.ir.run(graph, x), model(lucid.tensor(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_unet_constraints_name_their_nodes(unet):
    _, graph = unet
    by_node = [(str(c), node.op) for c, node in graph.constraints if node is not None]
    assert ("D // 2 - 2*(D // 4) == 0", "concat") in by_node
    assert ("D % 4 == 0", None) in [(str(c), node) for c, node in graph.constraints]   # the model's check
    with pytest.raises(ShapeError, match=r"D = 18 violates the constraint D // 2 - 2\*\(D // 4\) == 0, required by concat"):
        graph.specialize(N=1, D=18, H=16, W=16)


def test_text_and_file_round_trip(unet, tmp_path):
    _, graph = unet
    text = str(graph)
    assert "  dim D min=16" in text and "input %x: f32[N, 1, D, H, W]" in text
    assert "f32[N, 16, D // 2, H // 2, W // 2]" in text and "constraint %" in text
    assert lucid.ir.parse(text) == graph
    graph.save(tmp_path / "unet.lucid")
    loaded = lucid.ir.load(tmp_path / "unet.lucid")
    assert loaded == graph
    x = np.random.default_rng(0).standard_normal((2, 1, 16, 24, 16)).astype(np.float32)
    np.testing.assert_array_equal(lucid.ir.run(loaded, x), lucid.ir.run(graph, x))


def test_parser_checks_symbols_and_constraints(unet):
    _, graph = unet
    text = str(graph)
    line = next(l for l in text.splitlines() if l.startswith("  constraint %"))
    for edited in (text.replace(line + "\n", ""),                                  # a constraint dropped
                   text.replace(line, line.replace("== 0", "== 1")),              # a constraint changed
                   text.replace("  dim D min=16\n", ""),                           # an undeclared symbol
                   text.replace("f32[N, 8, D, H, W]", "f32[N, 8, D + 1, H, W]", 1)):
        with pytest.raises(GraphError):
            lucid.ir.parse(edited)


def test_verifier_checks_recorded_constraints(unet):
    _, graph = unet
    broken = graph.copy()
    node = next(n for n in broken.nodes if n.constraints)
    node.constraints = ()
    with pytest.raises(GraphError, match="records the constraints"):
        broken.verify()


def test_specialize_checks_sizes(unet):
    _, graph = unet
    with pytest.raises(ShapeError, match="unknown E"):
        graph.specialize(N=1, D=16, H=16, W=16, E=3)
    with pytest.raises(ShapeError, match="no size for W"):
        graph.specialize(N=1, D=16, H=16)
    with pytest.raises(ShapeError, match=r"D = 8 is outside its range \(an int >= 16\)"):
        graph.specialize(N=1, D=8, H=16, W=16)
    concrete = graph.specialize(N=2, D=32, H=16, W=24)
    assert concrete.inputs[0].shape == (2, 1, 32, 16, 24) and concrete.outputs[0].shape == (2, 2, 32, 16, 24)


def test_run_binds_a_dimension_once_across_inputs():
    graph = lucid.trace(lambda a, b: a * 2.0 + b, lucid.spec(N, 3), lucid.spec(N, 3))
    a, b = np.ones((4, 3), np.float32), np.ones((4, 3), np.float32)
    np.testing.assert_array_equal(lucid.ir.run(graph, a, b), np.full((4, 3), 3.0, np.float32))
    with pytest.raises(ShapeError, match="dimension N is 4 in input 'a'.*but 5 in input 'b'"):
        lucid.ir.run(graph, a, np.ones((5, 3), np.float32))


def test_slice_bounds_follow_the_symbolic_dimension():
    graph = lucid.trace(lambda x: x[:, 1:-1], lucid.spec(N, D))
    node = graph.nodes[0]
    assert node.op == "slice" and node.attrs["stops"] == (N, D - 1) and graph.outputs[0].shape == (N, D - 2)


def test_inference_passes_keep_a_symbolic_graph(unet):
    from lucid.passes import PassManager

    model, graph = unet
    simplified = PassManager("inference").run(graph)
    assert simplified.symbols() == graph.symbols() and lucid.ir.parse(str(simplified)) == simplified
    x = np.random.default_rng(5).standard_normal((2, 1, 16, 32, 24)).astype(np.float32)
    np.testing.assert_allclose(lucid.ir.run(simplified, x), model(lucid.tensor(x)).numpy(), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Model code branching on a size: == and != are questions too, never a silent structural "unequal"


def _branch_on_parity(x):
    if x.shape[2] % 2 == 0:
        return x * 2.0
    return x - 1.0


@pytest.mark.parametrize("minimum, constraint, holds, violates", [(8, "D % 2 == 0", [8, 10, 16], 9),
                                                                   (9, "D % 2 != 0", [9, 11, 15], 12)])
def test_a_branch_on_parity_records_it_and_runs_like_eager(minimum, constraint, holds, violates):
    graph = lucid.trace(_branch_on_parity, lucid.spec(N, 3, dim("D", min=minimum)))
    assert [(str(c), node) for c, node in graph.constraints] == [(constraint, None)]
    assert lucid.ir.parse(str(graph)) == graph
    for d in holds:
        x = np.random.default_rng(d).standard_normal((2, 3, d)).astype(np.float32)
        np.testing.assert_allclose(lucid.ir.run(graph, x), _branch_on_parity(lucid.tensor(x)).numpy(), rtol=1e-6)
        specialised = graph.specialize(N=2, D=d)
        np.testing.assert_allclose(lucid.ir.run(specialised, x), _branch_on_parity(lucid.tensor(x)).numpy(), rtol=1e-6)
    with pytest.raises(ShapeError, match=f"D = {violates} violates the constraint {constraint}, required by the traced code"):
        lucid.ir.run(graph, np.zeros((2, 3, violates), np.float32))


def test_every_spelling_of_an_equality_asks_the_same_question():
    spellings = {"size % 2 == 0": lambda d: d % 2 == 0, "0 == size % 2": lambda d: 0 == d % 2,
                 "not size % 2 != 0": lambda d: not d % 2 != 0, "not bool(size % 2)": lambda d: not bool(d % 2),
                 "equal(size % 2, 0)": lambda d: symbolic.equal(d % 2, 0),
                 "size % 2 == numpy 0": lambda d: d % 2 == np.int64(0), "size % 2 == 0.0": lambda d: d % 2 == 0.0}
    for name, ask in spellings.items():
        with symbolic.recording() as recorded:
            assert ask(D) is True, name                     # D % 2 at the minimum 8
        assert [str(c) for c in recorded] == ["D % 2 == 0"], name


def test_structurally_equal_sizes_are_equal_and_ranges_decide_without_recording():
    with symbolic.recording() as recorded:
        assert (D - 1) // 2 + 1 == (D + 1) // 2 and not (D + 1) // 2 != (D - 1) // 2 + 1
        assert D != 3 and not D == 3 and 3 != D and D + 1 != D and D == D + 0
        assert not D == 2.5 and D != 8.5 and (D == None) is False and D != "D"  # noqa: E711
    assert recorded == []


def test_a_size_compared_with_a_different_form_is_a_question():
    with symbolic.recording() as recorded:
        assert 2 * (D // 2) == D                            # true at the minimum 8: recorded
    assert [str(c) for c in recorded] == ["D % 2 == 0"]
    assert not symbolic.same(2 * (D // 2), D) and symbolic.same((D + 1) // 2, (D - 1) // 2 + 1)


@pytest.mark.parametrize("branch", [lambda x: x * 2.0 if x.shape[2] == 1 else x,
                                    lambda x: x * 2.0 if x.shape[2] != 1 else x,
                                    lambda x: x * 2.0 if 1 == x.shape[2] else x])
def test_a_branch_pinning_a_dimension_is_refused(branch):
    with pytest.raises(ShapeError, match="would fix the symbolic dimension L to one value"):
        lucid.trace(branch, lucid.spec(N, 3, dim("L")))


def test_a_branch_relating_two_dimensions_is_refused_naming_both():
    with pytest.raises(ShapeError, match="D != H depends on the symbolic dimensions D and H together"):
        lucid.trace(lambda x: x.transpose(2, 3) if x.shape[2] != x.shape[3] else x, lucid.spec(N, 2, D, H))
    with pytest.raises(ShapeError, match="D == H depends on the symbolic dimensions D and H together"):
        lucid.trace(lambda x: x.transpose(2, 3) if x.shape[2] == x.shape[3] else x, lucid.spec(N, 2, D, H))


def test_squeeze_asks_only_about_the_axes_it_may_drop():
    L = dim("L")
    graph = lucid.trace(lambda x: x.squeeze(1), lucid.spec(N, 1, L))
    assert graph.outputs[0].shape == (N, L) and not graph.constraints
    with pytest.raises(ShapeError, match="fix the symbolic dimension"):
        lucid.trace(lambda x: x.squeeze(), lucid.spec(N, 1, L))     # drops N or L where they are 1


def test_types_constraints_and_keys_compare_structurally():
    from lucid.ir.types import TensorType

    with symbolic.recording() as recorded:
        assert TensorType((N, D), "float32") != TensorType((N, H), "float32")
        assert TensorType((N, D), "float32") != TensorType((N, 8), "float32")
        assert TensorType((N, (D - 1) // 2 + 1), "float32") == TensorType((N, (D + 1) // 2), "float32")
        table = {TensorType((N, D), "float32"): "d", TensorType((N, 8), "float32"): "8", D: "D", 8: "eight"}
        assert table[TensorType((N, D + 0), "float32")] == "d" and table[D * 1] == "D" and H not in table
        assert dim("D", min=3) not in table and symbolic.constraint(D, ">=", 9) != symbolic.constraint(H, ">=", 9)
        assert symbolic.constraint(D, ">=", 9) in [symbolic.constraint(H, ">=", 9), symbolic.constraint(D + 0, ">=", 9)]
        Z = dim("Z", min=0)                                 # hash(-1) == hash(-2): the forms still hash apart
        negatives = {-Z: 1, -2 * Z: 2, Z - 1: 3, Z - 2: 4, (Z - 1) // 2: 5, (Z - 2) // 2: 6}
        assert [negatives[k] for k in (-Z, -2 * Z, Z - 1, Z - 2, (Z - 1) // 2, (Z - 2) // 2)] == [1, 2, 3, 4, 5, 6]
    assert recorded == []


def test_a_size_unpickled_in_another_process_finds_its_key():
    import os
    import pickle
    import subprocess
    import sys

    table = pickle.dumps({(D + 1) // 2: "half", D % 4: "rest"})
    check = ("import pickle, sys; from lucid.ir.symbolic import dim; D = dim('D', min=8); "
             "t = pickle.loads(sys.stdin.buffer.read()); print(t[(D - 1) // 2 + 1], t[D - 4 * (D // 4)])")
    found = subprocess.run([sys.executable, "-c", check], input=table, capture_output=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "7"}).stdout.decode().split()
    assert found == ["half", "rest"]


# ---------------------------------------------------------------------------------------------
# Stages that need sizes


def test_codegen_and_cost_refuse_or_leave_symbolic_sizes_open(unet):
    from lucid.codegen.build import memory_plan_of
    from lucid.ir.cost import estimated_flops, node_flops, value_bytes
    from lucid.passes import pipeline

    _, graph = unet
    assert node_flops(graph.nodes[0]) is None and value_bytes(graph.inputs[0]) is None
    assert estimated_flops(graph) is None
    planned = pipeline.for_inference(graph)          # planned for every size: the arena is a size too
    assert lucid.ir.symbolic.free_symbols(planned.memory_plan.arena_bytes)
    assert memory_plan_of(planned, dynamic=True) is planned.memory_plan
    with pytest.raises(CompileError, match=r"graph.specialize\(D=\.\.\., H=\.\.\., N=\.\.\., W=\.\.\.\)"):
        memory_plan_of(planned)                      # export needs concrete sizes
    concrete = graph.specialize(N=1, D=16, H=16, W=16)
    assert estimated_flops(concrete) == estimated_flops(lucid.trace(unet[0], lucid.spec(1, 1, 16, 16, 16)))


def test_viewer_shows_symbolic_shapes(unet, tmp_path):
    _, graph = unet
    svg = lucid.viz.render(graph, path=tmp_path / "unet.svg").path.read_text()
    assert "f32[N, 8, D // 2, H // 2, W // 2]" in svg and "? FLOP" in svg
    page = lucid.viz.render(graph, path=tmp_path / "unet.html")
    assert page.stages == ["traced", "shape-inferred", "fused"]
