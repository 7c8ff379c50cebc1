"""The `lucid` command line (`lucid CMD ...`, also `python -m lucid CMD ...`).

Each subcommand lives in its own module, listed in `COMMANDS`, with two functions:
`add_arguments(parser)` declares its arguments and `run(args) -> int` does the work (heavy imports
inside `run`, so `lucid --help` stays quick). Shared helpers for subcommands are here:
`load_source` resolves a `path/file.py:ATTR` argument, `is_python_source` tells it from a graph
file, `is_onnx_file` and `load_onnx` read an ONNX model, `input_shapes` falls back on a model's
`example_shape()`, `parse_shape` reads `1,1,32,32,32` and `output_file` checks that `-o`'s folder exists.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import pathlib
import sys

#: subcommand name -> (module implementing it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("lucid.aot.command", "compile a model ahead of time into a shared library with a C ABI"),
    "viz": ("lucid.viz.command", "draw a graph or a module as an interactive HTML page, an SVG picture or DOT"),
}


class SourceError(ValueError):
    """A SOURCE argument that does not name a loadable Python object."""


def parse_shape(text: str) -> tuple[int, ...]:
    """`'1,1,32,32,32'` -> `(1, 1, 32, 32, 32)`; a clear error for anything else."""
    parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d < 0 for d in shape):
        raise argparse.ArgumentTypeError(
            f"--input: expected a shape of non-negative integers such as 1,1,32,32,32, got {text!r}")
    return shape


def output_file(text: str) -> str:
    """An `-o` argument: refused at once, naming the folder, when its folder does not exist."""
    folder = pathlib.Path(text).parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"the folder {str(folder)!r} does not exist (create it first: mkdir -p {folder})")
    return text


def is_python_source(source: str) -> bool:
    """Whether SOURCE names Python code (`file.py:ATTR`, or a bare `file.py` missing its ATTR)."""
    return source.rpartition(":")[0].endswith(".py") or source.endswith(".py")


def is_onnx_file(source: str) -> bool:
    """Whether SOURCE names an ONNX model (`model.onnx`)."""
    return source.lower().endswith(".onnx")


def load_onnx(source: str, shapes: list | None):
    """The graph of the ONNX model SOURCE; `--input` shapes (in input order) fix its symbolic dimensions."""
    from .onnx import load

    return load(source, input_shapes=shapes or None)


def load_source(source: str):
    """The object named by `path/file.py:ATTR` (ATTR may be dotted). A class or a function taking no
    arguments is called, so `models.py:UNet3D` gives a fresh model."""
    if source.endswith(".py"):
        raise SourceError(f"expected SOURCE as path/file.py:ATTR; {source!r} is Python source without :ATTR, "
                          f"add the name of the model in it, for example {source}:MyModel "
                          "(a module, a class or a function)")
    path_text, sep, attr = source.rpartition(":")
    if not sep or not path_text or not attr:
        raise SourceError(f"expected SOURCE as path/file.py:ATTR, got {source!r}")
    path = pathlib.Path(path_text)
    if not path.is_file():
        raise SourceError(f"{source!r}: no such file {str(path)!r}")
    spec = importlib.util.spec_from_file_location(f"_lucid_source_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.resolve().parent))
    obj = module
    for name in attr.split("."):
        if not hasattr(obj, name):
            raise SourceError(f"{source!r}: {path.name} has no attribute {attr!r}")
        obj = getattr(obj, name)
    return obj() if isinstance(obj, type) or _is_factory(obj) else obj


def input_shapes(target, given: list | None, source: str) -> list[tuple[int, ...]]:
    """The `--input` shapes given, else the model's `example_shape()` (the models in
    examples/models.py have one), else a clear error."""
    if given:
        return given
    if hasattr(target, "example_shape"):
        return [tuple(target.example_shape())]
    raise ValueError(f"--input: {source} needs input shapes (for example --input 1,1,32,32,32)")


def _is_factory(obj) -> bool:
    import inspect

    from .nn.module import Module

    if isinstance(obj, Module) or not callable(obj):
        return False
    try:
        return not inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__

    parser = argparse.ArgumentParser(prog="lucid", description="lucid's command line")
    parser.add_argument("--version", action="version", version=f"lucid {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, ImportError) as error:     # ImportError: an optional package is missing
        print(f"lucid {args.command}: {error}", file=sys.stderr)
        return 1
