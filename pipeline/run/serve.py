"""Build-time services: an image that later builds reach while they build (AppHub serves the
Slurm packages slurm-master installs), run as a Dagger service on the engine.

A Dockerfile's RUN steps get no service aliases (docker_build takes no bindings), but they
share the engine's network: the service is started for the rest of the session and reached
by its address, which a container bound to it reads from its /etc/hosts.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import dagger
from dagger import dag

from pipeline.errors import PipelineError
from pipeline.planning.plan import ImagePlan
from pipeline.run.build import Built
from pipeline.run.engine import CPU_PROBE_IMAGE

# Passed, when declared, to a build for another platform than the service's: AppHub holds
# Slurm packages for its own architecture only, so build.sh lets slurm-master fall back to
# the distribution's packages there (build.sh 8433-8508).
FOREIGN_PLATFORM_ARGS = {"ALLOW_SYSTEM_SLURM": "true"}


@dataclass
class Served:
    """One variant of a build-time service. With `start`, it starts the first time a build
    asks its address: a release whose reaching builds are all reused starts none."""

    url: str | None
    platform: str  # of the variant that runs
    inputs: str | None = None  # that variant's input key
    start: Callable[[], Awaitable[str]] | None = field(default=None, repr=False)
    _starting: anyio.Lock | None = field(default=None, repr=False)

    async def address(self) -> str:
        self._starting = self._starting or anyio.Lock()
        async with self._starting:  # concurrent builds: one start
            if self.url is None:
                assert self.start is not None
                self.url = await self.start()
        return self.url


async def serve(image: ImagePlan, built: Built, client: dagger.Client = dag) -> Served:
    """Start the built image as it would run (`docker run`), answering on its port, on the
    engine that built it (`client`'s): only builds on that engine can reach it."""
    assert built.container is not None and image.serves is not None
    alias = image.name
    service = await (
        built.container.with_exposed_port(image.serves)
        .as_service(use_entrypoint=True)
        .with_hostname(alias)
        .start()
    )
    hosts = await (
        client.container()
        .from_(CPU_PROBE_IMAGE)
        .with_service_binding(alias, service)
        .with_env_variable("RUN", uuid.uuid4().hex)  # an address of this session, not cached
        .with_exec(["cat", "/etc/hosts"])
        .stdout()
    )
    url = f"http://{address_of(alias, hosts)}:{image.serves}"
    return Served(url, built.platform, built.inputs)


def address_of(alias: str, hosts: str) -> str:
    for line in hosts.splitlines():
        fields = line.split()
        if len(fields) > 1 and alias in fields[1:]:
            return fields[0]
    raise PipelineError(f"build-time service {alias}: no address in a bound container")
