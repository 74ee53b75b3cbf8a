"""sboms: the bundle's SBOMs, one per image and platform (pipeline/oci/sbom.py).

Each is an OCI artifact manifest whose ``subject`` is the platform manifest, stored as blobs
of the layout. No standard lists referrers in an image layout's ``index.json`` (and an entry
there would be one more image to ``load``), so ``index.json`` names the images only, and
``inventory.json`` names each SBOM under its image and platform with its subject:
``sboms: {platform: {digest, size, subject}}``. The artifact's own ``subject`` field says the
same, so either can be checked against the other.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.bundle.archive import open_bundle
from pipeline.bundle.source import copy_blob, open_source
from pipeline.errors import BadInput, BundleError
from pipeline.oci import layout, sbom


@dataclass(frozen=True)
class Made:
    """The SBOMs of one bundle: image name → platform → the artifact manifest's descriptor."""

    manifests: dict[str, dict[str, layout.Descriptor]]
    seconds: float  # syft's time, all SBOMs
    bytes: int  # what they add to the bundle


def make_sboms(
    root: Path,
    images: Sequence[tuple[str, str, Path, layout.ImageGraph]],  # name, ref, source, graph
    maker: sbom.SbomMaker,
    stored: dict[str, int],
    scratch: Path,
) -> Made:
    """An SBOM of each image's every platform, written into the layout at ``root`` (adding to
    ``stored``). A layer a delta leaves to its base is read from the image's source into
    ``scratch``, which is removed afterwards."""
    manifests: dict[str, dict[str, layout.Descriptor]] = {}
    started, before = time.monotonic(), sum(stored.values())
    try:
        for name, ref, source, graph in images:
            manifests[name] = {}
            for platform, pm in sorted(graph.platforms.items()):
                one = scratch / f"{name}-{platform.replace('/', '-')}"
                spdx = one_sbom(root, source, pm, ref, platform, maker, one)
                made = sbom.artifact(spdx, pm.descriptor, platform)
                for data in [made.manifest, *made.blobs.values()]:
                    stored[layout.write_blob(root, data)] = len(data)
                manifests[name][platform] = layout.Descriptor(
                    layout.OCI_MANIFEST, made.digest, len(made.manifest)
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Made(manifests, time.monotonic() - started, sum(stored.values()) - before)


def one_sbom(
    root: Path,
    source: Path,
    pm: layout.PlatformManifest,
    ref: str,
    platform: str,
    maker: sbom.SbomMaker,
    scratch: Path,
) -> bytes:
    """The named SPDX JSON of one platform of an image: its blobs from the layout at `root`
    where there, else copied from `source` into `scratch`."""
    extra = scratch / "from-source"
    extra.mkdir(parents=True)

    def blob(digest: str) -> Path:
        path = layout.blob_path(root, digest)
        if path.is_file():
            return path
        wanted = next(d for d in [pm.descriptor, *pm.blobs] if d.digest == digest)
        with open_source(source) as src:
            copy_blob(src, wanted, extra / layout.split_digest(digest)[1])
        return extra / layout.split_digest(digest)[1]

    sbom.scratch_layout(scratch / "layout", pm.descriptor, blob)
    spdx = maker(scratch / "layout", ref.rsplit(":", 1)[0], pm.descriptor.digest)
    return sbom.named(spdx, ref, platform, pm.descriptor.digest)


def inventory_section(
    made: Made,
    name: str,
    graph: layout.ImageGraph,
    signatures: dict[str, layout.Descriptor],
) -> dict[str, Any]:
    """``sboms`` of one image in ``inventory.json``: each with its subject and, when signed,
    its signature image (``signature: {digest, size}``)."""
    section: dict[str, Any] = {}
    for platform, d in made.manifests[name].items():
        section[platform] = {"digest": d.digest, "size": d.size,
                             "subject": graph.platforms[platform].descriptor.digest}  # fmt: skip
        if platform in signatures:
            signature = signatures[platform]
            section[platform]["signature"] = {"digest": signature.digest, "size": signature.size}
    return section


Listed = dict[str, dict[str, tuple[layout.Descriptor, str]]]


def inventory_sboms(inventory: dict[str, Any]) -> Listed:
    """image ref → platform → (its SBOM's artifact manifest, the subject digest it names)."""
    found: Listed = {}
    for entry in inventory.get("images") or []:
        listed = entry.get("sboms") if isinstance(entry, dict) else None
        if not listed:
            continue
        if not isinstance(listed, dict):
            raise BundleError(f"{layout.INVENTORY_FILE}: sboms of {entry.get('ref')}")
        for platform, raw in listed.items():
            where = f"{layout.INVENTORY_FILE}: SBOM of {entry.get('ref')} {platform}"
            if not isinstance(raw, dict):
                raise BundleError(where)
            desc = layout.Descriptor.parse({"mediaType": layout.OCI_MANIFEST, **raw}, where)
            found.setdefault(entry.get("ref"), {})[platform] = (desc, str(raw.get("subject")))
    return found


def inventory_sbom_signatures(inventory: dict[str, Any]) -> dict[str, dict[str, layout.Descriptor]]:
    """image ref → platform → the signature image of that platform's SBOM, where signed."""
    found: dict[str, dict[str, layout.Descriptor]] = {}
    for entry in inventory.get("images") or []:
        listed = entry.get("sboms") if isinstance(entry, dict) else None
        for platform, raw in (listed if isinstance(listed, dict) else {}).items():
            signature = raw.get("signature") if isinstance(raw, dict) else None
            if isinstance(signature, dict):
                where = f"{layout.INVENTORY_FILE}: signature of the SBOM of {entry.get('ref')}"
                desc = layout.Descriptor.parse({"mediaType": layout.OCI_MANIFEST, **signature},
                                               f"{where} {platform}")  # fmt: skip
                found.setdefault(entry.get("ref"), {})[platform] = desc
    return found


def image_packages(path: Path, image: str, platform: str | None) -> list[sbom.Package]:
    """The packages one image's SBOM lists (by name or ref; the bundle's first platform unless
    ``platform``); BadInput naming what the bundle has when it has no such image or SBOM."""
    with open_bundle(path) as root:
        inventory = layout.loads((root / layout.INVENTORY_FILE).read_bytes(), layout.INVENTORY_FILE)
        entries = [
            e for e in inventory.get("images") or [] if image in (e.get("name"), e.get("ref"))
        ]
        if not entries:
            names = ", ".join(str(e.get("name")) for e in inventory.get("images") or [])
            raise BadInput(f"bundle {path} has no image {image!r} (it has {names or 'none'})")
        listed = entries[0].get("sboms") or {}
        wanted = platform or next(iter(inventory.get("platforms") or listed), "")
        if wanted not in listed:
            have = ", ".join(listed) or "none: made without --sbom"
            raise BadInput(f"bundle {path}: no SBOM of {image} {wanted} (SBOMs: {have})")
        manifest = layout.blob_path(root, listed[wanted]["digest"]).read_bytes()
        spdx = sbom.document_of(manifest, lambda d: layout.blob_path(root, d).read_bytes())
    return sbom.packages(spdx)
