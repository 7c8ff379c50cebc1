"""Layer by layer against OpenVINO: each conv of a network, lucid's kernels against OpenVINO's layer.

    python benchmarks/openvino_layers.py                    # R2Plus1dNet's inference
    python benchmarks/openvino_layers.py --network UNet3D

The network (networks.py's SIZES) is compiled by lucid for inference and written by lucid.onnx.save
for OpenVINO, compiled there on one thread with its per-layer counters on. In alternating rounds,
each of lucid's kernels runs alone on one thread (kernels.kernel_times, summed per graph node) and
OpenVINO runs the whole network (its counters give each layer's time). Convolutions and transposed
convolutions are matched by their output shape and input channels (layers alike are summed on both
sides); everything else is summed as "other" (OpenVINO's layout reorders included). Medians over
the rounds; ov/lucid above 1 means lucid's layer is faster. Each layer's MFLOP (2 per weight per
output, the direct algorithm's) and each side's share of the one-thread FMA peak at that rate make
the roofline: every layer here is compute-bound (tens of FLOPs per byte it must move, against the
peak's 10-15 per byte of memory bandwidth), so its % of peak says how close a side comes.
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import tempfile
from pathlib import Path

from conv import restart_with_malloc_tunables, sibling_script

if __name__ == "__main__":
    restart_with_malloc_tunables()

import numpy as np  # noqa: E402

network_benchmark = sibling_script("networks")
from kernels import kernel_times  # noqa: E402
from lucid.codegen.peak import peak_gflops  # noqa: E402
from lucid.ir.cost import node_flops  # noqa: E402

OPENVINO_CONVOLUTIONS = ("Convolution", "Deconvolution", "ConvolutionBackpropData")


def conv_of(node):
    """The convolution of a conv-family node (itself, or the one in its fused body)."""
    body = node.attrs["body"].nodes if node.op == "fused" else [node]
    return next(n for n in body if n.op in network_benchmark.CONVOLUTIONS)


def layer_key(node) -> tuple:
    """(output shape, input channels) of a conv-family node, as both sides' layers are matched."""
    return tuple(node.output.shape), conv_of(node).inputs[0].shape[1]


def layer_flops(executable) -> dict:
    """{layer key: FLOPs} of the graph's conv nodes (layers alike summed, as their times are)."""
    flops = collections.defaultdict(int)
    for node in executable.graph.nodes:
        if not node.is_constant and network_benchmark.family(node) == "conv":
            flops[layer_key(node)] += node_flops(conv_of(node))
    return flops


def lucid_layers(executable, repeats: int) -> tuple:
    """({(output shape, input channels): ms} of the conv nodes, ms of the other kernels), each kernel alone."""
    layers, other = collections.defaultdict(float), 0.0
    for _, _, seconds, node in kernel_times(executable, repeats):
        if network_benchmark.family(node) == "conv":
            layers[layer_key(node)] += 1e3 * seconds
        else:
            other += 1e3 * seconds
    return layers, other


class OpenVinoLayers:
    """The network compiled by OpenVINO on one thread with its per-layer counters."""

    def __init__(self, path: Path, images: np.ndarray):
        import openvino

        compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": 1, "PERF_COUNT": True,
                                                                     "INFERENCE_PRECISION_HINT": "f32"})
        self.request, self.images = compiled.create_infer_request(), images
        self.ops = {op.get_friendly_name(): op for op in compiled.get_runtime_model().get_ops()}

    def layers(self, repeats: int) -> tuple:
        """Like `lucid_layers`, from OpenVINO's counters (medians of `repeats` runs per layer)."""
        runs = []
        for _ in range(repeats):
            self.request.infer({0: self.images})
            runs.append(self.request.get_profiling_info())
        layers, other = collections.defaultdict(float), 0.0
        for position, info in enumerate(runs[0]):
            ms = 1e3 * float(np.median([run[position].real_time.total_seconds() for run in runs]))
            op = self.ops.get(info.node_name)
            if info.node_type in OPENVINO_CONVOLUTIONS and op is not None:
                shape = tuple(op.get_output_partial_shape(0).to_shape())
                layers[(shape, op.input(0).get_partial_shape().to_shape()[1])] += ms
            else:
                other += ms
        return layers, other


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="R2Plus1dNet", choices=list(network_benchmark.SIZES))
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per side and round (default 5)")
    parser.add_argument("--tiny", action="store_true", help="the tests' small sizes instead of SIZES")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("openvino") is None:
        print("OpenVINO is not installed, so there is nothing to compare with: .venv/bin/pip install onnx openvino")
        return
    sizes = network_benchmark.TINY if args.tiny else network_benchmark.SIZES
    network = network_benchmark.Network(args.network, sizes, None, 0.0)
    network.train(False)
    os.environ["LUCID_NUM_THREADS"] = "1"
    network.lucid_inference()()
    (executable,) = network.executables(False)
    peer = OpenVinoLayers(network.export(Path(tempfile.mkdtemp())), network.images)
    lucid_runs, peer_runs = [], []
    for _ in range(args.rounds):
        lucid_runs.append(lucid_layers(executable, args.repeats))
        peer_runs.append(peer.layers(args.repeats))
    keys = sorted({key for layers, _ in lucid_runs + peer_runs for key in layers},
                  key=lambda key: -float(np.median([layers.get(key, 0.0) for layers, _ in lucid_runs])))
    peak, flops = peak_gflops(1), layer_flops(executable)
    print(f"{network.describe()}; one thread, peak {peak:.0f} GFLOP/s")
    print(f"{'output shape':26} {'in ch':>5} {'lucid ms':>9} {'ov ms':>9} {'ov/lucid':>8} {'MFLOP':>8} "
          f"{'lucid %pk':>9} {'ov %pk':>7}")
    for key in keys:
        ours = float(np.median([layers.get(key, 0.0) for layers, _ in lucid_runs]))
        theirs = float(np.median([layers.get(key, 0.0) for layers, _ in peer_runs]))
        ratio = f"{theirs / ours:8.2f}" if ours and theirs else "     n/a"
        shares = [f"{100 * flops[key] / 1e6 / ms / peak:{width}.1f}" if ms else f"{'n/a':>{width}}"
                  for ms, width in ((ours, 9), (theirs, 7))]
        print(f"{str(key[0]):26} {key[1]:5} {ours:9.3f} {theirs:9.3f} {ratio} {flops[key] / 1e6:8.2f} "
              f"{' '.join(shares)}")
    for name, runs in (("lucid", lucid_runs), ("ov", peer_runs)):
        convs = float(np.median([sum(layers.values()) for layers, _ in runs]))
        other = float(np.median([rest for _, rest in runs]))
        print(f"{name}: convolutions {convs:.3f} ms, everything else {other:.3f} ms")


if __name__ == "__main__":
    main()
