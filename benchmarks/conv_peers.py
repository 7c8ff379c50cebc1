"""Convolution speed against the compiling peers: lucid vs torch.compile, ONNX Runtime and OpenVINO.

For every row of conv.py (same shapes, weights and data: its `Case`), in one process with the sides
alternating (`median_times`): the forward against torch.compile (Inductor), ONNX Runtime and OpenVINO
(the last two run the conv written by `lucid.onnx.save`, checked against lucid's output), and
forward + backward against torch.compile. PyTorch eager (default and channels-last) is conv.py's
table. A peer that is not installed is named and its column shows n/a. Ratios are peer_ms / lucid_ms:
above 1, lucid is faster. `best/lucid` is the fastest peer's time over lucid's.

    .venv/bin/python benchmarks/conv_peers.py                 # every row, 1 and 2 threads
    .venv/bin/python benchmarks/conv_peers.py --shapes B --threads 1 --quick
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from conv import Case, cell, conv_step, median_times, restart_with_malloc_tunables, rows_parser

restart_with_malloc_tunables()

import numpy as np  # noqa: E402

import lucid  # noqa: E402
from peers import PEERS, available_peers, onnx_steps, peer_ratios, torch_compiled  # noqa: E402


def torch_compiled_step(case: Case, backward: bool):
    """torch.compile of the conv (compiled on the first call, before timing), forward or forward + backward."""
    import torch

    fn = torch_compiled(lambda x, w, b: case.torch_fn(x, w, b, **case.options))
    tensors = [torch.tensor(a).requires_grad_(backward) for a in (case.x, case.w, case.b)]
    step = conv_step(fn, tensors, backward, torch.no_grad)
    step()
    return step


def conv_onnx_steps(case: Case, available: set, folder: Path, threads: int, expected: np.ndarray) -> dict:
    """ONNX Runtime's and OpenVINO's forward of the conv (written once per row by lucid.onnx.save),
    each checked against lucid's output."""
    if not available & {"ort", "ov"}:
        return {}
    path = folder / f"{case.name}.onnx"
    if not path.exists():
        weight, bias = lucid.Tensor(case.w), lucid.Tensor(case.b)
        lucid.onnx.save(lambda x: case.lucid_fn(x, weight, bias, **case.options), lucid.spec(*case.x.shape), path=path)
    return onnx_steps(path, case.x, expected, available, threads, case.name)


def run(names: list, thread_counts: list, repeats: int, quick: bool) -> None:
    budget = dict(warm_up=0.0, timed=0.0) if quick else {}
    available = available_peers()
    print(f"{'shape':6} {'mode':8} {'thr':>3} {'lucid ms':>9} {'compile':>9} {'ort ms':>9} {'ov ms':>9} "
          f"{'compile/lucid':>13} {'ort/lucid':>9} {'ov/lucid':>9} {'best/lucid':>10}")
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            case = Case(name)
            for backward in (False, True):
                for threads in thread_counts:
                    row(case, backward, threads, available, Path(folder), repeats, budget)


def row(case: Case, backward: bool, threads: int, available: set, folder: Path, repeats: int, budget: dict) -> None:
    os.environ["LUCID_NUM_THREADS"] = str(threads)
    lucid_step = case.lucid_step(backward, True)
    steps = {"lucid": lucid_step}
    if "torch.compile" in available and case.torch_fn is not None:
        import torch
        torch.set_num_threads(threads)
        steps["torch.compile"] = torch_compiled_step(case, backward)
    if not backward:
        expected = case.compiled(*[lucid.Tensor(a) for a in (case.x, case.w, case.b)]).numpy()
        steps.update(conv_onnx_steps(case, available, folder, threads, expected))
    times = dict(zip(steps, (1e3 * t for t in median_times(list(steps.values()), repeats, **budget, settle=(0,)))))
    ratios = peer_ratios(times, PEERS)
    print(f"{case.name:6} {'fwd+bwd' if backward else 'fwd':8} {threads:>3} {times['lucid']:9.2f} "
          + " ".join(cell(times.get(peer), 9) for peer in PEERS)
          + "".join(f" {cell(r, width)}" for r, width in zip(ratios, (13, 9, 9, 10))), flush=True)


def main(argv=None) -> None:
    args = rows_parser(__doc__.splitlines()[0]).parse_args(argv)
    run(args.shapes, args.threads, 2 if args.quick else args.repeats, args.quick)


if __name__ == "__main__":
    sys.exit(main())
