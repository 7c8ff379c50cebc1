"""Convolution kernels: conv, conv_transpose and conv_weight_grad in 1-D/2-D/3-D, as vectorised loops.

Every convolution is handled as 3-D (missing leading spatial axes have size 1). A conv or
conv_transpose node becomes a `ConvProblem` (problem.py) and goes to the first algorithm of
`algorithms.ALGORITHMS` that takes it: Winograd (winograd.py), a transposed conv or a stride-1 conv
with few output channels vectorised over output points (over_points.py), a conv of one tap across
(h, w) over its planes' points (planes.py), else the direct algorithm (direct.py). They
share the packing of the input and the weight (packing.py), the register tile (tile.py), the
unpacking of the scratch result to NCDHW with the bias and a fused epilogue (unpack.py), the weights
prepared once per weight version (prepared.py) and a few IR building blocks (primitives.py). The
weight gradient has its own kernels: Winograd's per stride phase for kernels of stride x 3 or
stride x 2 taps across (h, w) with 16+ channels (3 x 3 stride 1, and 4 x 4 stride 2 as in a
transposed conv's upsampling: winograd_weight_grad.py), else direct sums (weight_grad.py);
algorithms.py picks.

Vectors are the target's widest (`Target.vector_floats`, never assumed), narrowed for layers with
few output channels or where the target's CPU model (`Target.model`, `cpu_model.py`) runs narrower
ones as fast; the register tile is sized to the model's register file (32 vector registers with
AVX-512, else 16).

Importing this package registers the lowerings of conv, conv_transpose and conv_weight_grad.
"""
from .algorithms import lower_conv, lower_conv_transpose
from .problem import Epilogue, Prologue

__all__ = ["Epilogue", "Prologue", "lower_conv", "lower_conv_transpose"]
