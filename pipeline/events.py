"""What a run tells people while it works: notes, and steps with their timings.

The core reports through one `Events`; each door plugs in a printer. The core never prints.
The CLI door, in a terminal, plugs in `LiveEvents` instead: the same lines, with what is under
way redrawn in place below them (`terminal_events` chooses).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

Printer = Callable[[str], None]


def stamped(line: str, clock: bool) -> str:
    return time.strftime("%H:%M:%S ") + line if clock else line


def printer(stream: TextIO | None = None, clock: bool = False) -> Printer:
    """One line per event; `clock` prefixes the time (the CLI's log has no other clock,
    `dagger call` adds its own)."""

    def write(line: str) -> None:
        print(stamped(line, clock), file=stream or sys.stderr, flush=True)

    return write


class Events:
    def __init__(self, write: Printer = lambda _line: None) -> None:
        self.write = write

    def note(self, message: str) -> None:
        self.write(message)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """`name`, then `name: done (1.2s)` or `name: FAILED (1.2s)` when the body raises."""
        self.started(name)
        started = time.monotonic()
        try:
            yield
        except BaseException:
            self.ended(name, f"{name}: FAILED ({time.monotonic() - started:.1f}s)")
            raise
        self.ended(name, f"{name}: done ({time.monotonic() - started:.1f}s)")

    def started(self, name: str) -> None:
        self.write(name)

    def ended(self, name: str, line: str) -> None:
        self.write(line)


# The core's lines that LiveEvents shows in place (run/build.py and run/orchestrate.py write them).
_BEGUN = re.compile(r"(?:building (?P<image>\S+) for (?P<platform>\S+)|publishing (?P<ref>\S+))$")
_BUILT = re.compile(
    r"\[(?P<done>\d+)/(?P<total>\d+)\] (?P<mark>ok|FAILED) (?P<image>\S+) (?P<platform>\S+) \("
)
_PUBLISHED = re.compile(r"(?:published|FAILED) (?P<ref>\S+)$")


class LiveEvents(Events):
    """For a terminal: every line as `printer(clock=True)` writes it, except that what is under
    way (builds, publishes, steps) is shown in place below them with its time so far, above a
    count of builds finished and failed."""

    def __init__(self, console: Console) -> None:
        super().__init__(self._print)
        self.console = console
        self.running: dict[str, float] = {}  # what is under way -> when it began
        self.finished = self.failed = self.total = 0
        self.live = Live(self, console=console, transient=True, refresh_per_second=4)

    def _print(self, line: str) -> None:
        self.console.print(stamped(line, True), markup=False, highlight=False, soft_wrap=True)

    def note(self, message: str) -> None:
        if begun := _BEGUN.match(message):
            self.started(begun["ref"] or f"{begun['image']} {begun['platform']}")
            return
        if built := _BUILT.match(message):
            self.running.pop(f"{built['image']} {built['platform']}", None)
            self.finished, self.total = int(built["done"]), int(built["total"])
            self.failed += built["mark"] == "FAILED"
        elif published := _PUBLISHED.match(message):
            self.running.pop(published["ref"], None)
        self._print(message)

    def started(self, name: str) -> None:
        self.running[name] = time.monotonic()

    def ended(self, name: str, line: str) -> None:
        self.running.pop(name, None)
        self._print(line)

    def __rich__(self) -> RenderableType:
        now = time.monotonic()
        under_way = Table.grid(padding=(0, 2))
        for name, began in self.running.items():
            under_way.add_row(Text(f"{now - began:5.0f}s", style="dim"), Text(name))
        count = f"builds: {self.finished}/{self.total or '?'} finished, {self.failed} failed"
        return Group(under_way, Text(count, style="bold red" if self.failed else "bold"))


@contextlib.contextmanager
def terminal_events(stream: TextIO) -> Iterator[Events]:
    """The CLI's Events: in a terminal, the live view; in CI or a pipe, one line per event,
    exactly as `printer(stream, clock=True)` writes them (CI sets CI; some give a tty)."""
    tty = stream.isatty() and os.environ.get("TERM") != "dumb" and not os.environ.get("CI")
    if not tty:
        yield Events(printer(stream, clock=True))
        return
    view = LiveEvents(Console(file=stream))
    with view.live:
        yield view
