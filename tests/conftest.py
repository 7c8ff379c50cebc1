"""Test-session settings: compiled kernels go to one disk cache shared by every test (and by later
runs), the repository's .lucid-cache/ unless LUCID_CACHE_DIR is already set."""
import os
import pathlib

os.environ.setdefault("LUCID_CACHE_DIR", str(pathlib.Path(__file__).resolve().parent.parent / ".lucid-cache"))
