"""Helpers shared by tests: model set-up, running two graphs side by side, the kernels an
executable runs, and comparing what `lucid.load` read with what was saved."""
from __future__ import annotations

import contextlib
import io

import numpy as np

import lucid
import lucid.nn as nn


def randomise_batch_norm(model, seed=7):
    """Give every BatchNorm non-trivial affine parameters and running statistics, so that eval mode
    does more than divide by sqrt(1 + eps)."""
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            n = module.num_features
            module.weight.data[...] = rng.uniform(0.5, 1.5, n)
            module.bias.data[...] = rng.normal(0, 0.2, n)
            module.running_mean.data[...] = rng.normal(0, 0.2, n)
            module.running_var.data[...] = rng.uniform(0.5, 2.0, n)
            module.num_batches_tracked.data[...] = 3
    return model


def param_copies(graph) -> dict:
    """A copy of each bound parameter (runs write state updates into what they are given)."""
    return {name: np.array(binding, copy=True) for name, binding in graph.bindings.items()}


def run_both(before, after, *inputs, exact=True, rtol=1e-6):
    """Run both graphs with the interpreter, each on its own copy of the bound parameters, and check
    that outputs and updated parameters agree (exactly, or to rtol). Returns (outputs, parameters)
    of `before`."""
    p_before, p_after = param_copies(before), param_copies(after)
    out_before = lucid.ir.run(before, *inputs, params=p_before)
    out_after = lucid.ir.run(after, *inputs, params=p_after)
    assert before.returns_tuple == after.returns_tuple
    pairs = list(zip(out_before, out_after)) if before.returns_tuple else [(out_before, out_after)]
    pairs += [(p_before[k], p_after[k]) for k in p_before]
    for a, b in pairs:
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype
        if exact:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-6, equal_nan=True)
    return out_before, p_before


def run_in_threads(work, count: int) -> None:
    """Run `work(k)` for k in range(count), each in its own thread, all at once; wait for them."""
    import threading

    threads = [threading.Thread(target=work, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def calls_alternating_in_threads(call, inputs: list, repeats: int) -> list:
    """One thread per input, all at once, each making `repeats` calls `call(inputs[which])` with
    `which` cycling from its own index; returns (which, result) of every call."""
    results = []

    def work(k):
        for repeat in range(repeats):
            which = (k + repeat) % len(inputs)
            results.append((which, call(inputs[which])))

    run_in_threads(work, len(inputs))
    return results


def kernel_labels(executable) -> list[str]:
    """The lowering's name of each kernel an Executable runs, in order (`conv_direct`, `wino_conv`, ...)."""
    return [kernel.label for kernel, _ in executable.kernels()]


def same_object(loaded, original) -> None:
    """Assert that `loaded` is `original` again: the same types, keys in order, dtypes, shapes and values."""
    assert type(loaded) is type(original)
    if isinstance(original, dict):
        assert list(loaded) == list(original)
        for key in original:
            same_object(loaded[key], original[key])
    elif isinstance(original, (list, tuple)):
        assert len(loaded) == len(original)
        for a, b in zip(loaded, original):
            same_object(a, b)
    elif isinstance(original, lucid.Tensor):
        same_object(loaded.data, original.data)
        assert loaded.requires_grad == original.requires_grad
    elif isinstance(original, (np.ndarray, np.generic)):
        assert loaded.dtype == original.dtype and loaded.shape == original.shape
        np.testing.assert_array_equal(loaded, original)
    else:
        assert loaded == original


def named_buffer(data: bytes, name: str) -> io.BytesIO:
    """An in-memory file with a name, which `lucid.load` reports like a path (no disk I/O per case)."""
    buffer = io.BytesIO(data)
    buffer.name = name
    return buffer


@contextlib.contextmanager
def torch_native_convolutions():
    """PyTorch's native CPU convolutions (its oneDNN float32 kernels differ from them, and from its
    float64 ones, in where a few NaN go). Needs torch."""
    import torch

    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before
