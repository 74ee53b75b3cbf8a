"""verify: check a bundle offline, like Hauler's ``store info --check``.

Every blob reachable from ``index.json`` goes exists → size → streamed sha256 (each digest read
once), then: every image has the release's platforms, ``inventory.json`` agrees with the
layout, and ``SHA256SUMS`` matches every file. Each check is one typed result; the report ends
with "N of M checks failed" and names what is wrong.

A delta's layers that its inventory expects from the base are not checks but a count; given
the base bundle, each is checked there as a blob is here.

The blobs of the signature images that ``inventory.json`` names are checked like any other;
given the public key, each image's signature is checked too (pipeline/oci/sign.py): it must sign
that image's index in that repository, with that key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.bundle.archive import open_bundle
from pipeline.bundle.create import (
    INDEX_SIGNATURE,
    inventory_entry,
    inventory_signatures,
    signed_digests,
)
from pipeline.bundle.delta import Base, describe_expected, open_base, parse_section
from pipeline.bundle.sboms import Listed, inventory_sbom_signatures, inventory_sboms
from pipeline.errors import BadInput, BundleError
from pipeline.oci import layout, sbom, sign
from pipeline.oci.reference import parse_tagged
from pipeline.planning.kit import KIT_DIR, missing_from_bundle


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
    check: str  # layout | blob | platform | inventory | checksum | base | signature
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
    base: Base | None = None  # a delta's base, as its inventory names it
    from_base: dict[str, int] = field(default_factory=dict)  # digest → size, left to the base

    def delta_line(self) -> str | None:
        if self.base is None:
            return None
        return describe_expected(self.base.tag, self.from_base)

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
        shown = first_few([r.describe() for r in self.failures], "; ", limit)
        raise BundleError(f"bundle {self.path} is corrupt, {self.summary()}: {shown}")


def first_few(items: list[str], sep: str, limit: int = 3) -> str:
    """The first ``limit`` items, and how many more: a one-line error stays one line."""
    more = len(items) - limit
    return sep.join(items[:limit]) + (f"{sep}and {more} more" if more > 0 else "")


def verify_bundle(
    path: Path,
    platforms: list[str] | None = None,
    base: Path | None = None,
    key: sign.PublicKey | None = None,
) -> VerifyReport:
    """Verify a bundle directory or archive (an archive is extracted safely to a scratch
    directory beside it first). ``platforms`` defaults to the ones in ``inventory.json``.
    ``base``, for a delta: the bundle it was made against, checked for what the delta expects.
    ``key``: the public key every image's signature must verify with."""
    with open_bundle(path) as root, open_base(base) if base else nullcontext() as base_root:
        return verify_layout(root, platforms, label=path, base=base_root, base_label=base, key=key)


def verify_layout(
    root: Path,
    platforms: list[str] | None,
    label: Path | None = None,
    *,
    base: Path | None = None,
    base_label: Path | None = None,
    key: sign.PublicKey | None = None,
) -> VerifyReport:
    """Verify the layout at ``root``; ``base`` is the layout of a delta's base."""
    verifier = _Verifier(root, label or root)
    if base is not None:
        verifier.base_root, verifier.base_label = base, base_label or base
    verifier.key = key
    return verifier.run(platforms)


def check_file(path: Path, digest: str, size: int) -> tuple[Status, str, str | None]:
    """exists → size → sha256 of one blob file: its status, what is wrong, and its content's
    digest if it was read."""
    if not path.is_file() or path.is_symlink():
        return Status.MISSING, "", None
    if (actual_size := path.stat().st_size) != size:
        return Status.SIZE_MISMATCH, f"{actual_size} bytes, descriptor says {size}", None
    actual, _ = layout.hash_file(path)
    if actual != digest:
        return Status.DIGEST_MISMATCH, f"content hashes to {actual}", actual
    return Status.OK, "", actual


_NO_SBOM = "the bundle holds no intact SBOM of it"
_SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
# One image as walked: its top, the platforms it has, its graph (None if a blob is damaged).
_Walked = tuple[layout.Descriptor, set[str], layout.ImageGraph | None]


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
        self.base: Base | None = None  # the base this bundle's inventory names, for a delta
        self.from_base: dict[str, int] = {}
        self.base_root: Path | None = None
        self.base_label: Path | None = None
        self.key: sign.PublicKey | None = None

    # --- entry ------------------------------------------------------------------------------
    def run(self, platforms: list[str] | None) -> VerifyReport:
        self._check_layout_file()
        inventory = self._read_inventory()
        self.base = self._read_base(inventory)
        images = self._read_images()
        if platforms is None:
            platforms = list((inventory or {}).get("platforms") or [])
            if not platforms:
                self._add(
                    "platform",
                    "list",
                    Status.INVALID,
                    f"no platforms given and none in {layout.INVENTORY_FILE}",
                )
        try:
            wanted = [layout.normalize_platform(p) for p in platforms]
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        found = {ref: self._walk_image(ref, top) for ref, top in images}
        signatures = self._walk_signatures(inventory or {})
        sboms = self._walk_sboms(inventory or {})
        sbom_signatures = self._walk_sbom_signatures(inventory or {})
        self._emit_blob_results()
        self._check_platforms(found, wanted)
        if inventory is not None:
            self._check_inventory(inventory, found)
        self._check_sums()
        if inventory is not None and (self.root / KIT_DIR).is_dir():
            self._check_kit(inventory)
        if self.base_root is not None:
            self._check_base()
        if self.key is not None:
            self._check_signatures(found, signatures, (inventory or {}).get("signing"))
        if sboms:
            self._check_sboms(found, sboms)
        if sboms and self.key is not None:
            self._check_sbom_signatures(sboms, sbom_signatures)
        report = VerifyReport(path=self.label, platforms=wanted, images=[r for r, _ in images])
        report.results = self.results
        report.base, report.from_base = self.base, self.from_base
        return report

    def _check_platforms(self, found: dict[str, _Walked], wanted: list[str]) -> None:
        for ref, (_top, have, graph) in found.items():
            for platform in wanted:
                status = Status.OK if platform in have else Status.PLATFORM_MISSING
                detail = "" if status is Status.OK else f"has {', '.join(sorted(have)) or 'none'}"
                if status is not Status.OK and graph is None:
                    detail += " (some of its blobs are damaged, see above)"
                self._add(
                    "platform",
                    f"{short_ref(ref)} {platform}",
                    status,
                    detail,
                    image=ref,
                    platform=platform,
                )

    def _add(self, check: str, subject: str, status: Status, detail: str = "", **kw: Any) -> None:
        self.results.append(CheckResult(check, subject, status, detail, **kw))

    # --- metadata -----------------------------------------------------------------------------
    def _check_layout_file(self) -> None:
        path = self.root / layout.LAYOUT_FILE
        if not path.is_file():
            self._add("layout", layout.LAYOUT_FILE, Status.MISSING, file=layout.LAYOUT_FILE)
            return
        try:
            version = layout.loads(path.read_bytes(), layout.LAYOUT_FILE).get("imageLayoutVersion")
        except (BundleError, AttributeError) as exc:
            self._add(
                "layout", layout.LAYOUT_FILE, Status.INVALID, str(exc), file=layout.LAYOUT_FILE
            )
            return
        status = Status.OK if version == layout.LAYOUT_VERSION else Status.INVALID
        detail = "" if status is Status.OK else f"imageLayoutVersion is {version!r}"
        self._add("layout", layout.LAYOUT_FILE, status, detail, file=layout.LAYOUT_FILE)

    def _read_inventory(self) -> dict[str, Any] | None:
        path = self.root / layout.INVENTORY_FILE
        if not path.is_file():
            self._add(
                "inventory", layout.INVENTORY_FILE, Status.MISSING, file=layout.INVENTORY_FILE
            )
            return None
        try:
            doc = layout.loads(path.read_bytes(), layout.INVENTORY_FILE)
            if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
                raise BundleError(f"{layout.INVENTORY_FILE} has no list of images")
        except BundleError as exc:
            self._add(
                "inventory",
                layout.INVENTORY_FILE,
                Status.INVALID,
                str(exc),
                file=layout.INVENTORY_FILE,
            )
            return None
        return doc

    def _read_base(self, inventory: dict[str, Any] | None) -> Base | None:
        try:
            base = parse_section(inventory)
        except BundleError as exc:
            file = layout.INVENTORY_FILE
            self._add("inventory", f"{file} base", Status.INVALID, str(exc), file=file)
            return None
        if base is None and self.base_root is not None:
            raise BadInput(f"bundle {self.label} is not a delta: it has no base to check")
        return base

    def _read_images(self) -> list[tuple[str, layout.Descriptor]]:
        try:
            tops = layout.read_index(self.root)
        except BundleError as exc:
            missing = not (self.root / layout.INDEX_FILE).is_file()
            status = Status.MISSING if missing else Status.INVALID
            self._add(
                "layout",
                layout.INDEX_FILE,
                status,
                "" if missing else str(exc),
                file=layout.INDEX_FILE,
            )
            return []
        images = []
        for top in tops:
            ref = top.annotations.get(layout.ANNOTATION_REF_NAME)
            if not ref:
                self._add(
                    "layout",
                    top.digest,
                    Status.INVALID,
                    f"entry of {layout.INDEX_FILE} has no {layout.ANNOTATION_REF_NAME}",
                    digest=top.digest,
                    file=layout.INDEX_FILE,
                )
                continue
            images.append((ref, top))
        if not images:
            self._add(
                "layout",
                layout.INDEX_FILE,
                Status.INVALID,
                "names no image",
                file=layout.INDEX_FILE,
            )
        else:
            self._add("layout", layout.INDEX_FILE, Status.OK, file=layout.INDEX_FILE)
        return images

    # --- blobs ----------------------------------------------------------------------------------
    def _check_blob(
        self, desc: layout.Descriptor, kind: str, image: str, platform: str | None
    ) -> bool:
        users = self.blob_users.setdefault(desc.digest, {})
        users[f"{short_ref(image)} {platform}" if platform else short_ref(image)] = None
        self.blob_kind.setdefault(desc.digest, kind)
        if desc.digest in self.from_base:
            return True
        if desc.digest in self.blob_status:
            return self.blob_status[desc.digest] is Status.OK
        path = layout.blob_path(self.root, desc.digest)
        if self._left_to_base(desc, kind, path):
            return True
        status, detail, actual = check_file(path, desc.digest, desc.size)
        if actual is not None:
            self.actual[desc.digest] = actual
        self.blob_status[desc.digest] = status
        self.blob_detail[desc.digest] = detail
        return status is Status.OK

    def _left_to_base(self, desc: layout.Descriptor, kind: str, path: Path) -> bool:
        """A layer a delta does not hold and expects from its base: counted, not checked here.
        Only layers: verify must read every manifest and config to walk the images."""
        if self.base is None or kind != "layer" or path.exists():
            return False
        if self.base.blobs.get(desc.digest) != desc.size:
            return False
        self.from_base[desc.digest] = desc.size
        return True

    def _check_base(self) -> None:
        """With the base at hand: it is the bundle the delta was made against (its
        inventory.json unchanged) and holds, intact, each blob the delta expects from it."""
        assert self.base is not None and self.base_root is not None
        file = layout.INVENTORY_FILE
        path = self.base_root / file
        got = layout.hash_file(path)[0] if path.is_file() else "none"
        status = Status.OK if got == self.base.inventory else Status.MISMATCH
        detail = f"is {got}; the delta was made against {self.base.inventory}"
        self._add("base", file, status, "" if status is Status.OK else detail, file=file)
        for digest, size in self.from_base.items():
            status, detail, _ = check_file(layout.blob_path(self.base_root, digest), digest, size)
            users = ", ".join(self.blob_users[digest])
            text = f"layer of {users}, expected from the base {self.base_label}"
            self._add(
                "base",
                digest,
                status,
                "" if status is Status.OK else f"{text}; {detail}" if detail else text,
                digest=digest,
                file=layout.blob_relpath(digest),
            )

    def _walk_image(self, ref: str, top: layout.Descriptor) -> _Walked:
        """Check every blob of one image, going on past damaged ones."""
        have: set[str] = set()
        intact = True

        def accept(desc: layout.Descriptor, kind: str | None, platform: str | None) -> bool:
            nonlocal intact
            # A platform an index names counts as present even if its manifest is damaged:
            # the damage is reported once, as a blob.
            if kind not in ("config", "layer") and platform and not desc.is_attestation:
                have.add(platform)
            if kind is None:
                detail = f"unsupported media type {desc.media_type}"
                self._add(
                    "blob", desc.digest, Status.INVALID, detail, image=ref, digest=desc.digest
                )
                intact = False
                return False
            ok = self._check_blob(desc, kind, ref, None if kind == "index" else platform)
            intact = intact and ok
            return ok

        try:
            graph = layout.walk_image(top, self._read_blob_bytes, ref, accept)
        except (BundleError, AttributeError, TypeError) as exc:
            self._add("blob", top.digest, Status.INVALID, str(exc), image=ref, digest=top.digest)
            return top, have, None
        return top, have | set(graph.platforms), graph if intact else None

    # --- signatures --------------------------------------------------------------------------
    def _walk_signatures(
        self, inventory: dict[str, Any]
    ) -> dict[str, dict[str, layout.Descriptor]]:
        """Check every blob of the signature images the inventory names; image ref → what is
        signed ("index" or a platform) → the signature manifest, for those whose blobs are all
        intact."""
        return self._intact(inventory, inventory_signatures, "signatures", lambda d: d, "signature")

    def _intact(
        self,
        inventory: dict[str, Any],
        read: Callable[[dict[str, Any]], dict[str, dict[str, Any]]],
        part: str,
        manifest_of: Callable[[Any], layout.Descriptor],
        kind: str,
    ) -> dict[str, dict[str, Any]]:
        """What `read` finds in the inventory (image ref → key → entry), keeping the entries
        whose manifest (`manifest_of`) has every blob intact; an unreadable part is one row."""
        try:
            named = read(inventory)
        except BundleError as exc:
            file = layout.INVENTORY_FILE
            self._add("inventory", f"{file} {part}", Status.INVALID, str(exc), file=file)
            return {}
        return {
            ref: {
                k: e for k, e in entries.items() if self._walk_signature(ref, manifest_of(e), kind)
            }
            for ref, entries in named.items()
        }

    def _walk_signature(self, ref: str, desc: layout.Descriptor, kind: str = "signature") -> bool:
        checked = []

        def accept(d: layout.Descriptor, _kind: str | None, platform: str | None) -> bool:
            checked.append(self._check_blob(d, kind, ref, None))
            return checked[-1]

        try:
            layout.walk_image(desc, self._read_blob_bytes, f"{kind} of {ref}", accept)
        except (BundleError, AttributeError, TypeError) as exc:
            self._add("blob", desc.digest, Status.INVALID, str(exc), image=ref)
            return False
        return all(checked)

    def _check_signatures(
        self,
        found: dict[str, _Walked],
        signatures: dict[str, dict[str, layout.Descriptor]],
        signing: Any,
    ) -> None:
        """Each image's signatures, under ``self.key``: one result for its index and one for
        each platform manifest (a recursive signature, as cosign's ``--recursive``)."""
        assert self.key is not None
        named_key = signing.get("public_key") if isinstance(signing, dict) else None
        for ref, (top, _platforms, graph) in found.items():
            targets = signed_digests(graph) if graph else {INDEX_SIGNATURE: top.digest}
            for what, digest in targets.items():
                desc = signatures.get(ref, {}).get(what)
                if desc is None:
                    status, detail = Status.MISSING, "the bundle holds no intact signature of it"
                else:
                    problem = self._signature_problem(ref, digest, desc)
                    status = Status.OK if problem is None else Status.INVALID
                    detail = problem or ""
                    if problem and problem.startswith("not signed by") and named_key:
                        detail += f" (inventory.json names the key {named_key})"
                subject = short_ref(ref) + ("" if what == INDEX_SIGNATURE else f" {what}")
                platform = None if what == INDEX_SIGNATURE else what
                self._add(
                    "signature", subject, status, detail, image=ref, digest=digest,
                    platform=platform,
                )  # fmt: skip

    def _signature_problem(self, ref: str, digest: str, signature: layout.Descriptor) -> str | None:
        manifest = self._read_blob_bytes(signature.digest)
        reference = sign.docker_reference(ref)
        try:
            return sign.problem(manifest, self._read_blob_bytes, self.key, reference, digest)
        except BundleError as exc:  # intact blobs, but not a signature image
            return str(exc)

    # --- SBOMs ------------------------------------------------------------------------------
    def _walk_sboms(self, inventory: dict[str, Any]) -> Listed:
        """Check every blob of the SBOMs the inventory names (as the signatures'); image ref →
        platform → (artifact manifest, subject named), those whose blobs are intact."""
        return self._intact(inventory, inventory_sboms, "sboms", lambda d: d[0], "SBOM")

    def _walk_sbom_signatures(self, inventory: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return self._intact(
            inventory, inventory_sbom_signatures, "SBOM signatures", lambda d: d, "signature"
        )

    def _check_sbom_signatures(
        self, sboms: Listed, signatures: dict[str, dict[str, layout.Descriptor]]
    ) -> None:
        """Each SBOM artifact signed under ``self.key``, naming its image's repository."""
        for ref, listed in sboms.items():
            for platform, (desc, _subject) in sorted(listed.items()):
                signature = signatures.get(ref, {}).get(platform)
                problem = (
                    self._signature_problem(ref, desc.digest, signature)
                    if signature is not None
                    else "the bundle holds no intact signature of it"
                )
                status = Status.OK if problem is None else Status.INVALID
                if signature is None:
                    status = Status.MISSING
                self._add("signature", f"{short_ref(ref)} {platform} SBOM", status, problem or "",
                          image=ref, platform=platform, digest=desc.digest)  # fmt: skip

    def _check_sboms(self, found: dict[str, _Walked], sboms: Listed) -> None:
        """Every platform of every image has an SBOM, and each belongs to its subject: the
        platform manifest the image has, as the inventory and the artifact both name it."""
        for ref, (_top, _platforms, graph) in found.items():
            listed = sboms.get(ref, {})
            for platform, pm in sorted((graph.platforms if graph else {}).items()):
                subject = pm.descriptor.digest
                problem = self._sbom_problem(listed.get(platform), subject, platform)
                status = Status.OK if problem is None else Status.INVALID
                if problem == _NO_SBOM:
                    status = Status.MISSING
                self._add("sbom", f"{short_ref(ref)} {platform}", status, problem or "",
                          image=ref, platform=platform, digest=subject)  # fmt: skip

    def _sbom_problem(
        self, listed: tuple[layout.Descriptor, str] | None, subject: str, platform: str
    ) -> str | None:
        if listed is None:
            return _NO_SBOM
        desc, named = listed
        if named != subject:
            return f"{layout.INVENTORY_FILE} names the subject {named}, not {subject}"
        try:
            manifest = self._read_blob_bytes(desc.digest)
            return sbom.problem(manifest, self._read_blob_bytes, subject, platform)
        except (BundleError, OSError) as exc:
            return str(exc)

    def _emit_blob_results(self) -> None:
        for digest, status in self.blob_status.items():
            detail = self.blob_detail[digest]
            users = ", ".join(self.blob_users[digest])
            relpath = layout.blob_relpath(digest)
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
        found: dict[str, _Walked],
    ) -> None:
        listed = {
            entry.get("ref"): entry for entry in inventory["images"] if isinstance(entry, dict)
        }
        for ref in listed.keys() - found.keys():
            self._add(
                "inventory",
                f"{ref}",
                Status.MISMATCH,
                f"listed in {layout.INVENTORY_FILE} but not in {layout.INDEX_FILE}",
                image=ref,
                file=layout.INVENTORY_FILE,
            )
        for ref, (top, _platforms, graph) in found.items():
            entry = listed.get(ref)
            if entry is None:
                self._add(
                    "inventory",
                    ref,
                    Status.MISMATCH,
                    f"in {layout.INDEX_FILE} but not listed in {layout.INVENTORY_FILE}",
                    image=ref,
                    file=layout.INVENTORY_FILE,
                )
                continue
            if graph is not None:
                expected = inventory_entry(entry.get("name"), ref, entry.get("tag"), graph)
            else:  # its blobs are reported above; compare what can still be read
                expected = {**entry, "digest": top.digest}
            if inventory.get("schema") == 1:  # schema 1 listed no blobs
                expected.pop("blobs", None)
            diffs = [k for k in sorted(expected) if expected[k] != entry.get(k)]
            status = Status.MISMATCH if diffs else Status.OK
            detail = f"differs in {', '.join(diffs)}" if diffs else ""
            self._add(
                "inventory", short_ref(ref), status, detail, image=ref, file=layout.INVENTORY_FILE
            )

    def _read_blob_bytes(self, digest: str) -> bytes:
        return layout.blob_path(self.root, digest).read_bytes()

    # --- SHA256SUMS ---------------------------------------------------------------------------
    def _check_kit(self, inventory: dict[str, Any]) -> None:
        """Every image the deployment kit names is one the bundle holds, by digest."""
        for missing in missing_from_bundle(self.root / KIT_DIR, inventory):
            self._add("kit", missing, Status.MISSING, "the kit names it; the bundle lacks it")

    def _check_sums(self) -> None:
        path = self.root / layout.CHECKSUMS_FILE
        if not path.is_file():
            self._add("checksum", layout.CHECKSUMS_FILE, Status.MISSING, file=layout.CHECKSUMS_FILE)
            return
        listed: dict[str, str] = {}
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            match = _SUM_LINE.match(line)
            name = match.group(2) if match else ""
            pure = PurePosixPath(name)
            if not match or pure.is_absolute() or ".." in pure.parts:
                self._add(
                    "checksum",
                    f"{layout.CHECKSUMS_FILE} line {number}",
                    Status.INVALID,
                    f"malformed line {line[:80]!r}",
                    file=layout.CHECKSUMS_FILE,
                )
                continue
            listed[name] = match.group(1)
        present = set(layout.iter_files(self.root)) - {layout.CHECKSUMS_FILE}
        for name in sorted(present - listed.keys()):
            self._add(
                "checksum", name, Status.UNLISTED, f"not in {layout.CHECKSUMS_FILE}", file=name
            )
        for name, expected in sorted(listed.items()):
            file = self.root / name
            if not file.is_file() or file.is_symlink():
                self._add(
                    "checksum",
                    name,
                    Status.MISSING,
                    f"listed in {layout.CHECKSUMS_FILE}",
                    file=name,
                )
                continue
            actual = self._file_hex(name, file)
            ok = actual == expected
            self._add(
                "checksum",
                name,
                Status.OK if ok else Status.DIGEST_MISMATCH,
                "" if ok else f"sha256 is {actual}, {layout.CHECKSUMS_FILE} says {expected}",
                file=name,
            )

    def _file_hex(self, name: str, file: Path) -> str:
        parts = name.split("/")
        if len(parts) == 3 and parts[:2] == [layout.BLOBS_DIR, layout.ALGORITHM]:
            cached = self.actual.get(f"{layout.ALGORITHM}:{parts[2]}")
            if cached:  # read once: the blob check already hashed this file
                return layout.split_digest(cached)[1]
        return layout.split_digest(layout.hash_file(file)[0])[1]


def short_ref(ref: str) -> str:
    """``harbor.example.com/ai-infra/backend:v1`` → ``backend``; for messages."""
    try:
        return parse_tagged(ref).name
    except ValueError:
        return ref
