"""Everything that opens or asks the Dagger engine about itself: the session and platforms."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator, Mapping
from typing import TextIO
from urllib.parse import urlsplit

import dagger
from dagger import dag

from pipeline.errors import PipelineError


class EngineUnavailable(PipelineError):
    """No Dagger engine could be reached."""


@contextlib.asynccontextmanager
async def session(log: TextIO | None = None) -> AsyncIterator[None]:
    """One engine session for the whole run (every build, publish and export shares it).

    The SDK finds the engine itself: an enclosing `dagger run`/`dagger call` session, else
    the CLI named by _EXPERIMENTAL_DAGGER_CLI_BIN (the lab sets it), else it downloads one.
    `log` (a real file: it becomes the CLI's stderr) receives the engine's plain progress,
    the only place the output of a failed Dockerfile step is found (see buildlog.py).
    """
    check_runner_host(os.environ)
    try:
        async with dagger.connection(dagger.Config(log_output=log)):
            yield
    except dagger.ClientConnectionError as err:
        raise EngineUnavailable(f"cannot reach the Dagger engine: {err}") from None


RUNNER_HOST = "_EXPERIMENTAL_DAGGER_RUNNER_HOST"
CONNECT_SECONDS = 5.0


def check_runner_host(env: Mapping[str, str]) -> None:
    """Fail fast when the configured engine socket does not answer: the 0.18 CLI retries the
    connection for ever, and the SDK waits on it with no timeout (a silent hang)."""
    host = env.get(RUNNER_HOST, "")
    if env.get("DAGGER_SESSION_PORT") or not host.startswith(("unix://", "tcp://")):
        return  # inside `dagger run`/`dagger call`, or a runner only the CLI can reach
    url = urlsplit(host)
    try:
        if url.scheme == "unix":
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(CONNECT_SECONDS)
                sock.connect(url.path)
        elif url.port:
            socket.create_connection((url.hostname, url.port), CONNECT_SECONDS).close()
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise EngineUnavailable(f"cannot reach the Dagger engine at {host} ({reason})") from None


async def native_platform() -> str:
    """The engine's own platform: where build stages marked $BUILDPLATFORM should run."""
    return str(await dag.default_platform())


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
