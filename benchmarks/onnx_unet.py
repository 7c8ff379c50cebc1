"""An imported ONNX 3-D UNet: lucid.compile vs ONNX Runtime on the same file, 1 and 2 threads.

    python benchmarks/onnx_unet.py                          # UNet3D() on 1x1x32x32x32
    python benchmarks/onnx_unet.py --shape 1,1,64,64,64 --rounds 3

The UNet of examples/models.py (eval mode, seeded weights) is written as ONNX with `lucid.onnx.save`,
so the benchmark needs no PyTorch; that file is read back with `lucid.onnx.load` and compiled, and
opened by ONNX Runtime (CPU, all graph optimisations, `intra_op_num_threads` 1 and 2). Both sides are
timed in rounds (benchmarks/aot.py's `median_ms`), so they see the same machine load, and their
outputs are checked equal first. It prints the median time of each and the ratio ort_ms / lucid_ms
(above 1: lucid is faster).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]
import lucid  # noqa: E402
from aot import median_ms  # noqa: E402
from lucid.cli import parse_shape  # noqa: E402
from models import UNet3D  # noqa: E402


def onnxruntime_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=parse_shape, default=(1, 1, 32, 32, 32),
                        help="UNet3D's input shape N,1,D,H,W with D, H, W multiples of 4 (default 1,1,32,32,32)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of calls of each side (default 6)")
    parser.add_argument("--calls", type=int, default=6, help="calls of one side in a row, per round")
    args = parser.parse_args()
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("ONNX Runtime is not installed: .venv/bin/pip install onnx onnxruntime")
        return

    lucid.manual_seed(0)
    x = np.random.default_rng(0).standard_normal(args.shape).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "unet.onnx"
        lucid.onnx.save(UNet3D().eval(), lucid.spec(*args.shape), path=path)
        compiled = lucid.compile(lucid.onnx.load(str(path)))
        tensor = lucid.Tensor(x)
        print(f"UNet3D() as ONNX, input {args.shape}, median of {args.rounds} rounds of {args.calls} calls")
        for threads in (1, 2):
            os.environ["LUCID_NUM_THREADS"] = str(threads)           # read by lucid.compile's calls
            session = onnxruntime_session(path, threads)
            feed = {session.get_inputs()[0].name: x}
            np.testing.assert_allclose(compiled(tensor).numpy(), session.run(None, feed)[0], rtol=1e-4, atol=1e-4)
            calls = {"lucid": lambda: compiled(tensor), "ort": lambda: session.run(None, feed)}
            median_ms(calls, 1, 3)                                     # warm-up: arenas, caches
            ms = median_ms(calls, args.rounds, args.calls)
            print(f"  {threads} thread(s): lucid.compile {ms['lucid']:8.2f} ms   ONNX Runtime {ms['ort']:8.2f} ms"
                  f"   ort/lucid {ms['ort'] / ms['lucid']:.2f}")


if __name__ == "__main__":
    main()
