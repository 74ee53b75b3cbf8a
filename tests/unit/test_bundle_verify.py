"""verify_bundle: typed status per check, "N of M failed", names image, platform, digest, file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.bundle import Status, create_bundle, verify_bundle
from pipeline.oci import layout

try:
    from tests.unit import bundle_fixtures as bf
except ImportError:  # tests/unit is not a package
    import bundle_fixtures as bf


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("verify")
    sources = bf.two_sources(root / "src")
    create_bundle(root / "bundle", [s.image for s in sources], bf.PLATFORMS, archive="tar")
    return root / "bundle", sources


@pytest.fixture
def copy(built, tmp_path: Path) -> Path:
    """A private copy of the bundle to damage."""
    target = tmp_path / "bundle"
    shutil.copytree(built[0], target)
    return target


def shared_layer(sources) -> str:
    """The arm64 base layer both images use."""
    shared = set(sources[0].blobs) & set(sources[1].blobs)
    return sorted(shared, key=lambda d: d)[0]


def failures(report, status: Status) -> list:
    return [r for r in report.failures if r.status is status]


def test_a_fresh_bundle_verifies(built) -> None:
    report = verify_bundle(built[0])
    assert report.ok, [r.describe() for r in report.failures]
    assert report.platforms == bf.PLATFORMS
    assert report.summary().startswith(f"all {len(report.results)} checks passed")
    assert {r.status for r in report.results} == {Status.OK}
    assert {r.check for r in report.results} == {
        "layout",
        "blob",
        "platform",
        "inventory",
        "checksum",
    }


def test_archive_verifies(built) -> None:
    archive = built[0].with_name("bundle.tar")
    assert verify_bundle(archive).ok


def test_corrupt_blob_is_named_digest_mismatch(copy: Path, built) -> None:
    layer = shared_layer(built[1])
    path = copy / layout.blob_relpath(layer)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))

    report = verify_bundle(copy)

    assert not report.ok
    [blob] = [r for r in failures(report, Status.DIGEST_MISMATCH) if r.check == "blob"]
    assert blob.digest == layer
    assert blob.file == layout.blob_relpath(layer)
    text = blob.describe()
    assert "digest-mismatch" in text and layer in text
    assert "ai-infra-backend" in text and "ai-infra-frontend" in text
    [checksum] = [r for r in report.failures if r.check == "checksum"]
    assert checksum.file == layout.blob_relpath(layer)
    assert report.summary() == f"2 of {len(report.results)} checks failed"


def test_truncated_blob_is_size_mismatch(copy: Path, built) -> None:
    manifest = built[1][0].platform_manifests["linux/arm64"]
    path = copy / layout.blob_relpath(manifest)
    path.write_bytes(path.read_bytes()[:-5])

    report = verify_bundle(copy)

    [blob] = failures(report, Status.SIZE_MISMATCH)
    assert blob.digest == manifest
    assert blob.platform == "linux/arm64"
    assert "ai-infra-backend linux/arm64" in blob.describe()


def test_deleted_blob_is_missing(copy: Path, built) -> None:
    source = built[1][1]
    config_or_layer = next(
        d for d in source.blobs if d not in built[1][0].blobs and d != source.top
    )
    (copy / layout.blob_relpath(config_or_layer)).unlink()

    report = verify_bundle(copy)

    missing = {(r.check, r.digest or r.file) for r in failures(report, Status.MISSING)}
    assert ("blob", config_or_layer) in missing
    assert ("checksum", layout.blob_relpath(config_or_layer)) in missing
    assert "ai-infra-frontend" in next(r for r in report.failures if r.check == "blob").describe()


def test_platforms_argument_overrides_inventory(built) -> None:
    report = verify_bundle(built[0], ["linux/amd64", "linux/s390x"])

    missing = failures(report, Status.PLATFORM_MISSING)
    assert sorted((r.image, r.platform) for r in missing) == [
        (s.image.ref, "linux/s390x") for s in built[1]
    ]
    assert "has linux/amd64, linux/arm64" in missing[0].describe()


def test_inventory_that_disagrees_with_the_layout(copy: Path) -> None:
    path = copy / "inventory.json"
    inventory = json.loads(path.read_text())
    inventory["images"][0]["platforms"]["linux/amd64"]["digest"] = "sha256:" + "0" * 64
    del inventory["images"][1]
    path.write_text(json.dumps(inventory))

    report = verify_bundle(copy)

    mismatches = failures(report, Status.MISMATCH)
    assert len(mismatches) == 2
    assert any("differs in platforms" in r.describe() for r in mismatches)
    assert any("not listed in inventory.json" in r.describe() for r in mismatches)
    # SHA256SUMS no longer matches the edited inventory either
    assert any(r.file == "inventory.json" and r.check == "checksum" for r in report.failures)


def test_unlisted_file_and_bad_sums(copy: Path) -> None:
    (copy / "notes.txt").write_text("hello")
    sums = copy / "SHA256SUMS"
    sums.write_text(sums.read_text() + "zzz  ../../etc/passwd\n")

    report = verify_bundle(copy)

    assert [r.file for r in failures(report, Status.UNLISTED)] == ["notes.txt"]
    assert len(failures(report, Status.INVALID)) == 1


def test_missing_metadata_files(copy: Path) -> None:
    (copy / "SHA256SUMS").unlink()
    (copy / "oci-layout").unlink()

    report = verify_bundle(copy)

    assert {r.file for r in failures(report, Status.MISSING)} == {"SHA256SUMS", "oci-layout"}


def test_raise_if_failed_names_the_problem(copy: Path, built) -> None:
    layer = shared_layer(built[1])
    (copy / layout.blob_relpath(layer)).unlink()

    report = verify_bundle(copy)
    with pytest.raises(
        Exception, match=f"is corrupt, 2 of .* checks failed: missing: blob {layer}"
    ):
        report.raise_if_failed()
