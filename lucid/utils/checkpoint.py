"""``torch.utils.checkpoint``'s entry point, so model code that imports it runs unchanged.

PyTorch's activation checkpointing drops a block's intermediate results and recomputes them in the
backward pass, trading time for memory. lucid keeps its graphs' intermediates (the compiler plans
their memory), so here ``checkpoint(function, *args)`` simply calls ``function(*args)``: the values
and gradients are those PyTorch computes, without the memory saving.
"""
from __future__ import annotations


def checkpoint(function, *args, use_reentrant=None, context_fn=None, determinism_check=None, debug=None,
               preserve_rng_state=True, **kwargs):
    """``function(*args, **kwargs)``; the keyword arguments of PyTorch's checkpoint are accepted and
    have nothing to control."""
    return function(*args, **kwargs)
