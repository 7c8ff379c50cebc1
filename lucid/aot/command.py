"""`lucid export SOURCE [--input SHAPE ...] -o model.so`: `lucid.export` from the command line.

SOURCE is `path/file.py:ATTR` (a module instance, a class or a factory taking no arguments, or a
function) or an ONNX model (`model.onnx`, whose `--input` shapes fix its symbolic dimensions), each
`--input` one float32 input shape (a model with an `example_shape()` classmethod, like the models in
examples/models.py, may leave it out). Prints the files written.
"""
from __future__ import annotations

import argparse

from ..cli import input_shapes, is_onnx_file, load_onnx, load_source, output_file, parse_shape


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="the model: path/file.py:ATTR, or an ONNX model (.onnx)")
    parser.add_argument("--input", dest="inputs", metavar="SHAPE", type=parse_shape, action="append",
                        help="an input shape such as 1,1,32,32,32 (once per input; "
                             "default: the model's example_shape())")
    parser.add_argument("-o", "--output", required=True, metavar="PATH", type=output_file,
                        help="the shared library to write (model.so)")
    parser.add_argument("--name", help="prefix of the C functions (default: the output file's stem)")
    parser.add_argument("--seed", type=int, help="lucid.manual_seed(SEED) before the model is made (reproducible weights)")
    parser.add_argument("--weights-file", action="store_true",
                        help="keep the weights in PATH.weights beside the library instead of inside it")


def run(args: argparse.Namespace) -> int:
    from ..random import manual_seed
    from ..tracing import spec
    from .exporter import export

    if args.seed is not None:
        manual_seed(args.seed)
    if is_onnx_file(args.source):
        model, specs = load_onnx(args.source, args.inputs), []
    else:
        model = load_source(args.source)
        specs = [spec(*shape) for shape in input_shapes(model, args.inputs, args.source)]
    files = export(model, *specs, path=args.output, name=args.name, weights_in_file=args.weights_file)
    for path in (files.library, files.header, files.weights):
        if path is not None:
            print(f"wrote {path}")
    print(f"C functions: {files.name}_run, {files.name}_selftest, ... (see {files.header.name})")
    return 0
