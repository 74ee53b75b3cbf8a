"""The OCI image layout (https://github.com/opencontainers/image-spec/blob/main/image-layout.md)
and its content graph: every media type, annotation key and file name, digests, descriptors,
platforms, and the one walker from a top descriptor to every blob.

A bundle *is* such a layout with two files beside it: ``inventory.json`` and ``SHA256SUMS``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.errors import BundleError

# --- media types -------------------------------------------------------------------------------
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
# cosign's signature image: one layer per signature, the simple-signing payload itself.
COSIGN_SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})

# --- annotation keys ---------------------------------------------------------------------------
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
# BuildKit marks attestation manifests (SBOM, provenance) inside an index with these.
ANNOTATION_REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_TYPE_ATTESTATION = "attestation-manifest"
UNKNOWN_PLATFORM = "unknown/unknown"
ANNOTATION_COSIGN_SIGNATURE = "dev.cosignproject.cosign/signature"  # base64 of the DER signature

# --- file names --------------------------------------------------------------------------------
LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
BLOBS_DIR = "blobs"
INVENTORY_FILE = "inventory.json"
CHECKSUMS_FILE = "SHA256SUMS"
LAYOUT_VERSION = "1.0.0"
INVENTORY_SCHEMA = 2  # 2: each image lists its blobs; a delta names its base

ALGORITHM = "sha256"
CHUNK = 1 << 20
_HEX = re.compile(r"^[0-9a-f]{64}$")


# --- digests -----------------------------------------------------------------------------------
def split_digest(digest: str) -> tuple[str, str]:
    """``sha256:<hex>`` → (``sha256``, ``<hex>``); anything else is a corrupt bundle."""
    algorithm, _, hex_ = digest.partition(":")
    if algorithm != ALGORITHM or not _HEX.match(hex_):
        raise BundleError(f"unsupported or malformed digest {digest!r} (only sha256 is supported)")
    return algorithm, hex_


def digest_bytes(data: bytes) -> str:
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def hash_stream(stream: BinaryIO, sink: BinaryIO | None = None) -> tuple[str, int]:
    """Stream through sha256 (copying into ``sink`` if given); returns (digest, size)."""
    h = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
    return f"{ALGORITHM}:{h.hexdigest()}", size


def hash_file(path: Path) -> tuple[str, int]:
    with path.open("rb") as f:
        return hash_stream(f)


def blob_relpath(digest: str) -> str:
    """Path of a blob inside a layout, with ``/`` separators (as in tarballs and SHA256SUMS)."""
    algorithm, hex_ = split_digest(digest)
    return f"{BLOBS_DIR}/{algorithm}/{hex_}"


def blob_path(root: Path, digest: str) -> Path:
    return root / blob_relpath(digest)


def write_blob(root: Path, data: bytes) -> str:
    """Store ``data`` as a blob of the layout at ``root``; its digest."""
    digest = digest_bytes(data)
    blob_path(root, digest).write_bytes(data)
    return digest


# --- platforms ---------------------------------------------------------------------------------
def normalize_platform(platform: str) -> str:
    """``linux/arm64/v8`` → ``linux/arm64``; the default variant is dropped, others are kept."""
    parts = platform.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"not a platform (os/arch[/variant]): {platform!r}")
    if len(parts) == 3 and (parts[1], parts[2]) in {("arm64", "v8"), ("amd64", "v1")}:
        parts = parts[:2]
    return "/".join(parts)


def platform_of(obj: dict[str, Any]) -> str | None:
    """Platform string of a descriptor's ``platform`` or of an image config; None if absent."""
    os_, arch = obj.get("os"), obj.get("architecture")
    if not os_ or not arch:
        return None
    variant = obj.get("variant")
    return normalize_platform(f"{os_}/{arch}/{variant}" if variant else f"{os_}/{arch}")


def platform_object(platform: str) -> dict[str, str]:
    """``linux/arm/v7`` → ``{"architecture": "arm", "os": "linux", "variant": "v7"}``."""
    os_, arch, *variant = normalize_platform(platform).split("/")
    return {"architecture": arch, "os": os_} | ({"variant": variant[0]} if variant else {})


def image_index(manifests: list[Descriptor]) -> bytes:
    """An OCI image index of these manifests, in their order (compact JSON, as BuildKit's)."""
    entries = [
        {"mediaType": m.media_type, "digest": m.digest, "size": m.size}
        | ({"platform": platform_object(m.platform)} if m.platform else {})
        for m in manifests
    ]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return compact(index)


def compact(obj: Any) -> bytes:
    """JSON as Go's encoding/json (BuildKit, cosign) writes it: no spaces, keys as given."""
    return json.dumps(obj, separators=(",", ":")).encode()


# --- JSON ----------------------------------------------------------------------------------------
def dumps(obj: Any) -> bytes:
    """Stable JSON for files this package writes (never used to re-encode a blob)."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def loads(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{what} is not valid JSON: {exc}") from None


# --- the layout's content graph ----------------------------------------------------------------
@dataclass
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, obj: Any, where: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise BundleError(f"{where}: descriptor is not an object")
        try:
            media_type, digest, size = obj["mediaType"], obj["digest"], obj["size"]
        except KeyError as exc:
            raise BundleError(f"{where}: descriptor lacks {exc.args[0]!r}") from None
        if not isinstance(size, int) or size < 0:
            raise BundleError(f"{where}: descriptor {digest} has a bad size {size!r}")
        split_digest(digest)
        platform = platform_of(obj["platform"]) if isinstance(obj.get("platform"), dict) else None
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            platform=platform,
            annotations=dict(obj.get("annotations") or {}),
            raw=obj,
        )

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def is_manifest(self) -> bool:
        return self.media_type in MANIFEST_TYPES

    @property
    def is_attestation(self) -> bool:
        return (
            self.annotations.get(ANNOTATION_REFERENCE_TYPE) == REFERENCE_TYPE_ATTESTATION
            or self.platform == UNKNOWN_PLATFORM
        )


@dataclass
class PlatformManifest:
    """One runnable image manifest of an image (attestations are not platforms)."""

    platform: str
    descriptor: Descriptor
    blobs: list[Descriptor]  # config + layers

    @property
    def total_bytes(self) -> int:
        return self.descriptor.size + sum(b.size for b in self.blobs)


@dataclass
class ImageGraph:
    """Everything reachable from one top descriptor, children before parents."""

    top: Descriptor
    platforms: dict[str, PlatformManifest]
    # Every descriptor reachable from ``top`` (blobs, then manifests, then indexes, top last),
    # each digest once.
    ordered: list[Descriptor]

    @property
    def total_bytes(self) -> int:
        return sum(d.size for d in self.ordered)


# What a walk tells ``accept`` about a descriptor: its kind ("index", "manifest", "config",
# "layer", or None for a media type it cannot walk) and the platform known for it so far.
Accept = Callable[[Descriptor, str | None, str | None], bool]


def _accept_all(desc: Descriptor, kind: str | None, platform: str | None) -> bool:
    return True


def walk_image(
    top: Descriptor,
    read_blob: Callable[[str], bytes],
    where: str,
    accept: Accept = _accept_all,
) -> ImageGraph:
    """Walk an image from its top descriptor. ``read_blob(digest) -> bytes`` reads a manifest,
    index or config (small JSON blobs); blobs are never re-encoded, so digests stay unchanged.

    ``accept`` sees every descriptor before anything is read from it, parents before children.
    False leaves it, and all below it, out of the graph: verify checks each blob there and goes
    on past the damaged ones. Accepting an unsupported media type (kind None) is an error.
    """
    platforms: dict[str, PlatformManifest] = {}
    ordered: dict[str, Descriptor] = {}

    def manifest(desc: Descriptor) -> None:
        doc = loads(read_blob(desc.digest), f"{where}: manifest {desc.digest}")
        config = Descriptor.parse(doc.get("config"), f"{where}: config of {desc.digest}")
        platform = desc.platform
        blobs = []
        if accept(config, "config", platform):
            blobs.append(config)
            if platform is None and not desc.is_attestation and config.media_type.endswith("json"):
                platform = platform_of(loads(read_blob(config.digest), f"{where}: config"))
        for layer in doc.get("layers") or []:
            layer_desc = Descriptor.parse(layer, f"{where}: layer of {desc.digest}")
            if accept(layer_desc, "layer", platform):
                blobs.append(layer_desc)
        for blob in blobs:
            ordered.setdefault(blob.digest, blob)
        ordered.setdefault(desc.digest, desc)
        if desc.is_attestation or platform is None or platform == UNKNOWN_PLATFORM:
            return
        if platform in platforms:
            raise BundleError(f"{where}: two manifests for platform {platform}")
        platforms[platform] = PlatformManifest(platform, desc, blobs)

    def visit(desc: Descriptor, depth: int) -> None:
        kind = "index" if desc.is_index else "manifest" if desc.is_manifest else None
        if not accept(desc, kind, desc.platform):
            return
        if kind is None:
            raise BundleError(f"{where}: unsupported media type {desc.media_type} ({desc.digest})")
        if kind == "manifest":
            manifest(desc)
            return
        if depth > 8:
            raise BundleError(f"{where}: indexes nested too deeply at {desc.digest}")
        doc = loads(read_blob(desc.digest), f"{where}: index {desc.digest}")
        for child in doc.get("manifests") or []:
            visit(Descriptor.parse(child, f"{where}: index {desc.digest}"), depth + 1)
        ordered.setdefault(desc.digest, desc)

    visit(top, 0)
    # Keep ``top`` last even if it was reached earlier (it cannot be, but be explicit).
    ordered.pop(top.digest, None)
    return ImageGraph(top=top, platforms=platforms, ordered=[*ordered.values(), top])


def read_index(root: Path) -> list[Descriptor]:
    """The descriptors of a layout directory's ``index.json``."""
    path = root / INDEX_FILE
    if not path.is_file():
        raise BundleError(f"{root}: not an OCI layout ({INDEX_FILE} is missing)")
    doc = loads(path.read_bytes(), str(path))
    return [Descriptor.parse(m, str(path)) for m in doc.get("manifests") or []]


def iter_files(root: Path) -> Iterator[str]:
    """Every regular file under ``root`` as a sorted ``/``-separated relative path."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            found.append(Path(dirpath, name).relative_to(root).as_posix())
    yield from sorted(found)
