"""The compiling peers lucid is timed against: torch.compile (Inductor), ONNX Runtime and OpenVINO.

Shared by conv_peers.py (single convolutions) and networks.py (whole networks):
- `available_peers()`: the peers whose Python module is installed; each missing one is named in one
  line saying how to install it (its column then shows n/a).
- `torch_compiled(fn, backend)`: `torch.compile(fn)` (Inductor unless another backend is named) with a
  fresh dynamo cache (one per row: a shared function compiled for many shapes or thread counts would
  hit dynamo's recompile limit, and Inductor bakes the thread count of `torch.set_num_threads` into
  the code it generates).
- `onnx_steps(...)`: calls of a model file written by `lucid.onnx.save` in ONNX Runtime and OpenVINO,
  each checked against lucid's output first.
- `peer_ratios(times)`: each peer's time over lucid's, and the best peer's.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from conv import note
from onnx_unet import onnxruntime_run, openvino_run

PEERS = ("torch.compile", "ort", "ov")
MISSING = {"torch.compile": "PyTorch is not installed: no torch.compile column (.venv/bin/pip install torch==2.13.0)",
           "ort": "ONNX Runtime is not installed: no ort column (.venv/bin/pip install onnx onnxruntime)",
           "ov": "OpenVINO is not installed: no ov column (.venv/bin/pip install onnx openvino)"}
MODULES = {"torch.compile": "torch", "ort": "onnxruntime", "ov": "openvino"}
ONNX_RUNNERS = {"ort": onnxruntime_run, "ov": openvino_run}


def available_peers(unnamed: tuple = ()) -> set:
    """The installed peers; every missing one not in `unnamed` (a caller that names it its own way) is named."""
    available = {peer for peer in PEERS if importlib.util.find_spec(MODULES[peer])}
    for peer in PEERS:
        if peer not in available and peer not in unnamed:
            note(MISSING[peer])
    return available


def torch_compiled(fn, backend: str = "inductor"):
    """torch.compile of `fn` by `backend` with dynamo's caches emptied first (compiled on its first call)."""
    import torch

    torch._dynamo.reset()
    return torch.compile(fn, backend=backend)


def compiler_named(backend: str) -> str:
    """A note for torch.compile's lines when its backend is not Inductor, the peer lucid is timed against."""
    return "" if backend == "inductor" else f", backend {backend}, not Inductor"


def onnx_steps(path: Path, x: np.ndarray, expected: np.ndarray, available: set, threads: int, label: str,
               rtol: float = 1e-3, atol: float = 1e-3) -> dict:
    """{peer: a call of the model at `path` on input x} for ONNX Runtime and OpenVINO on `threads`
    threads, each output first checked equal to `expected` (lucid's) within rtol and atol."""
    steps = {}
    for name in sorted(available & set(ONNX_RUNNERS)):
        call = ONNX_RUNNERS[name](path, threads)
        np.testing.assert_allclose(call(x), expected, rtol=rtol, atol=atol, err_msg=f"{name} on {label}")
        steps[name] = lambda call=call: call(x)
    return steps


def peer_ratios(times: dict, peers: tuple) -> list:
    """[times[peer] / times["lucid"] for each of `peers`] (None where not timed), then the best
    (smallest) peer time over lucid's: above 1, lucid is faster."""
    lucid_ms = times["lucid"]
    ratios = [None if times.get(peer) is None else times[peer] / lucid_ms for peer in peers]
    return ratios + [min((r for r in ratios if r is not None), default=None)]
