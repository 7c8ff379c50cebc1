"""Where a compiled convolution spends its time: each kernel of its executables timed on its own.

    python benchmarks/kernels.py C            # forward of shape C (benchmarks/conv.py's shapes)
    python benchmarks/kernels.py G1 --backward

For the shape's compiled forward (and with --backward, its forward and backward executables) it
lowers the graph again to learn the kernel sequence, then calls each kernel on all its work items
on one thread, on `test_input` arrays and the bound weights, and prints its median time, its share of the total and the
GFLOP/s of the whole executable. Work items, names and order are the ones `lucid_run` uses.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from conv import SHAPES, Case, shapes_help  # noqa: E402

_KERNEL = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)


def executables(case: Case, backward: bool) -> list:
    case.lucid_step(backward, True)()
    variant = list(case.compiled.variants.values())[-1]
    return [variant.executable] if hasattr(variant, "executable") else [variant.forward, variant.backward]


def test_input(value, rng: np.random.Generator) -> np.ndarray:
    """An array for a graph input: floats drawn from [0.5, 1.5), inside every operator's domain (a
    saved variance, a log's argument) and never 0 (a backward graph's saved values at 0 divide by
    zero, and non-finite sums take the exact, scalar path: hundreds of times slower); integers and
    booleans 0."""
    if value.dtype.numpy.kind != "f":
        return np.zeros(value.shape, value.dtype.numpy)
    return rng.uniform(0.5, 1.5, value.shape).astype(value.dtype.numpy)


def parameter_array(executable, value, rng: np.random.Generator) -> np.ndarray:
    """A parameter's bound array (the model's own weights: test inputs as weights would grow the
    activations layer by layer until they overflow), else a `test_input`."""
    bound = executable.graph.bindings.get(value.name)
    return np.require(np.asarray(bound), value.dtype.numpy, "C") if bound is not None else test_input(value, rng)


def kernel_arrays(executable) -> tuple:
    """([input arrays], [parameter arrays]) the kernels are timed on."""
    rng = np.random.default_rng(0)
    return ([test_input(value, rng) for value in executable.graph.inputs],
            [parameter_array(executable, value, rng) for value in executable.graph.params])


def kernel_times(executable, repeats: int) -> list:
    """[(kernel label, work items, median seconds, graph node)] in run order."""
    inputs, params = kernel_arrays(executable)
    layout = executable._layout([])
    arena = executable._take_arena()
    try:
        table = arena.template(layout).copy()
        for slot, array in zip(executable.table.inputs, inputs):
            table[slot] = array.ctypes.data
        for (_, slot), array in zip(executable.table.params, params):
            table[slot] = array.ctypes.data
        alive = [inputs, params, executable._output_arrays(table, layout)]      # what the table points at
        results = []
        for kernel, node in executable.kernels():
            run = _KERNEL(executable.native.address(kernel.name))
            slots = np.array(kernel.slot_words() or (0,), np.int64)
            times = []
            for _ in range(repeats + 1):
                started = time.perf_counter()
                run(table.ctypes.data, slots.ctypes.data, 0, kernel.items)
                times.append(time.perf_counter() - started)
            results.append((kernel.label, kernel.items, float(np.median(times[1:])), node))
    finally:
        executable._give_back_arena(arena)
    alive.clear()
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=shapes_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", choices=list(SHAPES), metavar="SHAPE", help="one of the shapes below")
    parser.add_argument("--backward", action="store_true", help="the training variant (forward and backward)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each kernel (default 5)")
    args = parser.parse_args(argv)
    case = Case(args.shape)
    for executable in executables(case, args.backward):
        ops = ", ".join(node.op for node in executable.graph.nodes if not node.is_constant)
        times = kernel_times(executable, args.repeats)
        total = sum(seconds for _, _, seconds, _ in times)
        print(f"{executable.graph.name}: {ops}; {len(times)} kernels, {1e3 * total:.2f} ms on one thread")
        for name, items, seconds, _ in times:
            print(f"  {name:22} {items:8d} items {1e3 * seconds:9.3f} ms {100 * seconds / total:5.1f}%")


if __name__ == "__main__":
    main()
