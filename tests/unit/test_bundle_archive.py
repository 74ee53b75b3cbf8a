"""Safe extraction: hostile archives are refused and nothing is written outside the target."""

from __future__ import annotations

import json
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from pipeline.bundle import verify_bundle
from pipeline.bundle.archive import UNDECLARED_ROOM, safe_extract
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


# --- bombs: small archives that unpack to far more ---------------------------------------------
MiB = 1024 * 1024
BLOB = "blobs/sha256/" + "0" * 64


def zst_archive(path: Path, entries: list[tuple[str, bytes | int]]) -> Path:
    """A .tar.zst of (name, bytes) entries; an int instead of bytes is that many zeros, streamed
    (tar written by hand: tarfile's stream mode copies big entries slowly)."""
    with (
        path.open("wb") as raw,
        zstandard.ZstdCompressor(level=1).stream_writer(raw, closefd=False) as out,
    ):
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = data if isinstance(data, int) else len(data)
            out.write(info.tobuf(tarfile.PAX_FORMAT))
            if isinstance(data, bytes):
                out.write(data)
            for chunk in range(0, info.size if isinstance(data, int) else 0, MiB):
                out.write(bytes(min(MiB, info.size - chunk)))
            out.write(bytes(-info.size % tarfile.BLOCKSIZE))
        out.write(bytes(2 * tarfile.BLOCKSIZE))  # the end-of-archive marker
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> bytes:
    """A .tar.zst of a few KiB holding one blob of 512 MiB of zeros: made once, streamed."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.tar.zst"
    return zst_archive(path, [("oci-layout", b"{}"), (BLOB, 512 * MiB)]).read_bytes()


def written(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("entries", "bound"),
    [
        # One huge blob of zeros (tar's header declares it): refused before a byte is written.
        ("bomb", "20 times the archive's"),
        # Many that each look harmless: refused when they add up, not when the disk is full.
        ([(f"blobs/sha256/{n:064x}", 2 * MiB) for n in range(40)], "20 times the archive's"),
        # inventory.json first, as create writes it: the rest may unpack to what it declares.
        (
            [("inventory.json", json.dumps({"blobs": {"bytes": 1000, "count": 1}}).encode()),
             (BLOB, 8 * MiB)],
            "what inventory.json declares (1000 B in 1 blobs)",
        ),
    ],
    ids=["one huge entry", "many entries", "inventory declares less"],
)  # fmt: skip
def test_a_bomb_is_refused_before_much_is_written(
    tmp_path: Path, entries, bound: str, bomb: bytes
) -> None:
    started = time.monotonic()
    archive = tmp_path / "bomb.tar.zst"
    if entries == "bomb":
        archive.write_bytes(bomb)
    else:
        zst_archive(archive, entries)
    assert archive.stat().st_size < 64 * 1024
    dest = tmp_path / "dest"
    dest.mkdir()

    with pytest.raises(BundleError, match=r"^\S+bomb\.tar\.zst: unpacks to more than ") as info:
        safe_extract(archive, dest)

    assert bound in str(info.value) and "before writing it" in str(info.value)
    assert written(dest) <= UNDECLARED_ROOM + 2 * MiB
    assert time.monotonic() - started < 5


def test_bundle_verify_of_a_bomb_is_one_line_and_leaves_nothing(
    tmp_path: Path, cli, bomb: bytes
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    archive = site / "bundle.tar.zst"
    archive.write_bytes(bomb)

    code, out, err = cli("bundle", "verify", str(archive))

    assert (code, out) == (1, "")
    assert err.startswith(f"error: {archive}: unpacks to more than 20 times the archive's")
    assert err.count("\n") == 1
    assert [p.name for p in site.iterdir()] == ["bundle.tar.zst"]  # the scratch is gone
