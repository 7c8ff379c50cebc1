"""Convolution accuracy: lucid compiled fp32 and PyTorch fp32 against a float64 reference.

    python benchmarks/accuracy.py                   # every row of conv.py and the UNet rows
    python benchmarks/accuracy.py --shapes C U32    # some rows
    python benchmarks/accuracy.py --inputs relu     # some input kinds

For each row (conv.py's shapes, and 3 x 3 x 3 stride-1 convs as in a UNet's levels: `UNET_SHAPES`),
each kind of input (`INPUTS`: standard normal, and post-ReLU activations, whose non-zero mean is
where Winograd's transforms lose most) and each result (the output y, the input gradient dx and
the weight gradient dw of sum(y * seed), seed standard normal), it prints the error of lucid's
compiled fp32 result and of PyTorch's fp32 result against the float64 one (PyTorch float64, or
lucid eager float64 without torch): max |error| / rms(reference) and rms(error) / rms(reference),
the ratio lucid / PyTorch of each (the goal: at most 2), and which algorithm lucid's compiled
forward and backward ran (the kernel families of their executables: wino, direct, ...).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lucid  # noqa: E402
from conv import NOT_MEASURED, SHAPES, TORCH_MISSING, cell, functions, note, weight_shape  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

#: 3 x 3 x 3 convs of stride 1 and padding 1 as a 3-D UNet has them (conv.py's table's format).
UNET_SHAPES = {
    "U16": (False, (1, 16, 32, 32, 32), 16, 3, 1, 1),
    "U32": (False, (1, 32, 24, 24, 24), 32, 3, 1, 1),
    "U64": (False, (1, 64, 16, 16, 16), 64, 3, 1, 1),
}
ROWS = {**SHAPES, **UNET_SHAPES}

#: How the input x is drawn (weights are normal / sqrt(fan-in), the seed of the gradient normal).
INPUTS = {
    "normal": lambda rng, shape: rng.standard_normal(shape),
    "relu": lambda rng, shape: np.maximum(rng.standard_normal(shape), 0.0),
}

RESULTS = ("y", "dx", "dw")


def operands(row: tuple, kind: str, seed: int = 0) -> tuple:
    """(x, w, b, gradient seed) of a row in float64, drawn as `kind` says; and the conv's options."""
    transposed, x_shape, out_channels, kernel, stride, padding = row
    rank = len(x_shape) - 2
    rng = np.random.default_rng(seed)
    w_shape = weight_shape(transposed, x_shape[1], out_channels, kernel, rank)
    x = INPUTS[kind](rng, x_shape).astype(np.float32).astype(np.float64)
    fan_in = np.prod(w_shape[1:]) if not transposed else w_shape[0] * np.prod(w_shape[2:])
    w = (rng.standard_normal(w_shape) / np.sqrt(fan_in)).astype(np.float32).astype(np.float64)
    b = (0.1 * rng.standard_normal(out_channels)).astype(np.float32).astype(np.float64)   # small: y's error is the conv's
    return (x, w, b), dict(stride=stride, padding=padding)


def lucid_results(row: tuple, arrays: tuple, options: dict, dtype, compiled: bool) -> tuple:
    """({y, dx, dw} as float64 arrays, the compiled function or None) of lucid in `dtype`."""
    transposed, x_shape = row[0], row[1]
    conv = functions(transposed, len(x_shape) - 2)[0]
    x, w, b = (lucid.tensor(a, dtype=dtype, requires_grad=True) for a in arrays[:3])
    fn = lucid.compile(lambda x, w, b: conv(x, w, b, **options)) if compiled else (lambda x, w, b: conv(x, w, b, **options))
    y = fn(x, w, b)
    seed = lucid.tensor(gradient_seed(y.shape), dtype=dtype)
    (y * seed).sum().backward()
    results = {"y": y.detach(), "dx": x.grad, "dw": w.grad}
    return {k: np.array(v.numpy(), np.float64) for k, v in results.items()}, fn if compiled else None


def torch_results(row: tuple, arrays: tuple, options: dict, dtype) -> dict:
    transposed, x_shape = row[0], row[1]
    conv = functions(transposed, len(x_shape) - 2)[1]
    x, w, b = (torch.tensor(a, dtype=dtype, requires_grad=True) for a in arrays[:3])
    y = conv(x, w, b, **options)
    (y * torch.tensor(gradient_seed(tuple(y.shape)), dtype=dtype)).sum().backward()
    return {k: np.array(v.detach().numpy(), np.float64) for k, v in (("y", y), ("dx", x.grad), ("dw", w.grad))}


def gradient_seed(shape: tuple) -> np.ndarray:
    return np.random.default_rng(1).standard_normal(shape).astype(np.float32)


def errors(result: np.ndarray, reference: np.ndarray) -> tuple:
    """(max |error|, rms error), each over the reference's rms."""
    scale = np.sqrt(np.mean(reference ** 2))
    difference = result - reference
    return float(np.abs(difference).max() / scale), float(np.sqrt(np.mean(difference ** 2)) / scale)


def reference_results(row: tuple, arrays: tuple, options: dict) -> dict:
    if torch is not None:
        return torch_results(row, arrays, options, torch.float64)
    return lucid_results(row, arrays, options, lucid.float64, compiled=False)[0]


def algorithms(compiled) -> str:
    """The conv kernel families of a compiled function's executables, forward / backward."""
    variant = list(compiled.variants.values())[-1]
    executables = [variant.executable] if hasattr(variant, "executable") else [variant.forward, variant.backward]
    families = []
    for executable in executables:
        labels = [kernel.label for kernel, _ in executable.kernels()]
        families.append("+".join(sorted({label.split("_")[0] for label in labels
                                         if label.startswith(("wino", "conv", "wgrad", "phase", "transposed"))})))
    return " / ".join(families)


def measure(name: str, kind: str) -> list:
    """[(result, lucid (max, rms), torch (max, rms) or None)] of one row and input kind, and the
    algorithms lucid ran."""
    row = ROWS[name]
    arrays, options = operands(row, kind)
    reference = reference_results(row, arrays, options)
    lucid32, compiled = lucid_results(row, arrays, options, lucid.float32, compiled=True)
    torch32 = torch_results(row, arrays, options, torch.float32) if torch is not None else None
    rows = [(r, errors(lucid32[r], reference[r]), errors(torch32[r], reference[r]) if torch32 else None)
            for r in RESULTS]
    return rows, algorithms(compiled)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(ROWS), choices=list(ROWS), metavar="SHAPE")
    parser.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=list(INPUTS))
    args = parser.parse_args(argv)
    print(f"reference: {'PyTorch' if torch is not None else 'lucid eager'} float64; errors relative to its rms")
    if torch is None:
        note(TORCH_MISSING)
    print(f"{'row':5} {'input':7} {'res':3} {'lucid max':>10} {'torch max':>10} {'ratio':>6} "
          f"{'lucid rms':>10} {'torch rms':>10} {'ratio':>6}  algorithms (fwd / bwd)")
    for name in args.shapes:
        for kind in args.inputs:
            rows, families = measure(name, kind)
            for result, (l_max, l_rms), theirs in rows:
                t_max, t_rms = theirs if theirs else (None, None)
                print(f"{name:5} {kind:7} {result:3} {l_max:10.2e} {exponent(t_max)} {cell(theirs and l_max / t_max, 6)} "
                      f"{l_rms:10.2e} {exponent(t_rms)} {cell(theirs and l_rms / t_rms, 6)}  "
                      f"{families if result == 'y' else ''}", flush=True)


def exponent(value: float | None) -> str:
    return f"{NOT_MEASURED:>10}" if value is None else f"{value:10.2e}"


if __name__ == "__main__":
    main()
