"""Test-session settings: compiled kernels go to one disk cache shared by every test, every test
process (the run uses one per core: `-n auto` in pyproject.toml) and later runs, the repository's
.lucid-cache/ unless LUCID_CACHE_DIR is already set. Writes to it are atomic, so the processes can
fill it at the same time; a test that needs a fresh cache sets its own LUCID_CACHE_DIR."""
import os
import pathlib

os.environ.setdefault("LUCID_CACHE_DIR", str(pathlib.Path(__file__).resolve().parent.parent / ".lucid-cache"))
