"""lucid in one minute: trace, optimise, compile, check, time, export and draw a 3-D model.

    python examples/quickstart.py                 # a 1 x 1 x 48^3 volume; files go to quickstart-out/
    python examples/quickstart.py --quick         # the same on a 16^3 volume (--size 16)
    python examples/quickstart.py --size 32 --out /tmp/qs --ir

The model is `ConvAutoencoder3D` (examples/models.py): a strided Conv3d encoder and a decoder of
`LazyConvTranspose3d` layers whose in_channels are not written anywhere. Each step is announced in
one line; a step that takes longer than a second (LLVM compiling) shows its progress.

1. trace the model from `lucid.spec` (a shape, no data): shape inference resolves the lazy layers;
2. summarise the graph IR (`--ir` prints all of it);
3. run the passes one by one (shape inference, fusion, dead code, memory planning);
4. compile with LLVM (`lucid.compile`);
5. check the compiled output against eager mode;
6. time compiled vs eager;
7. export an ahead-of-time shared library (`lucid.export`) and run it through `lucid.runtime`;
8. render the graph as an interactive HTML page (`lucid.viz`).
"""

import argparse
import os
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
# Each step prints its own timing on one line; lucid's own compile progress line would split it.
os.environ.setdefault("LUCID_QUIET", "1")

import lucid  # noqa: E402
import lucid.runtime  # noqa: E402
import lucid.viz  # noqa: E402
from lucid.passes import PassManager, dead_code, fusion, memory_planning  # noqa: E402
from lucid.codegen import jit  # noqa: E402
from example_tools import human_bytes, median_seconds  # noqa: E402
from models import ConvAutoencoder3D  # noqa: E402

STEPS = 8
QUICK_SIZE = 16
IR_NODE_LINES = 3


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=48, help="volume size D = H = W, a multiple of 4 (default 48)")
    parser.add_argument("--quick", action="store_const", dest="size", const=QUICK_SIZE,
                        help=f"a small volume for a fast run (the same as --size {QUICK_SIZE})")
    parser.add_argument("--out", default="quickstart-out", help="folder for the library and the HTML page")
    parser.add_argument("--ir", action="store_true", help="print the whole graph IR, not only its summary")
    args = parser.parse_args(argv)
    if args.size % 4 or args.size < 4:
        parser.error("--size must be a positive multiple of 4")
    return args


# ------------------------------------------------------------------------------- announcing
class Announcer:
    """Numbers the steps. `step(text)` prints one line ending in the step's time, with a ticker for
    steps over a second; `announce(text)` numbers an instant step."""

    def __init__(self, total: int):
        self.total, self.done = total, 0

    def announce(self, text: str) -> str:
        self.done += 1
        return f"[{self.done}/{self.total}] {text}"

    @contextmanager
    def step(self, text: str):
        prefix = self.announce(text)
        print(prefix + " ...", end="", flush=True)
        ticker = Ticker(prefix)
        ticker.start()
        started = time.perf_counter()
        try:
            yield
        finally:
            ticker.stop()
        print(f" done in {time.perf_counter() - started:.2f} s", flush=True)


class Ticker(threading.Thread):
    """After a second, shows every half second how long the step has run and how many modules LLVM
    has compiled in it: rewriting the line on a terminal, one dot a second in a log."""

    def __init__(self, prefix: str):
        super().__init__(daemon=True)
        self.prefix, self.finished = prefix, threading.Event()
        self.started, self.compiled = time.perf_counter(), jit.COUNTERS["compiled"]
        self.terminal = sys.stdout.isatty()

    def run(self):
        if self.finished.wait(1.0):
            return
        while not self.finished.wait(0.5 if self.terminal else 1.0):
            if self.terminal:
                modules = jit.COUNTERS["compiled"] - self.compiled
                print(f"\r{self.prefix} ... {time.perf_counter() - self.started:.1f} s, "
                      f"LLVM compiled {modules} module(s)", end="", flush=True)
            else:
                print(".", end="", flush=True)

    def stop(self):
        self.finished.set()
        self.join()


# ------------------------------------------------------------------------------------ steps
def trace(model, shape):
    lazy = {name: m for name, m in model.named_modules() if getattr(m, "in_channels", 0) is None}
    graph = lucid.trace(model, lucid.spec(*shape))
    resolved = ", ".join(f"{name}: in_channels {m.in_channels}" for name, m in lazy.items())
    return graph, resolved


def ir_summary(graph) -> list[str]:
    """A few lines about the IR: its counts, its operators and its first nodes, in its text form."""
    operators = Counter(node.op for node in graph.nodes)
    histogram = ", ".join(f"{op} {count}" for op, count in operators.items())
    node_lines = [line for line in str(graph).splitlines() if line.lstrip().startswith("%")]
    return ([f"{len(graph.inputs)} input(s), {len(graph.params)} parameters, {len(graph.nodes)} nodes: {histogram}"]
            + node_lines[:IR_NODE_LINES]
            + [f"  ... {len(node_lines) - IR_NODE_LINES} more nodes (the whole IR: --ir here, print(graph) in Python)"])


def run_passes(graph):
    """The passes lucid.compile runs for inference, one by one: (final graph, plan, summary lines)."""
    inferred = PassManager("inference").run(graph)
    fused = dead_code.run(fusion.run(inferred))
    plan = memory_planning.plan(fused)
    groups = [n for n in fused.nodes if n.op == "fused"]
    lines = [f"traced {len(graph.nodes)} nodes -> inference pipeline {len(inferred.nodes)} -> "
             f"fused {len(fused.nodes)} ({len(groups)} fused groups)",
             f"memory plan: {human_bytes(plan.arena_bytes)} arena for the intermediates"]
    return fused, plan, lines


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    shape = (1, 1, args.size, args.size, args.size)
    steps = Announcer(STEPS)
    lucid.manual_seed(0)
    model = ConvAutoencoder3D(in_channels=1, base=16, latent=32).eval()
    x = lucid.randn(*shape)

    with steps.step(f"tracing ConvAutoencoder3D from lucid.spec{shape} (no data)"):
        graph, resolved = trace(model, shape)
    print(f"      lazy layers resolved by shape inference: {resolved}")

    print(steps.announce("the graph IR that lucid.trace recorded:"))
    print(graph if args.ir else "\n".join("      " + line for line in ir_summary(graph)))

    with steps.step("running the passes: shape inference, fusion, dead code, memory planning"):
        _, _, summary = run_passes(graph)
    for line in summary:
        print("      " + line)

    with lucid.no_grad():
        with steps.step("compiling with LLVM for inference (lucid.compile; cached on disk for the next run)"):
            compiled = lucid.compile(model, lucid.spec(*shape))
        with steps.step("checking the compiled output against eager mode"):
            fast, eager = compiled(x).numpy(), model(x).numpy()
        difference = float(np.abs(fast - eager).max())
        print(f"      output {fast.shape}, largest difference from eager {difference:.2e}")

        with steps.step("timing compiled vs eager (medians)"):
            compiled_seconds = median_seconds(lambda: compiled(x), 20)
            eager_seconds = median_seconds(lambda: model(x), 3)
    print(f"      compiled {1e3 * compiled_seconds:.2f} ms, eager {1e3 * eager_seconds:.2f} ms: "
          f"{eager_seconds / compiled_seconds:.1f}x faster")

    library = os.path.join(args.out, "autoencoder.so")
    with steps.step(f"exporting {library} (C ABI, weights inside) and running it through lucid.runtime"):
        lucid.export(model, lucid.spec(*shape), path=library)
        exported = lucid.runtime.load(library)(x.numpy())
    print(f"      {library} + {os.path.splitext(library)[0]}.h; largest difference from eager "
          f"{float(np.abs(exported - eager).max()):.2e}")

    page = os.path.join(args.out, "autoencoder.html")
    with steps.step(f"rendering {page} (every pipeline stage; open it in a browser)"):
        lucid.viz.render(model, lucid.spec(*shape), path=page)

    agree = difference < 1e-4 and float(np.abs(exported - eager).max()) < 1e-4
    print("all steps agree with eager mode" if agree else "MISMATCH against eager mode")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
