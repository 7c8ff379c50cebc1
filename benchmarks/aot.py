"""Exported library vs lucid.compile on the 3-D UNet: inference time, 1 and 2 threads.

    python benchmarks/aot.py                          # UNet3D() on 1x1x32x32x32, 6 rounds of 6 calls
    python benchmarks/aot.py --shape 1,1,16,16,16 --rounds 3

The UNet of examples/models.py (eval mode) is compiled with `lucid.compile` and exported with
`lucid.export`, then called through `lucid.runtime` (numpy + ctypes). The two are timed in rounds,
so both see the same machine load: each round makes `--calls` calls of one, pauses longer than the
worker pools' idle spin (so the other side's waiting workers have left the cores), then the same for
the other. It prints the median time of each over all rounds, per thread count, and the ratio
compile_ms / export_ms (above 1: the exported library is faster). When a C compiler is present, the
library is also timed from C (benchmarks/aot_timing.c: no Python in the loop), right after.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]
import lucid  # noqa: E402
import lucid.runtime  # noqa: E402
from lucid.cli import parse_shape  # noqa: E402
from conv import THREADS_SLOWER, note, slower_with_more_threads  # noqa: E402
from models import UNet3D  # noqa: E402


#: Seconds between two blocks of calls: longer than a pool worker spins for the next job (0.2 ms).
PAUSE = 0.05


def median_ms(calls: dict, rounds: int, per_round: int) -> dict:
    """Median milliseconds of each callable over `rounds` rounds; a round calls each callable
    `per_round` times in a row, with a pause after each block."""
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(per_round):
                start = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - start) * 1e3)
            time.sleep(PAUSE)
    return {name: statistics.median(t) for name, t in times.items()}


def c_timing_program(files, folder: Path) -> Path | None:
    """benchmarks/aot_timing.c built against the library, or None without a C compiler."""
    if shutil.which("cc") is None:
        return None
    program = folder / "timing"
    subprocess.run(["cc", "-O2", f"-DMODEL={files.name}", "-include", str(files.header),
                    str(ROOT / "benchmarks" / "aot_timing.c"), str(files.library),
                    f"-Wl,-rpath,{files.library.parent}", "-o", str(program)], check=True)
    return program


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=parse_shape, default=(1, 1, 32, 32, 32),
                        help="UNet3D's input shape N,1,D,H,W with D, H, W multiples of 4 (default 1,1,32,32,32)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of calls of each side (default 6)")
    parser.add_argument("--calls", type=int, default=6, help="calls of one side in a row, per round")
    args = parser.parse_args()

    lucid.manual_seed(0)
    model = UNet3D().eval()
    x = np.random.default_rng(0).standard_normal(args.shape).astype(np.float32)
    with lucid.no_grad():                                            # the inference variant
        compiled = lucid.compile(model, lucid.spec(*args.shape))
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        files = lucid.export(model, lucid.spec(*args.shape), path=Path(folder) / "unet.so")
        print(f"export: {time.perf_counter() - start:.1f} s (kernels from the disk cache when present)")
        library = lucid.runtime.load(files.library)
        timing = c_timing_program(files, Path(folder))
        tensor = lucid.Tensor(x)
        with lucid.no_grad():
            np.testing.assert_allclose(library(x), compiled(tensor).numpy(), rtol=1e-4, atol=1e-4)
            repeats = args.rounds * args.calls
            print(f"UNet3D(), input {args.shape}, median of {args.rounds} rounds of {args.calls} calls")
            times = {"compile": [], "export": []}
            for threads in (1, 2):
                os.environ["LUCID_NUM_THREADS"] = str(threads)       # read by lucid.compile's calls
                library.set_num_threads(threads)
                calls = {"compile": lambda: compiled(tensor), "export": lambda: library(x)}
                median_ms(calls, 1, 3)                                 # warm-up: arenas, caches
                ms = median_ms(calls, args.rounds, args.calls)
                for side, side_times in times.items():
                    side_times.append(ms[side])
                line = (f"  {threads} thread(s): lucid.compile {ms['compile']:8.2f} ms   exported {ms['export']:8.2f} ms"
                        f"   compile/export {ms['compile'] / ms['export']:.2f}")
                if timing is not None:
                    c_ms = float(subprocess.run([str(timing), str(repeats), str(threads)], check=True,
                                                capture_output=True, text=True).stdout)
                    line += f"   from C {c_ms:8.2f} ms"
                print(line)
        if any(slower_with_more_threads(side_times) for side_times in times.values()):
            note(THREADS_SLOWER)


if __name__ == "__main__":
    main()
