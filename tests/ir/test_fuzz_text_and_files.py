"""Seeded fuzzing of what lucid reads from outside: graph text (`lucid.ir.parse`) and `.lucid` files
(`lucid.load`, `lucid.ir.load`).

Each mutant is one to three random edits of a valid graph text or file. The oracle:
- a graph text either parses to a valid graph or raises GraphError naming the line (or, for the
  frame of the text, `lucid.ir.parse`). A parsed graph prints and parses back to an equal graph;
  if it prints as the original it is the original and runs to the same outputs bit for bit; else
  it runs to outputs of its declared types or refuses the inputs with a ValueError/TypeError;
- a file either loads to exactly what was saved, or raises SerializationError (`lucid.load`) or
  GraphError (`lucid.ir.load`) naming the file and what is wrong with it;
- nothing else: no other exception type, no crash, no wrong answer.

The mutants are fixed by the seed, so a failure reproduces; the counts of mutants tried, accepted
and refused are printed (`pytest -s`) and checked to stay in a sensible range.
"""
from __future__ import annotations

import io
import json
import random
import re
import time
import zipfile

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
from lucid.errors import GraphError, LucidError, SerializationError
from lucid.ir import ops
from lucid.passes import fusion
from model_helpers import named_buffer, same_object
from seeds import Decoder3D

#: values a mutation writes in place of a number, an attribute value or a constant's data
LITERALS = ["None", "True", "False", "0", "1", "2", "3", "-1", "1.0", "2.0", "0.5", "-0.0", "nan", "inf",
            "-inf", "1e39", "1e400", str(2 ** 63), str(2 ** 70), "(1,)", "()", "(2.0, 2.0)", "((1, 1),)",
            "((0, 0), (0, 0))", "(1, 1)", "(0, 0)", "[1]", "[1.0, None]", "[[1.0], [2.0, 3.0]]", "'none'",
            "'tanh'", "'s'", "x", "{}", "(", ")", ",", "%0", "%x", "f32[1]", "@", ":", "1x", "[" * 300]


class Mixed(nn.Module):
    """A small model touching most operators: conv, transposed conv, batch norm (training, so state
    updates), both pools, linear (matmul), and the elementwise, layout and reduction operators."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.up = nn.ConvTranspose2d(3, 2, 2, stride=2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x, labels):
        y = F.max_pool2d(self.bn(self.conv(x)), 2)
        y = F.gelu(self.up(y), approximate="tanh") + F.avg_pool2d(x, 1, count_include_pad=False)
        z = F.pad(F.leaky_relu(y, 0.125).clamp(-1.5, 2.75), (1, 0, 0, 1), value=-0.5) ** 0.25
        flat = self.fc(z[:, :, 1:, :4].permute(0, 2, 1, 3))
        hot = ops.one_hot(labels, 3)
        return (flat.softmax(-1).mean(axis=(1, 2)), lucid.cat([hot, hot], dim=0).sum(),
                ops.where(x > 0.25, x, -x).to(lucid.float64).max(axis=1), y.argmax(axis=1))


def base_graphs():
    lucid.manual_seed(0)
    decoder = lucid.trace(Decoder3D(), lucid.spec(1, 8, 2, 2, 2))
    mixed = lucid.trace(Mixed().train(), lucid.spec(2, 2, 4, 4), lucid.spec(3, dtype=lucid.int64))
    return [decoder, mixed, fusion.run(mixed)]


def random_inputs(graph, rng):
    inputs = []
    for v in graph.inputs:
        kind = v.dtype.numpy.kind
        array = rng.standard_normal(v.shape) if kind == "f" else rng.integers(0, 3, v.shape)
        inputs.append(array.astype(v.dtype.numpy) if kind != "b" else array > 1)
    return inputs


def fresh_bindings(graph):
    """Parameter values of the graph's types (a run updates them in place, so each run gets its own)."""
    return {v.name: np.full(v.shape, 0.5, v.dtype.numpy) for v in graph.params}


def run(graph, inputs):
    outputs = lucid.ir.run(graph, *inputs, params=fresh_bindings(graph))
    return outputs if graph.returns_tuple else (outputs,)


# ============================================================================ graph text

def mutate_text(text: str, rng: random.Random) -> str:
    lines = text.split("\n")
    kind = rng.randrange(8)
    if kind == 0:                                  # a number
        spans = [m.span() for m in re.finditer(r"-?\d+(\.\d+)?(e-?\d+)?", text)]
    elif kind == 1:                                # an attribute value
        spans = [m.span(2) for m in re.finditer(r"(\w+)=(\([^=]*?\)(?=[,}])|[^,}]+)", text)]
    elif kind == 2:                                # a constant's data
        spans = [m.span(1) for m in re.finditer(r"= constant (.*?)( @ |$)", text, re.M)]
    elif kind == 3:                                # a token replaced by another from the text
        tokens = list(re.finditer(r"[%\w.]+|[(){}\[\],=:@]", text))
        target, source = rng.choice(tokens), rng.choice(tokens)
        return text[:target.start()] + source.group() + text[target.end():]
    elif kind == 4:                                # a line deleted
        del lines[rng.randrange(len(lines))]
        return "\n".join(lines)
    elif kind == 5:                                # a line duplicated elsewhere
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(lines))
        return "\n".join(lines)
    elif kind == 6:                                # a few characters deleted
        start = rng.randrange(len(text))
        return text[:start] + text[start + rng.randint(1, 6):]
    else:                                          # a literal inserted anywhere
        start = rng.randrange(len(text) + 1)
        return text[:start] + rng.choice(LITERALS) + text[start:]
    if not spans:
        return text
    start, stop = rng.choice(spans)
    return text[:start] + rng.choice(LITERALS + [str(rng.randint(-3, 40))]) + text[stop:]


def test_mutated_graph_text_parses_to_a_valid_graph_or_a_graph_error_naming_the_line():
    rng, data_rng = random.Random(17), np.random.default_rng(17)
    originals = []
    for graph in base_graphs():
        inputs = random_inputs(graph, data_rng)
        originals.append((str(graph), inputs, run(graph, inputs)))
    counts = {"tried": 0, "same_graph": 0, "other_graph_ran": 0, "other_graph_refused_inputs": 0, "refused": 0}
    started = time.perf_counter()
    for _ in range(2000):
        text, inputs, expected = rng.choice(originals)
        mutant = text
        for _ in range(rng.randint(1, 3)):
            mutant = mutate_text(mutant, rng) if len(mutant) > 1 else mutant + "x"
        counts["tried"] += 1
        try:
            graph = lucid.ir.parse(mutant)
        except GraphError as error:
            message = str(error)
            assert message.startswith("lucid.ir.parse: "), message
            if message.startswith("lucid.ir.parse: line "):
                number = int(re.match(r"lucid.ir.parse: line (\d+) ", message).group(1))
                line = mutant.splitlines()[number - 1].strip()
                assert message.startswith(f"lucid.ir.parse: line {number} ({line[:100]!r}): "), (mutant, message)
            counts["refused"] += 1
            continue
        assert lucid.ir.parse(str(graph)) == graph, mutant
        if str(graph) == text:
            for got, want in zip(run(graph, inputs), expected, strict=True):
                np.testing.assert_array_equal(got, want)
            counts["same_graph"] += 1
            continue
        if sum(node.output.type.size for node in graph.nodes) > 1 << 22:
            counts["other_graph_refused_inputs"] += 1      # too large to run here; parsed and verified
            continue
        try:
            outputs = run(graph, random_inputs(graph, data_rng))
        except (ValueError, TypeError) as error:
            assert isinstance(error, LucidError), (mutant, repr(error))
            counts["other_graph_refused_inputs"] += 1
            continue
        for got, value in zip(outputs, graph.outputs, strict=True):
            assert got.shape == value.type.shape and got.dtype == value.type.dtype.numpy, mutant
        counts["other_graph_ran"] += 1
    print(f"\ngraph text fuzz: {counts} in {time.perf_counter() - started:.1f} s")
    assert counts["refused"] > counts["tried"] // 2
    assert counts["same_graph"] + counts["other_graph_ran"] > 20


# ============================================================================ .lucid files

def mutate_bytes(raw: bytes, rng: random.Random) -> bytes:
    kind, where = rng.randrange(5), rng.randrange(len(raw) + 1)
    if kind == 0:                                  # one to three bit flips
        damaged = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        return bytes(damaged)
    if kind == 1:                                  # a byte set to 0x00, 0xff or a random value
        damaged = bytearray(raw)
        damaged[min(where, len(raw) - 1)] = rng.choice([0, 0xFF, rng.randrange(256)])
        return bytes(damaged)
    if kind == 2:                                  # truncation
        return raw[:where]
    if kind == 3:                                  # random bytes inserted
        return raw[:where] + rng.randbytes(rng.randint(1, 16)) + raw[where:]
    return raw[:where] + raw[where + rng.randint(1, 16):]      # a span deleted


def rewritten_archive(raw: bytes, edit) -> bytes:
    """The same zip with `edit(manifest_text)` as its manifest (CRCs and sizes made consistent, so
    the mutation reaches the decoder rather than the zip checks)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info.filename, edit(data.decode()) if info.filename == "manifest.json" else data)
    return out.getvalue()


def mutate_manifest(text: str, rng: random.Random) -> str:
    manifest = json.loads(text)
    if "text" in json.dumps(manifest) and rng.random() < 0.5:      # a graph file: mutate its graph text
        items = manifest["root"]["items"]
        index = next(i for i, (key, _) in enumerate(items) if key == "text")
        items[index][1] = mutate_text(items[index][1], rng)
        return json.dumps(manifest)
    spans = [m.span() for m in re.finditer(r'"[a-z_0-9.]+"|-?\d+(\.\d+)?|true|false|null', text)]
    start, stop = rng.choice(spans)
    replacement = rng.choice(['"tensor"', '"scalar"', '"ndarray"', '"dict"', '"list"', '"arr_1.npy"', '"arr_9.npy"',
                              "null", "true", "0", "-1", "2", "1.5", '"lucid"', '"text"', "[]", "{}"])
    return text[:start] + replacement + text[stop:]


def saved_state():
    lucid.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2))
    return {"model": dict(model.state_dict()), "step": 7, "lr": 0.5, "tensor": lucid.Tensor([1.0, -2.0], requires_grad=True),
            "shape": (2, 3), "scalar": np.float32(0.25), "tag": None}


def only_loadable_kinds(obj) -> bool:
    """What `lucid.load` may return for a file whose manifest was edited: the saveable kinds only."""
    if isinstance(obj, dict):
        return all(type(k) in (str, int) and only_loadable_kinds(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(only_loadable_kinds(v) for v in obj)
    return obj is None or isinstance(obj, (bool, int, float, str, np.ndarray, np.generic, lucid.Tensor))


def test_mutated_lucid_files_load_exactly_or_raise_an_error_naming_the_file(tmp_path):
    rng = random.Random(23)
    state = saved_state()
    buffer = io.BytesIO()
    lucid.save(state, buffer)
    state_raw = buffer.getvalue()
    graph = base_graphs()[1]
    graph.save(tmp_path / "mixed.lucid")
    graph_raw = (tmp_path / "mixed.lucid").read_bytes()
    counts = {"tried": 0, "loaded_intact": 0, "loaded_edited_manifest": 0, "refused": 0}
    started = time.perf_counter()
    for attempt in range(1500):
        is_graph = attempt % 3 == 2
        raw = graph_raw if is_graph else state_raw
        edit_manifest = rng.random() < 0.3
        if edit_manifest:
            mutant = rewritten_archive(raw, lambda text: mutate_manifest(text, rng))
        else:
            mutant = raw
            for _ in range(rng.randint(1, 2)):
                mutant = mutate_bytes(mutant, rng) if mutant else mutant
        counts["tried"] += 1
        name = f"mutant{attempt}.lucid"
        try:
            loaded = lucid.ir.load(named_buffer(mutant, name)) if is_graph else lucid.load(named_buffer(mutant, name))
        except (SerializationError, GraphError) as error:
            assert isinstance(error, GraphError if is_graph else SerializationError), repr(error)
            prefix = "lucid.ir.load: " if is_graph else "lucid.load: "
            assert str(error).startswith(prefix) and name in str(error), str(error)
            counts["refused"] += 1
            continue
        if is_graph:
            assert loaded.verify() is loaded
            if not edit_manifest:
                assert loaded == graph and loaded.bindings.keys() == graph.bindings.keys()
                for key, value in loaded.bindings.items():
                    np.testing.assert_array_equal(value, np.asarray(graph.bindings[key]))
        elif not edit_manifest:
            same_object(loaded, state)
        else:
            assert only_loadable_kinds(loaded)
        counts["loaded_edited_manifest" if edit_manifest else "loaded_intact"] += 1
    print(f"\n.lucid file fuzz: {counts} in {time.perf_counter() - started:.1f} s")
    assert counts["refused"] > counts["tried"] // 2 and counts["loaded_intact"] > 0


@pytest.mark.parametrize("text", ["graph g {\n" + "  input %x: f32[2]\n" + "  return " + "(" * 5000 + "%x\n}",
                                  "graph g {\n  %0: f32[] = constant " + "[" * 100000 + "\n  return %0\n}",
                                  "graph g {\n  input %x: f32[2]\n  %0: f32[2] = relu(%x) {a=" + "(" * 1000 + "}\n  return %0\n}"])
def test_deeply_nested_text_is_a_graph_error(text):
    with pytest.raises(GraphError, match="line "):
        lucid.ir.parse(text)
