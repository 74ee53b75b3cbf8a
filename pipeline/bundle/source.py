"""Read one image's OCI layout, as a directory or as a tarball (what Dagger's
``Container.export(path, platform_variants=[...])`` writes), without extracting it.

Members are only ever read by the names this module computes (``index.json``,
``blobs/sha256/<hex>``), so a hostile tarball cannot make us write anywhere.
"""

from __future__ import annotations

import tarfile
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Protocol

from pipeline.errors import BadInput, BundleError
from pipeline.oci import layout


class LayoutSource(Protocol):
    """An OCI layout to copy from."""

    label: str

    def read(self, relpath: str) -> bytes: ...

    def open(self, relpath: str) -> BinaryIO: ...

    def exists(self, relpath: str) -> bool: ...

    def link_into(self, relpath: str, dest: Path) -> bool:
        """Hard-link the file to ``dest`` if that is possible; False means copy instead."""
        ...

    def close(self) -> None: ...


class DirSource:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.label = str(root)

    def _path(self, relpath: str) -> Path:
        return self.root / relpath

    def read(self, relpath: str) -> bytes:
        try:
            return self._path(relpath).read_bytes()
        except FileNotFoundError:
            raise BundleError(f"{self.label}: {relpath} is missing") from None

    def open(self, relpath: str) -> BinaryIO:
        try:
            return self._path(relpath).open("rb")
        except FileNotFoundError:
            raise BundleError(f"{self.label}: {relpath} is missing") from None

    def exists(self, relpath: str) -> bool:
        path = self._path(relpath)
        return path.is_file() and not path.is_symlink()

    def link_into(self, relpath: str, dest: Path) -> bool:
        try:
            dest.hardlink_to(self._path(relpath))
        except OSError:
            return False
        return True

    def close(self) -> None:
        pass


class TarSource:
    def __init__(self, path: Path) -> None:
        self.label = str(path)
        try:
            self._tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by close()
            members = self._tar.getmembers()
        except (tarfile.TarError, OSError) as exc:
            raise BundleError(f"{path}: not a readable tarball: {exc}") from None
        # Last entry wins, as with `tar -x`; only regular files count.
        self._members = {
            _clean(m.name): m for m in members if m.isfile() and _clean(m.name) is not None
        }

    def read(self, relpath: str) -> bytes:
        with self.open(relpath) as f:
            return f.read()

    def open(self, relpath: str) -> BinaryIO:
        member = self._members.get(relpath)
        f = self._tar.extractfile(member) if member is not None else None
        if f is None:
            raise BundleError(f"{self.label}: {relpath} is missing")
        return f

    def exists(self, relpath: str) -> bool:
        return relpath in self._members

    def link_into(self, relpath: str, dest: Path) -> bool:
        return False

    def close(self) -> None:
        self._tar.close()


def _clean(name: str) -> str | None:
    while name.startswith("./"):
        name = name[2:]
    return name or None


class open_source(AbstractContextManager[LayoutSource]):  # noqa: N801 - used like a function
    """``with open_source(path) as src:`` for a layout directory or a layout tarball."""

    def __init__(self, path: Path) -> None:
        if path.is_dir():
            self._source: LayoutSource = DirSource(path)
        elif path.is_file():
            self._source = TarSource(path)
        else:
            raise BadInput(f"image source {path} does not exist")
        if not self._source.exists(layout.INDEX_FILE):
            self._source.close()
            raise BundleError(f"{path}: not an OCI layout ({layout.INDEX_FILE} is missing)")

    def __enter__(self) -> LayoutSource:
        return self._source

    def __exit__(self, *exc: object) -> None:
        self._source.close()


def copy_blob(source: LayoutSource, desc: layout.Descriptor, dest: Path) -> None:
    """Copy (or hard-link) one blob to ``dest``, checking its size and digest on the way."""
    relpath = layout.blob_relpath(desc.digest)
    if not source.exists(relpath):
        raise BundleError(f"{source.label}: blob {desc.digest} is missing")
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        if source.link_into(relpath, tmp):
            digest, size = layout.hash_file(tmp)
        else:
            with source.open(relpath) as src, tmp.open("wb") as out:
                digest, size = layout.hash_stream(src, out)
        if size != desc.size:
            raise BundleError(
                f"{source.label}: blob {desc.digest} has {size} bytes, its descriptor says "
                f"{desc.size}"
            )
        if digest != desc.digest:
            raise BundleError(
                f"{source.label}: blob {desc.digest} is corrupt (content is {digest})"
            )
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
