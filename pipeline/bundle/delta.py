"""Delta bundles: every manifest, index and config of a release, but only the layers that a
previous bundle (the base) lacks. The delta's ``inventory.json`` names the base (the sha256 of
its inventory.json, its tag) and lists the blobs expected from it, with the base images that
held each (a push mounts from their repositories).

The base is known from its inventory.json alone (schema 2 lists every image's blobs), so a
delta can be made against a bundle that is not at hand: the Dagger door takes just that file.
A base that is itself a delta stands for its whole release, as a registry holds it once both
were pushed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.bundle.archive import is_archive, open_bundle, read_member
from pipeline.errors import BadInput, BundleError
from pipeline.oci import layout
from pipeline.oci.reference import parse_tagged

INVENTORY_LIMIT = 64 * 1024 * 1024  # an inventory is kilobytes: anything this big is not one


class NeedsBase(BadInput):
    """A delta given where the whole release is needed, without the bundle it was made
    against; the door names its own flag for that."""


@dataclass(frozen=True)
class Base:
    """A previous release as its inventory describes it, or the part a delta expects of it."""

    inventory: str  # sha256 of the base's inventory.json bytes
    tag: str
    blobs: dict[str, int]  # digest → size
    images: dict[str, list[str]]  # digest → names of the base images that held it


def describe_expected(tag: str, blobs: dict[str, int]) -> str:
    """The one line that says what a delta leaves to its base."""
    return (
        f"delta of {tag}: {len(blobs)} blobs ({sum(blobs.values()) / 1e6:.1f} MB) "
        "expected from the base"
    )


def read_base(path: Path) -> Base:
    """The base of a new delta: a bundle folder, its archive, or its inventory.json. Anything
    else is BadInput (one line, exit 2), found before any build."""
    data = _inventory_bytes(path)
    try:
        doc = layout.loads(data, f"{path}")
    except BundleError as exc:
        raise BadInput(f"{exc}: not a bundle inventory") from None
    entries = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise BadInput(f"{path} is not a bundle inventory: it has no list of images")
    schema = doc.get("schema")
    if not isinstance(schema, int) or schema < 2:
        raise BadInput(
            f"{path}: its {layout.INVENTORY_FILE} (schema {schema}) lists no blobs; a delta "
            "needs a base bundle made with inventory schema 2 or later"
        )
    blobs: dict[str, int] = {}
    images: dict[str, list[str]] = {}
    try:
        for entry in entries:
            name = parse_tagged(entry["ref"]).name
            _collect(entry["blobs"], blobs, images, lambda _blob, n=name: [n])
    except (BundleError, KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"{path}: malformed {layout.INVENTORY_FILE}: {exc}") from None
    return Base(layout.digest_bytes(data), release_tag(entries), blobs, images)


def _inventory_bytes(path: Path) -> bytes:
    if path.is_dir():
        file = path / layout.INVENTORY_FILE
        if not file.is_file():
            raise BadInput(f"{path} is not a bundle: it has no {layout.INVENTORY_FILE}")
        return file.read_bytes()
    if not path.is_file():
        raise BadInput(f"previous bundle {path} does not exist")
    if not is_archive(path):
        if path.stat().st_size > INVENTORY_LIMIT:
            raise BadInput(f"{path} is not a bundle, an archive of one or its inventory")
        return path.read_bytes()
    try:
        data = read_member(path, layout.INVENTORY_FILE, INVENTORY_LIMIT)
    except BundleError as exc:
        raise BadInput(str(exc)) from None
    if data is None:
        raise BadInput(f"{path} is not a bundle archive: it holds no {layout.INVENTORY_FILE}")
    return data


def _collect(
    listed: Any,
    blobs: dict[str, int],
    images: dict[str, list[str]],
    holders: Any,
) -> None:
    """Add a list of {digest, size} to ``blobs``, checking each; ``holders(blob)`` names the
    images that hold it."""
    for blob in listed:
        digest, size = blob["digest"], blob["size"]
        layout.split_digest(digest)
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"blob {digest} has a bad size {size!r}")
        blobs[digest] = size
        names = images.setdefault(digest, [])
        names += [n for n in holders(blob) if n not in names]


def release_tag(entries: Iterable[Any]) -> str:
    """The tag most images of an inventory carry: the release's (third-party images keep
    their own tags, and a release has more images of its own than not)."""
    tags = Counter(e.get("tag") for e in entries if isinstance(e, dict) and e.get("tag"))
    return str(tags.most_common(1)[0][0]) if tags else "?"


def base_section(base: Base) -> dict[str, Any]:
    """What a delta's inventory says of its base; ``base`` holds only what is left to it."""
    blobs = [{"digest": d, "size": n, "images": base.images[d]} for d, n in base.blobs.items()]
    return {"inventory": base.inventory, "tag": base.tag, "blobs": blobs}


def parse_section(inventory: Any) -> Base | None:
    """The base a bundle's inventory names: None for a full bundle; BundleError if malformed."""
    section = inventory.get("base") if isinstance(inventory, dict) else None
    if section is None:
        return None
    blobs: dict[str, int] = {}
    images: dict[str, list[str]] = {}
    try:
        _collect(section["blobs"], blobs, images, lambda blob: list(blob.get("images") or []))
        digest, tag = section["inventory"], section["tag"]
        layout.split_digest(digest)
    except (BundleError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"{layout.INVENTORY_FILE}: malformed base: {exc}") from None
    return Base(digest, str(tag), blobs, images)


def read_delta(root: Path) -> Base | None:
    """The base of the bundle at ``root``, None for a full bundle (or one whose inventory is
    unreadable: verify reports that)."""
    try:
        doc = layout.loads((root / layout.INVENTORY_FILE).read_bytes(), layout.INVENTORY_FILE)
        return parse_section(doc)
    except (OSError, BundleError):
        return None


@contextmanager
def open_base(path: Path) -> Iterator[Path]:
    """The layout of the bundle a delta was made against, for checking or loading: its blobs
    are needed, so its inventory.json alone will not do."""
    if path.is_file() and not is_archive(path):
        raise BadInput(f"base {path}: give the base bundle (folder or archive), not its inventory")
    if not path.exists():
        raise BadInput(f"base bundle {path} does not exist")
    with open_bundle(path) as root:
        yield root
