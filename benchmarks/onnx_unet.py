"""An imported ONNX 3-D UNet: lucid.compile vs ONNX Runtime and OpenVINO on the same file, 1 and 2 threads.

    python benchmarks/onnx_unet.py                          # UNet3D() on 1x1x32x32x32
    python benchmarks/onnx_unet.py --shape 1,1,64,64,64
    python benchmarks/onnx_unet.py --quick                  # a smoke run: small repeat counts

The UNet of examples/models.py (eval mode, seeded weights) is written as ONNX with `lucid.onnx.save`,
so the benchmark needs no PyTorch. That one file is read back with `lucid.onnx.load` and compiled,
opened by ONNX Runtime (CPU provider, all graph optimisations, `intra_op_num_threads`) and, when it
is installed, compiled by OpenVINO (CPU, f32 inference precision, `INFERENCE_NUM_THREADS`). Every
side's output is checked equal to lucid's before timing. For each thread count it prints the median
time of each side (conv.py's `median_times`: warm-up, then the sides alternating in rounds), lucid's
effective GFLOP/s (the imported graph's estimated FLOPs, `lucid.ir.cost.estimated_flops`, over its
time) and its fraction of the machine's peak (a generated FMA loop on as many threads), and the
ratios ort_ms / lucid_ms and ov_ms / lucid_ms (above 1: lucid is faster). A runtime that is not
installed shows n/a, with one line on how to install it.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from conv import cell, median_times, note, ratio, restart_with_malloc_tunables, timing_options

if __name__ == "__main__":
    restart_with_malloc_tunables()

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]
import lucid  # noqa: E402
from lucid.cli import parse_shape  # noqa: E402
from lucid.codegen.peak import peak_gflops  # noqa: E402
from lucid.ir.cost import estimated_flops  # noqa: E402
from models import UNet3D  # noqa: E402

ORT_MISSING = ("ONNX Runtime is not installed, so its columns show n/a; to compare with it: "
               ".venv/bin/pip install onnxruntime")
OPENVINO_MISSING = ("OpenVINO is not installed, so its columns show n/a; to compare with it: "
                    ".venv/bin/pip install openvino")
EFFECTIVE_RATE = ("eff GFLOP/s and eff % peak are effective rates: the imported graph's estimated FLOPs (2 per "
                  "multiply-add of its convolutions, plus its elementwise and reduction work) over lucid's time.")


def onnxruntime_run(path: Path, threads: int):
    """A call of the model in ONNX Runtime on `threads` threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def openvino_run(path: Path, threads: int):
    """A call of the model compiled by OpenVINO on `threads` threads."""
    import openvino

    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                                "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def run(x):
        request.infer({0: x})
        return request.get_output_tensor(0).data
    return run


#: The peers: column name -> (module, the call of the model in it, the note when it is missing).
PEERS = {"ort": ("onnxruntime", onnxruntime_run, ORT_MISSING), "ov": ("openvino", openvino_run, OPENVINO_MISSING)}


def run(shape: tuple, thread_counts: list, repeats: int, quick: bool) -> None:
    lucid.manual_seed(0)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    budget = dict(warm_up=0.0, timed=0.0) if quick else {}
    peaks = {t: peak_gflops(t) for t in thread_counts}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "unet.onnx"
        lucid.onnx.save(UNet3D().eval(), lucid.spec(*shape), path=path)
        graph = lucid.onnx.load(str(path))
        compiled, tensor = lucid.compile(graph), lucid.Tensor(x)
        expected = compiled(tensor).numpy()
        flops = estimated_flops(graph)
        print(f"UNet3D() as ONNX, input {shape}, {flops / 1e9:.2f} GFLOP")
        print("peak (generated FMA loop): " + ", ".join(f"{t} thread(s) {p:.0f} GFLOP/s" for t, p in peaks.items()))
        peers = {name: make for name, (module, make, _) in PEERS.items() if importlib.util.find_spec(module)}
        for name, (_, _, missing) in PEERS.items():
            if name not in peers:
                note(missing)
        note(EFFECTIVE_RATE)
        print(f"{'thr':>3} {'lucid ms':>9} {'ort ms':>9} {'ov ms':>9} {'eff GFLOP/s':>11} {'eff % peak':>10} "
              f"{'ort/lucid':>9} {'ov/lucid':>9}")
        for threads in thread_counts:
            os.environ["LUCID_NUM_THREADS"] = str(threads)           # read by lucid.compile's calls
            calls = {name: make(path, threads) for name, make in peers.items()}
            for name, call in calls.items():
                np.testing.assert_allclose(call(x), expected, rtol=1e-4, atol=1e-4, err_msg=name)
            steps = [lambda: compiled(tensor)] + [lambda call=call: call(x) for call in calls.values()]
            times = dict(zip(["lucid", *calls], (1e3 * t for t in median_times(steps, repeats, **budget))))
            lucid_ms, ort_ms, ov_ms = times["lucid"], times.get("ort"), times.get("ov")
            gflops = flops / lucid_ms / 1e6
            print(f"{threads:>3} {lucid_ms:9.2f} {cell(ort_ms, 9)} {cell(ov_ms, 9)} {gflops:11.1f} "
                  f"{100 * gflops / peaks[threads]:9.1f}% {cell(ratio(ort_ms, lucid_ms), 9)} "
                  f"{cell(ratio(ov_ms, lucid_ms), 9)}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=parse_shape, default=(1, 1, 32, 32, 32),
                        help="UNet3D's input shape N,1,D,H,W with D, H, W multiples of 4 (default 1,1,32,32,32)")
    args = timing_options(parser).parse_args(argv)
    run(args.shape, args.threads, 2 if args.quick else args.repeats, args.quick)


if __name__ == "__main__":
    main()
