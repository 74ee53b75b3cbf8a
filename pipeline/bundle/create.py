"""create: merge each image's OCI layout into one bundle layout, every blob stored once.

The bundle is written under ``.<name>.partial-<pid>`` beside ``output`` and renamed only when
complete, so an interrupted run never leaves a bundle that looks finished.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import signals
from pipeline.bundle.archive import archive_path, check_archive_format, partial_archive
from pipeline.bundle.delta import Base, base_section, read_base
from pipeline.bundle.sboms import Made, inventory_section, make_sboms
from pipeline.bundle.source import LayoutSource, copy_blob, open_source
from pipeline.errors import BadInput, BundleError, writing
from pipeline.oci import layout, sbom, sign
from pipeline.oci.reference import parse_tagged
from pipeline.planning.kit import KIT_DIR, KitPlan, kit_files, pins


@dataclass(frozen=True)
class BundleImage:
    """One image to put in the bundle: ``source`` is an OCI layout tarball or directory."""

    name: str
    ref: str
    tag: str
    source: Path


@dataclass(frozen=True)
class CreateResult:
    path: Path
    archive: Path | None
    images: int
    blobs: int  # what the bundle holds
    total_bytes: int
    base: Base | None = None  # for a delta: its base, and (``base.blobs``) what it leaves to it
    sboms: Made | None = None  # the SBOMs, when made: how long syft took, the bytes they add


def check_bundle_request(archive: str | None, since: Path | None) -> None:
    """The archive format and the previous bundle of a delta, as asked: BadInput before any
    build, not after every one."""
    check_archive_format(archive)
    if since is not None:
        read_base(since)


def create_bundle(
    output: Path,
    images: Sequence[BundleImage],
    platforms: Sequence[str],
    archive: str | None = None,
    *,
    replace: bool = False,
    since: Path | None = None,
    sign_key: sign.SigningKey | None = None,
    kit: KitPlan | None = None,
    registry: str | None = None,
    sbom_maker: sbom.SbomMaker | None = None,
) -> CreateResult:
    """Write the bundle layout at ``output`` (and ``output.tar[.zst]`` if ``archive`` is given).
    With ``since`` (a previous bundle, its archive or its inventory.json), a delta: the layers
    that bundle has are left out, and the inventory lists them as expected from it. With
    ``sign_key``, each image's index and platform manifests are signed (cosign's format, as
    ``cosign sign --recursive``): the signature images are
    blobs of the layout, which ``inventory.json`` names with the key's fingerprint. With
    ``kit``, the deployment kit in ``kit/``, pinned to ``registry`` (pipeline/planning/kit.py).
    With ``sbom_maker`` (e.g. sbom.syft), an SBOM of every image and platform, attached to its
    platform manifest (pipeline/bundle/sboms.py).

    Raises BadInput for wrong arguments and BundleError when an image lacks a platform or a
    source is incomplete or corrupt.
    """
    wanted = _check_arguments(output, images, platforms, archive, replace)
    previous = read_base(since) if since is not None else None
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    dest = archive_path(output, archive) if archive is not None else None
    archived = None
    # Interrupted anywhere (SIGINT, SIGTERM: at once, see signals.at_once), the run leaves
    # nothing: the archive is written from the partial folder, and both are put in place only
    # once both are whole; so an interrupt never ends with a complete bundle and exit 130.
    with signals.at_once(), writing("the bundle", output, BundleError):
        try:
            digests, base, sboms = _write_layout(
                partial, images, wanted, previous, sign_key, sbom_maker
            )
            if kit is not None:
                write_kit(partial, kit, registry)
            if archive is not None and dest is not None:
                archived = partial_archive(partial, dest, archive)
            _put_in_place(partial, output, replace, (archived, dest) if archived and dest else None)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            if archived is not None:
                archived.unlink(missing_ok=True)
            raise
    return CreateResult(
        path=output,
        archive=dest,
        images=len(images),
        blobs=len(digests),
        total_bytes=sum(digests.values()),
        base=base,
        sboms=sboms,
    )


def _write_layout(
    partial: Path,
    images: Sequence[BundleImage],
    wanted: Sequence[str],
    previous: Base | None,
    sign_key: sign.SigningKey | None,
    sbom_maker: sbom.SbomMaker | None,
) -> tuple[dict[str, int], Base | None, Made | None]:
    """The whole layout at ``partial``: what it stores (digest → size), a delta's base, and
    the SBOMs made."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(partial, ignore_errors=True)
    (partial / layout.BLOBS_DIR / layout.ALGORITHM).mkdir(parents=True)
    graphs = [_walk(image) for image in images]
    _require_platforms(images, graphs, wanted)
    base = _left_to_base(graphs, previous) if previous is not None else None
    digests = _copy_blobs(partial, images, graphs, base.blobs if base else {})
    sboms = None
    if sbom_maker is not None:
        each = [(i.name, i.ref, i.source, w.graph) for i, w in zip(images, graphs, strict=True)]
        scratch = partial.with_name(f"{partial.name}-sbom")
        sboms = make_sboms(partial, each, sbom_maker, digests, scratch)
    signed = _sign(partial, images, graphs, sign_key, digests, sboms) if sign_key else None
    _write_metadata(partial, images, graphs, wanted, digests, base, signed, sboms)
    return digests, base, sboms


def _check_arguments(
    output: Path,
    images: Sequence[BundleImage],
    platforms: Sequence[str],
    archive: str | None,
    replace: bool,
) -> list[str]:
    if not images:
        raise BadInput("a bundle needs at least one image")
    if not platforms:
        raise BadInput("a bundle needs at least one platform")
    try:
        wanted = list(dict.fromkeys(layout.normalize_platform(p) for p in platforms))
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    for field in ("name", "ref"):
        seen: set[str] = set()
        for image in images:
            value = getattr(image, field)
            if value in seen:
                raise BadInput(f"two images in the bundle have the {field} {value!r}")
            seen.add(value)
    for image in images:
        try:
            ref = parse_tagged(image.ref)
        except ValueError as exc:
            raise BadInput(f"image {image.name}: {exc}") from None
        if ref.tag != image.tag:
            raise BadInput(
                f"image {image.name}: tag {image.tag!r} differs from its ref {image.ref}"
            )
        if not image.source.exists():
            raise BadInput(f"image {image.name}: source {image.source} does not exist")
    targets = [output] + ([archive_path(output, archive)] if archive is not None else [])
    for target in targets:
        if target.exists() and not replace:
            raise BadInput(f"{target} already exists; remove it or create with replace")
    return wanted


@dataclass
class _Walked:
    graph: layout.ImageGraph
    top_raw: dict[str, Any]
    layers: set[str]  # digests the graph uses as layers (a delta may leave them to its base)


def _read_blob(src: LayoutSource):
    return lambda digest: src.read(layout.blob_relpath(digest))


def image_graph(image: BundleImage) -> layout.ImageGraph:
    """The image's index and platform manifests, read from its source (a tarball or layout)."""
    return _walk(image).graph


def _walk(image: BundleImage) -> _Walked:
    layers: set[str] = set()

    def note_layers(desc: layout.Descriptor, kind: str | None, platform: str | None) -> bool:
        if kind == "layer":
            layers.add(desc.digest)
        return True

    with open_source(image.source) as src:
        top = _top_descriptor(src, image)
        where = f"image {image.name} ({src.label})"
        graph = layout.walk_image(top, _read_blob(src), where, note_layers)
    return _Walked(graph=graph, top_raw=top.raw, layers=layers)


def _top_descriptor(src: LayoutSource, image: BundleImage) -> layout.Descriptor:
    where = f"{src.label}: {layout.INDEX_FILE}"
    doc = layout.loads(src.read(layout.INDEX_FILE), where)
    entries = [layout.Descriptor.parse(m, where) for m in doc.get("manifests") or []]
    if len(entries) > 1:  # a layout holding several images: take the one named like ours
        names = {image.ref, image.tag}
        entries = [e for e in entries if e.annotations.get(layout.ANNOTATION_REF_NAME) in names]
    if len(entries) != 1:
        raise BundleError(f"image {image.name}: {where} must name exactly one image")
    return entries[0]


def _require_platforms(
    images: Sequence[BundleImage], walked: Sequence[_Walked], wanted: Sequence[str]
) -> None:
    problems = []
    for image, w in zip(images, walked, strict=True):
        have = ", ".join(sorted(w.graph.platforms)) or "none"
        for platform in wanted:
            if platform not in w.graph.platforms:
                problems.append(f"image {image.name} lacks platform {platform} (has {have})")
    if problems:
        raise BundleError("; ".join(problems))


def _left_to_base(walked: Sequence[_Walked], previous: Base) -> Base:
    """The part of ``previous`` a delta leaves to it: the layers it has with the same size.
    Manifests, indexes and configs stay in the delta whatever the base holds: small, and
    verify needs them to walk every image."""
    small = {d.digest for w in walked for d in w.graph.ordered if d.digest not in w.layers}
    layers = {d for w in walked for d in w.layers} - small
    sizes = {d.digest: d.size for w in walked for d in w.graph.ordered}
    expected = [d for d in sizes if d in layers and previous.blobs.get(d) == sizes[d]]
    return Base(
        previous.inventory,
        previous.tag,
        {d: sizes[d] for d in expected},
        {d: previous.images[d] for d in expected},
    )


def _copy_blobs(
    root: Path,
    images: Sequence[BundleImage],
    walked: Sequence[_Walked],
    leave_out: dict[str, int],
) -> dict[str, int]:
    """Copy every reachable blob once but those in ``leave_out``; returns digest → size of
    everything stored."""
    stored: dict[str, int] = {}
    for image, w in zip(images, walked, strict=True):
        with open_source(image.source) as src:
            for desc in w.graph.ordered:
                if desc.digest not in stored and desc.digest not in leave_out:
                    copy_blob(src, desc, layout.blob_path(root, desc.digest))
                    stored[desc.digest] = desc.size
    return stored


# In an inventory entry's signatures, the index's own signature is named by this key; each
# platform manifest's by its platform.
INDEX_SIGNATURE = "index"


@dataclass(frozen=True)
class _Signed:
    key: str  # the public key's fingerprint
    # image name → what is signed ("index" or a platform) → its signature manifest
    manifests: dict[str, dict[str, layout.Descriptor]]
    # image name → platform → the signature manifest of that platform's SBOM artifact
    sboms: dict[str, dict[str, layout.Descriptor]]


def signed_digests(graph: layout.ImageGraph) -> dict[str, str]:
    """What a recursive signature of an image signs: "index" (its top) and each platform's
    manifest → the digest signed."""
    platforms = {p: pm.descriptor.digest for p, pm in sorted(graph.platforms.items())}
    return {INDEX_SIGNATURE: graph.top.digest, **platforms}


def _sign(
    root: Path,
    images: Sequence[BundleImage],
    walked: Sequence[_Walked],
    key: sign.SigningKey,
    stored: dict[str, int],
    sboms: Made | None,
) -> _Signed:
    """Write a signature image of each image's index and of each of its platform manifests
    (as ``cosign sign --recursive``), and of each SBOM artifact, into the layout, adding their
    blobs to ``stored``."""
    manifests: dict[str, dict[str, layout.Descriptor]] = {}
    sbom_signatures: dict[str, dict[str, layout.Descriptor]] = {}
    for image, w in zip(images, walked, strict=True):
        reference = sign.docker_reference(image.ref)
        manifests[image.name] = {
            what: _signature(root, key, reference, digest, stored)
            for what, digest in signed_digests(w.graph).items()
        }
        made = sboms.manifests[image.name] if sboms else {}
        sbom_signatures[image.name] = {
            platform: _signature(root, key, reference, d.digest, stored)
            for platform, d in made.items()
        }
    return _Signed(sign.fingerprint(key.public_key()), manifests, sbom_signatures)


def _signature(
    root: Path, key: sign.SigningKey, reference: str, digest: str, stored: dict[str, int]
) -> layout.Descriptor:
    made = sign.signature_image(key, reference, digest)
    for data in [made.manifest, *made.blobs.values()]:
        stored[layout.write_blob(root, data)] = len(data)
    return layout.Descriptor(layout.OCI_MANIFEST, made.digest, len(made.manifest))


def inventory_signatures(inventory: dict[str, Any]) -> dict[str, dict[str, layout.Descriptor]]:
    """image ref → what is signed ("index" or a platform) → its signature manifest, as
    ``inventory.json`` names them (``signature``: the index's, ``platform_signatures``: each
    platform's); BundleError if one is malformed."""
    found: dict[str, dict[str, layout.Descriptor]] = {}
    for entry in inventory.get("images") or []:
        if not isinstance(entry, dict):
            continue
        ref = entry.get("ref")
        named = {INDEX_SIGNATURE: entry.get("signature")}
        platforms = entry.get("platform_signatures") or {}
        if not isinstance(platforms, dict):
            raise BundleError(f"{layout.INVENTORY_FILE}: platform_signatures of {ref}")
        named.update(platforms)
        for what, signature in named.items():
            if signature is None:
                continue
            if isinstance(signature, dict):
                signature = {"mediaType": layout.OCI_MANIFEST, **signature}
            found.setdefault(ref, {})[what] = layout.Descriptor.parse(
                signature, f"{layout.INVENTORY_FILE}: signature of {ref} {what}"
            )
    return found


def _write_metadata(
    root: Path,
    images: Sequence[BundleImage],
    walked: Sequence[_Walked],
    wanted: Sequence[str],
    digests: dict[str, int],
    base: Base | None,
    signed: _Signed | None,
    sboms: Made | None,
) -> None:
    entries = []
    inventory_images = []
    for image, w in zip(images, walked, strict=True):
        annotations = {
            k: v
            for k, v in (w.top_raw.get("annotations") or {}).items()
            if k not in (layout.ANNOTATION_REF_NAME, layout.ANNOTATION_CONTAINERD_NAME)
        }
        annotations[layout.ANNOTATION_REF_NAME] = image.ref
        annotations[layout.ANNOTATION_CONTAINERD_NAME] = image.ref
        entries.append({**w.top_raw, "annotations": annotations})
        inventory_images.append(inventory_entry(image.name, image.ref, image.tag, w.graph))
        if signed is not None:
            made = {
                w: {"digest": d.digest, "size": d.size}
                for w, d in signed.manifests[image.name].items()
            }
            inventory_images[-1]["signature"] = made.pop(INDEX_SIGNATURE)
            inventory_images[-1]["platform_signatures"] = made
        if sboms is not None:
            signatures = signed.sboms[image.name] if signed else {}
            inventory_images[-1]["sboms"] = inventory_section(
                sboms, image.name, w.graph, signatures
            )

    (root / layout.LAYOUT_FILE).write_bytes(
        layout.dumps({"imageLayoutVersion": layout.LAYOUT_VERSION})
    )
    (root / layout.INDEX_FILE).write_bytes(
        layout.dumps({"schemaVersion": 2, "mediaType": layout.OCI_INDEX, "manifests": entries})
    )
    inventory = {
        "schema": layout.INVENTORY_SCHEMA,
        "platforms": list(wanted),
        "images": inventory_images,
        "blobs": {"count": len(digests), "bytes": sum(digests.values())},
    }
    if base is not None:
        inventory["base"] = base_section(base)
    if signed is not None:
        inventory["signing"] = {"format": "cosign", "public_key": signed.key}
    (root / layout.INVENTORY_FILE).write_bytes(layout.dumps(inventory))

    # Blobs were hashed while copied, so their sums are their digests.
    sums = {layout.blob_relpath(d): layout.split_digest(d)[1] for d in digests}
    for name in (layout.LAYOUT_FILE, layout.INDEX_FILE, layout.INVENTORY_FILE):
        sums[name] = layout.split_digest(layout.hash_file(root / name)[0])[1]
    (root / layout.CHECKSUMS_FILE).write_text(
        "".join(f"{sums[name]}  {name}\n" for name in sorted(sums))
    )


def write_kit(root: Path, kit: KitPlan, registry: str | None) -> None:
    """kit/ beside the layout, listed in inventory.json and SHA256SUMS."""
    inventory = layout.loads((root / layout.INVENTORY_FILE).read_bytes(), layout.INVENTORY_FILE)
    files = kit_files(kit, pins(inventory, registry), registry)
    (root / KIT_DIR).mkdir()
    for name, data in files.items():
        (root / KIT_DIR / name).write_bytes(data)
    inventory["kit"] = sorted(f"{KIT_DIR}/{name}" for name in files)
    (root / layout.INVENTORY_FILE).write_bytes(layout.dumps(inventory))
    sums = [line for line in (root / layout.CHECKSUMS_FILE).read_text().splitlines()
            if not line.endswith(f"  {layout.INVENTORY_FILE}")]  # fmt: skip
    for name in [layout.INVENTORY_FILE, *inventory["kit"]]:
        sums.append(f"{layout.split_digest(layout.hash_file(root / name)[0])[1]}  {name}")
    (root / layout.CHECKSUMS_FILE).write_text(
        "".join(f"{line}\n" for line in sorted(sums, key=_by_name))
    )


def _by_name(line: str) -> str:
    return line.split("  ", 1)[1]


def inventory_entry(name: str, ref: str, tag: str, graph: layout.ImageGraph) -> dict[str, Any]:
    """One image of ``inventory.json``; verify rebuilds it from the layout to compare."""
    return {
        "name": name,
        "ref": ref,
        "tag": tag,
        "digest": graph.top.digest,
        "media_type": graph.top.media_type,
        "platforms": {
            platform: {
                "digest": pm.descriptor.digest,
                "size": pm.descriptor.size,
                "bytes": pm.total_bytes,
            }
            for platform, pm in sorted(graph.platforms.items())
        },
        "total_bytes": graph.total_bytes,
        # Every blob, so that a later delta knows from this file alone what the bundle has.
        "blobs": [{"digest": d.digest, "size": d.size} for d in graph.ordered],
    }


def _put_in_place(
    partial: Path, output: Path, replace: bool, archived: tuple[Path, Path] | None
) -> None:
    """The folder, then its archive (partial, destination): the pair or nothing."""
    _put_folder_in_place(partial, output, replace)
    if archived is None:
        return
    try:
        os.replace(*archived)
    except BaseException:
        shutil.rmtree(output, ignore_errors=True)
        raise


def _put_folder_in_place(partial: Path, output: Path, replace: bool) -> None:
    if not output.exists():
        os.replace(partial, output)
        return
    if not replace:  # appeared while we worked
        raise BundleError(f"{output} appeared while the bundle was written; not replacing it")
    old = output.with_name(f".{output.name}.old-{os.getpid()}")
    os.replace(output, old)
    try:
        os.replace(partial, output)
    except BaseException:
        os.replace(old, output)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def remove_stale(output: Path) -> list[Path]:
    """Remove what a killed run (SIGKILL, power loss: no cleanup ran) left beside `output`:
    its scratch tarballs and the bundle and archive it had not finished, all named
    `.<name>[.tar[.zst]].<partial|tarballs>-<pid>...`. Only a dead pid's; never `output`, nor
    `.<name>.old-<pid>` (during a replace, that can be the only complete bundle left)."""
    name = re.escape(output.name)
    pattern = re.compile(rf"\.{name}(\.tar|\.tar\.zst)?\.(partial|tarballs)-(\d+)(-.*)?")
    removed = []
    if not output.parent.is_dir():
        return removed
    for entry in sorted(output.parent.iterdir()):
        match = pattern.fullmatch(entry.name)
        if match is None or _running(int(match.group(3))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
