"""Scale-out: each platform built on the engine PIPELINE_ENGINES names for it (a native arm64
host, an engine pod per node pool), every engine at once; platforms it does not name build on
the session's engine, so with it unset a run has one engine, as before.

An engine that cannot be reached, or stops answering mid-run (watched as the session's engine
is), fails only its platforms (one line naming it and them): the other engines' builds go on
and are reported, and no image is published without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import anyio
import dagger
from dagger import dag

from pipeline.events import Events
from pipeline.planning.plan import Plan
from pipeline.run import engine

DEFAULT = "default"  # the session's engine, as reports name it


@dataclass
class Engine:
    label: str  # its address, or DEFAULT
    platforms: tuple[str, ...]
    client: dagger.Client | None = None  # None: not reached (see error)
    log: engine.EngineLog = field(default_factory=engine.EngineLog)
    error: str | None = None
    watchdog: engine.Watchdog | None = None  # another engine than the session's
    abandon: Callable[[], None] = lambda: None  # end its session at once (it is gone)
    _working: set[anyio.CancelScope] = field(default_factory=set)

    @contextlib.contextmanager
    def guarded(self) -> Iterator[None]:
        """Work on this engine, cut short (EngineUnavailable, one line) if it goes away."""
        if self.error is None:
            with anyio.CancelScope() as scope:
                self._working.add(scope)
                try:
                    yield
                finally:
                    self._working.discard(scope)
            if not scope.cancelled_caught:
                return
        raise engine.EngineUnavailable(str(self.error))

    def lost(self) -> None:
        """Its watchdog's verdict: what runs on it ends, and nothing more starts there."""
        assert self.watchdog is not None
        self.error = (
            f"engine {self.label} for {', '.join(self.platforms)}: stopped answering "
            f"({self.watchdog.last_answered()})"
        )
        for scope in list(self._working):
            scope.cancel()
        self.abandon()

    async def confirm_gone(self) -> bool:
        """After a call on it failed: was it because it went away? (The session's engine:
        its own watchdog ends the run.)"""
        if self.watchdog is not None and self.error is None and not await self.watchdog.probe():
            self.lost()
        return self.error is not None


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
                    session = await stack.enter_async_context(engine.foreign(label))
                one = Engine(
                    label, platforms, session.client, session.log,
                    watchdog=engine.Watchdog(session.client, label), abandon=session.abandon,
                )  # fmt: skip
                await stack.enter_async_context(one.watchdog.watching(on_gone=one.lost))
                engines.append(one)
            except engine.EngineUnavailable as err:
                why = str(err).removeprefix(f"cannot reach the Dagger engine at {label}").strip()
                error = f"engine {label} for {', '.join(platforms)}: unreachable {why}".strip()
                engines.append(Engine(label, platforms, error=error))
        yield engines


def joined_log(session: engine.EngineLog, engines: list[Engine]) -> engine.EngineLog:
    """Every engine's progress in one text, for the failed steps' output (buildlog.py)."""
    texts = [session.text] + [e.log.text for e in engines if e.label != DEFAULT]
    return engine.EngineLog("\n".join(t for t in texts if t))
