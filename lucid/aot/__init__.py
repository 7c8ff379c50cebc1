"""Ahead-of-time export: `lucid.export` and `lucid export` write a model as a shared library with a C ABI.

- `exporter.py`: `lucid.export` (trace in eval mode, the inference pipeline, golden data for the
  self-test);
- `emitter.py`: the planned graph's code, tables and weights linked into the library, its header and
  its weights file;
- `aot_runtime.c`: the C part of every library (the ABI's functions, threads, self-test, weights);
- `command.py`: the `lucid export` command line.
The file format and ABI constants live in `lucid/runtime/abi.py`, which `lucid.runtime` (the loader
of these libraries, numpy and ctypes only) shares. Importing this package loads no compiler code: the
emitter is imported when a library is written.
"""
from .exporter import export

__all__ = ["export"]
