"""Delta bundles: two releases where one image changed; the delta holds every manifest, index
and config but only the new layers, verifies alone and against its base, pushes only over a
registry that has the base, and loads only with its base."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.bundle import create_bundle, load_bundle, verify_bundle
from pipeline.bundle.archive import write_archive
from pipeline.bundle.delta import NeedsBase
from pipeline.errors import BadInput, BundleError
from pipeline.oci import layout

try:
    from tests.unit import bundle_fixtures as bf
    from tests.unit import test_bundle_load as tl
    from tests.unit import test_bundle_push as tp
except ImportError:  # tests/unit is not a package
    import bundle_fixtures as bf
    import test_bundle_load as tl
    import test_bundle_push as tp

OLD, NEW = "v0.3.8", "v0.3.9"


@dataclass
class Releases:
    old: list[bf.Source]
    new: list[bf.Source]
    previous: Path  # the full bundle of OLD (with .tar.zst beside it)
    delta: Path  # NEW since `previous` (with .tar beside it)

    def blobs(self, sources: list[bf.Source]) -> dict[str, bytes]:
        return {d: b for s in sources for d, b in s.blobs.items()}

    def expected(self) -> dict[str, int]:
        """The layers of NEW that OLD has: what the delta leaves to its base."""
        old, new_layers = self.blobs(self.old), layers(self.new)
        return {d: len(b) for d, b in self.blobs(self.new).items() if d in new_layers and d in old}


def layers(sources: list[bf.Source]) -> set[str]:
    """Every digest some manifest of ``sources`` names as a layer."""
    found = set()
    for source in sources:
        for data in source.blobs.values():
            doc = json.loads(data) if data.startswith(b"{") else {}
            found |= {layer["digest"] for layer in doc.get("layers", [])}
    return found


def sources(root: Path, tag: str, frontend_seed: int) -> list[bf.Source]:
    """backend unchanged between releases (same bytes, same digests), frontend rebuilt on the
    same base layers."""
    root.mkdir(parents=True)
    base = bf.base_layers()
    seeds = {"ai-infra-backend": 1, "ai-infra-frontend": frontend_seed}
    ref = f"{bf.REGISTRY_PREFIX}/{{}}:{tag}"
    return [
        bf.make_source(root, name, seed, base=base, attestations=True, ref=ref.format(name))
        for name, seed in seeds.items()
    ]


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> Releases:
    root = tmp_path_factory.mktemp("delta")
    old, new = sources(root / "old", OLD, 2), sources(root / "new", NEW, 3)
    create_bundle(root / "previous", [s.image for s in old], bf.PLATFORMS, archive="tar.zst")
    create_bundle(
        root / "delta", [s.image for s in new], bf.PLATFORMS, archive="tar", since=root / "previous"
    )
    return Releases(old, new, root / "previous", root / "delta")


def held(root: Path) -> set[str]:
    return {"sha256:" + p.name for p in (root / "blobs" / "sha256").iterdir()}


def inventory(root: Path) -> dict:
    return json.loads((root / "inventory.json").read_text())


# --- create ----------------------------------------------------------------------------------
def test_delta_holds_every_manifest_and_config_but_only_new_layers(releases) -> None:
    new, old = releases.blobs(releases.new), releases.blobs(releases.old)
    expected = releases.expected()
    frontend_layers = layers(releases.new[1:]) - set(old)

    assert held(releases.delta) == set(new) - set(expected)
    assert len(frontend_layers) == 2 and frontend_layers <= held(releases.delta)
    assert not (layers(releases.new[:1]) & held(releases.delta))  # backend: no layer at all
    assert set(new) - layers(releases.new) <= held(releases.delta)  # manifests, configs
    doc = inventory(releases.delta)
    previous_bytes = (releases.previous / "inventory.json").read_bytes()
    assert doc["schema"] == 2
    assert doc["base"]["inventory"] == "sha256:" + hashlib.sha256(previous_bytes).hexdigest()
    assert doc["base"]["tag"] == OLD
    assert {b["digest"]: b["size"] for b in doc["base"]["blobs"]} == expected
    assert doc["blobs"] == {
        "count": len(held(releases.delta)),
        "bytes": sum(len(new[d]) for d in held(releases.delta)),
    }
    for entry, source in zip(doc["images"], releases.new, strict=True):
        assert {b["digest"] for b in entry["blobs"]} == set(source.blobs)  # the whole release
    sums = (releases.delta / "SHA256SUMS").read_text()
    assert all(layout.blob_relpath(d) in sums for d in held(releases.delta))
    assert not any(layout.blob_relpath(d) in sums for d in expected)


def test_a_full_inventory_lists_every_blob_of_each_image(releases) -> None:
    doc = inventory(releases.previous)
    assert "base" not in doc
    for entry, source in zip(doc["images"], releases.old, strict=True):
        assert {b["digest"]: b["size"] for b in entry["blobs"]} == {
            d: len(b) for d, b in source.blobs.items()
        }


@pytest.mark.parametrize("form", ["inventory.json", "tar.zst", "tar"])
def test_since_an_inventory_or_an_archive_is_the_same_as_the_folder(
    releases, tmp_path: Path, form: str
) -> None:
    previous = releases.previous
    if form == "inventory.json":
        since = tmp_path / "somewhere" / "old-inventory.json"
        since.parent.mkdir()
        shutil.copy(previous / "inventory.json", since)
    elif form == "tar":
        since = write_archive(previous, tmp_path / "previous.tar", "tar")
    else:
        since = previous.with_name("previous.tar.zst")

    out = tmp_path / "delta"
    create_bundle(out, [s.image for s in releases.new], bf.PLATFORMS, since=since)

    assert held(out) == held(releases.delta)
    assert (out / "inventory.json").read_bytes() == (releases.delta / "inventory.json").read_bytes()


def schema_1(root: Path) -> None:
    """Rewrite the bundle at ``root`` as the previous version wrote it (no blob lists)."""
    doc = inventory(root)
    doc["schema"] = 1
    for entry in doc["images"]:
        del entry["blobs"]
    data = layout.dumps(doc)
    (root / "inventory.json").write_bytes(data)
    sums = root / "SHA256SUMS"
    kept = [line for line in sums.read_text().splitlines() if not line.endswith(" inventory.json")]
    new = f"{hashlib.sha256(data).hexdigest()}  inventory.json"
    sums.write_text("\n".join(sorted([*kept, new], key=lambda line: line[66:])) + "\n")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp, prev: tmp / "no-such-bundle", "does not exist"),
        (lambda tmp, prev: tmp, "is not a bundle: it has no inventory.json"),
        (lambda tmp, prev: _write(tmp / "notes.txt", b"hello"), "not a bundle inventory"),
        (lambda tmp, prev: _write(tmp / "x.json", b'{"a": 1}'), "has no list of images"),
        (lambda tmp, prev: bf.build_tar(tmp / "x.tar", [("a", b"b")]), "holds no inventory.json"),
        (lambda tmp, prev: _old_schema(tmp, prev), "schema 1"),
    ],
)
def test_bad_since_is_bad_input(releases, tmp_path: Path, make, message: str) -> None:
    since = make(tmp_path, releases.previous)
    with pytest.raises(BadInput, match=message):
        create_bundle(tmp_path / "out", [s.image for s in releases.new], bf.PLATFORMS, since=since)
    assert not (tmp_path / "out").exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _old_schema(tmp: Path, previous: Path) -> Path:
    shutil.copytree(previous, tmp / "old")
    schema_1(tmp / "old")
    return tmp / "old"


# --- verify ----------------------------------------------------------------------------------
def test_a_schema_1_bundle_still_verifies(releases, tmp_path: Path) -> None:
    old = _old_schema(tmp_path, releases.previous)
    report = verify_bundle(old)
    assert report.ok, [r.describe() for r in report.failures]


@pytest.mark.parametrize("name", ["delta", "delta.tar"])
def test_delta_verifies_alone_and_counts_what_it_expects(releases, name: str) -> None:
    report = verify_bundle(releases.delta.with_name(name))

    assert report.ok, [r.describe() for r in report.failures]
    assert report.from_base == releases.expected()
    megabytes = sum(releases.expected().values()) / 1e6
    assert report.delta_line() == (
        f"delta of {OLD}: {len(releases.expected())} blobs ({megabytes:.1f} MB) expected "
        "from the base"
    )
    assert not [r for r in report.results if r.check == "base"]


def test_verify_cli_prints_the_delta_line(releases, cli) -> None:
    code, out, err = cli("bundle", "verify", str(releases.delta))
    assert code == 0, err
    assert f"delta of {OLD}: {len(releases.expected())} blobs" in out
    assert "checks passed" in out


@pytest.mark.parametrize("name", ["previous", "previous.tar.zst"])
def test_verify_with_its_base_checks_each_expected_blob_there(releases, name: str) -> None:
    report = verify_bundle(releases.delta, base=releases.previous.with_name(name))

    assert report.ok, [r.describe() for r in report.failures]
    checked = {r.digest for r in report.results if r.check == "base" and r.digest}
    assert checked == set(releases.expected())
    assert [r.file for r in report.results if r.check == "base" and not r.digest] == [
        "inventory.json"
    ]


@pytest.mark.parametrize("damage", ["missing", "corrupt", "truncated"])
def test_verify_with_a_base_that_lacks_a_blob_names_it(
    releases, tmp_path: Path, cli, damage: str
) -> None:
    base = tmp_path / "previous"
    shutil.copytree(releases.previous, base)
    digest = sorted(releases.expected())[0]
    blob = base / layout.blob_relpath(digest)
    if damage == "missing":
        blob.unlink()
    elif damage == "corrupt":
        blob.write_bytes(bytes(reversed(blob.read_bytes())))
    else:
        blob.write_bytes(blob.read_bytes()[:-1])

    code, out, err = cli("bundle", "verify", str(releases.delta), "--base", str(base))

    assert code == 1
    status = {"missing": "missing", "corrupt": "digest-mismatch", "truncated": "size-mismatch"}
    [line] = [line for line in err.splitlines() if not line.startswith("error:")]
    assert line.startswith(f"{status[damage]}: base {digest}: layer of ai-infra-")
    assert f"expected from the base {base}" in line
    assert err.splitlines()[-1].startswith(f"error: bundle {releases.delta}: 1 of ")


def test_verify_with_another_base_says_so(releases, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(releases.previous, other)
    doc = inventory(other)
    doc["platforms"] = list(reversed(doc["platforms"]))
    (other / "inventory.json").write_bytes(layout.dumps(doc))

    report = verify_bundle(releases.delta, base=other)

    [failure] = report.failures
    assert failure.check == "base" and failure.file == "inventory.json"
    assert "the delta was made against sha256:" in failure.describe()


def test_base_for_a_full_bundle_or_an_inventory_is_bad_input(releases, cli) -> None:
    with pytest.raises(BadInput, match="is not a delta"):
        verify_bundle(releases.previous, base=releases.previous)
    code, _, err = cli(
        "bundle", "verify", str(releases.delta), "--base", str(releases.previous / "inventory.json")
    )
    assert code == 2 and err.count("\n") == 1
    assert "give the base bundle (folder or archive), not its inventory" in err


# --- push -------------------------------------------------------------------------------------
def registry_with(releases: Releases) -> tp.FakeRegistry:
    """A registry that holds the previous release, as `bundle push` left it."""
    registry = tp.FakeRegistry()
    tp.push(releases.previous, registry)
    registry.log.clear()
    return registry


def writes(registry: tp.FakeRegistry) -> list[tuple[str, str]]:
    return [(m, p) for m, p in registry.log if m not in ("HEAD", "GET")]


def test_push_over_the_base_uploads_only_new_blobs(releases) -> None:
    registry = registry_with(releases)
    before = set(registry.blobs)

    report = tp.push(releases.delta, registry)

    uploaded = {d for (_repo, d) in set(registry.blobs) - before}
    new, old = releases.blobs(releases.new), releases.blobs(releases.old)
    new_blobs = {d for d in held(releases.delta) - set(old) if not tp.is_manifest(new[d])}
    assert uploaded == new_blobs
    assert report.blobs_uploaded == registry.blob_puts_log() == len(uploaded)
    assert not uploaded & set(releases.expected())
    for source in releases.new:
        repo = f"ai-infra/{source.image.name}"
        assert registry.manifests[(repo, NEW)][1] == source.blobs[source.top]


def test_push_mounts_base_blobs_from_another_repository(releases) -> None:
    registry = registry_with(releases)
    frontend = "ai-infra/ai-infra-frontend"
    for key in [k for k in registry.blobs if k[0] == frontend]:
        del registry.blobs[key]

    report = tp.push(releases.delta, registry)

    backend, frontend_blobs = releases.new[0].blobs, releases.new[1].blobs
    frontend_expected = set(frontend_blobs) & set(releases.expected())
    # and, as in any push, a held blob already pushed with the backend (a shared config)
    both = set(backend) & set(frontend_blobs) - frontend_expected
    shared = {d for d in both if not tp.is_manifest(backend[d])}
    assert report.blobs_mounted == len(frontend_expected) + len(shared)
    assert len(frontend_expected) == 3 and len(shared) == 1
    assert all((frontend, d) in registry.blobs for d in frontend_expected)
    mounts = [p for m, p in registry.log if m == "POST"][: len(frontend_expected)]
    assert all(p == f"/v2/{frontend}/blobs/uploads/" for p in mounts)


def test_push_to_a_registry_without_the_base_pushes_nothing_and_says_what_is_missing(
    releases,
) -> None:
    registry = registry_with(releases)
    gone = sorted(releases.expected())[0]
    for key in [k for k in registry.blobs if k[1] == gone]:
        del registry.blobs[key]

    with pytest.raises(BundleError) as caught:
        tp.push(releases.delta, registry)

    message = str(caught.value)
    assert message.startswith(f"1 blobs this delta expects from its base {OLD} are not in ")
    assert f"{gone} (ai-infra-" in message and "nothing was pushed" in message
    assert writes(registry) == []


def test_push_to_an_empty_registry_lists_the_first_few(releases) -> None:
    registry = tp.FakeRegistry()
    with pytest.raises(BundleError, match=rf"^{len(releases.expected())} blobs .* and \d+ more;"):
        tp.push(releases.delta, registry)
    assert writes(registry) == []


def test_push_when_the_registry_will_not_mount(releases) -> None:
    registry = registry_with(releases)
    for key in [k for k in registry.blobs if k[0] == "ai-infra/ai-infra-frontend"]:
        del registry.blobs[key]
    registry.mounts = False

    with pytest.raises(BundleError, match="would not mount sha256:.* this delta does not hold it"):
        tp.push(releases.delta, registry)
    assert registry.uploads == {}  # the upload it opened instead was cancelled
    assert not [p for m, p in registry.log if m == "PUT"]


# --- load -------------------------------------------------------------------------------------
def test_load_of_a_delta_needs_its_base(releases, cli) -> None:
    with pytest.raises(NeedsBase):
        load_bundle(releases.delta, "containerd", run=tl.FakeRunner(), which=tl.found)

    code, _, err = cli("bundle", "load", str(releases.delta), "--into", "containerd")

    assert code == 2
    assert err == (
        f"error: bundle {releases.delta} is a delta of {OLD}: loading it needs the bundle it "
        "was made against: pass it with --base PREVIOUS\n"
    )


@pytest.mark.parametrize("name", ["delta", "delta.tar"])
def test_load_with_its_base_hands_over_the_whole_release(releases, name: str) -> None:
    runner = tl.FakeRunner()

    result = load_bundle(
        releases.delta.with_name(name),
        "docker",
        base=releases.previous.with_name("previous.tar.zst"),
        run=runner,
        which=tl.found,
    )

    whole = {layout.blob_relpath(d) for d in releases.blobs(releases.new)}
    assert whole <= set(runner.members)
    assert {"index.json", "oci-layout"} <= set(runner.members)
    assert result.images == [s.image.ref for s in releases.new]
    assert not [p for p in releases.delta.parent.iterdir() if ".whole-" in p.name]
