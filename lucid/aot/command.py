"""`lucid export SOURCE [--input SHAPE ...] -o model.so`: `lucid.export` from the command line.

SOURCE is `path/file.py:ATTR` (a module instance, a class or a factory taking no arguments, or a
function) or an ONNX model (`model.onnx`, whose `--input` shapes fix its symbolic dimensions), each
`--input` one float32 input shape (a model with an `example_shape()` classmethod, like the models in
examples/models.py, may leave it out). Prints the files written.

Symbolic dimensions (Python models): a size in `--input` may be a name, `lucid.dim(NAME)`, optionally
with its smallest and largest size: `NAME:MIN` or `NAME:MIN:MAX`. `--input N,1,D:16,32,32` exports one
library for every batch size N >= 1 and depth D >= 16 (`N_run_dims`, see the generated header); a
name used in several inputs is one dimension.
"""
from __future__ import annotations

import argparse

from ..cli import input_shapes, is_onnx_file, load_onnx, load_source, output_file, parse_shape


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="the model: path/file.py:ATTR, or an ONNX model (.onnx)")
    parser.add_argument("--input", dest="inputs", metavar="SHAPE", type=parse_export_shape, action="append",
                        help="an input shape such as 1,1,32,32,32 (once per input; default: the model's "
                             "example_shape()); a size may be a symbolic dimension NAME, NAME:MIN or "
                             "NAME:MIN:MAX (N,1,D:16,32,32: one library for every N >= 1 and D >= 16)")
    parser.add_argument("-o", "--output", required=True, metavar="PATH", type=output_file,
                        help="the shared library to write (model.so)")
    parser.add_argument("--name", help="prefix of the C functions (default: the output file's stem)")
    parser.add_argument("--seed", type=int, help="lucid.manual_seed(SEED) before the model is made (reproducible weights)")
    parser.add_argument("--weights-file", action="store_true",
                        help="keep the weights in PATH.weights beside the library instead of inside it")


def parse_export_shape(text: str) -> tuple:
    """`'1,1,32,32,32'` as `parse_shape` reads it, or a shape with symbolic sizes: `'N,1,D:16,32,32'` ->
    `(('N', 1, None), 1, ('D', 16, None), 32, 32)` (a name, its smallest and largest size)."""
    try:
        return parse_shape(text)
    except argparse.ArgumentTypeError:
        pass
    parts = [p.strip() for p in text.split(",")]
    shape = tuple(_symbolic_size(p) for p in parts) if all(parts) else (None,)
    if None in shape:
        raise argparse.ArgumentTypeError(
            f"--input: expected a shape of non-negative integers and symbolic sizes (NAME, NAME:MIN or "
            f"NAME:MIN:MAX) such as N,1,D:16,32,32, got {text!r}")
    return shape


def _symbolic_size(text: str):
    """An int, or (name, min, max) for `NAME[:MIN[:MAX]]`; None when it is neither."""
    if text.isdigit():
        return int(text)
    name, *bounds = text.split(":")
    if not name.isidentifier() or len(bounds) > 2 or not all(b.isdigit() for b in bounds):
        return None
    return name, int(bounds[0]) if bounds else 1, int(bounds[1]) if len(bounds) == 2 else None


def _spec(shape: tuple):
    """The `lucid.spec` of a parsed `--input` shape."""
    from ..ir.symbolic import dim
    from ..tracing import spec

    return spec(*(size if isinstance(size, int) else dim(*size) for size in shape))


def run(args: argparse.Namespace) -> int:
    from ..random import manual_seed
    from .exporter import export

    if args.seed is not None:
        manual_seed(args.seed)
    if is_onnx_file(args.source):
        if any(not isinstance(size, int) for shape in args.inputs or () for size in shape):
            raise ValueError("--input: symbolic sizes are for Python models; an ONNX model is imported at the "
                             "concrete sizes --input gives")
        model, specs = load_onnx(args.source, args.inputs), []
    else:
        model = load_source(args.source)
        specs = [_spec(shape) for shape in input_shapes(model, args.inputs, args.source)]
    files = export(model, *specs, path=args.output, name=args.name, weights_in_file=args.weights_file)
    for path in (files.library, files.header, files.weights):
        if path is not None:
            print(f"wrote {path}")
    run = "run_dims" if any(not isinstance(size, int) for spec in specs for size in spec.shape) else "run"
    print(f"C functions: {files.name}_{run}, {files.name}_selftest, ... (see {files.header.name})")
    return 0
