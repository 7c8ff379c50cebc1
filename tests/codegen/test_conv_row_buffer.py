"""A direct conv that unpacks each output row in its own kernel sums the row, every channel block,
into a stack array (`direct.row_buffer_elements`) rather than into a channels-last scratch of the
whole output: its workspace holds no copy of the output (conv.py's F: 103 MB less), and the row
never travels to memory before it is unpacked. A Winograd work item does the same with its output
rows (`winograd._ItemRows`), its direct fallback included.

Checked against the plain-loop oracle (`oracle.py`, float64) with odd sizes:
- a 3-channel stem conv of stride 2 across (h, w);
- groups, with a last block of fewer channels;
- a temporal 3 x 1 x 1 conv reading its NCDHW input where it is (`depth_classes`);
- a transposed conv of stride 1 (one phase);
- a fused epilogue;
- one and two threads.

A row larger than ROW_BUFFER_BYTES sums into the scratch again, with the same values; so do
Winograd's items, with non-finite inputs too (the items computed again by the direct tiles)."""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn.functional as F
import oracle
from lucid.codegen.kernels.conv import direct, winograd
from lucid.passes import dead_code, fusion, memory_planning
from lucid.runtime.executable import Executable
from model_helpers import kernel_labels

TOL = 2e-5

# transposed, input shape, output channels, kernel, attributes, the direct kernel's label
CASES = [
    (False, (2, 3, 3, 9, 11), 20, (1, 7, 7), dict(stride=(1, 2, 2), padding=(0, 3, 3)), "conv_direct"),
    (False, (1, 12, 4, 5, 7), 36, (3, 3, 3), dict(padding=1, groups=3), "conv_direct"),
    (False, (2, 9, 6, 3, 3), 33, (3, 1, 1), dict(padding=(1, 0, 0)), "conv_direct"),
    (True, (1, 10, 4, 5, 6), 40, (3, 3, 3), dict(padding=1), "convT_direct"),
]


def _case(index: int, name: str = "row_buffer", cases: list = CASES):
    transposed, x_shape, oc, kernel, attrs, label = cases[index]
    rng = np.random.default_rng(index)
    groups = attrs.get("groups", 1)
    w_shape = (x_shape[1], oc // groups) + kernel if transposed else (oc, x_shape[1] // groups) + kernel
    arrays = [rng.standard_normal(shape).astype(np.float32) for shape in (x_shape, w_shape, (oc,))]
    if name.endswith("non_finite"):
        arrays[0].flat[rng.choice(arrays[0].size, 3, replace=False)] = [np.inf, -np.inf, np.nan]
    conv = F.conv_transpose3d if transposed else F.conv3d
    reference = oracle.conv_transpose_nd if transposed else oracle.conv_nd
    with np.errstate(invalid="ignore"):                    # inf - inf in the oracle's sums: NaN, as wanted
        expected = np.maximum(reference(*(a.astype(np.float64) for a in arrays), **attrs), 0)
    graph = lucid.trace(lambda x, w, b: F.relu(conv(x, w, b, **attrs)), *(lucid.spec(a.shape) for a in arrays),
                        name=f"{name}_{index}")
    return Executable(memory_planning.run(dead_code.run(fusion.run(graph)))), arrays, expected, label


def _assert_close(actual, wanted, what):
    scale = max(float(np.max(np.abs(wanted))), 1e-30)
    error = float(np.max(np.abs(np.asarray(actual, np.float64) - wanted)))
    assert error <= TOL * scale, f"{what}: max error {error:.3g} > {TOL:g} x {scale:.3g}"


@pytest.mark.parametrize("index", range(len(CASES)))
def test_rows_summed_on_the_stack_match_the_oracle(index):
    executable, arrays, expected, label = _case(index)
    labels = kernel_labels(executable)
    assert label in labels and not any(name.endswith("unpack") for name in labels), labels     # unpacked in place
    for threads in (2, 1):
        _assert_close(executable(*arrays, threads=threads)[0], expected, f"case {index}, {threads} threads")


@pytest.mark.parametrize("index", range(len(CASES)))
def test_a_row_over_the_limit_sums_into_the_scratch_with_the_same_values(monkeypatch, index):
    """The scratch costs the workspace at least the output's size (its channels padded to vectors);
    the stack rows, nothing."""
    on_stack, arrays, expected, _ = _case(index)
    monkeypatch.setattr(direct, "ROW_BUFFER_BYTES", 64)
    in_scratch = _case(index, "row_in_scratch")[0]          # another graph: lowered again
    assert in_scratch.workspace_bytes - on_stack.workspace_bytes >= expected.size * 4
    np.testing.assert_array_equal(in_scratch(*arrays)[0], on_stack(*arrays)[0])
    _assert_close(in_scratch(*arrays, threads=2)[0], expected, f"case {index} in the scratch")


WINOGRAD_CASES = [
    (False, (1, 32, 3, 5, 6), 32, (3, 3, 3), dict(padding=1), "wino_conv"),
    (False, (1, 32, 2, 19, 6), 24, (3, 3, 3), dict(padding=1), "wino_conv"),              # three items a plane
    (False, (1, 32, 2, 3, 61), 16, (3, 3, 3), dict(padding=1), "wino_conv"),              # rows in chunks
    (True, (1, 32, 1, 4, 5), 40, (1, 4, 4), dict(stride=(1, 2, 2), padding=(0, 1, 1)), "wino_conv"),  # 4 phases
    (True, (2, 32, 3, 4, 5), 16, (4, 4, 4), dict(stride=2, padding=1), "wino_conv"),           # 2 depths an item
]


@pytest.mark.parametrize("index", range(len(WINOGRAD_CASES)))
@pytest.mark.parametrize("inputs", ["finite", "non_finite"])
def test_winograd_items_on_the_stack_match_their_scratch_and_the_oracle(monkeypatch, index, inputs):
    monkeypatch.setattr(winograd, "MIN_ITEMS_PER_CORE", 0)          # small shapes: Winograd all the same
    monkeypatch.setattr(winograd, "WEIGHT_TRANSFORM_CYCLES", 0)
    on_stack, arrays, expected, label = _case(index, f"wino_rows_{inputs}", WINOGRAD_CASES)
    monkeypatch.setattr(winograd, "ROW_BUFFER_BYTES", 64)
    in_scratch = _case(index, f"wino_scratch_{inputs}", WINOGRAD_CASES)[0]
    for executable in (on_stack, in_scratch):
        assert label in kernel_labels(executable), kernel_labels(executable)
    assert in_scratch.workspace_bytes - on_stack.workspace_bytes >= expected.size * 4
    got = on_stack(*arrays, threads=2)[0]
    np.testing.assert_array_equal(got, in_scratch(*arrays, threads=2)[0])
    for special in (np.isnan, np.isposinf):
        np.testing.assert_array_equal(special(got), special(expected), err_msg=f"{special.__name__} positions")
    finite = np.isfinite(expected)
    assert finite.any() and (inputs == "finite") == finite.all()
    _assert_close(got[finite], expected[finite], f"Winograd case {index}, {inputs} inputs")
