"""push: copy every image of a bundle, all platforms, into a registry such as Harbor, digests
unchanged: blobs first (skipping those the registry has, so a rerun after an interruption
uploads only what is missing), then each platform manifest by digest, then the index under
its tag. A delta first makes sure the registry has every blob it leaves to its base (in the
image's repository, or mounted from another of the project's), writing nothing if one is
missing: a manifest pushed over absent layers would name an image nobody can pull.

The registry client is ours (pipeline/oci/registry.py); docs/offline-bundles.md says why no library.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from pipeline.bundle.archive import open_bundle
from pipeline.bundle.create import inventory_signatures, signed_digests
from pipeline.bundle.delta import Base
from pipeline.bundle.progress import ByteProgress
from pipeline.bundle.sboms import inventory_sbom_signatures, inventory_sboms
from pipeline.bundle.verify import VerifyReport, first_few, short_ref, verify_layout
from pipeline.errors import BundleError
from pipeline.oci import layout, sbom, sign
from pipeline.oci.reference import RegistryTarget, parse_tagged
from pipeline.oci.registry import RegistryClient, RegistryLogin
from pipeline.planning.kit import KIT_DIR, rewritten


@dataclass(frozen=True)
class PushedImage:
    ref: str  # as in the bundle
    target: str  # host/project/name:tag
    digest: str
    platforms: list[str]
    # How its SBOMs reached the registry: "referrers" (its referrers API lists them) or
    # "tag-schema" (the OCI 1.1 fallback, an index under the tag sha256-<hex>); None: none.
    sboms: str | None = None


@dataclass
class PushReport:
    registry: str
    images: list[PushedImage] = field(default_factory=list)
    blobs_uploaded: int = 0
    blobs_skipped: int = 0  # the registry had them already
    blobs_mounted: int = 0  # the registry had them in another repository of this push
    bytes_uploaded: int = 0
    manifests_pushed: int = 0
    signatures_pushed: int = 0  # signature images, each under its image's sha256-<hex>.sig
    sboms_pushed: dict[str, int] = field(default_factory=dict)  # "referrers"|"tag-schema" → N
    kit: Path | None = None  # the deployment kit, written for this registry

    def summary(self) -> str:
        return (
            f"pushed {len(self.images)} images to {self.registry}: "
            f"{self.blobs_uploaded} blobs uploaded ({self.bytes_uploaded} bytes), "
            f"{self.blobs_skipped} already there, {self.blobs_mounted} mounted, "
            f"{self.manifests_pushed} manifests"
            + (f", {self.signatures_pushed} signatures" if self.signatures_pushed else "")
            + "".join(f", {n} SBOMs ({how})" for how, n in sorted(self.sboms_pushed.items()))
            + (f"; the deployment kit for it in {self.kit}" if self.kit else "")
        )


def push_bundle(
    path: Path,
    registry: str,
    login: RegistryLogin | None = None,
    progress: ByteProgress | None = None,
    *,
    tries: int = 4,
    backoff: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    transport: httpx.BaseTransport | None = None,
    kit_output: Path | None = None,
) -> PushReport:
    """Verify the bundle (refusing a corrupt one), then push it; its deployment kit, its
    references moved to this registry, is written at ``kit_output`` (default: beside the
    bundle, ``<name>.kit``). ``transport`` and ``sleep`` exist for tests."""
    target = RegistryTarget.parse(registry)
    login = login or RegistryLogin()
    with open_bundle(path) as root:
        verified = verify_layout(root, None, label=path)
        verified.raise_if_failed()
        images = _plan(root, target)
        client = RegistryClient(
            target.host,
            username=login.username,
            password=login.password,
            ca_cert=login.ca_cert,
            plain_http=login.plain_http,
            tries=tries,
            backoff=backoff,
            sleep=sleep,
            transport=transport,
        )
        with client:
            client.ping()
            report = PushReport(registry=str(target))
            if verified.base is not None:
                _bring_base_blobs(images, verified, client, target, report)
            report = _push(root, target, images, client, progress, report, verified.from_base)
        if (root / KIT_DIR).is_dir():
            report.kit = kit_output or default_kit_output(path)
            inventory = layout.loads((root / layout.INVENTORY_FILE).read_bytes(), "inventory")
            write_folder(report.kit, rewritten(root / KIT_DIR, inventory, str(target)))
        return report


def default_kit_output(bundle: Path) -> Path:
    name = bundle.name.removesuffix(".zst").removesuffix(".tar")
    return bundle.with_name(f"{name}.kit")


def write_folder(output: Path, files: dict[str, bytes]) -> None:
    """The folder whole or not at all: written aside, then put in place of an older one."""
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name, data in files.items():
        (partial / name).write_bytes(data)
    shutil.rmtree(output, ignore_errors=True)
    partial.rename(output)


@dataclass
class _Planned:
    ref: str
    repository: str
    tag: str
    graph: layout.ImageGraph
    # What is signed ("index" or a platform) → its signature image's manifest, if signed.
    signatures: dict[str, layout.Descriptor] = field(default_factory=dict)
    sboms: list[layout.Descriptor] = field(default_factory=list)  # its SBOM artifacts
    # SBOM artifact digest → its signature image's manifest, if signed.
    sbom_signatures: dict[str, layout.Descriptor] = field(default_factory=dict)


def _plan(root: Path, target: RegistryTarget) -> list[_Planned]:
    planned = []
    inventory = layout.loads((root / layout.INVENTORY_FILE).read_bytes(), layout.INVENTORY_FILE)
    signatures = inventory_signatures(inventory)  # verify checked their blobs
    sboms = inventory_sboms(inventory)  # and these, and their subjects
    sbom_signatures = inventory_sbom_signatures(inventory)
    for top in layout.read_index(root):
        ref = top.annotations[layout.ANNOTATION_REF_NAME]  # verify checked it is there
        try:
            parsed = parse_tagged(ref)
        except ValueError as exc:
            raise BundleError(f"bundle image {ref}: {exc}") from None
        graph = layout.walk_image(top, lambda d: layout.blob_path(root, d).read_bytes(), ref)
        repository = target.repository(parsed.name)
        artifacts = [d for d, _subject in sboms.get(ref, {}).values()]
        signed_sboms = {
            sboms[ref][platform][0].digest: d
            for platform, d in sbom_signatures.get(ref, {}).items()
            if platform in sboms.get(ref, {})
        }
        planned.append(
            _Planned(
                ref, repository, parsed.tag, graph, signatures.get(ref, {}), artifacts, signed_sboms
            )  # fmt: skip
        )
    return planned


def _bring_base_blobs(
    images: list[_Planned],
    verified: VerifyReport,
    client: RegistryClient,
    target: RegistryTarget,
    report: PushReport,
) -> None:
    """Make every blob a delta leaves to its base present in each repository that needs it,
    before anything else is written: look (HEAD) first, everywhere; only when all are found,
    mount those found in another repository of the project."""
    base = verified.base
    assert base is not None
    mounts: list[tuple[str, str, str]] = []  # repository, digest, repository to mount from
    missing: dict[str, list[str]] = {}  # digest → the images that need it
    for image in images:
        for desc in image.graph.ordered:
            if desc.digest not in verified.from_base:
                continue
            source = _find_blob(client, target, base, image.repository, desc.digest)
            if source is None:
                missing.setdefault(desc.digest, []).append(short_ref(image.ref))
            elif source == image.repository:
                report.blobs_skipped += 1
            else:
                mounts.append((image.repository, desc.digest, source))
    if missing:
        named = [f"{digest} ({', '.join(users)})" for digest, users in missing.items()]
        raise BundleError(
            f"{len(missing)} blobs this delta expects from its base {base.tag} are not in "
            f"{target}: {first_few(named, ', ')}; push the base there first (nothing was pushed)"
        )
    for repository, digest, source in mounts:
        if not client.mount_blob(repository, digest, source):
            raise BundleError(
                f"registry {target.host} would not mount {digest} from {source} into "
                f"{repository}, and this delta does not hold it"
            )
        report.blobs_mounted += 1


def _find_blob(
    client: RegistryClient, target: RegistryTarget, base: Base, repository: str, digest: str
) -> str | None:
    """A repository of the project that has ``digest``: ``repository`` itself, else one of the
    base images that held it."""
    held_by = [target.repository(name) for name in base.images.get(digest, [])]
    for candidate in dict.fromkeys([repository, *held_by]):
        if client.blob_exists(candidate, digest):
            return candidate
    return None


def _push(
    root: Path,
    target: RegistryTarget,
    images: list[_Planned],
    client: RegistryClient,
    progress: ByteProgress | None,
    report: PushReport,
    from_base: dict[str, int],
) -> PushReport:
    """Blobs, then manifests, image by image; ``from_base`` (a delta's) are in place already."""
    total = sum(d.size for i in images for d in i.graph.ordered if d.digest not in from_base)
    if progress:
        progress.start(total, f"push to {target}")
    advance = progress.advance if progress else (lambda n: None)
    present: dict[str, str] = {}  # digest → a repository of this registry that has it
    for image in images:
        repo = image.repository
        for desc in image.graph.ordered:
            if desc.is_index or desc.is_manifest or desc.digest in from_base:
                continue
            if client.blob_exists(repo, desc.digest):
                report.blobs_skipped += 1
                advance(desc.size)
            else:
                blob = layout.blob_path(root, desc.digest)
                mount_from = present.get(desc.digest)
                uploaded = client.upload_blob(
                    repo,
                    desc.digest,
                    desc.size,
                    lambda b=blob: b.open("rb"),
                    advance,
                    mount_from=mount_from if mount_from != repo else None,
                )
                if uploaded:
                    report.blobs_uploaded += 1
                    report.bytes_uploaded += desc.size
                else:
                    report.blobs_mounted += 1
                    advance(desc.size)
            present.setdefault(desc.digest, repo)
        _push_manifests(root, image, client, report, advance)
        signed = signed_digests(image.graph)
        for what, signature in image.signatures.items():
            if what in signed:  # verify checked each one the image needs
                _push_signature(root, image, signed[what], signature, client)
                report.signatures_pushed += 1
        how = None
        for artifact in image.sboms:  # after its subject, which the referrers name
            how = sbom.put_sbom(
                client,
                image.repository,
                layout.blob_path(root, artifact.digest).read_bytes(),
                lambda digest: layout.blob_path(root, digest).read_bytes(),
            )
            report.sboms_pushed[how] = report.sboms_pushed.get(how, 0) + 1
            if artifact.digest in image.sbom_signatures:
                signature = image.sbom_signatures[artifact.digest]
                _push_signature(root, image, artifact.digest, signature, client)
                report.signatures_pushed += 1
        report.images.append(
            PushedImage(
                ref=image.ref,
                target=f"{target.host}/{repo}:{image.tag}",
                digest=image.graph.top.digest,
                platforms=sorted(image.graph.platforms),
                sboms=how,
            )
        )
    if progress:
        progress.finish()
    return report


def _push_signature(
    root: Path,
    image: _Planned,
    digest: str,
    signature: layout.Descriptor,
    client: RegistryClient,
) -> None:
    """The signature of ``digest`` (the index or a platform manifest), under its
    ``sha256-<hex>.sig`` tag: digests are the same in the registry as in the bundle, so the
    signature still holds."""
    manifest = layout.blob_path(root, signature.digest).read_bytes()
    sign.put_signature(
        client,
        image.repository,
        digest,
        manifest,
        lambda digest: layout.blob_path(root, digest).read_bytes(),
    )


def _push_manifests(
    root: Path,
    image: _Planned,
    client: RegistryClient,
    report: PushReport,
    advance: Callable[[int], None],
) -> None:
    for desc in image.graph.ordered:  # children before parents; the top goes last, by tag
        if not (desc.is_index or desc.is_manifest):
            continue
        body = layout.blob_path(root, desc.digest).read_bytes()
        reference = image.tag if desc is image.graph.top else desc.digest
        got = client.put_manifest(image.repository, reference, desc.media_type, body)
        if got != desc.digest:  # pragma: no cover - verify checked the bytes
            raise BundleError(f"manifest {desc.digest} of {image.ref} hashes to {got}")
        report.manifests_pushed += 1
        advance(desc.size)
