"""Running a test file as a script in a fresh process: for cases that might crash the process (a
crash then fails the test instead of killing pytest). The script prints one JSON object per line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_as_script(path, *args, cache: Path | None = None, timeout: float = 300) -> list[dict]:
    """Run `path` with `args` (and `cache` as LUCID_CACHE_DIR if given), with this checkout's lucid
    and tests importable; the JSON lines it printed. It must exit cleanly."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), str(ROOT / "tests"), environment.get("PYTHONPATH")]))
    if cache is not None:
        environment["LUCID_CACHE_DIR"] = str(cache)
    done = subprocess.run([sys.executable, str(path), *map(str, args)], env=environment, capture_output=True,
                          text=True, timeout=timeout)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0, (f"the subprocess died (status {done.returncode}) after "
                                  f"{lines[-1] if lines else 'nothing'}:\n{done.stderr[-3000:]}")
    return lines
