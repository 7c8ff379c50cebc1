"""Where one forward+backward step of conv.py goes: its compiled executables, the eager sum, the rest.

    python benchmarks/conv_step.py                      # E and G2 at 1 and 2 threads
    python benchmarks/conv_step.py --shapes B E G2 --threads 2

conv.py's fwd+bwd row times `compiled(x, w, b).sum().backward()`. Here the same step is timed in
parts over the same calls: the forward and backward executables (`TimedExecutable`), the eager
`.sum()` of the output, and the rest (Python: the compiled call's guard and checks, the tape). Each
executable is also timed called alone, again and again on the step's own arrays, and its kernels one
by one (`kernels.kernel_times`, one thread): the step's executable time above the repeated call's is
what its place in the step costs (inputs and outputs out of cache after the other parts). The
roofline columns put the executables' FLOPs (the direct algorithm's: 3x the forward's) against the
FMA peak of the threads, and the sum's bytes (the output, read once) against one thread's memory
bandwidth (NumPy's sum runs on one thread). Medians over the steps.
"""
from __future__ import annotations

import argparse
import os
import time

from conv import SHAPES, Case, median_time, restart_with_malloc_tunables, sibling_script

if __name__ == "__main__":
    restart_with_malloc_tunables()

import numpy as np  # noqa: E402

import lucid  # noqa: E402
from kernels import kernel_times  # noqa: E402
from lucid.codegen.peak import peak_gflops  # noqa: E402

network_benchmark = sibling_script("networks")


class StepParts:
    """conv.py's fwd+bwd step of one shape, its executables timed apart."""

    def __init__(self, case: Case):
        self.case = case
        self.tensors = [lucid.Tensor(a, requires_grad=True) for a in (case.x, case.w, case.b)]
        output = case.compiled(*self.tensors)
        output.sum().backward()
        self.output_bytes = output.numpy().nbytes
        (self.variant,) = case.compiled.variants.values()
        self.timed = {name: network_benchmark.TimedExecutable(getattr(self.variant, name))
                      for name in ("forward", "backward")}
        self.calls = {}

    def parts(self, steps: int) -> dict:
        """Median ms of the step and of each part over `steps` steps."""
        tensors, times = self.tensors, {name: [] for name in ("step", "forward", "sum", "backward", "rest")}
        originals = {name: timed.executable for name, timed in self.timed.items()}
        try:
            for name, timed in self.timed.items():
                setattr(self.variant, name, self._recording(name, timed))
            for _ in range(steps + 1):
                inside = {name: timed.seconds for name, timed in self.timed.items()}
                for t in tensors:
                    t.grad = None
                started = time.perf_counter()
                y = self.case.compiled(*tensors)
                summed = time.perf_counter()
                loss = y.sum()
                sum_ended = time.perf_counter()
                loss.backward()
                ended = time.perf_counter()
                part = {name: timed.seconds - inside[name] for name, timed in self.timed.items()}
                for name, seconds in (("step", ended - started), ("sum", sum_ended - summed), *part.items()):
                    times[name].append(seconds)
                times["rest"].append(ended - started - (sum_ended - summed) - sum(part.values()))
        finally:
            for name, executable in originals.items():
                setattr(self.variant, name, executable)
        return {name: 1e3 * float(np.median(values[1:])) for name, values in times.items()}

    def _recording(self, name: str, timed):
        """`timed`, keeping the arrays of its last call (for `alone`)."""
        def call(*arrays):
            self.calls[name] = arrays
            return timed(*arrays)
        return call

    def alone(self, name: str, repeats: int) -> float:
        """Median ms of the executable `name` called again and again on its last step's arrays."""
        executable, arrays = self.timed[name].executable, self.calls[name]
        return 1e3 * median_time(lambda: executable(*arrays), repeats, 0.0, 0.0)

    def kernels_alone(self, name: str, repeats: int) -> float:
        """Ms of the executable's kernels each timed alone on one thread, summed."""
        return 1e3 * sum(seconds for _, _, seconds, _ in kernel_times(self.timed[name].executable, repeats))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["E", "G2"], choices=list(SHAPES))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per row (default 40)")
    args = parser.parse_args(argv)
    bandwidth = network_benchmark.memory_bandwidth(64)
    print(f"one thread's memory bandwidth {bandwidth:.1f} GB/s (NumPy copy, read + write); peaks: "
          + ", ".join(f"{t} thread(s) {peak_gflops(t):.0f} GFLOP/s" for t in args.threads))
    print(f"{'shape':5} {'thr':>3} {'step ms':>8} {'forward':>8} {'sum':>6} {'backward':>8} {'rest':>6} "
          f"{'fwd alone':>9} {'bwd alone':>9} {'kernels 1 thr':>13} {'exe %pk':>7} {'sum %bw':>7}")
    for name in args.shapes:
        case = Case(name)
        parts = StepParts(case)
        for threads in args.threads:
            os.environ["LUCID_NUM_THREADS"] = str(threads)
            ms = parts.parts(args.steps)
            alone = [parts.alone(side, args.steps) for side in ("forward", "backward")]
            kernels = sum(parts.kernels_alone(side, 3) for side in ("forward", "backward"))
            executables = ms["forward"] + ms["backward"]
            share_of_peak = 3 * case.flops / executables / 1e6 / peak_gflops(threads)
            share_of_bandwidth = parts.output_bytes / ms["sum"] / 1e6 / bandwidth
            print(f"{name:5} {threads:>3} {ms['step']:8.2f} {ms['forward']:8.2f} {ms['sum']:6.2f} "
                  f"{ms['backward']:8.2f} {ms['rest']:6.2f} {alone[0]:9.2f} {alone[1]:9.2f} {kernels:13.2f} {100 * share_of_peak:6.0f}% "
                  f"{100 * share_of_bandwidth:6.0f}%", flush=True)


if __name__ == "__main__":
    main()
