"""SIGTERM stops a run as SIGINT does, so the cleanup of what it was writing runs (a killed
run's partial bundle would stay until a rerun to the same --output removed it), and the exit
code says which signal it was (128 + its number: 130, 143)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOPPED_BY: list[int] = []  # the signals that stopped this run, first first


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """For the CLI's process: SIGTERM does what SIGINT does at that moment (asyncio's runner
    cancels the run; outside it, KeyboardInterrupt)."""
    STOPPED_BY.clear()
    saved = signal.signal(signal.SIGTERM, _as_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)


def _as_sigint(signum: int, frame: FrameType | None) -> None:
    STOPPED_BY.append(signum)
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):  # SIGINT ignored (a background job): stop all the same
        raise KeyboardInterrupt
    handler(signal.SIGINT, frame)


@contextmanager
def at_once() -> Iterator[None]:
    """While code that never awaits writes files (a bundle), SIGINT and SIGTERM raise at once:
    in the event loop, asyncio would cancel the run only at its next await, once the writing
    is done (a bundle finished, then exit 130)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    saved = {s: h for s, h in saved.items() if h not in (None, signal.SIG_IGN)}
    for number in saved:
        signal.signal(number, _raise)
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


def _raise(signum: int, frame: FrameType | None) -> None:
    STOPPED_BY.append(signum)
    raise KeyboardInterrupt


def exit_code(code: object) -> object:
    """The exit code of a run typer ended with 130 (its KeyboardInterrupt): 128 + the signal."""
    return 128 + STOPPED_BY[0] if code == 130 and STOPPED_BY else code
