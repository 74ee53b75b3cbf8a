"""One-file forms of a bundle: ``.tar`` and ``.tar.zst``, written under a temporary name and
renamed when complete, read back by a safe extractor that writes nothing outside its target.

The archive holds the layout at its root (``oci-layout``, ``index.json``, ``blobs/``...), so
``ctr images import`` and ``docker load`` take the ``.tar`` as it is.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from pipeline.bundle.progress import human
from pipeline.errors import BadInput, BundleError, writing
from pipeline.oci.layout import INVENTORY_FILE, iter_files, loads

FORMATS = {"tar": ".tar", "tar.zst": ".tar.zst"}
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_LEVEL = 3  # layers are gzip already: a higher level costs time and saves little


def check_archive_format(fmt: str | None) -> None:
    """None (no archive) or one of FORMATS; checked before any build."""
    if fmt is not None and fmt not in FORMATS:
        raise BadInput(f"unknown archive format {fmt!r}; choose one of: {', '.join(FORMATS)}")


def archive_path(output: Path, fmt: str) -> Path:
    """``/x/bundle`` + ``tar.zst`` → ``/x/bundle.tar.zst``."""
    check_archive_format(fmt)
    return output.with_name(output.name + FORMATS[fmt])


def _zstandard():  # imported on demand: only the tar.zst form needs it
    try:
        import zstandard
    except ImportError:  # pragma: no cover - it is a dependency
        raise BadInput("the tar.zst format needs the 'zstandard' package") from None
    return zstandard


def write_archive(root: Path, dest: Path, fmt: str, *, mtime: int = 0) -> Path:
    """Archive the layout directory ``root`` to ``dest`` (temp name, then rename).

    Entries are sorted and carry fixed owners and ``mtime``, so the same bundle gives the same
    archive bytes.
    """
    os.replace(partial_archive(root, dest, fmt, mtime=mtime), dest)
    return dest


def partial_archive(root: Path, dest: Path, fmt: str, *, mtime: int = 0) -> Path:
    """The archive of ``root`` written whole under ``dest``'s partial name, for the caller to
    put in place; nothing is left if it fails."""
    check_archive_format(fmt)
    tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    try:
        with writing("the archive", dest, BundleError), tmp.open("wb") as raw:
            if fmt == "tar":
                _write_tar(root, raw, mtime)
            else:
                zstd = _zstandard()
                cctx = zstd.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
                with cctx.stream_writer(raw, closefd=False) as writer:
                    _write_tar(root, writer, mtime)
            raw.flush()
            os.fsync(raw.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _write_tar(root: Path, fileobj: BinaryIO, mtime: int) -> None:
    files = list(iter_files(root))
    dirs = sorted({str(p) for f in files for p in PurePosixPath(f).parents if str(p) != "."})
    # The top-level metadata first: an extractor then knows from inventory.json how much the
    # blobs may unpack to before it meets them.
    top = sorted(f for f in files if "/" not in f)
    rest = sorted([*dirs, *(f for f in files if "/" in f)])
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in [*top, *rest]:
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if name in dirs:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
                continue
            path = root / name
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as f:
                tar.addfile(info, f)


def detect_format(path: Path) -> str:
    """``tar`` or ``tar.zst``, by content rather than by name."""
    with path.open("rb") as f:
        head = f.read(4)
    return "tar.zst" if head == ZSTD_MAGIC else "tar"


@contextmanager
def _open_tar_stream(path: Path) -> Iterator[tarfile.TarFile]:
    try:
        with path.open("rb") as raw:
            if detect_format(path) == "tar.zst":
                reader = _zstandard().ZstdDecompressor().stream_reader(raw)
                with tarfile.open(fileobj=reader, mode="r|") as tar:
                    yield tar
            else:
                with tarfile.open(fileobj=raw, mode="r|") as tar:
                    yield tar
    except tarfile.TarError as exc:
        raise BundleError(f"{path}: not a readable archive: {exc}") from None


def is_archive(path: Path) -> bool:
    """A ``.tar`` or ``.tar.zst`` by its first bytes (a tar header says ``ustar`` at 257)."""
    with path.open("rb") as f:
        head = f.read(512)
    return head[:4] == ZSTD_MAGIC or head[257:262] == b"ustar"


def read_member(archive: Path, name: str, limit: int) -> bytes | None:
    """The bytes of the regular file ``name`` in ``archive`` (None if absent), read without
    extracting anything: our archives put the top-level metadata first, so a delta's base is
    known from a multi-gigabyte archive after reading a few kilobytes."""
    wanted = PurePosixPath(name)
    with _open_tar_stream(archive) as tar:
        for member in tar:
            if PurePosixPath(member.name) != wanted or not member.isfile():
                continue
            if member.size > limit:
                raise BundleError(f"{archive}: {name} is {human(member.size)}, over {human(limit)}")
            f = tar.extractfile(member)
            return f.read() if f is not None else None
    return None


def _inside(root: Path, target: Path) -> bool:
    return target == root or root in target.parents


def check_member(member: tarfile.TarInfo, root: Path) -> None:
    """Refuse an entry that could write outside ``root`` (an absolute path, ``..``, a link that
    points outside) or that is not a plain file, directory or link."""
    name = member.name
    pure = PurePosixPath(name)
    if pure.is_absolute() or name.startswith(("/", "\\")):
        raise BundleError(f"refusing archive entry {name!r}: absolute path")
    if ".." in pure.parts:
        raise BundleError(f"refusing archive entry {name!r}: it climbs out with '..'")
    if not _inside(root, (root / name).resolve()):
        raise BundleError(f"refusing archive entry {name!r}: it resolves outside the bundle")
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        if link.is_absolute() or ".." in link.parts:
            kind = "symlink" if member.issym() else "hard link"
            raise BundleError(
                f"refusing archive entry {name!r}: {kind} to {member.linkname!r} points outside"
            )
        base = (root / name).parent if member.issym() else root
        if not _inside(root, (base / link).resolve()):
            raise BundleError(
                f"refusing archive entry {name!r}: link to {member.linkname!r} points outside"
            )
    elif not (member.isfile() or member.isdir()):
        raise BundleError(f"refusing archive entry {name!r}: not a file or directory")


# tarfile's extraction filters exist from Python 3.11.4 (Debian 12 ships 3.11.2); there,
# check_member alone guards the write.
_DATA_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_FILTER_ERRORS = (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()


# What an archive may unpack to. Before its inventory is read: many times its own size, since
# layers are compressed already and an archive barely shrinks them, but a bomb (a small
# archive of zeros) hits it at once. Once inventory.json is read: the blob bytes it declares,
# plus room for the metadata files and a tar header per entry.
EXPANSION = 20
UNDECLARED_ROOM = 16 * 1024 * 1024
METADATA_ROOM = 1024 * 1024
ROOM_PER_BLOB = 4096
TAR_HEADER = 512  # what each entry costs on disk at least (an inode, a directory entry)


class _Budget:
    """Counts what an extraction writes, and stops it before it passes its bound."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        size = archive.stat().st_size
        self.limit = size * EXPANSION + UNDECLARED_ROOM
        self.bound = f"{EXPANSION} times the archive's {human(size)} plus {human(UNDECLARED_ROOM)}"
        self.used = 0

    def spend(self, member: tarfile.TarInfo) -> None:
        """Before ``member`` is written: its bytes (tar says how many) and its header."""
        self.used += max(member.size, 0) + TAR_HEADER
        if self.used > self.limit:
            raise BundleError(
                f"{self.archive}: unpacks to more than {self.bound}; refused at entry "
                f"{member.name!r} ({human(member.size)}) before writing it"
            )

    def declared(self, inventory: Path) -> None:
        """Tighten the bound to what inventory.json declares (verify reports a bad one)."""
        try:
            blobs = loads(inventory.read_bytes(), INVENTORY_FILE)["blobs"]
            size, count = int(blobs["bytes"]), int(blobs["count"])
        except (BundleError, KeyError, TypeError, ValueError):
            return
        limit = self.used + size + METADATA_ROOM + count * (ROOM_PER_BLOB + TAR_HEADER)
        if limit < self.limit:
            self.limit = limit
            self.bound = f"what {INVENTORY_FILE} declares ({human(size)} in {count} blobs)"


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into the existing directory ``dest``; every entry is checked before
    anything is written (its path, its type, and that it keeps the extraction within bounds:
    see _Budget), and tarfile's ``data`` filter guards the write as well."""
    root = dest.resolve()
    budget = _Budget(archive)
    with _open_tar_stream(archive) as tar:
        for member in tar:
            check_member(member, root)
            budget.spend(member)
            try:
                tar.extract(member, root, **_DATA_FILTER)
            except _FILTER_ERRORS as exc:  # pragma: no cover - check_member is stricter
                raise BundleError(f"refusing archive entry {member.name!r}: {exc}") from None
            if member.isfile() and PurePosixPath(member.name) == PurePosixPath(INVENTORY_FILE):
                budget.declared(root / INVENTORY_FILE)


@contextmanager
def scratch_dir(near: Path, label: str) -> Iterator[Path]:
    """A temporary directory beside ``near`` (same file system, no small /tmp), else in TMPDIR."""
    try:
        holder = tempfile.TemporaryDirectory(prefix=f".{label}-", dir=near)
    except OSError:
        holder = tempfile.TemporaryDirectory(prefix=f".{label}-")
    with holder as name:
        yield Path(name)


@contextmanager
def open_bundle(path: Path) -> Iterator[Path]:
    """The bundle's layout directory: ``path`` itself, or a safe extraction of an archive that
    is removed on exit."""
    if path.is_dir():
        yield path
    elif path.is_file():
        with scratch_dir(path.parent, f"{path.name}.extract") as tmp:
            safe_extract(path, tmp)
            yield tmp
    else:
        raise BadInput(f"bundle {path} does not exist")


@contextmanager
def as_plain_tar(path: Path, layout: Path) -> Iterator[Path]:
    """A ``.tar`` of the bundle for tools that read one: ``path`` itself if it already is one,
    else a temporary archive of ``layout`` (the bundle's directory) removed on exit."""
    if path.is_file() and detect_format(path) == "tar":
        yield path
        return
    with scratch_dir(path.parent, f"{path.name}.load") as tmp:
        yield write_archive(layout, tmp / "bundle.tar", "tar")
