"""Progress as the CLI shows it: off a terminal the same lines as ever, byte for byte; in a
terminal a live view of what is under way and how many builds finished or failed."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from pipeline import events as events_module
from pipeline.events import Events, LiveEvents, printer, terminal_events

# What build.py, release.py and export.py report, in order, for two builds and a step.
RUN = [
    "building ai-infra-a for linux/amd64",
    "building ai-infra-a for linux/arm64",
    "[1/2] ok ai-infra-a linux/amd64 (1.5s)",
    "[2/2] FAILED ai-infra-a linux/arm64 (2.0s)",
    "publishing h.example/p/ai-infra-a:v1",
    "FAILED h.example/p/ai-infra-a:v1",
]
PLAIN = """\
12:00:00 building ai-infra-a for linux/amd64
12:00:00 building ai-infra-a for linux/arm64
12:00:00 [1/2] ok ai-infra-a linux/amd64 (1.5s)
12:00:00 [2/2] FAILED ai-infra-a linux/arm64 (2.0s)
12:00:00 publishing h.example/p/ai-infra-a:v1
12:00:00 FAILED h.example/p/ai-infra-a:v1
12:00:00 writing the bundle
12:00:00 writing the bundle: done (0.0s)
"""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_module.time, "strftime", lambda f: f.replace("%H:%M:%S", "12:00:00"))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")


def report(events: Events) -> None:
    for line in RUN:
        events.note(line)
    with events.step("writing the bundle"):
        pass


@pytest.mark.parametrize("stream", [io.StringIO, Terminal], ids=["pipe", "terminal in CI"])
def test_off_a_terminal_the_lines_are_as_ever(stream, monkeypatch):
    if stream is Terminal:
        monkeypatch.setenv("CI", "true")
    out = stream()
    with terminal_events(out) as events:
        assert not isinstance(events, LiveEvents)
        report(events)
    assert out.getvalue() == PLAIN
    reference = io.StringIO()
    report(Events(printer(reference, clock=True)))
    assert reference.getvalue() == PLAIN


def shown(view: LiveEvents) -> str:
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(view)
    return console.file.getvalue()


def test_in_a_terminal_what_is_under_way_is_shown_in_place():
    out = Terminal()
    with terminal_events(out) as view:
        assert isinstance(view, LiveEvents)
        view.note(RUN[0])
        view.note(RUN[1])
        assert "ai-infra-a linux/amd64" in shown(view) and "ai-infra-a linux/arm64" in shown(view)
        assert "builds: 0/? finished, 0 failed" in shown(view)
        view.note(RUN[2])
        view.note(RUN[3])
        assert "builds: 2/2 finished, 1 failed" in shown(view)
        assert "linux/a" not in shown(view)
        view.note(RUN[4])
        assert "h.example/p/ai-infra-a:v1" in shown(view)
        view.note(RUN[5])
        with view.step("writing the bundle"):
            assert "writing the bundle" in shown(view)
        assert view.running == {}
    printed = out.getvalue()
    # Results stay as lines above the view; what began is shown in place only.
    for line in [RUN[2], RUN[3], RUN[5], "writing the bundle: done (0.0s)"]:
        assert f"12:00:00 {line}" in printed
    assert "building ai-infra-a" not in printed and "publishing" not in printed
