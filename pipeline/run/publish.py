"""Publish one OCI image index per image, then read it back from the registry and check it.

Only an image whose every platform built is published: the index is made by the engine
from the platform variants in one push, so a tag never points at a partial set.

A push is tried again, with backoff, only when the registry may recover (refused or reset
connection, 5xx, no answer in time); BuildKit's own long error texts become one short line
naming the registry, and a refused login is never retried.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace

import anyio
import dagger
import httpx
from dagger import dag

from pipeline.errors import BadInput, PipelineError, PublishFailed
from pipeline.oci import layout, sbom, sign
from pipeline.oci.access import wrong_protocol
from pipeline.oci.errors import Refused, UntrustedCertificate, WrongProtocol, refusal
from pipeline.oci.reference import Reference
from pipeline.oci.retry import GaveUp, Transient, retry_async
from pipeline.planning.plan import ImagePlan, Plan, arch_tagged
from pipeline.run.access import RegistryAccess
from pipeline.run.build import Built
from pipeline.run.engine import EngineUnavailable

# Asking about push rights may not hold up a release: a registry that is slow to answer now
# is the push's business (its own retries and timeout).
RIGHTS_CHECK_SECONDS = 5.0

# BuildKit's texts for failures worth another try: it has retried a few itself by then. A 400
# too: two runs pushing the same blobs into one repository at once (two `dagger call release`
# in one project) race, and the registry answers 400 (a manifest naming a blob the other
# upload has not committed) until the other push lands; a real 400 costs 3 s more.
_TRANSIENT = re.compile(
    r"connection refused|connection reset|broken pipe|i/o timeout|deadline exceeded|"
    r"\bEOF\b|TLS handshake timeout|no route to host|: (5\d\d|429|400) [A-Z]"
)
# What a manifest pushed by digest is named with before it exists: BuildKit's push replaces
# the digest with the real one and PUTs the manifest under it alone, no tag (checked at 0.18.10).
UNKNOWN_DIGEST = "sha256:" + "0" * 64
_STATUS = re.compile(r": ([1-5]\d\d) ([A-Z][A-Za-z' ]*)")


@dataclass
class Published:
    image: ImagePlan
    digest: str | None = None  # the index digest
    # Every platform the registry's index holds; its manifest when read through the API.
    platforms: dict[str, layout.PlatformManifest | None] = field(default_factory=dict)
    error: str | None = None
    signature: str | None = None  # the digest of its signature manifest, when signed
    sboms: dict[str, tuple[str, str]] = field(default_factory=dict)  # platform → (digest, how)


async def publish_image(
    image: ImagePlan, builds: list[Built], access: RegistryAccess, per_arch_tags: bool
) -> Published:
    """Push the index (and per-arch tags when asked), then check what the registry holds.
    With a platform reused, its manifest is in the registry already: the index is written
    by the API around it (as for several engines)."""
    if any(b.reused for b in builds):
        return await publish_stitched(image, builds, lambda _: access, per_arch_tags)
    reference = image.reference
    base = authed(dag.container(), reference, access)
    variants = [b.container for b in builds if b.container is not None]
    try:
        address = await push(base, reference, variants, access)
        if per_arch_tags:
            for built in builds:
                per_arch = reference.with_tag(arch_tagged(reference.tag, built.platform))
                await push(base, per_arch, [built.container], access)
    except PublishFailed as err:
        return Published(image, error=str(err))
    return await checked(image, address.rsplit("@", 1)[1], builds, access)


async def publish_stitched(
    image: ImagePlan,
    builds: list[Built],
    access_of: Callable[[Built], RegistryAccess],
    per_arch_tags: bool,
    guard_of: Callable[[Built], AbstractContextManager[None]] = lambda _: nullcontext(),
) -> Published:
    """Several engines (fleet.py): each pushes its platform's manifest by digest, with no
    tag; the index that joins them is written here, pushed under the tag and read back."""
    reference = image.reference
    by_digest = Reference(reference.registry, reference.path, None, UNKNOWN_DIGEST)
    manifests: dict[str, str] = {}
    errors: list[str] = []

    async def push_one(built: Built) -> None:
        if built.reused:  # in the repository already: nothing to push
            manifests[built.platform] = built.reused.digest
            return
        access = access_of(built)
        base = authed(built.container, reference, access)
        try:
            with guard_of(built):  # its engine gone: one line, not the push's own wait
                address = await push(base, by_digest, [], access)
        except (PublishFailed, EngineUnavailable) as err:
            errors.append(str(err))
            return
        except dagger.DaggerError as err:  # its engine's session broke (the engine died)
            errors.append(f"{built.platform}: {' '.join(str(err).split())[:300]}")
            return
        manifests[built.platform] = address.rsplit("@", 1)[1]

    async with anyio.create_task_group() as group:
        for built in builds:
            group.start_soon(push_one, built)
    if errors:
        return Published(image, error=errors[0])
    access = access_of(builds[0])
    ordered = {b.platform: manifests[b.platform] for b in builds}
    try:
        digest = await anyio.to_thread.run_sync(
            put_index, image.reference, ordered, access, per_arch_tags
        )
    except PipelineError as err:
        return Published(image, error=f"index not written: {err}")
    return await checked(image, digest, builds, access)


def put_index(
    reference: Reference, manifests: Mapping[str, str], access: RegistryAccess, per_arch_tags: bool
) -> str:
    """Write the index of the platform manifests (platform -> digest) under the tag; of one
    platform, its manifest itself, as the engine publishes one variant."""
    descriptors = []
    with access.client(reference.registry) as client:
        for platform, digest in manifests.items():
            body, media_type = client.get_manifest(reference.path, digest)
            descriptors.append(layout.Descriptor(media_type, digest, len(body), platform))
            if per_arch_tags:
                tag = arch_tagged(reference.tag, platform)
                client.put_manifest(reference.path, tag, media_type, body)
        if len(descriptors) == 1:
            return client.put_manifest(reference.path, reference.tag, media_type, body)
        index = layout.image_index(descriptors)
        return client.put_manifest(reference.path, reference.tag, layout.OCI_INDEX, index)


async def checked(
    image: ImagePlan, digest: str, builds: list[Built], access: RegistryAccess
) -> Published:
    """Read the pushed index back: every built platform must be there; then sign it."""
    try:
        if access.through_engine:
            platforms = await read_back_through_engine(image.reference, digest, builds, access)
        else:
            graph = await anyio.to_thread.run_sync(read_back, image.reference, digest, access)
            platforms = dict(graph.platforms)
    except PipelineError as err:
        return Published(image, digest=digest, error=f"read-back failed: {err}")
    expected = {b.platform for b in builds}
    missing = sorted(expected - set(platforms))
    if missing:
        error = f"registry index lacks {', '.join(missing)}"
        return Published(image, digest=digest, platforms=platforms, error=error)
    published = Published(image, digest=digest, platforms=platforms)
    if access.sign_key is not None:
        try:
            published.signature = await anyio.to_thread.run_sync(
                sign_index, image.reference, digest, access
            )
        except PipelineError as err:
            published.error = f"published, but its signature was not: {err}"
    if access.sboms and not published.error:
        try:
            published.sboms = await anyio.to_thread.run_sync(
                attach_sboms, image.reference, platforms, access
            )
        except PipelineError as err:
            published.error = f"published, but its SBOMs were not: {err}"
    return published


def attach_sboms(
    reference: Reference,
    platforms: dict[str, layout.PlatformManifest | None],
    access: RegistryAccess,
) -> dict[str, tuple[str, str]]:
    """An SBOM of each platform manifest, read by syft from the registry, attached to it (and
    signed, with a key)."""
    login = sbom.RegistryLogin(reference.registry, access.username, access.password,
                               access.ca_cert, access.plain_http)  # fmt: skip
    manifests = {p: m.descriptor for p, m in platforms.items() if m is not None}
    with access.client(reference.registry) as client:
        attached = sbom.attach_published(client, login, reference.path, str(reference), manifests)
        for digest, _how in attached.values() if access.sign_key else []:
            sign.push_signature(client, reference.path, reference.repository, digest,
                                access.sign_key)  # fmt: skip
    return attached


def sign_index(reference: Reference, digest: str, access: RegistryAccess) -> str:
    """Push the signatures of the index `digest` and of each platform manifest beside them
    (`sha256-<hex>.sig` tags); the index's signature digest."""
    assert access.sign_key is not None
    with access.client(reference.registry) as client:
        signed = sign.push_signatures(
            client, reference.path, reference.repository, digest, access.sign_key
        )
    return signed[digest]


async def push(
    base: dagger.Container,
    reference: Reference,
    variants: list[dagger.Container],
    access: RegistryAccess,
) -> str:
    """Publish with bounded retries; the address (ref@digest) or PublishFailed, one line."""
    host = reference.registry

    async def attempt() -> str:
        try:
            with anyio.fail_after(access.timeout):
                return await base.publish(str(reference), platform_variants=variants)
        except TimeoutError:
            raise Transient(f"no answer within {access.timeout:g}s") from None
        except dagger.QueryError as err:
            text = " ".join(str(err).split())
            line = push_error(host, text, access.username)
            if not _TRANSIENT.search(text):
                raise PublishFailed(line) from None
            raise Transient(line.removeprefix(f"registry {host}: ")) from None

    try:
        return await retry_async(attempt, tries=access.tries, backoff=access.backoff)
    except GaveUp as err:
        raise PublishFailed(
            f"registry {host}: {err.last} (gave up after {err.tries} tries)"
        ) from None


def push_error(host: str, text: str, username: str | None) -> str:
    """BuildKit's error (`failed to push ...: unexpected status from HEAD request to <url>:
    401 Unauthorized`) as one short line that names the registry and never a URL."""
    statuses = _STATUS.findall(text)
    if statuses:
        code, reason = statuses[-1]
        return refusal(host, int(code), username, detail=f" {reason.strip()}")
    for words in ("connection refused", "connection reset", "i/o timeout", "no such host"):
        if words in text:
            return f"registry {host}: {words}"
    return f"registry {host}: {text.removeprefix('failed to export: ')[-300:]}"


def read_back(reference: Reference, digest: str, access: RegistryAccess) -> layout.ImageGraph:
    """Fetch the tag's index through the registry API and walk it to every platform manifest."""
    with access.client(reference.registry) as client:
        body, media_type = client.get_manifest(reference.path, reference.tag)
        got = layout.digest_bytes(body)
        if got != digest:
            raise PipelineError(f"{reference} is {got} in the registry, not the pushed {digest}")
        top = layout.Descriptor(media_type=media_type, digest=got, size=len(body))
        kinds: dict[str, str | None] = {}

        def seen(desc: layout.Descriptor, kind: str | None, _platform: str | None) -> bool:
            kinds[desc.digest] = kind
            return True

        def read(digest: str) -> bytes:
            # A one-platform image is a manifest whose platform its config says: a blob.
            if kinds.get(digest) == "config":
                return client.get_blob(reference.path, digest)
            return client.get_manifest(reference.path, digest)[0]

        return layout.walk_image(top, read, str(reference), accept=seen)


def reachable_from_here(plan: Plan, access: RegistryAccess) -> RegistryAccess:
    """The access for a run whose code may not reach the registry the engine pushes to (the
    Dagger door's container): the registry API when it answers here, else the engine's
    read-back, with the reason. Signing needs the API, so it cannot fall back."""
    if not plan.components:
        return access
    host = plan.components[0].reference.registry
    timeout = httpx.Timeout(RIGHTS_CHECK_SECONDS)
    with access.client(host, tries=1, timeout=timeout) as client:
        try:
            client.ping()
            return access
        except UntrustedCertificate as err:
            raise BadInput(f"{err}: give its CA certificate (--ca-cert)") from None
        except WrongProtocol as err:
            raise wrong_protocol(err) from None
        except Refused:
            return access  # it answered: the rights check and the push say the rest
        except PipelineError as err:
            reason = f"{host} does not answer from the module's container ({err})"
    if access.sign_key is not None:
        raise BadInput(f"--sign-key: signing needs the registry's API, and {reason}")
    if access.sboms:
        raise BadInput(f"--sbom: attaching SBOMs needs the registry's API, and {reason}")
    return replace(access, through_engine=reason)


def check_push_rights(plan: Plan, access: RegistryAccess) -> None:
    """Before any build, what the registry says for sure: it speaks the other protocol, the
    login is refused, or its token (Harbor's) does not grant push on the release's project.
    Anything less certain (no answer, Basic auth) is left to the push itself; and through
    the engine, this code may not reach the registry at all."""
    if access.through_engine or not plan.components:
        return
    reference = plan.components[0].reference
    project = reference.path.rsplit("/", 1)[0] if "/" in reference.path else reference.path
    timeout = httpx.Timeout(RIGHTS_CHECK_SECONDS)
    with access.client(reference.registry, tries=1, timeout=timeout) as client:
        try:
            may = client.may_push(reference.path)
        except WrongProtocol as err:
            raise wrong_protocol(err) from None
        except Refused as err:
            raise BadInput(str(err)) from None
        except PipelineError:
            return
    if may is False:
        who = f"user {access.username!r}" if access.username else "anonymous access"
        raise BadInput(
            f"registry {reference.registry}: {who} may not push to project {project} "
            "(its token grants no push); give the account push rights on the project"
        )


def authed(
    container: dagger.Container, reference: Reference, access: RegistryAccess
) -> dagger.Container:
    if access.username and access.secret:
        return container.with_registry_auth(reference.registry, access.username, access.secret)
    return container


async def read_back_through_engine(
    reference: Reference, digest: str, builds: list[Built], access: RegistryAccess
) -> dict[str, None]:
    """Resolve the tag once per platform as the engine pulls it: the registry must name the
    pushed index and serve each platform from it. Gives no manifest details (no API for it)."""
    found: dict[str, None] = {}
    errors: list[str] = []

    async def resolve(platform: str) -> None:
        pulled = authed(dag.container(platform=dagger.Platform(platform)), reference, access)
        pulled = pulled.from_(str(reference))
        try:
            address, got = await pulled.image_ref(), str(await pulled.platform())
        except dagger.QueryError as err:
            if "no match for platform" not in str(err):  # else: the index lacks it
                errors.append(push_error(reference.registry, " ".join(str(err).split()), None))
            return
        if not address.endswith(f"@{digest}"):
            got_digest = address.rsplit("@", 1)[-1]
            errors.append(f"{reference} is {got_digest} in the registry, not {digest}")
        elif got == platform:
            found[platform] = None

    async with anyio.create_task_group() as group:
        for built in builds:
            group.start_soon(resolve, built.platform)
    if errors:
        raise PipelineError(errors[0])
    return found
