"""Everything that opens or asks the Dagger engine about itself: the session and platforms."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import dagger
from dagger import dag

from pipeline.errors import PipelineError


class EngineUnavailable(PipelineError):
    """No Dagger engine could be reached."""


@contextlib.asynccontextmanager
async def session() -> AsyncIterator[None]:
    """One engine session for the whole run (every build, publish and export shares it).

    The SDK finds the engine itself: an enclosing `dagger run`/`dagger call` session, else
    the CLI named by _EXPERIMENTAL_DAGGER_CLI_BIN (the lab sets it), else it downloads one.
    """
    try:
        async with dagger.connection(dagger.Config()):
            yield
    except dagger.ClientConnectionError as err:
        raise EngineUnavailable(f"cannot reach the Dagger engine: {err}") from None


async def native_platform() -> str:
    """The engine's own platform: where build stages marked $BUILDPLATFORM should run."""
    return str(await dag.default_platform())


def build_platform_args(native: str) -> dict[str, str]:
    """BUILDPLATFORM and its parts, set to the engine's platform.

    Dagger 0.18-0.21 set $BUILDPLATFORM to the *target* platform in docker_build, so
    `FROM --platform=$BUILDPLATFORM` stages would run under QEMU; passing them explicitly
    restores the native build stage (the fix upstream is dagger/dagger#13571).
    """
    os_name, arch, *variant = native.split("/")
    return {
        "BUILDPLATFORM": native,
        "BUILDOS": os_name,
        "BUILDARCH": arch,
        "BUILDVARIANT": variant[0] if variant else "",
    }
