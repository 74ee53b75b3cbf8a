"""The output of a failed Dockerfile step, read from the engine's plain progress log.

Dagger's `docker_build` error carries only BuildKit's one-line message (`process "..." did not
complete successfully: exit code: 1`), not what the step printed; the step's output reaches
the client only as progress on the CLI's stderr (engine.session(log=...)). That "plain"
format (dagql/idtui/frontend_plain.go, v0.18) is, after colours are removed, one line each:

    <span> : <"┆ " x depth><step, call or call argument>
    <span> : <"┆ " x depth>[1.1s] | <a line the step printed>
    <span> : <"┆ " x depth>! <why the span failed>

where a span's parent is the nearest shallower span printed above it (the frontend prints a
span's ancestors again whenever it switches between concurrent spans). It is not an API:
anything unexpected yields no tail, and the report keeps BuildKit's message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_LINE = re.compile(r"^(\d+)\s*: ((?:┆ )*)(.*)$")
_LOG = re.compile(r"^(?:\[[^\]]*\] )?\| ?(.*)$")
_ARG = re.compile(r'\b(dockerfile|platform|target): "([^"]*)"')


@dataclass
class _Span:
    parent: str | None = None
    text: list[str] = field(default_factory=list)  # the step or call, with its arguments
    logs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def build_args(self) -> dict[str, str]:
        if not any("dockerBuild" in line for line in self.text):
            return {}
        return dict(_ARG.findall("\n".join(self.text)))


def parse(log: str) -> dict[str, _Span]:
    spans: dict[str, _Span] = {}
    stack: list[str] = []  # span ids by depth, as last printed
    for raw in log.splitlines():
        match = _LINE.match(_ANSI.sub("", raw))
        if not match:
            continue
        span_id, indent, text = match.group(1), match.group(2), match.group(3)
        depth = len(indent) // 2
        stack = stack[:depth] + [span_id]
        span = spans.setdefault(span_id, _Span())
        if span.parent is None:
            # An argument line of a multi-line call sits one level below its own span.
            span.parent = next((s for s in reversed(stack[:depth]) if s != span_id), None)
        if text.startswith("! "):
            span.errors.append(text[2:])
        elif log_line := _LOG.match(text):
            span.logs.append(log_line.group(1))
        else:
            span.text.append(text)
    return spans


def _build_of(spans: dict[str, _Span], span_id: str) -> dict[str, str]:
    seen = set()
    current: str | None = span_id
    while current is not None and current not in seen:
        seen.add(current)
        args = spans[current].build_args()
        if args:
            return args
        current = spans[current].parent
    return {}


def failed_step_output(
    log: str, dockerfile: str, platform: str, target: str | None, lines: int = 25
) -> list[str]:
    """The last `lines` lines printed by the failed step of that build, or [] if not found.

    A stage shared by two targets (backend, backend-init) runs once, under whichever build
    asked first, so a step under another target of the same Dockerfile and platform counts.
    """
    spans = parse(log)
    exact: list[str] = []
    shared: list[str] = []
    for span_id, span in spans.items():
        if not span.errors or not span.logs:
            continue
        args = _build_of(spans, span_id)
        if args.get("dockerfile") != dockerfile or args.get("platform") != platform:
            continue
        (exact if args.get("target") == target else shared).append(span_id)
    chosen = (exact or shared)[-1:] if (exact or shared) else []
    return [line for span_id in chosen for line in spans[span_id].logs][-lines:]
