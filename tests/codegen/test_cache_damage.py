"""A damaged compile cache never crashes the process or changes a result (lucid/codegen/cache.py).

A cache holding the entries of two tiny graphs (A and B, which share their convolution kernels) is
built once by a subprocess. Each case damages a copy of it, then a fresh process (this file run as
a script, so a crash fails the test instead of killing pytest) runs graph A (or both), compares with
the interpreter (`lucid.ir.run`), and reports the CacheWarnings it got and what it compiled; a second
run in that process must find the rebuilt entry intact (no warning, nothing compiled). A process
may check several damaged copies in turn (`check-many`): every run reads its cache from disk (nothing
of a cache entry is kept in memory), so each copy is checked as a fresh process would check it.

Cases: a truncated or emptied manifest; a bit flip in each field of a manifest and in its seal; a
flip in an object's seal and in its code; a truncated object; object files swapped between the two
entries; the manifests swapped; a manifest of another target (copied over, and re-sealed under A's
key); re-sealed manifests with bad field values (the checks behind the seal). Each gives the right
result and exactly one warning naming the entry. Then a seeded fuzz test: 200 random mutations
(flips, random bytes, truncations, appended bytes, deleted files, swapped or copied files, re-sealed
fields) each give the right result, at least one warning when a file the run reads was damaged, and
an intact entry afterwards; its counts are printed (pytest -s shows them).
"""
from __future__ import annotations

import functools
import json
import os
import random
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from script_runs import run_as_script

pytestmark = pytest.mark.long_running       # fresh processes compiling and checking damaged caches

GRAPHS = {"A": 2.0, "B": 5.0}
FUZZ_SEED, FUZZ_MUTATIONS, FUZZ_WORKERS = 17, 200, 2


# ============================================================================== the subprocess side
X = np.random.default_rng(0).standard_normal((1, 1, 4, 4, 4)).astype(np.float32)


@functools.cache
def graph_and_expected(name: str):
    """Graph `name` (traced and optimised once per process) and the interpreter's output on X."""
    import lucid
    import lucid.nn as nn
    from lucid.passes import PassManager, dead_code, fusion

    lucid.manual_seed(3)
    model = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool3d(2)).eval()
    scale = GRAPHS[name]
    graph = lucid.trace(lambda v: (model(v) * scale).tanh(), lucid.spec(1, 1, 4, 4, 4))
    graph = dead_code.run(fusion.run(PassManager("inference").run(graph)))
    return graph, lucid.ir.run(graph, X)


def run_graphs(names: list[str]) -> dict:
    """Build and run each named graph with the current LUCID_CACHE_DIR: its error against the
    interpreter, the CacheWarnings seen, and the LLVM compilations done."""
    import warnings

    from lucid.codegen import jit
    from lucid.codegen.cache import CacheWarning
    from lucid.passes import memory_planning
    from lucid.runtime.executable import Executable
    errors, compiled = {}, jit.COUNTERS["compiled"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for name in names:
            graph, expected = graph_and_expected(name)
            got = Executable(memory_planning.run(graph))(X)[0]
            errors[name] = float(np.abs(got - expected).max())
    return {"errors": errors, "compiled": jit.COUNTERS["compiled"] - compiled,
            "warnings": [str(w.message) for w in seen if issubclass(w.category, CacheWarning)],
            "others": [f"{w.category.__name__}: {w.message}" for w in seen if not issubclass(w.category, CacheWarning)]}


def check(cache: str, names: list[str]) -> dict:
    """Run the graphs twice on `cache` (the second run must find every entry intact)."""
    os.environ["LUCID_CACHE_DIR"] = cache
    first = run_graphs(names)
    return {"first": first, "second": run_graphs(names)}


def fuzz(base: str, work: str, seed: int, start: int, count: int) -> None:
    """Mutations start..start+count-1 of the fuzz run, one JSON line each (printed as it finishes, so
    a crash shows which mutation it was)."""
    for index in range(start, start + count):
        case = Path(work) / f"case{index}"
        shutil.copytree(base, case)
        rng = random.Random(seed * 100_003 + index)
        mutation, damaged = mutate(case, rng)
        report = check(str(case), list(GRAPHS))
        print(json.dumps({"index": index, "mutation": mutation, "damaged": damaged, **report}), flush=True)
        shutil.rmtree(case)


# ============================================================================== cache files
def manifests(cache: Path) -> dict:
    """Graph name -> the path of its manifest (order.txt, written by `build`, lists their keys)."""
    keys = (cache / "order.txt").read_text().split()
    return {name: cache / "graphs" / f"{key}.json" for name, key in zip(GRAPHS, keys)}


def body_of(path: Path) -> bytes:
    """What follows a cache file's seal line."""
    return path.read_bytes().partition(b"\n")[2]


def reseal(path: Path, key: str, manifest: dict) -> None:
    """Write `manifest` at `path` with a valid seal for `key` (what only a forger does)."""
    from lucid.codegen import cache

    cache._write_sealed(path, "graph", key, json.dumps(manifest).encode())


def entry_object(cache: Path, manifest: Path) -> Path:
    """The entry module's object of a graph (listed last)."""
    return cache / "objects" / json.loads(body_of(manifest))["objects"][-1][0]


def flip_bit(path: Path, position: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 1 << bit
    path.write_bytes(bytes(data))


def swap(first: Path, second: Path) -> None:
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)


# ============================================================================== mutations
def mutate(cache: Path, rng: random.Random) -> tuple[str, bool]:
    """Apply one random mutation to the files of the graph entries (the worker pool's object, read
    once per process, is left alone); (what it was, whether it damaged an entry: changed a file, or
    deleted an object file a manifest lists; deleting a manifest is a plain cache miss)."""
    before = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file() and p.name != "order.txt"}
    listed = {name for path in (cache / "graphs").glob("*.json")
              for name, _ in json.loads(body_of(path))["objects"]}
    files = sorted(p for p in before if p.parent.name == "graphs" or p.name in listed)
    target = rng.choice(files)
    kind = rng.choice(["flip", "byte", "truncate", "append", "delete", "swap", "copy", "reseal"])
    data = bytearray(before[target])
    if kind == "flip" and data:
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(data))
    elif kind == "byte" and data:
        data[rng.randrange(len(data))] = rng.randrange(256)
        target.write_bytes(bytes(data))
    elif kind == "truncate":
        target.write_bytes(bytes(data[:rng.randrange(len(data) + 1)]))
    elif kind == "append":
        target.write_bytes(bytes(data) + bytes(rng.randrange(256) for _ in range(rng.randint(1, 9))))
    elif kind == "delete":
        target.unlink()
    elif kind in ("swap", "copy"):
        other = rng.choice(files)
        swap(target, other) if kind == "swap" else other.write_bytes(before[target])
        target = f"{target.name}+{other.name}"
    elif kind == "reseal":
        path = rng.choice(sorted((cache / "graphs").glob("*.json")))
        manifest = json.loads(body_of(path))
        field = rng.choice(sorted(manifest))
        manifest[field] = rng.choice(BAD_VALUES[field](manifest))
        reseal(path, path.stem, manifest)
        target = f"{path.name} {field}={manifest[field]!r}"
    changed = any(p.read_bytes() != before[p] if p.exists() else p.name in listed for p in files)
    return f"{kind} {target if isinstance(target, str) else target.name}", changed


# Values a re-sealed manifest field may get that its checks must refuse.
BAD_VALUES = {
    "workspace_bytes": lambda m: [-64, -1, 63, 1, "64", 64.0, True, None, [], 1 << 40, 1 << 70],
    "key": lambda m: ["", m["key"][:-1] + ("1" if m["key"].endswith("0") else "0"), None, 3],
    "target": lambda m: ["", m["target"] + "|pic", m["target"].replace("|", "/"), None],
    "objects": lambda m: [[], None, "x", [[m["objects"][0][0]]], [[1, 2]],
                          [[n, "0" * 64] for n, _ in m["objects"]],
                          [["../../etc/passwd", d] for _, d in m["objects"]]],
}


# ============================================================================== the pytest side
def run_self(*args, **options) -> list[dict]:
    """Run this file as a script in a fresh process (see script_runs); its JSON lines."""
    return run_as_script(__file__, *args, **options)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A cache holding graph A's and B's entries (and graph A built for another CPU, x86-64-v2, in
    `other-target/`)."""
    folder = tmp_path_factory.mktemp("cache-damage")
    run_self("build", folder / "base", folder / "other-target")
    return folder


def assert_rebuilt_with_one_warning(report: dict, cache: Path, mentions: str = "") -> None:
    """A check of `cache` gave correct results, one warning naming the entry (and `mentions`) in its
    first run, and found the rebuilt entry intact in its second."""
    first, second = report["first"], report["second"]
    for run in (first, second):
        assert all(error < 1e-5 for error in run["errors"].values()), run
        assert not run["others"], run["others"]
    assert len(first["warnings"]) == 1, first["warnings"]
    assert "lucid compile cache: graph entry" in first["warnings"][0] and str(cache) in first["warnings"][0]
    assert mentions in first["warnings"][0], first["warnings"][0]
    assert second["warnings"] == [] and second["compiled"] == 0, second


def flip_in_field(field: str):
    """A damage flipping bit 0 of the first digit or letter of `field`'s value in A's manifest."""
    def damage(cache: Path) -> None:
        path = manifests(cache)["A"]
        data = path.read_bytes()
        value = data[data.index(f'"{field}": '.encode()) + len(field) + 4:]
        flip_bit(path, len(data) - len(value.lstrip(b'["')))
    damage.__name__ = f"flip_{field}"
    return damage


def flip_seal(cache: Path) -> None:
    flip_bit(manifests(cache)["A"], 10)


def truncate_manifest(cache: Path) -> None:
    path = manifests(cache)["A"]
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def empty_manifest(cache: Path) -> None:
    manifests(cache)["A"].write_bytes(b"")


def flip_object_seal(cache: Path) -> None:
    flip_bit(entry_object(cache, manifests(cache)["A"]), 3)


def flip_object_code(cache: Path) -> None:
    path = entry_object(cache, manifests(cache)["A"])
    flip_bit(path, path.stat().st_size - 20, 5)


def truncate_object(cache: Path) -> None:
    path = entry_object(cache, manifests(cache)["A"])
    path.write_bytes(path.read_bytes()[:100])


def swap_objects(cache: Path) -> None:
    found = manifests(cache)
    swap(entry_object(cache, found["A"]), entry_object(cache, found["B"]))


def swap_manifests(cache: Path) -> None:
    found = manifests(cache)
    swap(found["A"], found["B"])


def copy_manifest_over_other(cache: Path) -> None:
    path = manifests(cache)["A"]
    path.write_bytes(manifests(cache)["B"].read_bytes())


DAMAGES = [truncate_manifest, empty_manifest, flip_seal, *map(flip_in_field, ["key", "target", "objects",
           "workspace_bytes"]), flip_object_seal, flip_object_code, truncate_object, swap_objects,
           swap_manifests, copy_manifest_over_other]


def test_every_damage_is_rebuilt_in_a_fresh_process_with_one_warning(base, tmp_path):
    """Each damage case on its own copy, checked by two fresh processes at once (half of the copies
    each): a correct result, one warning."""
    cases = []
    for damage in DAMAGES:
        cache = tmp_path / damage.__name__
        shutil.copytree(base / "base", cache)
        damage(cache)
        cases.append(cache)
    halves = [cases[0::2], cases[1::2]]
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(lambda caches: run_self("check-many", *caches), halves))
    for caches, lines in zip(halves, reports):
        assert len(lines) == len(caches)
        for cache, report in zip(caches, lines):
            assert_rebuilt_with_one_warning(report, cache)


def test_a_manifest_of_another_target_is_never_executed(base, tmp_path):
    """A's manifest replaced by the other target's (whose objects are copied beside A's): copied over,
    it fails the seal; re-sealed as A's, the target check. One fresh process checks both copies."""
    other = next((base / "other-target" / "graphs").glob("*.json"))
    copied, resealed = tmp_path / "copied", tmp_path / "resealed"
    for cache in (copied, resealed):
        shutil.copytree(base / "base", cache)
        shutil.copytree(base / "other-target" / "objects", cache / "objects", dirs_exist_ok=True)
    path = manifests(copied)["A"]
    path.write_bytes(other.read_bytes())                        # copied over: fails the seal
    manifest = json.loads(body_of(other))
    manifest["key"] = path.stem
    reseal(resealed / "graphs" / path.name, path.stem, manifest)   # re-sealed as A's: fails the target check
    seal_check, target_check = run_self("check-many", copied, resealed)
    assert_rebuilt_with_one_warning(seal_check, copied, mentions="SHA-256 seal")
    assert_rebuilt_with_one_warning(target_check, resealed, mentions="built for another target")
    assert "x86-64-v2" in target_check["first"]["warnings"][0]


def test_processes_filling_one_cache_at_once_see_whole_entries(tmp_path):
    """Writes are atomic (temporary file renamed over the entry, objects before their manifest):
    two processes building graph A at once in one empty cache never meet half an entry."""
    cache = tmp_path / "shared"
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(lambda _: run_self("check", cache, "A")[-1], range(2)))
    for report in reports:
        for run in (report["first"], report["second"]):
            assert all(error < 1e-5 for error in run["errors"].values()), run
            assert run["warnings"] == [] and not run["others"], run
    assert not list(cache.rglob("*.tmp"))


@pytest.fixture(scope="module")
def resealed_checks(base, tmp_path_factory) -> dict:
    """{field: [(bad value, its check)]}: A's manifest re-sealed with each bad value of each field of
    BAD_VALUES, each on its own copy of the base cache, all checked by one fresh process."""
    folder = tmp_path_factory.mktemp("resealed")
    path = manifests(base / "base")["A"]
    manifest = json.loads(body_of(path))
    cases = []
    for field in sorted(BAD_VALUES):
        for k, value in enumerate(BAD_VALUES[field](manifest)):
            copy = folder / f"{field}{k}"
            shutil.copytree(base / "base", copy)
            reseal(copy / "graphs" / path.name, path.stem, dict(manifest, **{field: value}))
            cases.append((field, value, copy))
    lines = run_self("check-many", *(copy for _, _, copy in cases))
    assert len(lines) == len(cases)
    checks = {field: [] for field in BAD_VALUES}
    for (field, value, _), line in zip(cases, lines):
        checks[field].append((value, line))
    return checks


@pytest.mark.parametrize("field", sorted(BAD_VALUES))
def test_resealed_manifests_with_bad_fields_are_refused(resealed_checks, field):
    """Behind the seal, every field is checked (a forged or mis-written manifest is not trusted)."""
    for value, line in resealed_checks[field]:
        first = line["first"]
        assert all(e < 1e-5 for e in first["errors"].values()), (value, first)
        assert len(first["warnings"]) == 1, (value, first["warnings"])
        assert line["second"]["warnings"] == [] and line["second"]["compiled"] == 0, (value, line["second"])


def test_fuzzed_caches_give_correct_results_or_are_rebuilt(base, tmp_path):
    """FUZZ_MUTATIONS seeded random mutations, split over FUZZ_WORKERS processes."""
    share = -(-FUZZ_MUTATIONS // FUZZ_WORKERS)
    with ThreadPoolExecutor(max_workers=FUZZ_WORKERS) as pool:
        parts = pool.map(lambda k: run_self("fuzz", base / "base", tmp_path, FUZZ_SEED, k * share,
                                            min(share, FUZZ_MUTATIONS - k * share)), range(FUZZ_WORKERS))
        lines = [line for part in parts for line in part]
    assert len(lines) == FUZZ_MUTATIONS
    counts = {"mutations": len(lines), "rebuilt with a warning": 0, "no damage (a no-op, or a deleted manifest)": 0}
    for line in lines:
        first, second = line["first"], line["second"]
        assert all(e < 1e-5 for e in first["errors"].values()), line
        assert not first["others"], line
        if line["damaged"]:
            assert 1 <= len(first["warnings"]) <= 2, line       # at most one per entry the runs read
        else:
            assert not first["warnings"], line                  # a deleted file is a plain miss
        assert all("lucid compile cache:" in w and str(tmp_path) in w for w in first["warnings"]), line
        assert second["warnings"] == [] and second["compiled"] == 0, line
        counts["rebuilt with a warning" if first["warnings"] else "no damage (a no-op, or a deleted manifest)"] += 1
    print(f"\ncache fuzz: {counts}")
    assert counts["rebuilt with a warning"] > FUZZ_MUTATIONS // 2


# ============================================================================== script entry point
def build(cache: str, *, cpu: str | None = None) -> None:
    """Fill an empty cache with graph A's and B's entries (A's alone for another `cpu`); order.txt lists
    their keys (A first)."""
    if cpu:
        os.environ["LUCID_CPU"], os.environ["LUCID_CPU_FEATURES"] = cpu, ""
    os.environ["LUCID_CACHE_DIR"] = cache
    order = []
    for name in (["A"] if cpu else list(GRAPHS)):
        before = {p.stem for p in Path(cache).glob("graphs/*.json")}
        report = run_graphs([name])
        assert report["errors"][name] < 1e-5 and not report["warnings"], report
        order += sorted({p.stem for p in Path(cache).glob("graphs/*.json")} - before)
    (Path(cache) / "order.txt").write_text("\n".join(order))
    print(json.dumps({"built": order}))


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    if command == "build":                    # the base cache, then the other target's
        build(arguments[0])
        build(arguments[1], cpu="x86-64-v2")
    elif command == "check":
        print(json.dumps(check(arguments[0], arguments[1:] or ["A"])))
    elif command == "check-many":
        for folder in arguments:
            print(json.dumps(check(folder, ["A"])), flush=True)
    elif command == "fuzz":
        fuzz(arguments[0], arguments[1], *map(int, arguments[2:]))
