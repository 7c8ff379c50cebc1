"""From an LLVM module to callable native code, and the disk cache that makes that a one-time cost.

`native_object(key, build)` returns the object code for cache key `key`: read from the disk cache
when present and intact, else `build()` makes the module, LLVM optimises it (O3, loop and SLP
vectorisation) and emits an object file for the target, which is stored for the next process.
`NativeCode(object)` loads object code into an MCJIT engine and hands out function addresses.
`COUNTERS["compiled"]` counts LLVM compilations in this process (tests assert a warm cache does none).

Cache keys include `code_fingerprint()`, a hash of the code generator's sources, so a changed
lucid never reads objects an older one wrote. The cache lives in `LUCID_CACHE_DIR` (default `$XDG_CACHE_HOME/lucid` or `~/.cache/lucid`). An
entry is `<key>.lucid`: a JSON header line (format version, metadata, SHA-256 of the object), then
the object bytes; an entry that is truncated or fails its checksum is ignored and rebuilt.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import llvmlite.binding as llvm
import llvmlite.ir as ir

from .target import Target

CACHE_FORMAT = 1
COUNTERS = {"compiled": 0, "loaded": 0}


def cache_dir() -> Path:
    root = os.environ.get("LUCID_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lucid"


def cache_key(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:40]


@functools.cache
def code_fingerprint() -> str:
    """A hash of lucid's code generator sources: any change to them invalidates cached objects."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def native_object(key: str, target: Target, build: Callable[[], tuple[ir.Module, dict]]) -> tuple[bytes, dict]:
    """(object code, metadata) for `key`, from the cache or by building and compiling the module."""
    path = cache_dir() / f"{key}.lucid"
    cached = _read_entry(path)
    if cached is not None:
        COUNTERS["loaded"] += 1
        return cached
    module, metadata = build()
    code = compile_module(module, target)
    _write_entry(path, code, metadata)
    return code, metadata


def compile_module(module: ir.Module, target: Target) -> bytes:
    COUNTERS["compiled"] += 1
    machine = target.machine()
    parsed = llvm.parse_assembly(str(module))
    parsed.triple, parsed.data_layout = machine.triple, str(machine.target_data)
    parsed.verify()
    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    tuning.loop_vectorization = tuning.slp_vectorization = True
    builder = llvm.create_pass_builder(machine, tuning)
    builder.getModulePassManager().run(parsed, builder)
    return machine.emit_object(parsed)


class NativeCode:
    """Object code loaded into its own JIT engine (kept alive as long as this object)."""

    def __init__(self, code: bytes, target: Target):
        machine = target.machine()
        empty = llvm.parse_assembly("")
        empty.triple = machine.triple
        self.engine = llvm.create_mcjit_compiler(empty, machine)
        self.engine.add_object_file(llvm.ObjectFileRef.from_data(code))
        self.engine.finalize_object()

    def address(self, name: str) -> int:
        address = self.engine.get_function_address(name)
        if not address:
            raise RuntimeError(f"codegen: the compiled object has no function {name!r}")
        return address


def _read_entry(path: Path):
    try:
        data = path.read_bytes()
        header, _, code = data.partition(b"\n")
        meta = json.loads(header)
        if meta.get("format") != CACHE_FORMAT or meta.get("sha256") != hashlib.sha256(code).hexdigest():
            return None
        return code, meta["metadata"]
    except (OSError, ValueError, KeyError, AttributeError):
        return None


def _write_entry(path: Path, code: bytes, metadata: dict) -> None:
    header = json.dumps({"format": CACHE_FORMAT, "sha256": hashlib.sha256(code).hexdigest(), "metadata": metadata})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as f:
            f.write(header.encode() + b"\n" + code)
        os.replace(f.name, path)          # atomic: a concurrent reader sees all or nothing
    except OSError:
        pass                              # an unwritable cache only costs a compilation next time
