"""Signed bundles: `create_bundle(sign_key=)` writes one signature image per image index and
per platform manifest (as `cosign sign --recursive`), `verify --key` checks each (one line per
signature when wrong), `push` copies them under the `sha256-<hex>.sig` tags, and a delta
carries its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.bundle import create_bundle, verify_bundle
from pipeline.bundle.verify import Status
from pipeline.doors.cli import main
from pipeline.oci import layout, sign
from pipeline.oci.registry import RegistryClient

try:
    from tests.unit import bundle_fixtures as bf
    from tests.unit import test_bundle_push as tp
except ImportError:  # tests/unit is not a package
    import bundle_fixtures as bf
    import test_bundle_push as tp


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def signed(tmp_path_factory, key) -> tuple[Path, list[bf.Source]]:
    root = tmp_path_factory.mktemp("signed")
    sources = bf.two_sources(root / "src", attestations=True)
    create_bundle(root / "bundle", [s.image for s in sources], bf.PLATFORMS, sign_key=key)
    return root / "bundle", sources


def public_pem(key, tmp_path: Path, name: str = "pub.pem") -> Path:
    path = tmp_path / name
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def inventory(bundle: Path) -> dict:
    return json.loads((bundle / "inventory.json").read_text())


def copy(bundle: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(bundle, tmp_path / "copy"))


def signature_results(report) -> list:
    return [r for r in report.results if r.check == "signature"]


def signed_subjects(names) -> list[str]:
    """What a verify with the key checks, in order: each image's index, then its platforms."""
    return [f"{n}{p}" for n in names for p in ["", *(f" {p}" for p in bf.PLATFORMS)]]


NAMES = ("ai-infra-backend", "ai-infra-frontend")


def test_each_image_carries_a_signature_of_its_index_and_of_each_platform(signed, key) -> None:
    bundle, sources = signed
    inv = inventory(bundle)
    assert inv["signing"] == {"format": "cosign", "public_key": sign.fingerprint(key.public_key())}
    for entry, source in zip(inv["images"], sources, strict=True):
        manifest = layout.blob_path(bundle, entry["signature"]["digest"]).read_bytes()
        assert len(manifest) == entry["signature"]["size"]
        read = lambda d: layout.blob_path(bundle, d).read_bytes()  # noqa: E731
        reference = sign.docker_reference(source.image.ref)
        assert sign.problem(manifest, read, key.public_key(), reference, source.top) is None
        assert sorted(entry["platform_signatures"]) == bf.PLATFORMS
        for platform, signature in entry["platform_signatures"].items():
            manifest = layout.blob_path(bundle, signature["digest"]).read_bytes()
            child = source.platform_manifests[platform]
            assert sign.problem(manifest, read, key.public_key(), reference, child) is None
    # index.json names the images only: load and push see no extra image
    assert len(layout.read_index(bundle)) == len(sources)


def test_verify_with_the_key_checks_every_signature(signed, key) -> None:
    bundle, sources = signed
    report = verify_bundle(bundle, key=key.public_key())
    assert report.ok, [r.describe() for r in report.failures]
    assert [r.subject for r in signature_results(report)] == signed_subjects(
        s.image.name for s in sources
    )


def test_verify_without_a_key_checks_signature_blobs_like_any_other(signed, tmp_path) -> None:
    bundle, _ = signed
    assert verify_bundle(bundle).ok and not signature_results(verify_bundle(bundle))
    broken = copy(bundle, tmp_path)
    digest = inventory(broken)["images"][0]["signature"]["digest"]
    layout.blob_path(broken, digest).write_bytes(b"{}")
    report = verify_bundle(broken)
    failed = {(r.check, r.status, r.digest) for r in report.failures}
    assert ("blob", Status.SIZE_MISMATCH, digest) in failed
    assert "signature of ai-infra-backend" in report.failures[0].describe()


def test_a_wrong_key_is_one_line_per_signature(signed) -> None:
    bundle, _ = signed
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    report = verify_bundle(bundle, key=other)
    assert [r.describe() for r in report.failures] == [
        f"invalid: signature {subject}: not signed by the key {sign.fingerprint(other)} "
        f"(inventory.json names the key {inventory(bundle)['signing']['public_key']})"
        for subject in signed_subjects(NAMES)
    ]


def test_an_unsigned_bundle_fails_verify_with_a_key(tmp_path, key) -> None:
    sources = bf.two_sources(tmp_path / "src")
    create_bundle(tmp_path / "bundle", [s.image for s in sources], bf.PLATFORMS)
    report = verify_bundle(tmp_path / "bundle", key=key.public_key())
    assert [r.describe() for r in report.failures] == [
        f"missing: signature {subject}: the bundle holds no intact signature of it"
        for subject in signed_subjects(NAMES)
    ]


def test_an_index_signed_alone_fails_on_its_platforms(signed, key, tmp_path) -> None:
    """A bundle signed before platform manifests were (index only): verify names each child."""
    bundle = copy(signed[0], tmp_path)
    inv = inventory(bundle)
    for entry in inv["images"]:
        del entry["platform_signatures"]
    (bundle / "inventory.json").write_text(json.dumps(inv))
    report = verify_bundle(bundle, key=key.public_key())
    missing = [r.subject for r in report.failures if r.check == "signature"]
    assert missing == [s for s in signed_subjects(NAMES) if " " in s]


def test_a_tampered_index_that_every_checksum_agrees_with_fails_its_signature(
    signed, key, tmp_path
) -> None:
    bundle, sources = signed
    tampered = copy(bundle, tmp_path)
    new = bf.tamper_index(tampered, sources[0].top)
    plain = verify_bundle(tampered)
    assert plain.ok, [r.describe() for r in plain.failures]  # checksums alone cannot tell
    report = verify_bundle(tampered, key=key.public_key())
    assert [r.describe() for r in report.failures] == [
        f"invalid: signature ai-infra-backend: signs {sources[0].top}, not the image {new}"
    ]


def test_push_copies_each_signature_under_its_tag(signed, key) -> None:
    bundle, sources = signed
    registry = tp.FakeRegistry()
    report = tp.push(bundle, registry)
    assert report.signatures_pushed == 6 and report.summary().endswith(", 6 signatures")
    for source in sources:
        repo = f"ai-infra/{source.image.name}"
        for digest in [source.top, *source.platform_manifests.values()]:
            media_type, manifest = registry.manifests[(repo, sign.signature_tag(digest))]
            assert media_type == layout.OCI_MANIFEST
            read = lambda d, r=repo: registry.blobs[(r, d)]  # noqa: E731
            reference = sign.docker_reference(source.image.ref)  # cosign never checks it
            assert sign.problem(manifest, read, key.public_key(), reference, digest) is None
    again = tp.push(bundle, registry)  # a rerun uploads no signature blob again
    assert again.blobs_uploaded == 0 and registry.blob_puts == report.blobs_uploaded + 12


def test_push_signature_signs_what_a_release_pushed(key) -> None:
    registry = tp.FakeRegistry()
    digest = "sha256:" + "ab" * 32
    with RegistryClient(tp.HOST, plain_http=True, transport=registry.transport()) as client:
        got = sign.push_signature(client, "ai-infra/x", f"{tp.HOST}/ai-infra/x", digest, key)
    _, manifest = registry.manifests[("ai-infra/x", sign.signature_tag(digest))]
    assert got == layout.digest_bytes(manifest)
    read = lambda d: registry.blobs[("ai-infra/x", d)]  # noqa: E731
    assert sign.problem(manifest, read, key.public_key(), f"{tp.HOST}/ai-infra/x", digest) is None


def test_a_delta_carries_its_own_signatures(signed, key, tmp_path) -> None:
    previous, _ = signed
    (tmp_path / "src").mkdir()
    new = [
        bf.make_source(tmp_path / "src", "ai-infra-backend", 1, base=bf.base_layers()),
        bf.make_source(tmp_path / "src", "ai-infra-frontend", 3, base=bf.base_layers()),
    ]
    delta = tmp_path / "delta"
    create_bundle(delta, [s.image for s in new], bf.PLATFORMS, since=previous, sign_key=key)
    assert inventory(delta)["base"]["blobs"]  # it is a delta
    report = verify_bundle(delta, key=key.public_key())
    assert report.ok, [r.describe() for r in report.failures]
    assert len(signature_results(report)) == 6


def test_push_signatures_signs_an_index_and_each_platform_manifest(signed, key) -> None:
    """What `release --sign-key` does once an index is read back (as cosign --recursive)."""
    bundle, sources = signed
    registry = tp.FakeRegistry()
    tp.push(bundle, registry)
    source, repo = sources[0], f"ai-infra/{sources[0].image.name}"
    with RegistryClient(tp.HOST, plain_http=True, transport=registry.transport()) as client:
        got = sign.push_signatures(client, repo, f"{tp.HOST}/{repo}", source.top, key)
    children = list(source.platform_manifests.values())
    assert list(got) == [source.top, *children]  # the attestation manifest is not signed
    for digest, signature in got.items():
        _, manifest = registry.manifests[(repo, sign.signature_tag(digest))]
        assert signature == layout.digest_bytes(manifest)
        read = lambda d: registry.blobs[(repo, d)]  # noqa: E731
        assert sign.problem(manifest, read, key.public_key(), f"{tp.HOST}/{repo}", digest) is None


def test_cli_verify_key_exit_codes(signed, key, tmp_path, capsys) -> None:
    bundle, _ = signed
    pub = public_pem(key, tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["bundle", "verify", str(bundle), "--key", str(pub)])
    assert info.value.code in (0, None)
    out = capsys.readouterr().out
    assert f"every image signed with key {sign.fingerprint(key.public_key())}" in out
    other = public_pem(ec.generate_private_key(ec.SECP256R1()), tmp_path, "other.pem")
    with pytest.raises(SystemExit) as info:
        main(["bundle", "verify", str(bundle), "--key", str(other)])
    assert info.value.code == 1
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].strip() for line in err[:6]] == [
        f"signature {subject}" for subject in signed_subjects(NAMES)
    ]
    assert err[-1].startswith("error: bundle") and len(err) == 7
    with pytest.raises(SystemExit) as info:
        main(["bundle", "verify", str(bundle), "--key", str(tmp_path / "none.pem")])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("error: --key ")
