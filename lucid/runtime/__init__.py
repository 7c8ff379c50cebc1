"""lucid.runtime: run a library written by `lucid.export` from Python, with numpy and ctypes only.

    model = lucid.runtime.load("unet.so")
    y = model(x)                 # x: a float32 array (or lucid Tensor) of the exported input shape

Nothing here imports lucid's compiler stack (llvmlite, the passes, codegen): `abi.py` holds the file
format and ABI constants the exporter shares with it.
"""
from .library import Library, load

__all__ = ["Library", "load"]
