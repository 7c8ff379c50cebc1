"""lucid.viz.render: SVG, DOT and HTML files for the seeds' models, the example 3-D models and a
failing model. Pictures are checked by reading them back: the SVG parses as XML, its boxes and
labels do not overlap (from their coordinates), every operator of the graph has a box, and module
totals equal what the modules themselves hold."""
import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.viz as viz
from lucid.passes import fusion
from models import ConvAutoencoder3D, UNet3D, VideoClassifier
from seeds import Conv3dModel, Decoder, Decoder3D

SVG = "{http://www.w3.org/2000/svg}"

SEED_MODELS = [
    (Decoder3D, (2, 8, 4, 4, 4)),
    (Decoder, (1, 16, 8, 8)),
    (Conv3dModel, (1, 1, 10, 10, 10)),
    (lambda: nn.LazyConvTranspose3d(out_channels=32, kernel_size=4, stride=2, padding=1), (2, 64, 4, 8, 8)),
    (UNet3D, UNet3D.example_shape()),
    (ConvAutoencoder3D, ConvAutoencoder3D.example_shape()),
    (VideoClassifier, VideoClassifier.example_shape()),
]


def boxes_of(svg_path) -> list:
    """(left, top, right, bottom, classes, texts) of every box, and of every shape label, in an SVG."""
    root = ET.parse(svg_path).getroot()
    found = []
    for group in root.iter(f"{SVG}g"):
        texts = [t.text for t in group.iter(f"{SVG}text")]
        for rect in group.findall(f"{SVG}rect"):
            x, y, w, h = (float(rect.get(k)) for k in ("x", "y", "width", "height"))
            found.append((x, y, x + w, y + h, rect.get("class").split(), texts))
    return found


def overlapping(boxes: list) -> list:
    pairs = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if a[0] < b[2] - 0.5 and b[0] < a[2] - 0.5 and a[1] < b[3] - 0.5 and b[1] < a[3] - 0.5:
                pairs.append((a[4:], b[4:]))
    return pairs


def nodes(boxes: list, kind: str | None = None) -> list:
    return [b for b in boxes if "node" in b[4] and (kind is None or kind in b[4])]


@pytest.mark.parametrize("make, shape", SEED_MODELS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_svg_of_every_model_is_well_formed_with_one_box_per_node_and_no_overlaps(tmp_path, make, shape):
    model = make()
    model.eval() if hasattr(model, "eval") else None
    graph = lucid.trace(model, lucid.spec(*shape))
    path = tmp_path / "model.svg"
    viz.render(model, lucid.spec(*shape), path=path, depth=None)
    boxes = boxes_of(path)
    drawn = nodes(boxes)
    operators = [n for n in graph.nodes if not n.is_constant]
    sinks = len(graph.outputs) + len(graph.state_updates)
    assert len(drawn) == len(graph.inputs) + len(operators) + sinks
    assert sorted(b[5][0] for b in nodes(boxes, "op")) == sorted(n.op for n in operators)
    assert overlapping(boxes) == []
    labels = {b[5][-1] for b in boxes if "shape-label" in b[4]}
    assert "f32[" + ", ".join(map(str, shape)) + "]" in labels          # the input's shape is on its edge


def edge_polylines(svg_path) -> list:
    """Each edge as the polyline through its route points (the ends of its curve segments)."""
    lines = []
    for path in ET.parse(svg_path).getroot().iter(f"{SVG}path"):
        if path.get("class") == "edge":
            numbers = [tuple(map(float, m)) for m in re.findall(r"(-?[\d.]+),(-?[\d.]+)", path.get("d"))]
            points = [numbers[0]] + numbers[3::3]
            lines.append(list(zip(points, points[1:])))
    return lines


def segments_cross(a, b) -> bool:
    (p1, p2), (p3, p4) = a, b
    if {p1, p2} & {p3, p4}:
        return False
    side = lambda p, q, r: (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])   # noqa: E731
    return side(p1, p2, p3) * side(p1, p2, p4) < 0 and side(p3, p4, p1) * side(p3, p4, p2) < 0


@pytest.mark.parametrize("depth", [None, 1])
def test_unet_picture_has_no_edge_crossings(tmp_path, depth):
    path = tmp_path / "unet.svg"
    viz.render(UNet3D(base=4).eval(), lucid.spec(1, 1, 16, 16, 16), path=path, depth=depth)
    edges = edge_polylines(path)
    assert len(edges) >= 15
    crossing = [(i, j) for i in range(len(edges)) for j in range(i + 1, len(edges))
                if any(segments_cross(a, b) for a in edges[i] for b in edges[j])]
    assert crossing == []


def test_unet_conv_boxes_show_module_flops_and_params(tmp_path):
    model = UNet3D(base=4).eval()
    path = tmp_path / "unet.html"
    viz.render(model, lucid.spec(1, 1, 16, 16, 16), path=path)
    panel = html_data(path)["stages"][0]["panels"][0]
    first_conv = next(i for i in panel["items"] if i["details"]["op"] == "conv")
    conv = model.down[0].block[0]
    out = conv(lucid.randn(1, 1, 16, 16, 16))
    assert first_conv["details"]["name"] == "down.0.block.0" and first_conv["details"]["cls"] == "Conv3d"
    assert first_conv["details"]["output"] == "f32[" + ", ".join(map(str, out.shape)) + "]"
    assert first_conv["details"]["params"] == conv.weight.data.size
    assert first_conv["details"]["flops"] == 2 * out.data.size * 1 * 27     # in_channels 1, 3x3x3 taps
    assert first_conv["details"]["bytes"] == out.data.nbytes


def test_folding_at_depth_one_draws_each_double_conv_as_one_box_with_its_totals(tmp_path):
    model = UNet3D(base=4).eval()
    path = tmp_path / "unet.svg"
    viz.render(model, lucid.spec(1, 1, 16, 16, 16), path=path, depth=1)
    boxes = boxes_of(path)
    groups = {b[5][0]: b[5] for b in nodes(boxes, "group")}
    assert sorted(groups) == sorted(f"{p}: DoubleConv3d" for p in ("down.0", "down.1", "bottleneck", "decode.0", "decode.1"))
    block = model.down[1]
    read = sum(p.data.size for p in block.parameters()) + sum(b.data.size for n, b in block.named_buffers() if "running" in n)
    # conv, relu and the batch norm's normalize with its operands' 4 reshapes and rstd (add, pow_scalar), twice
    assert groups["down.1: DoubleConv3d"][1] == "18 nodes"
    assert groups["down.1: DoubleConv3d"][2].startswith(f"{read / 1e3:.1f} kparams")
    assert overlapping(boxes) == []
    assert len(nodes(boxes, "pool")) == 2          # one MaxPool3d called twice: two boxes, not one


def test_fused_stage_draws_each_conv_bn_relu_as_one_cluster(tmp_path):
    path = tmp_path / "fused.svg"
    viz.render(UNet3D(base=4).eval(), lucid.spec(1, 1, 16, 16, 16), path=path, stage="fused", depth=None)
    fused = [b for b in nodes(boxes_of(path), "fused") if "conv" in b[5][1:3]]
    assert len(fused) == 10                                   # 5 DoubleConv3d x 2 (conv, normalize, relu)
    # the decoders' first convs read their input's concatenation as they pack it
    joined = [b for b in fused if b[5][1] == "concat"]
    assert len(joined) == 2 and all(b[5][1:5] == ["concat", "conv", "normalize", "relu"] for b in joined)
    assert all(b[5][1:4] == ["conv", "normalize", "relu"] for b in fused if b not in joined)


def test_training_stage_draws_forward_and_backward_side_by_side(tmp_path):
    model = Decoder3D()
    path = tmp_path / "train.svg"
    viz.render(model, lucid.spec(2, 8, 4, 4, 4), path=path, stage="training")
    root = ET.parse(path).getroot()
    titles = {t.text: float(t.get("x")) for t in root.iter(f"{SVG}text") if t.get("class") == "panel-title"}
    assert list(titles) == ["forward", "backward"]
    boxes = nodes(boxes_of(path))
    forward = [b for b in boxes if b[2] < titles["backward"]]
    backward = [b for b in boxes if b[0] >= titles["backward"] - 30]
    assert len(forward) + len(backward) == len(boxes)          # no box straddles the two panels
    assert {b[5][0] for b in forward} >= {"input x", "conv_transpose", "relu"}
    backward_titles = [b[5][0] for b in backward]
    assert "input grad_0" in backward_titles and "conv_weight_grad" in backward_titles
    assert sum(t.startswith("output") for t in backward_titles) == 2     # the weight and bias gradients
    assert overlapping(boxes_of(path)) == []


def test_failing_model_draws_the_partial_graph_and_marks_the_refused_node(tmp_path):
    path = tmp_path / "fail.svg"
    result = viz.render(Conv3dModel(), lucid.spec(1, 1, 3, 3, 3), path=path)
    with pytest.raises(lucid.ShapeError) as raised:
        lucid.trace(Conv3dModel(), lucid.spec(1, 1, 3, 3, 3))
    assert result.failure == str(raised.value)
    boxes = boxes_of(path)
    failed = nodes(boxes, "failed")
    assert len(failed) == 1
    text = " ".join(failed[0][5])
    assert failed[0][5][0] == "✖ max_pool" and "pool: MaxPool3d" in text
    assert "(1, 1, 1) is too small for kernel (2, 2, 2)" in text
    assert [b[5][0] for b in nodes(boxes, "op")] == ["conv", "relu", "conv", "relu"]
    assert overlapping(boxes) == []
    banner = " ".join(t.text for t in ET.parse(path).getroot().iter(f"{SVG}text") if t.get("class") == "banner")
    assert "MaxPool3d 'pool'" in banner


def test_failing_unbatched_seed_input_marks_conv2(tmp_path):
    path = tmp_path / "fail.html"
    result = viz.render(Conv3dModel(), lucid.spec(1, 1, 3, 3), path=path)
    assert result.stages == ["traced"] and "conv2" in result.failure
    items = html_data(path)["stages"][0]["panels"][0]["items"]
    failed = [i for i in items if i["details"]["failed"]]
    assert len(failed) == 1 and failed[0]["details"]["name"] == "conv2"


def test_dot_lists_the_same_boxes_and_edges(tmp_path):
    model = UNet3D(base=4).eval()
    graph = lucid.trace(model, lucid.spec(1, 1, 16, 16, 16))
    path = tmp_path / "unet.dot"
    viz.render(model, lucid.spec(1, 1, 16, 16, 16), path=path, depth=None)
    text = path.read_text()
    assert text.startswith("digraph lucid {") and text.count("{") == text.count("}")
    declared = re.findall(r'^\s+"0:[^"]+" \[label=', text, re.M)
    assert len(declared) == len(graph.inputs) + len([n for n in graph.nodes if not n.is_constant]) + len(graph.outputs)
    params = {id(p) for p in graph.params}
    drawn_operands = [{id(v) for v in n.inputs if id(v) not in params and not (v.node and v.node.is_constant)}
                      for n in graph.nodes]
    assert text.count(" -> ") == sum(map(len, drawn_operands)) + len(graph.outputs)


def test_auto_depth_opens_a_unet_at_its_double_conv_blocks_each_stage_at_its_own_depth(tmp_path):
    model = UNet3D(base=4)                     # train mode, as `lucid viz` builds it
    blocks = sorted(f"{name}: DoubleConv3d" for name, m in model.named_modules() if type(m).__name__ == "DoubleConv3d")
    viz.render(model, lucid.spec(1, 1, 16, 16, 16), path=tmp_path / "unet.svg")
    assert sorted(b[5][0] for b in nodes(boxes_of(tmp_path / "unet.svg"), "group")) == blocks
    viz.render(model, lucid.spec(1, 1, 16, 16, 16), path=tmp_path / "unet.html")
    for stage in html_data(tmp_path / "unet.html")["stages"]:
        for panel in stage["panels"]:
            folded = sorted(g["label"] for g in panel["groups"] if g["level"] == panel["depth"])
            assert folded == blocks if stage["name"] != "training" else set(blocks) <= set(folded)
    viz.render(UNet3D(base=4).eval(), lucid.spec(1, 1, 16, 16, 16), path=tmp_path / "eval.html")
    depths = {s["name"]: s["panels"][0]["depth"] for s in html_data(tmp_path / "eval.html")["stages"]}
    # fused: 69 boxes (each batch norm's operand reshapes and rstd beside its conv-normalize-relu)
    assert depths["traced"] == depths["fused"] == depths["planned"] == 1


def test_html_is_self_contained_and_holds_every_stage(tmp_path):
    path = tmp_path / "unet.html"
    result = viz.render(UNet3D(base=4).eval(), lucid.spec(1, 1, 16, 16, 16), path=path, stage="fused")
    text = path.read_text()
    assert result.stages == list(viz.STAGES)
    assert re.findall(r"https?://[^\s\"']+", text) == ["http://www.w3.org/2000/svg"] * text.count("http://www.w3.org/2000/svg")
    assert not re.search(r"<(script|img|iframe)[^>]*\ssrc=|<link[^>]*stylesheet|@import|url\((?!#)", text)
    data = html_data(path)
    assert data["initial"] == "fused"
    planned = next(s for s in data["stages"] if s["name"] == "planned")["panels"][0]
    returned = {src for src, dst, _ in planned["edges"] if dst.startswith("o_")}
    offsets = {i["id"]: i["details"]["offset"] for i in planned["items"] if i["kind"] in ("op", "fused")}
    parameter_views = {i["id"] for i in planned["items"] if i["kind"] == "op" and i["details"]["op"] == "reshape"
                       and i["details"]["operands"][0][0] == "param"}       # aliases of caller storage
    assert parameter_views and all(offsets[k] is None for k in parameter_views)
    assert all(isinstance(offsets[k], int) for k in offsets if k not in returned | parameter_views)
    assert all(offsets[k] is None for k in returned)           # outputs belong to the caller, not the arena


def test_saved_graph_file_renders_without_its_module(tmp_path):
    graph = lucid.trace(UNet3D(base=4).eval(), lucid.spec(1, 1, 16, 16, 16))
    graph.save(tmp_path / "unet.lucidgraph")
    path = tmp_path / "saved.svg"
    viz.render(lucid.ir.load(tmp_path / "unet.lucidgraph"), path=path, depth=1)
    groups = sorted(b[5][0] for b in nodes(boxes_of(path), "group"))
    # a file knows only the innermost module classes: the folded calls are named by their paths
    assert groups == sorted(f"{p}.block" for p in ("down.0", "down.1", "bottleneck", "decode.0", "decode.1"))


def test_functions_render_too(tmp_path):
    weight = lucid.Tensor(np.ones((3, 4), np.float32), requires_grad=True)
    path = tmp_path / "f.svg"
    viz.render(lambda x: (x @ weight).relu(), lucid.spec(2, 3), path=path, stage="training")
    assert [b[5][0] for b in nodes(boxes_of(path), "op")].count("matmul") >= 2    # forward and gradient


def test_bad_arguments_are_refused_clearly(tmp_path):
    model = Decoder3D()
    x = lucid.spec(2, 8, 4, 4, 4)
    with pytest.raises(ValueError, match=r"format of .*model.png.*\.html, \.svg, \.dot"):
        viz.render(model, x, path=tmp_path / "model.png")
    with pytest.raises(ValueError, match="unknown stage 'lowered'"):
        viz.render(model, x, path=tmp_path / "m.svg", stage="lowered")
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        viz.render(model, x, path=tmp_path / "m.svg", depth=0)
    graph = lucid.trace(model, x)
    with pytest.raises(ValueError, match="a graph is drawn as it is; got 1 inputs"):
        viz.render(graph, x, path=tmp_path / "m.svg")
    with pytest.raises(TypeError, match="expected a lucid.ir.Graph, a module or a function, got int"):
        viz.render(3, path=tmp_path / "m.svg")
    with pytest.raises(lucid.GraphError, match="no floating-point parameter or input"):
        viz.render(lambda i: i + 1, lucid.spec(2, dtype=lucid.int64), path=tmp_path / "m.svg", stage="training")


def html_data(path) -> dict:
    text = path.read_text()
    payload = re.search(r'<script type="application/json" id="lucid-data">(.*?)</script>', text, re.S).group(1)
    return json.loads(payload.replace("<\\/", "</"))


def test_auto_depth_folds_a_big_graph_to_a_readable_picture_and_leaves_a_small_one_open(tmp_path):
    big = UNet3D(base=4)                       # train mode: BatchNorm statistics make ~200 nodes
    viz.render(big, lucid.spec(1, 1, 16, 16, 16), path=tmp_path / "all.svg", depth=None)
    viz.render(big, lucid.spec(1, 1, 16, 16, 16), path=tmp_path / "auto.svg")
    every, auto = nodes(boxes_of(tmp_path / "all.svg")), nodes(boxes_of(tmp_path / "auto.svg"))
    assert len(every) > 60 and not nodes(boxes_of(tmp_path / "all.svg"), "group")
    assert 10 <= len(auto) <= 60 and nodes(boxes_of(tmp_path / "auto.svg"), "group")
    assert overlapping(boxes_of(tmp_path / "auto.svg")) == []

    small = Decoder3D()
    viz.render(small, lucid.spec(2, 8, 4, 4, 4), path=tmp_path / "small.svg")
    viz.render(small, lucid.spec(2, 8, 4, 4, 4), path=tmp_path / "small_all.svg", depth=None)
    assert len(nodes(boxes_of(tmp_path / "small.svg"))) == len(nodes(boxes_of(tmp_path / "small_all.svg")))
