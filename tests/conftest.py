"""Test-session settings: compiled kernels go to one disk cache shared by every test, every test
process (the run uses one per core: `-n auto` in pyproject.toml) and later runs, the repository's
.lucid-cache/ unless LUCID_CACHE_DIR is already set. Writes to it are atomic, so the processes can
fill it at the same time; a test that needs a fresh cache sets its own LUCID_CACHE_DIR.

Modules are compiled in the test processes alone (LUCID_COMPILE_JOBS=1, unless set): the run already
has a test process per core, so compile worker processes only compete with them for the cores
(tests/codegen/test_conv_compiled.py on a fresh cache, -n 2, two runs each: 124 and 130 CPU s with
one job, 128 and 138 with two; the wall times swung 82-179 s with the machine's other load).
tests/codegen/test_compile_workers.py sets the jobs it tests.

Every pass manager verifies each graph after each pass (LUCID_VERIFY_PASSES=1; by default only
its results), so a pass that breaks an invariant fails the tests naming that pass.

Python's bytecode is written even where PYTHONDONTWRITEBYTECODE is set (the variable is dropped for
the run): each test process and every subprocess the tests start (examples, benchmarks, MPI ranks)
would otherwise compile lucid's and the tests' sources again (collecting the suite: 10.7 CPU-s
without bytecode files, 5.0 with them).

Tests marked `long_running` (each takes many seconds on a cold cache: whole training steps of deep
networks, subprocess runs of the examples and benchmarks, MPI jobs) are started first: with
`--dist worksteal` the other process then takes the short tests queued behind them, so the run
does not end with one process finishing a long test while the other core idles.

pytest's logging plugin is left out (`-p no:logging` in pyproject.toml): it attaches its handlers to
every logger around each test's setup, call and teardown, and PyTorch, once imported, has some 60
loggers (tests/nn and tests/ir: 1.5 of 30 CPU-s). Tests read lucid's compile log with `compile_log`."""
import logging
import os
import pathlib
import sys

import pytest

os.environ.setdefault("LUCID_CACHE_DIR", str(pathlib.Path(__file__).resolve().parent.parent / ".lucid-cache"))
os.environ.setdefault("LUCID_COMPILE_JOBS", "1")
os.environ.setdefault("LUCID_VERIFY_PASSES", "1")
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False


def pytest_collection_modifyitems(items):
    """Long-running tests first; the others keep their order (a stable sort)."""
    items.sort(key=lambda item: item.get_closest_marker("long_running") is None)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def compile_log() -> list:
    """The records (INFO and up) the "lucid.compile" logger emits during the test; clear the list to
    start again."""
    logger, handler = logging.getLogger("lucid.compile"), _Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)
