"""What a run tells people while it works: notes, and steps with their timings.

The core reports through one `Events`; each door plugs in a printer. The core never prints.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

Printer = Callable[[str], None]


def printer(stream: TextIO | None = None, clock: bool = False) -> Printer:
    """One line per event; `clock` prefixes the time (the CLI's log has no other clock,
    `dagger call` adds its own)."""

    def write(line: str) -> None:
        prefix = time.strftime("%H:%M:%S ") if clock else ""
        print(prefix + line, file=stream or sys.stderr, flush=True)

    return write


class Events:
    def __init__(self, write: Printer = lambda _line: None) -> None:
        self.write = write

    def note(self, message: str) -> None:
        self.write(message)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """`name`, then `name: done (1.2s)` or `name: FAILED (1.2s)` when the body raises."""
        self.write(name)
        started = time.monotonic()
        try:
            yield
        except BaseException:
            self.write(f"{name}: FAILED ({time.monotonic() - started:.1f}s)")
            raise
        self.write(f"{name}: done ({time.monotonic() - started:.1f}s)")
