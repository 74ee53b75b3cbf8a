"""create_bundle: one layout, shared blobs once, annotations, inventory, SHA256SUMS, atomicity."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from pipeline.bundle import BundleImage, create_bundle, verify_bundle
from pipeline.bundle import create as create_module
from pipeline.errors import BadInput, BundleError
from pipeline.oci import layout

try:
    from tests.unit import bundle_fixtures as bf
except ImportError:  # tests/unit is not a package
    import bundle_fixtures as bf


def blob_files(root: Path) -> set[str]:
    return {"sha256:" + p.name for p in (root / "blobs" / "sha256").iterdir()}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def test_create_merges_images_and_stores_shared_blobs_once(tmp_path: Path) -> None:
    sources = bf.two_sources(tmp_path / "src")
    out = tmp_path / "bundle"

    result = create_bundle(out, [s.image for s in sources], bf.PLATFORMS)

    union = set(sources[0].blobs) | set(sources[1].blobs)
    shared = set(sources[0].blobs) & set(sources[1].blobs)
    assert len(shared) == 2  # one base layer per platform
    assert blob_files(out) == union
    assert result.blobs == len(union) < len(sources[0].blobs) + len(sources[1].blobs)
    assert result.total_bytes == sum(len(b) for s in sources for d, b in s.blobs.items()) - sum(
        len(sources[0].blobs[d]) for d in shared
    )
    assert json.loads((out / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert leftovers(tmp_path) == []


def test_index_json_names_each_image_by_ref_with_digests_unchanged(tmp_path: Path) -> None:
    sources = bf.two_sources(tmp_path / "src")
    out = tmp_path / "bundle"
    create_bundle(out, [s.image for s in sources], bf.PLATFORMS)

    index = json.loads((out / "index.json").read_text())
    assert index["mediaType"] == layout.OCI_INDEX
    entries = index["manifests"]
    assert [e["digest"] for e in entries] == [s.top for s in sources]
    for entry, source in zip(entries, sources, strict=True):
        assert entry["mediaType"] == layout.OCI_INDEX
        assert entry["annotations"][layout.ANNOTATION_REF_NAME] == source.image.ref
        assert entry["annotations"][layout.ANNOTATION_CONTAINERD_NAME] == source.image.ref
        # bytes are copied, never re-encoded
        assert (out / layout.blob_relpath(source.top)).read_bytes() == source.blobs[source.top]


def test_inventory_lists_every_image_platform_digest_and_size(tmp_path: Path) -> None:
    sources = bf.two_sources(tmp_path / "src")
    out = tmp_path / "bundle"
    create_bundle(out, [s.image for s in sources], bf.PLATFORMS)

    inventory = json.loads((out / "inventory.json").read_text())
    assert inventory["platforms"] == bf.PLATFORMS
    assert inventory["blobs"]["count"] == len(blob_files(out))
    for entry, source in zip(inventory["images"], sources, strict=True):
        assert entry["name"] == source.image.name
        assert entry["ref"] == source.image.ref
        assert entry["tag"] == bf.TAG
        assert entry["digest"] == source.top
        assert sorted(entry["platforms"]) == bf.PLATFORMS
        for platform, info in entry["platforms"].items():
            manifest = source.platform_manifests[platform]
            assert info["digest"] == manifest
            assert info["size"] == len(source.blobs[manifest])
            assert info["bytes"] > info["size"]
        assert entry["total_bytes"] == sum(len(b) for b in source.blobs.values())


def test_sha256sums_covers_every_file_but_itself(tmp_path: Path) -> None:
    sources = bf.two_sources(tmp_path / "src")
    out = tmp_path / "bundle"
    create_bundle(out, [s.image for s in sources], bf.PLATFORMS)

    lines = (out / "SHA256SUMS").read_text().splitlines()
    listed = {}
    for line in lines:
        hex_, name = line.split("  ", 1)
        listed[name] = hex_
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert set(listed) == files - {"SHA256SUMS"}
    for name, hex_ in listed.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == hex_
    assert list(listed) == sorted(listed)


@pytest.mark.parametrize("shape", ["manifest", "nested"])
def test_single_manifest_and_nested_index_sources(tmp_path: Path, shape: str) -> None:
    platforms = ["linux/amd64"] if shape == "manifest" else ["linux/amd64", "linux/arm/v7"]
    source = bf.make_source(tmp_path, "ai-infra-nginx", 3, platforms=platforms, shape=shape)
    out = tmp_path / "bundle"

    create_bundle(out, [source.image], platforms)

    assert blob_files(out) == set(source.blobs)
    inventory = json.loads((out / "inventory.json").read_text())
    assert sorted(inventory["images"][0]["platforms"]) == sorted(platforms)
    assert verify_bundle(out).ok


def test_directory_sources_and_short_refs(tmp_path: Path) -> None:
    source = bf.make_source(tmp_path, "ai-infra-backend", 1, form="dir", ref="ai-infra-backend:v1")
    out = tmp_path / "bundle"

    create_bundle(out, [source.image], bf.PLATFORMS)

    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["annotations"][layout.ANNOTATION_REF_NAME] == "ai-infra-backend:v1"
    assert verify_bundle(out).ok


def test_attestations_are_kept_but_are_not_platforms(tmp_path: Path) -> None:
    source = bf.make_source(tmp_path, "ai-infra-backend", 1, attestations=True)
    out = tmp_path / "bundle"

    create_bundle(out, [source.image], bf.PLATFORMS)

    assert blob_files(out) == set(source.blobs)
    inventory = json.loads((out / "inventory.json").read_text())
    assert sorted(inventory["images"][0]["platforms"]) == bf.PLATFORMS


def test_image_missing_a_platform_is_refused_naming_image_and_platform(tmp_path: Path) -> None:
    good = bf.make_source(tmp_path, "ai-infra-backend", 1)
    amd64_only = bf.make_source(tmp_path, "ai-infra-gitea", 2, platforms=["linux/amd64"])
    out = tmp_path / "bundle"

    with pytest.raises(BundleError, match="image ai-infra-gitea lacks platform linux/arm64"):
        create_bundle(out, [good.image, amd64_only.image], bf.PLATFORMS)

    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_interrupted_create_leaves_no_final_path(tmp_path: Path, monkeypatch) -> None:
    sources = bf.two_sources(tmp_path / "src")
    out = tmp_path / "bundle"
    real_copy = create_module.copy_blob
    calls = []

    def copy_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(create_module, "copy_blob", copy_then_die)
    with pytest.raises(KeyboardInterrupt):
        create_bundle(out, [s.image for s in sources], bf.PLATFORMS, archive="tar")

    assert not out.exists()
    assert not (tmp_path / "bundle.tar").exists()
    assert leftovers(tmp_path) == []


def test_existing_output_is_refused_unless_replace(tmp_path: Path) -> None:
    sources = bf.two_sources(tmp_path / "src")
    out = tmp_path / "bundle"
    create_bundle(out, [sources[0].image], bf.PLATFORMS)

    with pytest.raises(BadInput, match="already exists"):
        create_bundle(out, [s.image for s in sources], bf.PLATFORMS)
    assert len(json.loads((out / "index.json").read_text())["manifests"]) == 1

    create_bundle(out, [s.image for s in sources], bf.PLATFORMS, replace=True)
    assert len(json.loads((out / "index.json").read_text())["manifests"]) == 2
    assert verify_bundle(out).ok
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", ["tar", "tar.zst"])
def test_archive_is_written_beside_the_layout_and_verifies(tmp_path: Path, fmt: str) -> None:
    sources = bf.two_sources(tmp_path / "src")
    out = tmp_path / "bundle"

    result = create_bundle(out, [s.image for s in sources], bf.PLATFORMS, archive=fmt)

    assert result.archive == tmp_path / f"bundle.{fmt}"
    report = verify_bundle(result.archive)
    assert report.ok, report.failures
    assert leftovers(tmp_path) == []
    assert not [p for p in tmp_path.iterdir() if ".extract-" in p.name]
    if fmt == "tar":
        with tarfile.open(result.archive) as tar:
            names = tar.getnames()
        # The layout at the root; its metadata first (inventory.json bounds the extraction of
        # the blobs that follow), then the blobs, each part sorted.
        assert names[:5] == ["SHA256SUMS", "index.json", "inventory.json", "oci-layout", "blobs"]
        assert names[6:] == sorted(names[6:]) and names[6].startswith("blobs/sha256/")


def test_archives_are_reproducible(tmp_path: Path) -> None:
    sources = bf.two_sources(tmp_path / "src")
    first = create_bundle(tmp_path / "a", [s.image for s in sources], bf.PLATFORMS, archive="tar")
    second = create_bundle(tmp_path / "b", [s.image for s in sources], bf.PLATFORMS, archive="tar")
    assert first.archive.read_bytes() == second.archive.read_bytes()


def test_corrupt_source_blob_is_refused(tmp_path: Path) -> None:
    source = bf.make_source(tmp_path, "ai-infra-backend", 1, form="dir")
    layer = next(d for d, b in source.blobs.items() if b[:2] == b"\x1f\x8b")
    path = source.image.source / layout.blob_relpath(layer)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(BundleError, match=f"blob {layer} is corrupt"):
        create_bundle(tmp_path / "bundle", [source.image], bf.PLATFORMS)
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"platforms": []}, "at least one platform"),
        ({"platforms": ["linux"]}, "not a platform"),
        ({"images": []}, "at least one image"),
        ({"archive": "zip"}, "unknown archive format"),
        ({"tag": "v9"}, "differs from its ref"),
        ({"duplicate": True}, "two images in the bundle have the name"),
        ({"missing": True}, "does not exist"),
    ],
)
def test_bad_input(tmp_path: Path, change: dict, message: str) -> None:
    source = bf.make_source(tmp_path, "ai-infra-backend", 1)
    image = source.image
    images = [image]
    if "tag" in change:
        images = [BundleImage(image.name, image.ref, change["tag"], image.source)]
    if change.get("duplicate"):
        images = [image, BundleImage(image.name, "other:v1", "v1", image.source)]
    if change.get("missing"):
        images = [BundleImage(image.name, image.ref, image.tag, tmp_path / "nope.tar")]
    images = change.get("images", images)

    with pytest.raises(BadInput, match=message):
        create_bundle(
            tmp_path / "bundle",
            images,
            change.get("platforms", bf.PLATFORMS),
            archive=change.get("archive"),
        )
    assert not (tmp_path / "bundle").exists()
