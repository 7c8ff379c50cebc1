"""The disk cache of compiled code: sealed files, and graph entries verified as a whole before use.

The cache lives in `cache_dir()` (`LUCID_CACHE_DIR`, default `$XDG_CACHE_HOME/lucid` or
`~/.cache/lucid`) and holds two kinds of file:
- `objects/<name>.o`: one module's object code; `<name>` is a key of the module's text, the target
  and the code generator (`jit.py` chooses it), so a kernel shared by several graphs is stored once;
- `graphs/<key>.json`: a graph's manifest: its key, the target fingerprint it was built for, the
  name and SHA-256 of each of its object files, and the bytes of workspace its kernels use.

Every file is sealed: its first line is the SHA-256 of the cache format, the file's kind, its own
name (its key) and the rest of the file. So a truncated or flipped file fails its seal, and so does
a file holding another entry's valid bytes (files copied or swapped: the name is not theirs).

`load_graph(key, target)` trusts nothing in an entry before the whole entry is checked: the
manifest's seal, its fields (exact keys and types, its own key, this process's target fingerprint,
a workspace size that is a non-negative multiple of the alignment below `WORKSPACE_LIMIT`), and
every object it lists (present, sealed under its own name, the SHA-256 the manifest lists). An
entry that fails is never used: it is reported with one `CacheWarning` naming the entry and what
was wrong, its damaged files are removed, and the caller rebuilds it (writing it again). A missing
file is simply a miss. Writes are atomic (a temporary file renamed over the entry), objects before
the manifest that lists them, so a concurrent process sees a whole entry or none. An unreadable or
unwritable cache only costs compilations.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..passes.memory_planning import ALIGNMENT

#: Part of every seal: files of another format fail it.
CACHE_FORMAT = 3

#: Workspace sizes at or above this (1 TiB) are refused: no entry lucid writes needs them.
WORKSPACE_LIMIT = 1 << 40

_OBJECT_NAME = re.compile(r"[0-9a-f]{40}\.o\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_MANIFEST_FIELDS = {"key", "target", "objects", "workspace_bytes"}


class CacheWarning(RuntimeWarning):
    """A compile-cache entry failed its checks; it was not used, and was rebuilt."""


class Damaged(Exception):
    """A cache file failed its checks: `path`, and `reason` (what was wrong, as a sentence part)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path} {reason}")
        self.path, self.reason = path, reason


@dataclass
class GraphEntry:
    """A verified graph entry: its object code, in the manifest's order, and its workspace size."""

    codes: list[bytes]
    workspace_bytes: int


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
# Object files


def load_object(name: str) -> bytes | None:
    """The cached object code called `name`; None when absent or damaged (then it is reported and
    removed, and the caller compiles it again)."""
    try:
        return read_object(name)
    except Damaged as damage:
        _report(f"object file {damage.path}", [damage])
        return None


def read_object(name: str) -> bytes | None:
    """The object code called `name` if its file passes its seal; None if absent; else Damaged."""
    return _read_sealed(_object_path(name), "object", name)


def write_object(name: str, code: bytes) -> None:
    _write_sealed(_object_path(name), "object", name, code)


def _object_path(name: str) -> Path:
    return cache_dir() / "objects" / name


# ---------------------------------------------------------------------------------------------
# Graph entries


def load_graph(key: str, target: str) -> GraphEntry | None:
    """The entry of graph `key` built for target fingerprint `target`, once every part of it passed
    its checks; None when absent or when it failed (then it is reported and its damaged files are
    removed)."""
    path = _graph_path(key)
    try:
        manifest = _manifest(key, target)
    except Damaged as damage:
        _report(f"graph entry {key}", [damage])
        return None
    if manifest is None:
        return None
    codes, damages = [], []
    for name, digest in manifest["objects"]:
        try:
            codes.append(_listed_object(name, digest, path))
        except Damaged as damage:
            damages.append(damage)
    if damages:
        _report(f"graph entry {key}", damages)
        return None
    return GraphEntry(codes, manifest["workspace_bytes"])


def store_graph(key: str, target: str, named_codes: list[tuple[str, bytes]], workspace_bytes: int) -> None:
    """Write the manifest of graph `key`, whose objects (`(name, code)`, already stored) and workspace
    size are given."""
    manifest = {"key": key, "target": target, "workspace_bytes": int(workspace_bytes),
                "objects": [[name, hashlib.sha256(code).hexdigest()] for name, code in named_codes]}
    _write_sealed(_graph_path(key), "graph", key, json.dumps(manifest).encode())


def _graph_path(key: str) -> Path:
    return cache_dir() / "graphs" / f"{key}.json"


def _manifest(key: str, target: str) -> dict | None:
    """The manifest of graph `key` if present and valid in every field; None if absent."""
    path = _graph_path(key)
    body = _read_sealed(path, "graph", key)
    if body is None:
        return None
    try:
        manifest = json.loads(body)
    except ValueError:
        raise Damaged(path, "is not a JSON manifest") from None
    if not isinstance(manifest, dict) or set(manifest) != _MANIFEST_FIELDS:
        raise Damaged(path, f"has fields {sorted(manifest) if isinstance(manifest, dict) else type(manifest).__name__}, "
                            f"expected {sorted(_MANIFEST_FIELDS)}")
    if manifest["key"] != key:
        raise Damaged(path, f"is the manifest of another graph ({manifest['key']!r})")
    if manifest["target"] != target:
        raise Damaged(path, f"was built for another target ({manifest['target']!r}); this process compiles "
                            f"for {target!r}")
    _check_workspace(path, manifest["workspace_bytes"])
    _check_object_list(path, manifest["objects"])
    return manifest


def _check_workspace(path: Path, workspace) -> None:
    if (type(workspace) is not int or not 0 <= workspace < WORKSPACE_LIMIT
            or workspace % ALIGNMENT):
        raise Damaged(path, f"gives workspace_bytes {workspace!r}, not a multiple of {ALIGNMENT} in "
                            f"[0, {WORKSPACE_LIMIT})")


def _check_object_list(path: Path, listed) -> None:
    if not isinstance(listed, list) or not listed:
        raise Damaged(path, "lists no objects")
    for item in listed:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)
                and _OBJECT_NAME.match(item[0]) and _SHA256.match(item[1])):
            raise Damaged(path, f"lists {item!r}, not an object name and its SHA-256")


def _listed_object(name: str, digest: str, manifest: Path) -> bytes:
    """Object `name` if present, sealed, and with the SHA-256 the manifest lists; else Damaged."""
    code = read_object(name)
    if code is None:
        raise Damaged(_object_path(name), f"is missing (listed by {manifest.name})")
    if hashlib.sha256(code).hexdigest() != digest:
        raise Damaged(_object_path(name), f"is not the object {manifest.name} lists (another SHA-256)")
    return code


# ---------------------------------------------------------------------------------------------
# Sealed files


def _seal(kind: str, name: str, body: bytes) -> bytes:
    """The first line of a cache file: SHA-256 of the format, the file's kind and name, and its body."""
    digest = hashlib.sha256(f"lucid-cache\0{CACHE_FORMAT}\0{kind}\0{name}\0".encode())
    digest.update(body)
    return digest.hexdigest().encode()


def _read_sealed(path: Path, kind: str, name: str) -> bytes | None:
    """The body of the cache file `path` (kind, name) if it passes its seal; None if there is no such
    file (or it cannot be read); Damaged if it fails."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    seal, newline, body = data.partition(b"\n")
    if not newline:
        raise Damaged(path, f"is truncated ({len(data)} bytes, no seal line)")
    if seal != _seal(kind, name, body):
        raise Damaged(path, "fails its SHA-256 seal (damaged or truncated, or the file of another entry)")
    return body


def _write_sealed(path: Path, kind: str, name: str, body: bytes) -> None:
    _write_atomically(path, _seal(kind, name, body) + b"\n" + body)


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as f:
            f.write(data)
        os.replace(f.name, path)          # atomic: a concurrent reader sees all or nothing
    except OSError:
        pass


def _report(what: str, damages: list[Damaged]) -> None:
    """One warning for an entry that failed its checks; its damaged files are removed (the rebuild
    writes them again)."""
    for damage in damages:
        try:
            damage.path.unlink()
        except OSError:
            pass
    problems = "; ".join(str(damage) for damage in damages)
    warnings.warn(f"lucid compile cache: {what} was not used: {problems}; rebuilding it", CacheWarning,
                  stacklevel=3)
