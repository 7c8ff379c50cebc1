"""`lucid viz SOURCE -o OUT [--input 1,1,32,32,32] [--stage STAGE] [--depth N|auto|all]`.

SOURCE is a graph file (`graph.save`, read with `lucid.ir.load`), an ONNX model (`model.onnx`; `--input`
fixes its symbolic dimensions) or `path/file.py:ATTR` naming a
module, a class or factory making one, or a function to trace. Modules and functions are traced on
`--input` shapes (repeat `--input` for several inputs; a module class with an `example_shape()`
classmethod, like the models in examples/models.py, may leave it out). The format follows OUT's
suffix (.html, .svg, .dot). A model whose trace fails is drawn up to the failing node; the command
then reports the error and exits with status 1.
"""
from __future__ import annotations

import argparse
import sys

from ..cli import input_shapes, is_onnx_file, is_python_source, load_onnx, load_source, output_file, parse_shape
from .stages import STAGES


def add_arguments(parser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="a graph file, an ONNX model (.onnx), or path/file.py:ATTR naming a module or function")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", type=output_file,
                        help="the file to write: .html, .svg or .dot")
    parser.add_argument("--input", action="append", type=parse_shape, metavar="SHAPE", default=None,
                        help="input shape such as 1,1,32,32,32 (repeat for several inputs)")
    parser.add_argument("--stage", choices=STAGES, default="traced",
                        help="pipeline stage to draw (the HTML holds every stage and opens on this one)")
    parser.add_argument("--depth", type=_depth, default="auto", metavar="N",
                        help="fold module calls nested N levels deep into one box; 'all' shows every node; "
                             "default 'auto': the deepest folding that keeps the picture readable")


def _depth(text: str):
    if text in ("auto", "all"):
        return None if text == "all" else "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--depth: expected a positive integer, 'auto' or 'all', got {text!r}")


def run(args) -> int:
    from ..tracing import spec
    from ..ir.serialize import load
    from . import render

    if is_python_source(args.source):
        target = load_source(args.source)
        inputs = [spec(*shape) for shape in input_shapes(target, args.input, args.source)]
    elif is_onnx_file(args.source):
        target, inputs = load_onnx(args.source, args.input), []
    else:
        if args.input:
            raise ValueError(f"--input: {args.source!r} is a graph file, whose input shapes are fixed; "
                             "--input is for modules and functions")
        target, inputs = load(args.source), []
    result = render(target, *inputs, path=args.output, stage=args.stage, depth=args.depth)
    if result.failure is not None:
        print(f"lucid viz: tracing failed; {result.path} shows the graph up to the failing node:\n"
              f"  {result.failure}", file=sys.stderr)
        return 1
    print(f"lucid viz: wrote {result.path} ({', '.join(result.stages)})")
    return 0

