"""Scale-out: each platform built on the engine PIPELINE_ENGINES names for it (a native arm64
host, an engine pod per node pool), every engine at once; platforms it does not name build on
the session's engine, so with it unset a run has one engine, as before.

An engine that cannot be reached fails only its platforms (one line naming it and them): the
other engines' builds go on and are reported, and no image is published without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import dagger
from dagger import dag

from pipeline import engine
from pipeline.events import Events
from pipeline.plan import Plan

DEFAULT = "default"  # the session's engine, as reports name it


@dataclass
class Engine:
    label: str  # its address, or DEFAULT
    platforms: tuple[str, ...]
    client: dagger.Client | None = None  # None: not reached (see error)
    log: engine.EngineLog = field(default_factory=engine.EngineLog)
    error: str | None = None


def assignment(plan: Plan) -> dict[str, tuple[str, ...]]:
    """Engine label -> the platforms it builds, in the plan's platform order."""
    grouped: dict[str, list[str]] = {}
    for platform in plan.platforms:
        grouped.setdefault(plan.engines.get(platform, DEFAULT), []).append(platform)
    return {label: tuple(platforms) for label, platforms in grouped.items()}


@contextlib.asynccontextmanager
async def fleet(plan: Plan, events: Events) -> AsyncIterator[list[Engine]]:
    """The run's engines, inside the session: the session's own, and one client per other
    engine, opened one after another (engine.foreign) and closed at the end."""
    engines = []
    async with contextlib.AsyncExitStack() as stack:
        for label, platforms in assignment(plan).items():
            if label == DEFAULT:
                engines.append(Engine(label, platforms, dag))
                continue
            try:
                with events.step(f"connecting to the engine at {label} for {', '.join(platforms)}"):
                    client, log = await stack.enter_async_context(engine.foreign(label))
                engines.append(Engine(label, platforms, client, log))
            except engine.EngineUnavailable as err:
                why = str(err).removeprefix(f"cannot reach the Dagger engine at {label}").strip()
                error = f"engine {label} for {', '.join(platforms)}: unreachable {why}".strip()
                engines.append(Engine(label, platforms, error=error))
        yield engines


def joined_log(session: engine.EngineLog, engines: list[Engine]) -> engine.EngineLog:
    """Every engine's progress in one text, for the failed steps' output (buildlog.py)."""
    texts = [session.text] + [e.log.text for e in engines if e.label != DEFAULT]
    return engine.EngineLog("\n".join(t for t in texts if t))
