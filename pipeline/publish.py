"""Publish one OCI image index per image, then read it back from the registry and check it.

Only an image whose every platform built is published: the index is made by the engine
from the platform variants in one push, so a tag never points at a partial set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import anyio
import dagger
from dagger import dag

from pipeline.build import Built
from pipeline.bundle import oci
from pipeline.bundle.registry import RegistryClient
from pipeline.errors import PipelineError
from pipeline.plan import ImagePlan


@dataclass(frozen=True)
class RegistryAccess:
    """How to reach the release registry. The password stays a Dagger secret for the engine;
    its plaintext is read only to hand to the read-back client, and never printed."""

    username: str | None = None
    password: dagger.Secret | None = None
    ca_cert: Path | None = None  # for the read-back; the engine has its own trust config
    plain_http: bool = False


@dataclass
class Published:
    image: ImagePlan
    digest: str | None = None  # the index digest
    platforms: dict[str, oci.PlatformManifest] = field(default_factory=dict)
    error: str | None = None


def registry_host(ref: str) -> str:
    first = ref.split("/", 1)[0]
    looks_like_host = "/" in ref and ("." in first or ":" in first or first == "localhost")
    return first if looks_like_host else "docker.io"


async def publish_image(
    image: ImagePlan, builds: list[Built], access: RegistryAccess, per_arch_tags: bool
) -> Published:
    """Push the index (and per-arch tags when asked), then check what the registry holds."""
    base = dag.container()
    if access.username and access.password:
        base = base.with_registry_auth(registry_host(image.ref), access.username, access.password)
    variants = [b.container for b in builds if b.container is not None]
    try:
        address = await base.publish(image.ref, platform_variants=variants)
        if per_arch_tags:
            for built in builds:
                arch = built.platform.split("/", 1)[1].replace("/", "")
                await base.publish(f"{image.ref}-{arch}", platform_variants=[built.container])
    except dagger.QueryError as err:
        return Published(image, error=f"push to {registry_host(image.ref)} failed: {err}")
    digest = address.rsplit("@", 1)[1]
    password = await access.password.plaintext() if access.password else None
    try:
        graph = await anyio.to_thread.run_sync(read_back, image.ref, digest, access, password)
    except PipelineError as err:
        return Published(image, digest=digest, error=f"read-back failed: {err}")
    expected = {b.platform for b in builds}
    missing = sorted(expected - set(graph.platforms))
    error = f"registry index lacks {', '.join(missing)}" if missing else None
    return Published(image, digest=digest, platforms=graph.platforms, error=error)


def read_back(
    ref: str, digest: str, access: RegistryAccess, password: str | None
) -> oci.ImageGraph:
    """Fetch the tag's index through the registry API and walk it to every platform manifest."""
    reference = oci.parse_reference(ref)
    host = registry_host(ref)
    repository = reference.repository.removeprefix(f"{host}/")
    with RegistryClient(
        host,
        username=access.username,
        password=password,
        ca_cert=access.ca_cert,
        insecure_http=access.plain_http,
    ) as client:
        body, media_type = client.get_manifest(repository, reference.tag)
        got = oci.digest_bytes(body)
        if got != digest:
            raise PipelineError(f"{ref} is {got} in the registry, not the pushed {digest}")
        top = oci.Descriptor(media_type=media_type, digest=got, size=len(body))
        return oci.walk_image(top, lambda d: client.get_manifest(repository, d)[0], ref)
