"""A byte progress bar on stderr, no dependency: redrawn in place on a terminal, one line per
10 % elsewhere (CI logs)."""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO


class ByteProgress(Protocol):
    def start(self, total: int, label: str) -> None: ...

    def advance(self, n: int) -> None: ...

    def finish(self) -> None: ...


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class StderrBar:
    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total = 0
        self.done = 0
        self.label = ""
        self._drawn = 0.0
        self._decile = -1

    def start(self, total: int, label: str) -> None:
        self.total, self.done, self.label = max(total, 0), 0, label
        self._draw(force=True)

    def advance(self, n: int) -> None:
        self.done = min(max(self.done + n, 0), self.total)
        self._draw()

    def finish(self) -> None:
        self.done = self.total
        self._draw(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, force: bool = False) -> None:
        fraction = self.done / self.total if self.total else 1.0
        if self.tty:
            now = time.monotonic()
            if not force and now - self._drawn < 0.1:
                return
            self._drawn = now
            filled = int(fraction * self.width)
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(
                f"\r{self.label} [{bar}] {fraction:4.0%} {human(self.done)}/{human(self.total)}"
            )
        else:
            decile = int(fraction * 10)
            if decile == self._decile:
                return
            self._decile = decile
            self.stream.write(f"{self.label}: {decile * 10}% of {human(self.total)}\n")
        self.stream.flush()
