"""The user guide's Python snippets run, in order, as one program (docs/guide.md)."""
import pathlib
import re
import textwrap

GUIDE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "guide.md"


def python_blocks(text: str) -> list[str]:
    return [textwrap.dedent(block) for block in re.findall(r"^ *```python\n(.*?)^ *```", text, re.S | re.M)]


def test_guide_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(GUIDE.read_text())
    assert len(blocks) >= 6
    namespace: dict = {}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"{GUIDE.name} snippet {number}", "exec"), namespace)
    assert all(p.grad is not None for p in namespace["model"].parameters())
    assert (tmp_path / "decoder.so").exists() and (tmp_path / "decoder.html").exists()
