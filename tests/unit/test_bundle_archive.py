"""Safe extraction: hostile archives are refused and nothing is written outside the target."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import zstandard

from pipeline.bundle import verify_bundle
from pipeline.bundle.archive import safe_extract
from pipeline.errors import BundleError

try:
    from tests.unit import bundle_fixtures as bf
except ImportError:  # tests/unit is not a package
    import bundle_fixtures as bf


def absolute_entry(tmp_path: Path) -> tarfile.TarInfo:
    info = tarfile.TarInfo(str(tmp_path / "outside" / "abs.txt"))
    info.size = 0
    return info


HOSTILE = {
    "parent": lambda tmp: [("index.json", b"{}"), ("blobs/../../outside/escaped.txt", b"x")],
    "dotdot-first": lambda tmp: [("../outside/escaped.txt", b"x")],
    "absolute": lambda tmp: [absolute_entry(tmp)],
    "symlink-out": lambda tmp: [
        bf.link("blobs", str(tmp / "outside")),
        ("blobs/escaped.txt", b"x"),
    ],
    "symlink-relative-out": lambda tmp: [
        bf.link("blobs", "../outside"),
        ("blobs/escaped.txt", b"x"),
    ],
    "hardlink-out": lambda tmp: [bf.link("index.json", str(tmp / "outside" / "secret"), True)],
    "hardlink-dotdot": lambda tmp: [bf.link("index.json", "../outside/secret", True)],
}


def outside_is_untouched(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == "keep"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("keep")
    return tmp_path / "outside"


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_tar_is_refused_and_nothing_lands_outside(
    tmp_path: Path, outside: Path, kind: str
) -> None:
    archive = bf.build_tar(tmp_path / "evil.tar", HOSTILE[kind](tmp_path))
    dest = tmp_path / "work" / "dest"
    dest.mkdir(parents=True)

    with pytest.raises(BundleError, match="refusing archive entry"):
        safe_extract(archive, dest)

    outside_is_untouched(tmp_path)
    assert not (tmp_path / "work" / "outside").exists()


@pytest.mark.parametrize("kind", ["parent", "symlink-out", "absolute"])
def test_verify_refuses_hostile_zst_archive_and_cleans_up(
    tmp_path: Path, outside: Path, kind: str
) -> None:
    plain = bf.build_tar(tmp_path / "evil.tar", HOSTILE[kind](tmp_path))
    bundle_dir = tmp_path / "site"
    bundle_dir.mkdir()
    archive = bundle_dir / "bundle.tar.zst"
    archive.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))

    with pytest.raises(BundleError, match="refusing archive entry"):
        verify_bundle(archive)

    outside_is_untouched(tmp_path)
    assert sorted(p.name for p in bundle_dir.iterdir()) == ["bundle.tar.zst"]


def test_links_inside_the_target_are_allowed(tmp_path: Path) -> None:
    archive = bf.build_tar(
        tmp_path / "ok.tar",
        [
            ("a/file.txt", b"hello"),
            bf.link("a/alias", "file.txt"),
            bf.link("b", "a/file.txt", True),
        ],
    )
    dest = tmp_path / "dest"
    dest.mkdir()

    safe_extract(archive, dest)

    assert (dest / "a" / "alias").read_text() == "hello"
    assert (dest / "b").read_text() == "hello"


def test_device_entries_are_refused(tmp_path: Path) -> None:
    info = tarfile.TarInfo("dev")
    info.type = tarfile.CHRTYPE
    archive = bf.build_tar(tmp_path / "dev.tar", [info])
    dest = tmp_path / "dest"
    dest.mkdir()

    with pytest.raises(BundleError, match="not a file or directory"):
        safe_extract(archive, dest)


def test_garbage_is_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(BundleError):
        verify_bundle(junk)
