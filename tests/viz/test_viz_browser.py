"""The HTML viewer in headless Chromium, checked as a person would use it: nodes are drawn, clicking
a folded module shows its children, clicking a node shows its shapes in the side panel, the stage
selector switches to the fused graph and to forward | backward, the failing model shows its error,
and the console stays free of errors. The README's UNet page opens legible on a 1600 x 1000 window in
every stage (node titles at least 11 px on screen, measured as font size x the title's screen scale),
at the graph's input, with a minimap that navigates, and keys "f" (fit) and "0"/"r" (start view). Skips only where Chromium is not installed (`.ci/run` installs
Debian's `chromium`)."""
import pytest

import lucid
import lucid.viz as viz
from chromium import Chromium, find_binary
from models import UNet3D
from seeds import Conv3dModel

BINARY = find_binary()
pytestmark = pytest.mark.skipif(BINARY is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")

DRAWN = """Array.from(document.querySelectorAll('#viewport .node')).map(n => {
  const r = n.querySelector('rect.box').getBoundingClientRect();
  return {title: n.querySelector('text').textContent, kind: n.getAttribute('class'),
          x: r.x + r.width / 2, y: r.y + r.height / 2, w: r.width, h: r.height,
          lines: Array.from(n.querySelectorAll('text')).map(t => t.textContent)};
})"""


@pytest.fixture(scope="module")
def browser():
    chromium = Chromium.start(BINARY)
    chromium.set_viewport(1600, 1000)
    yield chromium
    chromium.close()


def shape_text(shape) -> str:
    return "f32[" + ", ".join(map(str, shape)) + "]"


def drawn(browser) -> list:
    return browser.evaluate(DRAWN)


def click_box(browser, title_start: str, lines_contain: str = "") -> None:
    box = next(b for b in drawn(browser) if b["title"].startswith(title_start) and lines_contain in " ".join(b["lines"]))
    browser.click(box["x"], box["y"])


def test_unet_viewer_folds_opens_and_shows_details(browser, tmp_path):
    model = UNet3D(base=4).eval()
    path = tmp_path / "unet.html"
    viz.render(model, lucid.spec(1, 1, 16, 16, 16), path=path, depth=1)
    browser.open(path.as_uri())

    boxes = drawn(browser)
    assert all(b["w"] > 20 and b["h"] > 10 for b in boxes)
    folded = [b["title"] for b in boxes if "group" in b["kind"]]
    assert sorted(folded) == sorted(f"▸ {p}: DoubleConv3d" for p in ("down.0", "down.1", "bottleneck", "decode.0", "decode.1"))
    assert not any("down.0.block.0" in " ".join(b["lines"]) for b in boxes)

    click_box(browser, "▸ down.0: DoubleConv3d")        # a folded module opens on click
    boxes = drawn(browser)
    children = [" ".join(b["lines"]) for b in boxes if "down.0.block" in " ".join(b["lines"])]
    assert len(children) == 18 and all(b["w"] > 20 for b in boxes)     # with each batch norm's operand nodes
    assert not any(b["title"].startswith("▸ down.0:") for b in boxes)
    assert "down.0: DoubleConv3d" in browser.evaluate("document.getElementById('details').textContent")

    click_box(browser, "conv", "down.0.block.0: Conv3d")
    details = browser.evaluate("document.getElementById('details').textContent")
    conv = model.down[0].block[0]
    out = conv(lucid.randn(1, 1, 16, 16, 16))
    assert shape_text((1, 1, 16, 16, 16)) in details                  # input shape
    assert shape_text(out.shape) in details                           # output shape
    assert shape_text(conv.weight.shape) in details and "down.0.block.0.weight" in details
    assert f"parameters{conv.weight.data.size}" in details
    assert "stride(1, 1, 1)" in details

    browser.evaluate("(() => { const s = document.getElementById('search'); s.value = 'head';"
                     "s.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'})); })()")
    assert "head: Conv3d" in browser.evaluate("document.getElementById('details').textContent")

    select_stage(browser, "fused")                 # each stage has its own folds: down.0 is folded there
    assert not any("fused" in b["kind"].split() for b in drawn(browser))
    click_box(browser, "▸ down.0: DoubleConv3d")
    fused = [b["lines"] for b in drawn(browser) if "fused" in b["kind"].split()]
    assert [lines[:4] for lines in fused if lines[1] == "conv"] == [["fused", "conv", "normalize", "relu"]] * 2
    assert [lines[:3] for lines in fused if lines[1] != "conv"] == [["fused", "add", "pow_scalar"]] * 2   # rstd

    select_stage(browser, "training")
    titles = browser.evaluate("Array.from(document.querySelectorAll('.panel-title')).map(t => t.textContent)")
    assert titles == ["forward", "backward"]
    assert any(b["title"].startswith("▸ decode.1: DoubleConv3d") for b in drawn(browser))
    button = browser.evaluate("(() => { const r = document.getElementById('unfold-all').getBoundingClientRect();"
                              "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    browser.click(*button)
    titles = [b["title"] for b in drawn(browser)]
    convolutions = sum(isinstance(m, (lucid.nn.Conv3d, lucid.nn.ConvTranspose3d)) for m in model.modules())
    assert not any(t.startswith("▸") for t in titles) and titles.count("conv_weight_grad") == convolutions
    browser.screenshot(tmp_path / "unet.png")
    assert browser.errors == []


def test_failing_model_shows_the_error_and_the_refused_node(browser, tmp_path):
    path = tmp_path / "fail.html"
    viz.render(Conv3dModel(), lucid.spec(1, 1, 3, 3, 3), path=path)
    browser.open(path.as_uri())
    banner = browser.evaluate("(() => { const b = document.getElementById('banner'); return b.hidden ? '' : b.textContent; })()")
    assert "MaxPool3d 'pool'" in banner and "too small for kernel (2, 2, 2)" in banner
    failed = [b for b in drawn(browser) if "failed" in b["kind"].split()]
    assert len(failed) == 1 and failed[0]["title"] == "✖ max_pool"
    click_box(browser, "✖ max_pool")
    details = browser.evaluate("document.getElementById('details').textContent")
    assert "input spatial size (1, 1, 1) is too small" in details and shape_text((1, 16, 1, 1, 1)) in details
    assert browser.errors == []


def select_stage(browser, name: str) -> None:
    browser.evaluate(f"""(() => {{ const s = document.getElementById('stage');
        s.value = Array.from(s.options).find(o => o.textContent === {name!r}).value;
        s.dispatchEvent(new Event('change')); }})()""")


LEGIBLE_PX = 11
ON_SCREEN = """(() => {
  const canvas = document.getElementById('canvas').getBoundingClientRect();
  return Array.from(document.querySelectorAll('#viewport .node')).map(n => {
    const r = n.querySelector('rect.box').getBoundingClientRect(), title = n.querySelector('text.title');
    return {title: title.textContent, kind: n.getAttribute('class').split(' '),
            px: parseFloat(getComputedStyle(title).fontSize) * title.getScreenCTM().a,
            seen: r.right > canvas.left && r.left < canvas.right && r.bottom > canvas.top && r.top < canvas.bottom,
            whole: r.left >= canvas.left && r.right <= canvas.right && r.top >= canvas.top && r.bottom <= canvas.bottom};
  });
})()"""
VIEW = "document.getElementById('viewport').getAttribute('transform')"


def rect(browser, selector: str) -> dict:
    return browser.evaluate(f"(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();"
                            "return {left: r.left, top: r.top, right: r.right, bottom: r.bottom}; })()")


def minimap_point(browser, kind: str) -> list:
    """Page coordinates of the centre of the first box of `kind` in the minimap."""
    return browser.evaluate(f"(() => {{ const r = document.querySelector('#minimap rect.mini.{kind}')"
                            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")


def assert_opens_legible_at_the_input(browser) -> None:
    nodes = browser.evaluate(ON_SCREEN)
    seen = [n for n in nodes if n["seen"]]
    assert len(seen) >= 5, seen
    assert min(n["px"] for n in seen) >= LEGIBLE_PX, sorted(n["px"] for n in seen)[:3]
    assert any("input" in n["kind"] and n["whole"] for n in nodes), "the input is not on screen"


def test_unet_page_opens_legible_at_its_input_in_every_stage(browser, tmp_path):
    path = tmp_path / "unet.html"                      # the README's page: a train-mode UNet3D on 32^3
    viz.render(UNet3D(), lucid.spec(1, 1, 32, 32, 32), path=path)
    browser.open(path.as_uri())
    assert browser.evaluate("[window.innerWidth, window.innerHeight]") == [1600, 1000]

    folded = [b["title"] for b in drawn(browser) if "group" in b["kind"]]      # --depth auto: the blocks
    assert sorted(folded) == sorted(f"▸ {p}: DoubleConv3d" for p in ("down.0", "down.1", "bottleneck", "decode.0", "decode.1"))
    for stage in ("traced", "shape-inferred", "fused", "planned", "training"):
        select_stage(browser, stage)
        browser.screenshot(tmp_path / f"unet-{stage}.png")
        assert_opens_legible_at_the_input(browser)
    assert browser.evaluate("document.querySelectorAll('.panel-title').length") == 2       # forward | backward
    help_text = browser.evaluate("document.getElementById('help').textContent")
    assert "f" in help_text and "fit" in help_text and "0 or r" in help_text and "minimap" in help_text
    assert browser.errors == []


def test_unet_page_keys_fit_and_reset_and_the_minimap_navigates(browser, tmp_path):
    path = tmp_path / "unet.html"
    viz.render(UNet3D(), lucid.spec(1, 1, 32, 32, 32), path=path)
    browser.open(path.as_uri())
    start = browser.evaluate(VIEW)
    minimap, canvas = rect(browser, "#minimap"), rect(browser, "#canvas")
    boxes = browser.evaluate("document.querySelectorAll('#minimap rect.mini').length")
    assert boxes == len(drawn(browser)) and minimap["right"] <= canvas["right"] and minimap["bottom"] <= canvas["bottom"]
    shown = rect(browser, "#minimap-view")             # the visible part: the top of a graph taller than the window
    assert shown["bottom"] - shown["top"] < minimap["bottom"] - minimap["top"]
    assert abs(shown["top"] - minimap["top"]) < 10

    browser.press("f")                                 # fit: every box on screen, the minimap's frame around it all
    nodes = browser.evaluate(ON_SCREEN)
    assert all(n["whole"] for n in nodes) and max(n["px"] for n in nodes) < LEGIBLE_PX
    shown = rect(browser, "#minimap-view")
    assert shown["top"] <= minimap["top"] + 1 and shown["bottom"] >= minimap["bottom"] - 1
    browser.press("0")                                 # back to the start view
    assert browser.evaluate(VIEW) == start
    assert_opens_legible_at_the_input(browser)

    at_input, at_output = minimap_point(browser, "input"), minimap_point(browser, "output")
    browser.drag(at_input, at_output)                  # dragging on the minimap takes the view along
    nodes = browser.evaluate(ON_SCREEN)
    assert any("output" in n["kind"] and n["whole"] for n in nodes)
    assert not any("input" in n["kind"] and n["seen"] for n in nodes)
    assert min(n["px"] for n in nodes if n["seen"]) >= LEGIBLE_PX
    browser.click(*at_input)                           # a click on the minimap goes there
    assert any("input" in n["kind"] and n["whole"] for n in browser.evaluate(ON_SCREEN))
    browser.press("r")
    assert browser.evaluate(VIEW) == start
    assert browser.errors == []
