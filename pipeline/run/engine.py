"""Everything that opens or asks the Dagger engine about itself: the session and platforms;
and what its writes to this host fail with."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import dagger
import psutil
from dagger import dag

from pipeline.errors import PipelineError
from pipeline.events import Events
from pipeline.planning.downloads import Download


class EngineUnavailable(PipelineError):
    """No Dagger engine could be reached."""


# A live engine answers a trivial query at once, even under load; a dead one fails it at
# once (the session answers 502) and a stalled one (SIGSTOP, a cut tcp link) never does. So
# a run ends at most STALL_BOUND (50 s) after the engine's last answer, not at the CI's
# timeout; a run whose own call fails on a dead engine ends at once.
PROBE_EVERY = 10.0
PROBE_TIMEOUT = 15.0
DEAD_AFTER = 2
STALL_BOUND = DEAD_AFTER * (PROBE_EVERY + PROBE_TIMEOUT)


@dataclass
class EngineLog:
    """The engine's plain progress of one session, complete once the session has ended: what
    failed Dockerfile steps printed is found only there (buildlog.py)."""

    text: str = ""


# How a door puts the core in an engine session.
Connect = Callable[[], contextlib.AbstractAsyncContextManager[EngineLog]]


@dataclass(frozen=True)
class Checkout:
    """What a door hands the core, both reached from inside the session (a host directory
    can only be named once connected), through the client of the engine that reads it: the
    checkout, and the folder of each kept store the prepare step uses (the SSH key pair, a
    TLS folder: prepare.kept_folders), made there once and then kept; and where the first
    fetch of a download is pinned (the CLI: downloads.lock; a module cannot write it)."""

    directory: Callable[[dagger.Client], dagger.Directory]
    kept: Callable[[str, Events, dagger.Client], Awaitable[dagger.Directory]]
    pin: Callable[[list[tuple[Download, str]], Events], None]


# Where the tarballs go: a host folder (CLI), the function's result (`dagger call`).
Deliver = Callable[[dagger.Directory], Awaitable[None]]


# What the engine's write of a host folder fails with when the file system refuses it.
_REFUSED_WRITE = re.compile(
    r"no space left on device|read-only file system|permission denied|disk quota exceeded", re.I
)


@contextlib.contextmanager
def exporting_to(path: Path) -> Iterator[None]:
    """The engine writes under `path` on this host: a full or read-only file system is one
    line naming `path` (other errors, such as a pull at export time, are not this)."""
    try:
        yield
    except (dagger.QueryError, BaseExceptionGroup) as err:  # a group: several engines' writes
        reason = _refused_write(err)
        if reason is None:
            raise
        raise PipelineError(f"cannot write {path} ({reason})") from None


def _refused_write(err: BaseException) -> str | None:
    if isinstance(err, BaseExceptionGroup):
        return next(filter(None, map(_refused_write, err.exceptions)), None)
    found = _REFUSED_WRITE.search(str(err)) if isinstance(err, dagger.QueryError) else None
    return found[0].capitalize() if found else None


@contextlib.asynccontextmanager
async def session() -> AsyncIterator[EngineLog]:
    """One engine session for the whole run (every build, publish and export shares it),
    watched: when the engine stops answering, the run ends with EngineGone.

    The SDK finds the engine itself: an enclosing `dagger run` session, else the CLI named by
    _EXPERIMENTAL_DAGGER_CLI_BIN (the lab sets it), else it downloads one.
    """
    check_runner_host(os.environ)
    watch = Watchdog()
    log = EngineLog()
    # A real file: it becomes the CLI's stderr.
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as file:
        try:
            async with dagger.connection(dagger.Config(log_output=file)):
                try:
                    async with watch.watching():
                        yield log
                except Exception:
                    if not await watch.engine_gone():
                        raise
                if watch.gone:
                    # Its `dagger session` child would wait 300 s on the dead engine.
                    end_session_children()
        except dagger.ClientConnectionError as err:
            raise EngineUnavailable(f"cannot reach the Dagger engine: {err}") from None
        except dagger.DaggerError:
            if not watch.gone:
                raise
        finally:
            file.seek(0)
            log.text = file.read()
    if watch.gone:
        raise EngineGone(watch.message())


@dataclass
class Foreign:
    """A session with another engine than the run's own (PIPELINE_ENGINES)."""

    client: dagger.Client
    log: EngineLog
    children: list[psutil.Process]  # its `dagger session` process

    def abandon(self) -> None:
        """Its engine is gone: end its session now; it would wait 300 s on the dead engine."""
        for child in self.children:
            with contextlib.suppress(psutil.Error):
                child.kill()


@contextlib.asynccontextmanager
async def foreign(address: str) -> AsyncIterator[Foreign]:
    """A client of another engine than the session's, with its own log.

    The SDK's CLI reads the engine's address from its environment only, so the variable is
    set while that CLI starts; the run opens its engines one after another, before any build.
    """
    check_runner_host({RUNNER_HOST: address})
    log = EngineLog()
    before = {child.pid for child in psutil.Process().children()}
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as file:
        connection = dagger.Connection(dagger.Config(log_output=file))
        try:
            with _runner_host(address):
                client = await connection.__aenter__()
        except dagger.DaggerError as err:
            raise EngineUnavailable(f"cannot reach the Dagger engine at {address}: {err}") from None
        new = [child for child in psutil.Process().children() if child.pid not in before]
        session = Foreign(client, log, new)
        try:
            yield session
        finally:
            await _closed(connection, session)
            file.seek(0)
            log.text = file.read()


CLOSE_SECONDS = 30.0


async def _closed(connection: dagger.Connection, session: Foreign) -> None:
    """End the session; one whose engine died would wait 300 s on it: ended after 30 s."""

    async def deadline() -> None:
        await anyio.sleep(CLOSE_SECONDS)
        session.abandon()

    async with anyio.create_task_group() as group:
        group.start_soon(deadline)
        with contextlib.suppress(dagger.DaggerError, OSError, subprocess.SubprocessError):
            await connection.close()
        group.cancel_scope.cancel()


@contextlib.contextmanager
def _runner_host(address: str) -> Iterator[None]:
    saved = os.environ.get(RUNNER_HOST)
    os.environ[RUNNER_HOST] = address
    try:
        yield
    finally:
        if saved is None:
            del os.environ[RUNNER_HOST]
        else:
            os.environ[RUNNER_HOST] = saved


@contextlib.asynccontextmanager
async def joined() -> AsyncIterator[EngineLog]:
    """Inside `dagger call`: the module is already connected, and the CLI that runs it owns
    the progress (so no log to read failed steps from)."""
    yield EngineLog()


class EngineGone(EngineUnavailable):
    """The engine answered at first, then stopped answering mid-run."""


class Watchdog:
    """Probes an engine (the session's, or `client`'s at `address`) while a run goes on (see
    PROBE_EVERY)."""

    def __init__(self, client: dagger.Client = dag, address: str | None = None) -> None:
        self.client = client
        self.address = address
        self.last_answer = time.time()
        self.gone = False
        self.session_ended = False  # the SDK's `dagger session` child was gone by then

    async def probe(self) -> bool:
        try:
            with anyio.fail_after(PROBE_TIMEOUT):
                await self.client.version()
        except (TimeoutError, dagger.DaggerError):
            return False
        self.last_answer = time.time()
        return True

    @contextlib.asynccontextmanager
    async def watching(self, on_gone: Callable[[], None] | None = None) -> AsyncIterator[None]:
        """Probe while the body runs; when the engine is gone, cancel the body, or call
        `on_gone` and let the body go on (an engine that builds only some platforms)."""
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self.run, on_gone or group.cancel_scope.cancel)
                try:
                    yield
                finally:
                    group.cancel_scope.cancel()
        except BaseExceptionGroup as grouped:  # the body's own error, wrapped by the group
            if len(grouped.exceptions) == 1:
                raise grouped.exceptions[0] from None
            raise

    async def run(self, on_gone: Callable[[], None]) -> None:
        failures = 0
        while failures < DEAD_AFTER:
            await anyio.sleep(PROBE_EVERY)
            failures = 0 if await self.probe() else failures + 1
        self.lost()
        on_gone()

    async def engine_gone(self) -> bool:
        """After the run failed: was it because the engine went away?"""
        if not self.gone and not await self.probe():
            self.lost()
        return self.gone

    def lost(self) -> None:
        self.gone = True
        self.session_ended = self.address is None and not session_children()

    def message(self) -> str:
        host = self.address or os.environ.get(RUNNER_HOST) or "the configured engine"
        if self.session_ended and host.startswith(("unix://", "tcp://")) and not unanswered(host):
            return (
                f"the Dagger CLI's session process of this run ended ({self.last_answered()}); "
                f"the engine at {host} still answers: run again"
            )
        return f"the Dagger engine at {host} stopped answering ({self.last_answered()})"

    def last_answered(self) -> str:
        return f"last answer at {time.strftime('%H:%M:%S', time.localtime(self.last_answer))}"


def session_children() -> list[psutil.Process]:
    """The `dagger session` processes this process started (the SDK's engine session)."""
    found = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if "session" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
    return found


def end_session_children() -> None:
    for child in session_children():
        with contextlib.suppress(psutil.Error):
            child.kill()


RUNNER_HOST = "_EXPERIMENTAL_DAGGER_RUNNER_HOST"
CONNECT_SECONDS = 5.0


def check_runner_host(env: Mapping[str, str]) -> None:
    """Fail fast when the configured engine socket does not answer: the 0.18 CLI retries the
    connection for ever, and the SDK waits on it with no timeout (a silent hang)."""
    host = env.get(RUNNER_HOST, "")
    if env.get("DAGGER_SESSION_PORT") or not host.startswith(("unix://", "tcp://")):
        return  # inside `dagger run`/`dagger call`, or a runner only the CLI can reach
    if reason := unanswered(host):
        raise EngineUnavailable(f"cannot reach the Dagger engine at {host} ({reason})")


def unanswered(host: str) -> str | None:
    """Why a unix:// or tcp:// engine address takes no connection (None: it does)."""
    url = urlsplit(host)
    try:
        if url.scheme == "unix":
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(CONNECT_SECONDS)
                sock.connect(url.path)
        elif url.port:
            socket.create_connection((url.hostname, url.port), CONNECT_SECONDS).close()
    except (OSError, ValueError) as err:
        return getattr(err, "strerror", None) or str(err)
    return None


async def native_platform(client: dagger.Client = dag) -> str:
    """The engine's own platform: where build stages marked $BUILDPLATFORM should run."""
    return str(await client.default_platform())


def build_platform_args(native: str) -> dict[str, str]:
    """BUILDPLATFORM and its parts, set to the engine's platform.

    Dagger 0.21's docker_build sets $BUILDPLATFORM to the *target* platform, so
    `FROM --platform=$BUILDPLATFORM` stages would run under QEMU (fixed upstream by
    dagger/dagger#13571). Our pinned 0.18.10 does not (checked: without these args the arm64
    backend's build stage still runs on x86_64); passing them keeps that true on either.
    """
    os_name, arch, *variant = native.split("/")
    return {
        "BUILDPLATFORM": native,
        "BUILDOS": os_name,
        "BUILDARCH": arch,
        "BUILDVARIANT": variant[0] if variant else "",
    }


# A tiny image the engine can run `nproc` in; pulled once, then cached by the engine.
CPU_PROBE_IMAGE = "busybox:1.36"
FALLBACK_CONCURRENCY = 4


async def default_concurrency(events: Events, client: dagger.Client = dag) -> int:
    """Builds at once when PIPELINE_CONCURRENCY is unset: the engine's CPU count (not this
    host's: the engine may be remote), at least 2, since builds also wait on pulls."""
    try:
        found = await client.container().from_(CPU_PROBE_IMAGE).with_exec(["nproc"]).stdout()
        return max(2, int(found.strip()))
    except (dagger.DaggerError, ValueError) as err:
        reason = " ".join(str(err).split())[:200]
        events.note(f"could not count the engine's CPUs ({reason}): {FALLBACK_CONCURRENCY} at once")
        return FALLBACK_CONCURRENCY
