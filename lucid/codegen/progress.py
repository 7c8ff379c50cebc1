"""The progress line of a long compile, on stderr.

`lucid.compile` wraps each variant it builds in `showing(title)`; the object-code step
(`jit.Compilation`) reports each module it finds in the cache, finds missing, and compiles
(`count("loaded" | "missing" | "compiled")`). A compile that lasts longer than `LUCID_PROGRESS_AFTER` seconds
(default 1) shows one line: updated in place while it runs when stderr is a terminal, else printed
once when it ends. `LUCID_QUIET=1` silences it. Outside `showing`, the reports do nothing.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager

#: Seconds between two redraws of the line on a terminal.
REDRAW_EVERY = 0.1


class Progress:
    """The counts of one compile and its line."""

    def __init__(self, title: str, stream=None):
        self.title, self.stream = title, stream or sys.stderr
        self.started = time.perf_counter()
        self.after = float(os.environ.get("LUCID_PROGRESS_AFTER", "1"))
        self.live = _is_terminal(self.stream)
        self.missing = self.compiled = self.loaded = 0
        self._drawn = 0.0
        self._lock = threading.Lock()

    def count(self, field: str) -> None:
        with self._lock:
            setattr(self, field, getattr(self, field) + 1)
            now = time.perf_counter()
            if self.live and now - self.started > self.after and now - self._drawn > REDRAW_EVERY:
                self._drawn = now
                self._write("\r" + self.line(now) + "\033[K")

    def line(self, now: float) -> str:
        cached = f", {self.loaded} from the disk cache" if self.loaded else ""
        return (f"lucid: compiling {self.title}: {self.compiled}/{self.missing} LLVM modules compiled{cached} "
                f"({now - self.started:.1f} s)")

    def finish(self) -> None:
        now = time.perf_counter()
        if self._drawn or now - self.started > self.after:
            self._write(("\r" if self._drawn else "") + self.line(now) + ("\033[K" if self._drawn else "") + "\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass


_CURRENT = threading.local()


@contextmanager
def showing(title: str):
    """Report the compile run inside this block as `title` (nested blocks report to the outer one)."""
    if getattr(_CURRENT, "progress", None) is not None or os.environ.get("LUCID_QUIET") == "1":
        yield
        return
    _CURRENT.progress = Progress(title)
    try:
        yield
    finally:
        progress, _CURRENT.progress = _CURRENT.progress, None
        progress.finish()


def current() -> Progress | None:
    """The progress of the compile this thread runs, if it is shown."""
    return getattr(_CURRENT, "progress", None)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
