"""The code blocks of README.md and docs/guide.md run as written: each file's ```python blocks in order
as one program, in an empty working directory; the ```sh blocks' `lucid` commands parse, and the
scripts, folders and options they name exist."""
import pathlib
import re
import shlex
import subprocess
import sys
import textwrap

import pytest

from lucid.cli import build_parser

ROOT = pathlib.Path(__file__).resolve().parent.parent
README, GUIDE = ROOT / "README.md", ROOT / "docs" / "guide.md"


def code_blocks(text: str, language: str) -> list[str]:
    pattern = rf"^ *```{language}\n(.*?)^ *```"
    return [textwrap.dedent(block) for block in re.findall(pattern, text, re.S | re.M)]


def run_python_blocks(path: pathlib.Path):
    """Execute the file's ```python blocks in order in one namespace, yielding (block, namespace)
    after each."""
    namespace: dict = {}
    for number, block in enumerate(code_blocks(path.read_text(), "python"), 1):
        exec(compile(block, f"{path.name} python block {number}", "exec"), namespace)
        yield block, namespace


def test_guide_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert len(code_blocks(GUIDE.read_text(), "python")) >= 6
    for _, namespace in run_python_blocks(GUIDE):
        pass
    assert all(p.grad is not None for p in namespace["model"].parameters())
    assert (tmp_path / "decoder.so").exists() and (tmp_path / "decoder.html").exists()


def test_readme_snippets_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert len(code_blocks(README.read_text(), "python")) >= 3
    backward_checked = False
    for block, namespace in run_python_blocks(README):
        if "loss.backward()" in block:                                           # the compiled backward
            assert all(p.grad is not None for p in namespace["model"].parameters())
            backward_checked = True
    assert backward_checked
    assert "graph Sequential {" in capsys.readouterr().out                       # print(g)
    assert namespace["y"].shape == (1, 2, 8, 8, 8)                                # the exported library's output
    assert (tmp_path / "model.so").exists() and (tmp_path / "model.h").exists()


def shell_commands(path: pathlib.Path) -> list[list[str]]:
    """Each ```sh block line as words, comments dropped, `a && b` split in two."""
    commands = []
    for block in code_blocks(path.read_text(), "sh"):
        for line in block.splitlines():
            for command in line.split("&&"):
                words = shlex.split(command, comments=True)
                if words:
                    commands.append(words)
    return commands


README_COMMANDS = shell_commands(README)


@pytest.mark.parametrize("words", [w for w in README_COMMANDS if w[0] == ".venv/bin/lucid"], ids=" ".join)
def test_readme_lucid_commands_parse(words):
    args = build_parser().parse_args(words[1:])
    assert callable(args.run)
    source = pathlib.Path(args.source.rpartition(":")[0])
    assert (ROOT / source).is_file(), source


def test_readme_commands_use_the_venv_and_name_what_exists():
    """Every command works when copied into a shell at the checkout's root without an activated venv:
    Python tools are called through .venv/bin, and the scripts and folders named are there."""
    assert README_COMMANDS[0][:3] == ["python3", "-m", "venv"]        # the one command that makes .venv
    for words in README_COMMANDS:
        assert words[0] not in ("python", "lucid", "pip", "pytest"), words
        if words[0] == ".venv/bin/python" and words[1].endswith(".py"):
            assert (ROOT / words[1]).is_file(), words
        if words[0] == "cd":
            assert (ROOT / words[1] / "Makefile").is_file(), words


def test_lucid_help_and_version_from_the_shell():
    done = subprocess.run([sys.executable, "-m", "lucid", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("lucid ")
    for command in ("export", "viz"):
        done = subprocess.run([sys.executable, "-m", "lucid", command, "--help"], capture_output=True, text=True)
        assert done.returncode == 0 and f"usage: lucid {command}" in done.stdout
