"""`lucid.runtime.load(path)`: an exported library as a Python callable, through ctypes.

Imports numpy, ctypes and the standard library only, and of lucid nothing but the ABI constants
(`abi.py`) and the error classes, so it works where lucid's compiler stack (llvmlite) is absent.

Loading refuses, with a `LibraryError` naming the file: a missing file, a file that is not an ELF
shared object, a shared object without `lucid_aot_info` (not a lucid library), a library of another
ABI version, and a library whose separate weights file is missing or fails its checks. A call checks
the number, dtypes (float32) and shapes of its inputs before any native code runs, then calls `N_run`
with the GIL released; a failing `N_run` raises its `N_last_error` message.

A library of symbolic dimensions (`lucid.dim`; its info string says `shapes=symbolic`) reports them
as -1 in `input_shapes` and `output_shapes`. A call passes the shapes of the arrays it gets: their
ranks and dtypes are checked here, then the library's `N_output_shape_dims` checks the sizes (each
dimension's range, the graph's constraints, every fixed dim; a refusal is a ShapeError carrying the
library's message, which names the input, the dimension and the constraint) and gives the outputs'
shapes, and `N_run_dims` runs on them.
"""
from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import DTypeError, LibraryError, ShapeError
from . import abi

_ELF_MAGIC = b"\x7fELF"
_ELF_HEADER = struct.Struct("<4sBBB9xHHIQQQIHHHHHH")   # ELF64 header: ident, type, machine, ..., shstrndx
_PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")           # type, flags, offset, vaddr, paddr, filesz, memsz, align
_ET_DYN, _EM_X86_64 = 3, 62
_FLOATS = ctypes.POINTER(ctypes.c_float)


def load(path, weights=None) -> "Library":
    """The library at `path`, callable on float32 arrays (and lucid Tensors); `weights`: where its
    separate weights file is, if it has one and it is not beside the library."""
    return Library(path, weights)


class Library:
    """A loaded library: `library(*inputs)` returns its output array (a tuple of them when the
    exported function returned a tuple). `input_shapes`, `output_shapes` (-1 for a symbolic
    dimension), `symbolic` (whether the library takes its inputs' shapes per call), `name`,
    `selftest()`, `set_num_threads(n)`."""

    def __init__(self, path, weights=None):
        self.path = Path(path)
        self._native = _open(self.path)
        info = abi.parse_info(self._call_text(abi.INFO_SYMBOL))
        if info.get("abi") != str(abi.ABI_VERSION):
            raise LibraryError(f"lucid.runtime: {self.path} is a lucid library of ABI version "
                               f"{info.get('abi', 'unknown')}; this lucid reads version {abi.ABI_VERSION} "
                               "(export the model again)")
        self.name = info["name"]
        if self._function("abi_version", ctypes.c_int, [])() != abi.ABI_VERSION:
            raise LibraryError(f"lucid.runtime: {self.path} reports another ABI version than its info string "
                               "(a damaged library)")
        self._returns_tuple = info.get("outputs") == "tuple"
        self.symbolic = info.get("shapes") == "symbolic"
        pointers = [ctypes.POINTER(_FLOATS), ctypes.POINTER(_FLOATS)]
        if self.symbolic:
            self._run = self._function("run_dims", ctypes.c_int, [ctypes.POINTER(ctypes.c_int64)] + pointers)
            self._output_shape_dims = self._function("output_shape_dims", ctypes.c_int, [
                ctypes.POINTER(ctypes.c_int64), ctypes.c_int, ctypes.POINTER(ctypes.c_int64)])
        else:
            self._run = self._function("run", ctypes.c_int, pointers)
        self._error = self._function("last_error", ctypes.c_char_p, [])
        self.input_shapes = self._shapes("input")
        self.output_shapes = self._shapes("output")
        if info.get("weights") == "file":
            load_weights = self._function("load_weights", ctypes.c_int, [ctypes.c_char_p])
            self._check(load_weights(os.fsencode(weights) if weights is not None else None), "loading weights")

    def __call__(self, *inputs):
        arrays = self._checked(inputs)
        if self.symbolic:
            shapes = _int64s([d for a in arrays for d in a.shape])
            outputs = [np.empty(shape, np.float32) for shape in self._output_shapes_for(shapes)]
            arguments = (shapes, _pointers(arrays), _pointers(outputs))
        else:
            outputs = [np.empty(shape, np.float32) for shape in self.output_shapes]
            arguments = (_pointers(arrays), _pointers(outputs))
        self._check(self._run(*arguments), self._run.__name__)
        return tuple(outputs) if self._returns_tuple else outputs[0]

    def selftest(self) -> None:
        """Run the library's self-test (golden inputs against golden outputs); raise if it fails."""
        self._check(self._function("selftest", ctypes.c_int, [])(), f"{self.name}_selftest")

    def set_num_threads(self, threads: int) -> None:
        """Threads per call from now on (0: automatic, every core this process may use)."""
        self._function("set_num_threads", None, [ctypes.c_int])(int(threads))

    def __repr__(self) -> str:
        return f"lucid.runtime.Library({str(self.path)!r}, name={self.name!r}, inputs={self.input_shapes})"

    # ------------------------------------------------------------------ helpers
    def _checked(self, inputs) -> list[np.ndarray]:
        owner = f"lucid.runtime {self.name}"
        if len(inputs) != len(self.input_shapes):
            raise ShapeError(f"{owner}: expected {len(self.input_shapes)} input(s), got {len(inputs)}")
        arrays = []
        for k, (given, shape) in enumerate(zip(inputs, self.input_shapes)):
            array = np.asarray(given)
            if array.dtype != np.float32:
                raise DTypeError(f"{owner}: input {k} must have dtype float32, got {array.dtype}")
            if len(array.shape) != len(shape) or any(d != s for d, s in zip(array.shape, shape) if s >= 0):
                any_size = " (-1: any size the library accepts)" if -1 in shape else ""
                raise ShapeError(f"{owner}: input {k} must have shape {shape}{any_size}, got {array.shape}")
            arrays.append(np.ascontiguousarray(array))
        return arrays

    def _output_shapes_for(self, shapes) -> list[tuple]:
        """The outputs' shapes at the input `shapes` (concatenated), as the library computes and checks them."""
        result = []
        for k, declared in enumerate(self.output_shapes):
            dims = (ctypes.c_int64 * max(len(declared), 1))()
            if self._output_shape_dims(shapes, k, dims) < 0:
                raise ShapeError(f"lucid.runtime: {(self._error() or b'').decode(errors='replace')}")
            result.append(tuple(dims[:len(declared)]))
        return result

    def _function(self, suffix: str, restype, argtypes: list):
        try:
            function = getattr(self._native, f"{self.name}_{suffix}")
        except AttributeError:
            raise LibraryError(f"lucid.runtime: {self.path} has no function {self.name}_{suffix} "
                               "(a damaged or foreign library)") from None
        function.restype, function.argtypes = restype, argtypes
        return function

    def _call_text(self, symbol: str) -> str:
        try:
            function = getattr(self._native, symbol)
        except AttributeError:
            raise LibraryError(f"lucid.runtime: {self.path} is a shared library but not one lucid.export "
                               f"wrote (it has no {symbol} symbol)") from None
        function.restype, function.argtypes = ctypes.c_char_p, []
        return (function() or b"").decode(errors="replace")

    def _shapes(self, what: str) -> list[tuple]:
        count = self._function(f"num_{what}s", ctypes.c_int, [])()
        shape_of = self._function(f"{what}_shape", ctypes.c_int, [ctypes.c_int, ctypes.POINTER(ctypes.c_int64)])
        shapes = []
        for k in range(count):
            rank = shape_of(k, None)
            dims = (ctypes.c_int64 * max(rank, 1))()
            shape_of(k, dims)
            shapes.append(tuple(dims[:rank]))
        return shapes

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            message = (self._error() or b"").decode(errors="replace") or "no message"
            raise LibraryError(f"lucid.runtime: {what} failed: {message}")


def _int64s(values: list):
    return (ctypes.c_int64 * max(len(values), 1))(*values)


def _pointers(arrays: list):
    return (_FLOATS * max(len(arrays), 1))(*(a.ctypes.data_as(_FLOATS) for a in arrays))


def _open(path: Path) -> ctypes.CDLL:
    """dlopen the file (kept local to this handle) once it passed `_check_file`."""
    _check_file(path)
    try:
        return ctypes.CDLL(str(path.resolve()), mode=os.RTLD_NOW | os.RTLD_LOCAL)
    except OSError as error:
        raise LibraryError(f"lucid.runtime: {str(path)!r} is not a loadable shared library: {error}") from None


def _check_file(path: Path) -> None:
    """Refuse what the dynamic loader must not see: a file that is not a complete x86-64 ELF shared
    object (a truncated one would fault when its segments are touched), or one without lucid's info
    string (a foreign library: its constructors are not run)."""
    try:
        image = path.read_bytes()
    except OSError as error:
        raise LibraryError(f"lucid.runtime: cannot read library {str(path)!r}: {error.strerror}") from None
    if len(image) < _ELF_HEADER.size or image[:4] != _ELF_MAGIC:
        raise LibraryError(f"lucid.runtime: {str(path)!r} is not a lucid library (not an ELF shared object)")
    (_, elf_class, data, _, kind, machine, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize,
     shnum, _) = _ELF_HEADER.unpack_from(image)
    if (elf_class, data, kind, machine) != (2, 1, _ET_DYN, _EM_X86_64) or phentsize != _PROGRAM_HEADER.size:
        raise LibraryError(f"lucid.runtime: {str(path)!r} is not an x86-64 ELF shared object")
    ends = [phoff + phnum * phentsize, shoff + shnum * shentsize]
    if ends[0] <= len(image):
        for k in range(phnum):
            _, _, offset, _, _, file_size, _, _ = _PROGRAM_HEADER.unpack_from(image, phoff + k * phentsize)
            ends.append(offset + file_size)
    if max(ends) > len(image):
        raise LibraryError(f"lucid.runtime: {str(path)!r} is truncated ({len(image)} bytes, its headers "
                           f"describe {max(ends)}): not a loadable shared library")
    if f"{abi.INFO_PREFIX} abi=".encode() not in image:
        raise LibraryError(f"lucid.runtime: {str(path)!r} is a shared library but not one lucid.export wrote "
                           f"(no {abi.INFO_PREFIX} info string)")
