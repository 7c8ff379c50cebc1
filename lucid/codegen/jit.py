"""From LLVM modules to callable native code, and the disk cache that makes that a one-time cost.

Object code is cached per module: `objects(modules, target)` returns the object code of each
(name, LLVM text) module, reading it from the cache when present and intact, else compiling it (LLVM
O3 with loop and SLP vectorisation) — the missing ones in parallel, one thread per core, each in its
own LLVM context — and storing it for the next time. Kernel modules are named by a hash of their code,
so a kernel shared by several graphs is compiled once. A graph's own record (`read_graph` /
`write_graph`) lists the modules it needs, so a process that meets a known graph loads objects without
lowering or compiling anything. `NativeCode(objects)` links object code in one MCJIT engine.
`COUNTERS["compiled"]` counts LLVM compilations in this process (tests assert a warm cache does none).

Keys include `code_fingerprint()`, a hash of the code generator's sources, so a changed lucid never
reads what an older one wrote, and the target's fingerprint. The cache lives in `LUCID_CACHE_DIR`
(default `$XDG_CACHE_HOME/lucid` or `~/.cache/lucid`); an object entry is a JSON header line (format,
SHA-256 of the code) then the object bytes, and one that is truncated or fails its checksum is
recompiled. An unwritable cache only costs compilations.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import llvmlite.binding as llvm

from .target import Target, available_cores

CACHE_FORMAT = 2
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


# ---------------------------------------------------------------------------------------------
# Object code


def objects(modules: list[tuple[str, str]], target: Target) -> list[tuple[str, bytes]]:
    """(cache name, object code) of each (name, LLVM text) module, from the cache or compiled; the
    missing ones are compiled in parallel, one thread per core."""
    names = [_object_name(text, target) for _, text in modules]
    codes = [_read_object(name) for name in names]
    missing = [k for k, code in enumerate(codes) if code is None]
    COUNTERS["loaded"] += len(modules) - len(missing)
    workers = max(1, min(len(missing), available_cores()))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        compiled = list(pool.map(lambda k: compile_module(modules[k][1], target), missing))
    for k, code in zip(missing, compiled):
        codes[k] = code
        _write_object(names[k], code)
    return list(zip(names, codes))


def load_objects(names: list[str]) -> list[bytes] | None:
    """Cached object code by cache name; None if any is missing or damaged."""
    codes = [_read_object(name) for name in names]
    if any(code is None for code in codes):
        return None
    COUNTERS["loaded"] += len(codes)
    return codes


def compile_module(text, target: Target) -> bytes:
    """Object code of one module (LLVM text or an llvmlite module), optimised at O3."""
    COUNTERS["compiled"] += 1
    machine = target.machine()
    parsed = llvm.parse_assembly(str(text), context=llvm.create_context())
    parsed.triple, parsed.data_layout = machine.triple, str(machine.target_data)
    parsed.verify()
    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    tuning.loop_vectorization = tuning.slp_vectorization = True
    builder = llvm.create_pass_builder(machine, tuning)
    builder.getModulePassManager().run(parsed, builder)
    return machine.emit_object(parsed)


class NativeCode:
    """Object code linked in its own JIT engine (kept alive as long as this object)."""

    def __init__(self, codes: list[bytes], target: Target):
        machine = target.machine()
        empty = llvm.parse_assembly("")
        empty.triple = machine.triple
        self.engine = llvm.create_mcjit_compiler(empty, machine)
        for code in codes:
            self.engine.add_object_file(llvm.ObjectFileRef.from_data(code))
        self.engine.finalize_object()

    def address(self, name: str) -> int:
        address = self.engine.get_function_address(name)
        if not address:
            raise RuntimeError(f"codegen: the compiled object has no function {name!r}")
        return address


def _object_name(text: str, target: Target) -> str:
    return f"{cache_key(code_fingerprint(), target.fingerprint, text)}.o"


def _read_object(name: str) -> bytes | None:
    try:
        header, _, code = (cache_dir() / "objects" / name).read_bytes().partition(b"\n")
        meta = json.loads(header)
        if meta.get("format") == CACHE_FORMAT and meta.get("sha256") == hashlib.sha256(code).hexdigest():
            return code
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _write_object(name: str, code: bytes) -> None:
    header = json.dumps({"format": CACHE_FORMAT, "sha256": hashlib.sha256(code).hexdigest()})
    _write_atomically(cache_dir() / "objects" / name, header.encode() + b"\n" + code)


# ---------------------------------------------------------------------------------------------
# Graph records


def read_graph(key: str) -> dict | None:
    """What `write_graph` stored for a graph key (modules and metadata), or None."""
    try:
        record = json.loads((cache_dir() / "graphs" / f"{key}.json").read_text())
        return record if record.get("format") == CACHE_FORMAT else None
    except (OSError, ValueError, AttributeError):
        return None


def write_graph(key: str, record: dict) -> None:
    _write_atomically(cache_dir() / "graphs" / f"{key}.json", json.dumps(dict(record, format=CACHE_FORMAT)).encode())


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as f:
            f.write(data)
        os.replace(f.name, path)          # atomic: a concurrent reader sees all or nothing
    except OSError:
        pass
