"""lucid.runtime: running compiled code. `lucid.runtime.load` runs a library written by `lucid.export`
from Python, with numpy and ctypes only:

    model = lucid.runtime.load("unet.so")
    y = model(x)                 # x: a float32 array (or lucid Tensor) of the exported input shape

- `library.py` (`load`, `Library`) and `abi.py` (the file format and ABI constants the exporter shares
  with it): the runtime of exported libraries. This package imports only these, and they import
  nothing of lucid's compiler stack (llvmlite, the passes, codegen).
- `executable.py` (`Executable`: a planned graph's native code, called in this process) and
  `workers.py` (the worker pool its calls, and exported libraries, run on): the runtime of
  `lucid.compile`. They need llvmlite, and only the compiler imports them.
"""
from .library import Library, load

__all__ = ["Library", "load"]
