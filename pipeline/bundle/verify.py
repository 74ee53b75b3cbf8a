"""verify: check a bundle offline, like Hauler's ``store info --check``.

Every blob reachable from ``index.json`` goes exists → size → streamed sha256 (each digest read
once), then: every image has the release's platforms, ``inventory.json`` agrees with the
layout, and ``SHA256SUMS`` matches every file. Each check is one typed result; the report ends
with "N of M checks failed" and names what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.bundle import oci
from pipeline.bundle.archive import open_bundle
from pipeline.bundle.create import inventory_entry
from pipeline.errors import BadInput, BundleError


class Status(StrEnum):
    OK = "ok"
    MISSING = "missing"
    SIZE_MISMATCH = "size-mismatch"
    DIGEST_MISMATCH = "digest-mismatch"
    PLATFORM_MISSING = "platform-missing"
    MISMATCH = "mismatch"  # inventory.json disagrees with the layout
    UNLISTED = "unlisted"  # a file that SHA256SUMS does not cover
    INVALID = "invalid"  # unreadable or malformed metadata


@dataclass(frozen=True)
class CheckResult:
    check: str  # layout | blob | platform | inventory | checksum
    subject: str
    status: Status
    detail: str = ""
    image: str | None = None
    platform: str | None = None
    digest: str | None = None
    file: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def describe(self) -> str:
        text = f"{self.status}: {self.check} {self.subject}"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass
class VerifyReport:
    path: Path
    platforms: list[str]
    images: list[str]
    results: list[CheckResult] = field(default_factory=list)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        total, failed = len(self.results), len(self.failures)
        if failed:
            return f"{failed} of {total} checks failed"
        return f"all {total} checks passed ({len(self.images)} images)"

    def raise_if_failed(self, limit: int = 3) -> None:
        """BundleError naming the first failures; used by push and load to refuse a bundle."""
        if self.ok:
            return
        shown = "; ".join(r.describe() for r in self.failures[:limit])
        more = len(self.failures) - limit
        tail = f"; and {more} more" if more > 0 else ""
        raise BundleError(f"bundle {self.path} is corrupt, {self.summary()}: {shown}{tail}")


def verify_bundle(path: Path, platforms: list[str] | None = None) -> VerifyReport:
    """Verify a bundle directory or archive (an archive is extracted safely to a scratch
    directory beside it first). ``platforms`` defaults to the ones in ``inventory.json``."""
    with open_bundle(path) as root:
        return verify_layout(root, platforms, label=path)


def verify_layout(
    root: Path, platforms: list[str] | None, label: Path | None = None
) -> VerifyReport:
    return _Verifier(root, label or root).run(platforms)


_SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


class _Verifier:
    def __init__(self, root: Path, label: Path) -> None:
        self.root = root
        self.label = label
        self.results: list[CheckResult] = []
        self.actual: dict[str, str | None] = {}  # digest → digest of the file's content
        self.blob_status: dict[str, Status] = {}
        self.blob_detail: dict[str, str] = {}
        self.blob_users: dict[str, dict[str, None]] = {}  # digest → "image platform" (ordered)
        self.blob_kind: dict[str, str] = {}

    # --- entry ------------------------------------------------------------------------------
    def run(self, platforms: list[str] | None) -> VerifyReport:
        self._check_layout_file()
        inventory = self._read_inventory()
        images = self._read_images()
        if platforms is None:
            platforms = list((inventory or {}).get("platforms") or [])
            if not platforms:
                self._add(
                    "platform",
                    "list",
                    Status.INVALID,
                    f"no platforms given and none in {oci.INVENTORY_FILE}",
                )
        try:
            wanted = [oci.normalize_platform(p) for p in platforms]
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        found: dict[str, tuple[oci.Descriptor, set[str], bool]] = {}
        for ref, top in images:
            found[ref] = self._walk_image(ref, top)
        self._emit_blob_results()
        for ref, (_top, have, intact) in found.items():
            for platform in wanted:
                status = Status.OK if platform in have else Status.PLATFORM_MISSING
                detail = "" if status is Status.OK else f"has {', '.join(sorted(have)) or 'none'}"
                if status is not Status.OK and not intact:
                    detail += " (some of its blobs are damaged, see above)"
                self._add(
                    "platform",
                    f"{_short(ref)} {platform}",
                    status,
                    detail,
                    image=ref,
                    platform=platform,
                )
        if inventory is not None:
            self._check_inventory(inventory, found)
        self._check_sums()
        report = VerifyReport(path=self.label, platforms=wanted, images=[r for r, _ in images])
        report.results = self.results
        return report

    def _add(self, check: str, subject: str, status: Status, detail: str = "", **kw: Any) -> None:
        self.results.append(CheckResult(check, subject, status, detail, **kw))

    # --- metadata -----------------------------------------------------------------------------
    def _check_layout_file(self) -> None:
        path = self.root / oci.LAYOUT_FILE
        if not path.is_file():
            self._add("layout", oci.LAYOUT_FILE, Status.MISSING, file=oci.LAYOUT_FILE)
            return
        try:
            version = oci.loads(path.read_bytes(), oci.LAYOUT_FILE).get("imageLayoutVersion")
        except (BundleError, AttributeError) as exc:
            self._add("layout", oci.LAYOUT_FILE, Status.INVALID, str(exc), file=oci.LAYOUT_FILE)
            return
        status = Status.OK if version == oci.LAYOUT_VERSION else Status.INVALID
        detail = "" if status is Status.OK else f"imageLayoutVersion is {version!r}"
        self._add("layout", oci.LAYOUT_FILE, status, detail, file=oci.LAYOUT_FILE)

    def _read_inventory(self) -> dict[str, Any] | None:
        path = self.root / oci.INVENTORY_FILE
        if not path.is_file():
            self._add("inventory", oci.INVENTORY_FILE, Status.MISSING, file=oci.INVENTORY_FILE)
            return None
        try:
            doc = oci.loads(path.read_bytes(), oci.INVENTORY_FILE)
            if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
                raise BundleError(f"{oci.INVENTORY_FILE} has no list of images")
        except BundleError as exc:
            self._add(
                "inventory", oci.INVENTORY_FILE, Status.INVALID, str(exc), file=oci.INVENTORY_FILE
            )
            return None
        return doc

    def _read_images(self) -> list[tuple[str, oci.Descriptor]]:
        try:
            tops = oci.read_index(self.root)
        except BundleError as exc:
            missing = not (self.root / oci.INDEX_FILE).is_file()
            status = Status.MISSING if missing else Status.INVALID
            self._add(
                "layout", oci.INDEX_FILE, status, "" if missing else str(exc), file=oci.INDEX_FILE
            )
            return []
        images = []
        for top in tops:
            ref = top.annotations.get(oci.ANNOTATION_REF_NAME)
            if not ref:
                self._add(
                    "layout",
                    top.digest,
                    Status.INVALID,
                    f"entry of {oci.INDEX_FILE} has no {oci.ANNOTATION_REF_NAME}",
                    digest=top.digest,
                    file=oci.INDEX_FILE,
                )
                continue
            images.append((ref, top))
        if not images:
            self._add(
                "layout", oci.INDEX_FILE, Status.INVALID, "names no image", file=oci.INDEX_FILE
            )
        else:
            self._add("layout", oci.INDEX_FILE, Status.OK, file=oci.INDEX_FILE)
        return images

    # --- blobs ----------------------------------------------------------------------------------
    def _check_blob(
        self, desc: oci.Descriptor, kind: str, image: str, platform: str | None
    ) -> bool:
        users = self.blob_users.setdefault(desc.digest, {})
        users[f"{_short(image)} {platform}" if platform else _short(image)] = None
        self.blob_kind.setdefault(desc.digest, kind)
        if desc.digest in self.blob_status:
            return self.blob_status[desc.digest] is Status.OK
        path = oci.blob_path(self.root, desc.digest)
        if not path.is_file() or path.is_symlink():
            status, detail = Status.MISSING, ""
        elif (size := path.stat().st_size) != desc.size:
            status, detail = Status.SIZE_MISMATCH, f"{size} bytes, descriptor says {desc.size}"
        else:
            actual, _ = oci.hash_file(path)
            self.actual[desc.digest] = actual
            ok = actual == desc.digest
            status = Status.OK if ok else Status.DIGEST_MISMATCH
            detail = "" if ok else f"content hashes to {actual}"
        self.blob_status[desc.digest] = status
        self.blob_detail[desc.digest] = detail
        return status is Status.OK

    def _read_json(self, digest: str) -> Any:
        return oci.loads(oci.blob_path(self.root, digest).read_bytes(), f"blob {digest}")

    def _walk_image(self, ref: str, top: oci.Descriptor) -> tuple[oci.Descriptor, set[str], bool]:
        """Check every blob of one image; returns (top, platforms seen, all blobs intact)."""
        platforms: set[str] = set()
        intact = True

        def visit(desc: oci.Descriptor, platform: str | None, depth: int) -> None:
            nonlocal intact
            if desc.is_index:
                if not self._check_blob(desc, "index", ref, None) or depth > 8:
                    intact = False
                    return
                for child in self._read_json(desc.digest).get("manifests") or []:
                    child_desc = oci.Descriptor.parse(child, f"index {desc.digest}")
                    if child_desc.platform and not child_desc.is_attestation:
                        platforms.add(child_desc.platform)
                    visit(child_desc, child_desc.platform, depth + 1)
            elif desc.is_manifest:
                if not self._check_blob(desc, "manifest", ref, platform):
                    intact = False
                    return
                doc = self._read_json(desc.digest)
                config = oci.Descriptor.parse(doc.get("config"), f"manifest {desc.digest}")
                config_ok = self._check_blob(config, "config", ref, platform)
                intact = intact and config_ok
                if platform is None and config_ok and not desc.is_attestation:
                    platform = oci.platform_of(self._read_json(config.digest))
                    if platform and platform != oci.UNKNOWN_PLATFORM:
                        platforms.add(platform)
                for layer in doc.get("layers") or []:
                    layer_desc = oci.Descriptor.parse(layer, f"manifest {desc.digest}")
                    intact = self._check_blob(layer_desc, "layer", ref, platform) and intact
            else:
                self._add(
                    "blob",
                    desc.digest,
                    Status.INVALID,
                    f"unsupported media type {desc.media_type}",
                    image=ref,
                    digest=desc.digest,
                )
                intact = False

        try:
            visit(top, top.platform, 0)
        except (BundleError, AttributeError, TypeError) as exc:
            self._add("blob", top.digest, Status.INVALID, str(exc), image=ref, digest=top.digest)
            intact = False
        return top, platforms, intact

    def _emit_blob_results(self) -> None:
        for digest, status in self.blob_status.items():
            detail = self.blob_detail[digest]
            users = ", ".join(self.blob_users[digest])
            relpath = oci.blob_relpath(digest)
            text = f"{self.blob_kind[digest]} of {users}; file {relpath}"
            if detail:
                text = f"{text}; {detail}"
            first_image, _, first_platform = next(iter(self.blob_users[digest])).partition(" ")
            self._add(
                "blob",
                digest,
                status,
                "" if status is Status.OK else text,
                image=first_image,
                platform=first_platform or None,
                digest=digest,
                file=relpath,
            )

    # --- inventory --------------------------------------------------------------------------------
    def _check_inventory(
        self,
        inventory: dict[str, Any],
        found: dict[str, tuple[oci.Descriptor, set[str], bool]],
    ) -> None:
        listed = {
            entry.get("ref"): entry for entry in inventory["images"] if isinstance(entry, dict)
        }
        for ref in listed.keys() - found.keys():
            self._add(
                "inventory",
                f"{ref}",
                Status.MISMATCH,
                f"listed in {oci.INVENTORY_FILE} but not in {oci.INDEX_FILE}",
                image=ref,
                file=oci.INVENTORY_FILE,
            )
        for ref, (top, _platforms, intact) in found.items():
            entry = listed.get(ref)
            if entry is None:
                self._add(
                    "inventory",
                    ref,
                    Status.MISMATCH,
                    f"in {oci.INDEX_FILE} but not listed in {oci.INVENTORY_FILE}",
                    image=ref,
                    file=oci.INVENTORY_FILE,
                )
                continue
            if intact:
                graph = oci.walk_image(top, self._read_blob_bytes, ref)
                expected = inventory_entry(entry.get("name"), ref, entry.get("tag"), graph)
            else:  # its blobs are reported above; compare what can still be read
                expected = {**entry, "digest": top.digest}
            diffs = [k for k in sorted(expected) if expected[k] != entry.get(k)]
            status = Status.MISMATCH if diffs else Status.OK
            detail = f"differs in {', '.join(diffs)}" if diffs else ""
            self._add("inventory", _short(ref), status, detail, image=ref, file=oci.INVENTORY_FILE)

    def _read_blob_bytes(self, digest: str) -> bytes:
        return oci.blob_path(self.root, digest).read_bytes()

    # --- SHA256SUMS ---------------------------------------------------------------------------
    def _check_sums(self) -> None:
        path = self.root / oci.CHECKSUMS_FILE
        if not path.is_file():
            self._add("checksum", oci.CHECKSUMS_FILE, Status.MISSING, file=oci.CHECKSUMS_FILE)
            return
        listed: dict[str, str] = {}
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            match = _SUM_LINE.match(line)
            name = match.group(2) if match else ""
            pure = PurePosixPath(name)
            if not match or pure.is_absolute() or ".." in pure.parts:
                self._add(
                    "checksum",
                    f"{oci.CHECKSUMS_FILE} line {number}",
                    Status.INVALID,
                    f"malformed line {line[:80]!r}",
                    file=oci.CHECKSUMS_FILE,
                )
                continue
            listed[name] = match.group(1)
        present = set(oci.iter_files(self.root)) - {oci.CHECKSUMS_FILE}
        for name in sorted(present - listed.keys()):
            self._add("checksum", name, Status.UNLISTED, f"not in {oci.CHECKSUMS_FILE}", file=name)
        for name, expected in sorted(listed.items()):
            file = self.root / name
            if not file.is_file() or file.is_symlink():
                self._add(
                    "checksum", name, Status.MISSING, f"listed in {oci.CHECKSUMS_FILE}", file=name
                )
                continue
            actual = self._file_hex(name, file)
            ok = actual == expected
            self._add(
                "checksum",
                name,
                Status.OK if ok else Status.DIGEST_MISMATCH,
                "" if ok else f"sha256 is {actual}, {oci.CHECKSUMS_FILE} says {expected}",
                file=name,
            )

    def _file_hex(self, name: str, file: Path) -> str:
        parts = name.split("/")
        if len(parts) == 3 and parts[:2] == [oci.BLOBS_DIR, oci.ALGORITHM]:
            cached = self.actual.get(f"{oci.ALGORITHM}:{parts[2]}")
            if cached:  # read once: the blob check already hashed this file
                return oci.split_digest(cached)[1]
        return oci.split_digest(oci.hash_file(file)[0])[1]


def _short(ref: str) -> str:
    """``harbor.example.com/ai-infra/backend:v1`` → ``backend``; for messages."""
    try:
        return oci.parse_reference(ref).name
    except ValueError:
        return ref
