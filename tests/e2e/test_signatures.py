"""Signatures against the real cosign (the lab's, LAB_COSIGN) on the lab's plain registry:
cosign verifies ours (pushed by `bundle push` and by `push_signatures`) on each index and on
each platform manifest's digest (signed as `cosign sign --recursive` signs), ours verifies
cosign's, and `bundle verify --key` says what is wrong in one line per signature, exit 1.

No engine: the images are small OCI layouts made in Python and pushed with our own client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, Lab, run_cli

from pipeline.bundle import create_bundle, push_bundle
from pipeline.oci import sign
from pipeline.oci.registry import RegistryLogin

sys.path.insert(0, str(ROOT / "tests" / "unit"))
import bundle_fixtures as bf  # noqa: E402


@pytest.fixture(scope="module")
def cosign() -> Path:
    path = os.environ.get("LAB_COSIGN")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"LAB_COSIGN={path!r} is not an executable cosign: run scripts/lab up")
    return Path(path)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    """A key pair made as the README says (openssl), and another one."""
    root = tmp_path_factory.mktemp("keys")
    made = {}
    for name in ("key", "other"):
        private, public = root / f"{name}.pem", root / f"{name}.pub.pem"
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(private))
        openssl("ec", "-in", str(private), "-pubout", "-out", str(public))
        made[name], made[f"{name}.pub"] = private, public
    return made


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_bundle(root: Path, lab: Lab, project: str, key: Path | None) -> tuple[Path, list]:
    (root / "src").mkdir(parents=True)
    base = bf.base_layers()
    sources = [  # named for the lab registry, as a release to it names them
        bf.make_source(
            root / "src",
            name,
            seed,
            base=base,
            attestations=True,
            ref=f"{lab.registry}/{project}/{name}:{bf.TAG}",
        )
        for seed, name in enumerate(("ai-infra-backend", "ai-infra-frontend"), 1)
    ]
    signing = sign.load_private_key(key.read_bytes(), str(key)) if key else None
    images = [s.image for s in sources]
    create_bundle(root / "bundle", images, bf.PLATFORMS, sign_key=signing)
    return root / "bundle", sources


def pushed(bundle: Path, lab: Lab, project: str) -> dict[str, str]:
    """image name → the index digest in the registry."""
    report = push_bundle(bundle, f"{lab.registry}/{project}", RegistryLogin(plain_http=True))
    return {image.target.split("/")[-1].split(":")[0]: image.digest for image in report.images}


def cosign_verify(cosign: Path, public: Path, ref: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        # A plain-HTTP registry by name (not loopback): cosign needs both flags for it.
        [str(cosign), "verify", "--key", str(public), "--insecure-ignore-tlog=true",
         "--allow-http-registry", "--allow-insecure-registry", ref],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_cosign_verifies_what_bundle_push_copied(cosign, keys, lab: Lab, unique, tmp_path):
    project = f"sig-{unique}"
    bundle, sources = make_bundle(tmp_path, lab, project, keys["key"])
    children = {s.image.name: list(s.platform_manifests.values()) for s in sources}
    for name, digest in pushed(bundle, lab, project).items():
        for signed in [digest, *children[name]]:  # the index, then each platform's manifest
            ref = f"{lab.registry}/{project}/{name}@{signed}"
            result = cosign_verify(cosign, keys["key.pub"], ref)
            assert result.returncode == 0, result.stderr
            assert f'"docker-manifest-digest":"{signed}"' in result.stdout
            assert "The signatures were verified against the specified public key" in result.stderr
        wrong = cosign_verify(cosign, keys["other.pub"], ref)
        assert wrong.returncode != 0 and "no matching signatures" in wrong.stderr


def test_cosign_verifies_what_push_signatures_pushed(cosign, keys, lab: Lab, unique, tmp_path):
    """What the release calls after it pushed an index: the index and each child signed."""
    project = f"sig-{unique}"
    bundle, sources = make_bundle(tmp_path, lab, project, None)
    children = {s.image.name: list(s.platform_manifests.values()) for s in sources}
    key = sign.load_private_key(keys["key"].read_bytes(), "key")
    with lab.plain_client() as client:
        for name, digest in pushed(bundle, lab, project).items():
            repository = f"{project}/{name}"
            reference = f"{lab.registry}/{repository}"
            signed = sign.push_signatures(client, repository, reference, digest, key)
            assert list(signed) == [digest, *children[name]]
            for each in signed:
                result = cosign_verify(cosign, keys["key.pub"], f"{reference}@{each}")
                assert result.returncode == 0, result.stderr


def test_ours_verifies_what_cosign_signed(cosign, keys, lab: Lab, unique, tmp_path):
    """An openssl key imported into cosign (as a site that signs with cosign would), then
    `cosign sign` without a transparency log; our check accepts it and names a wrong key."""
    project = f"sig-{unique}"
    bundle, _ = make_bundle(tmp_path, lab, project, None)
    env = {**os.environ, "COSIGN_PASSWORD": "lab-test"}
    prefix = tmp_path / "cosign"
    subprocess.run(
        [str(cosign), "import-key-pair", "--key", str(keys["key"]), "--output-key-prefix",
         str(prefix)],
        check=True, capture_output=True, env=env, timeout=60,
    )  # fmt: skip
    public = sign.load_public_key(keys["key.pub"])
    other = sign.load_public_key(keys["other.pub"])
    with lab.plain_client() as client:
        for name, digest in pushed(bundle, lab, project).items():
            reference = f"{lab.registry}/{project}/{name}"
            signed = subprocess.run(
                [str(cosign), "sign", "--key", f"{prefix}.key", "--tlog-upload=false", "-y",
                 "--allow-http-registry", f"{reference}@{digest}"],
                capture_output=True, text=True, env=env, timeout=120,
            )  # fmt: skip
            assert signed.returncode == 0, signed.stderr
            repository = f"{project}/{name}"
            assert sign.check_pushed(client, repository, reference, digest, public) is None
            assert sign.check_pushed(client, repository, reference, digest, other) == (
                f"not signed by the key {sign.fingerprint(other)}"
            )
    # cosign's own key file is refused with one line that says what to give instead
    result = run_cli(
        "bundle", "create", "--source", str(ROOT / "examples" / "mini-matrix"),
        "--output", str(tmp_path / "never"), "--sign-key", f"file:{prefix}.key",
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "an encrypted cosign key; give the PEM key it was imported from "
            "(openssl ecparam -name prime256v1 -genkey -noout)"
        )
    )


def verify_cli(bundle: Path, public: Path) -> subprocess.CompletedProcess:
    return run_cli("bundle", "verify", str(bundle), "--key", str(public))


def test_bundle_verify_key_names_each_image_that_fails(keys, lab: Lab, unique, tmp_path):
    project = f"sig-{unique}"
    bundle, sources = make_bundle(tmp_path / "signed", lab, project, keys["key"])
    good = verify_cli(bundle, keys["key.pub"])
    assert good.returncode == 0, good.stderr
    assert "every image signed with key sha256:" in good.stdout

    wrong = verify_cli(bundle, keys["other.pub"])
    assert wrong.returncode == 1
    lines = wrong.stderr.strip().splitlines()
    assert [line.split(": ")[1] for line in lines[:-1]] == [
        f"signature {subject}" for subject in signed_subjects()
    ]
    assert all("not signed by the key" in line for line in lines[:-1])

    new = bf.tamper_index(bundle, sources[0].top)
    tampered = verify_cli(bundle, keys["key.pub"])
    assert tampered.returncode == 1
    assert tampered.stderr.strip().splitlines()[:-1] == [
        f"invalid: signature ai-infra-backend: signs {sources[0].top}, not the image {new}"
    ]

    unsigned, _ = make_bundle(tmp_path / "unsigned", lab, project, None)
    missing = verify_cli(unsigned, keys["key.pub"])
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[:-1] == [
        f"missing: signature {subject}: the bundle holds no intact signature of it"
        for subject in signed_subjects()
    ]


def signed_subjects() -> list[str]:
    """Each image's index, then each of its platforms: what a recursive signature covers."""
    names = ("ai-infra-backend", "ai-infra-frontend")
    return [f"{n}{p}" for n in names for p in ["", *(f" {p}" for p in bf.PLATFORMS)]]


def test_release_signs_every_index_it_publishes(cosign, keys, lab: Lab, unique, tmp_path):
    """`release --sign-key`: cosign verifies each published index and each platform manifest
    in it; the report says signed."""
    project = f"sig-{unique}"
    report_path = tmp_path / "report.json"
    result = run_cli(
        "release", "--source", str(ROOT / "examples" / "mini-matrix"),
        "--registry", f"{lab.registry}/{project}", "--plain-http",
        "--components", "gateway,backend", "--tag", f"s-{unique}",
        "--sign-key", f"file:{keys['key']}", "--report-json", str(report_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert {row["status"] for row in report["images"]} == {"published"}
    for row in report["images"]:
        assert row["signature"], row
        pinned = f"{row['ref'].rsplit(':', 1)[0]}@{row['digest']}"
        assert f"`{row['ref']}@{row['digest']}` (signed)" in result.stdout
        verified = cosign_verify(cosign, keys["key.pub"], pinned)
        assert verified.returncode == 0, verified.stderr
        assert f'"docker-manifest-digest":"{row["digest"]}"' in verified.stdout
        for platform in row["platforms"]:  # each child digest, as Harbor and runtimes see it
            child = f"{row['ref'].rsplit(':', 1)[0]}@{platform['digest']}"
            verified = cosign_verify(cosign, keys["key.pub"], child)
            assert verified.returncode == 0, (platform["platform"], verified.stderr)
    assert keys["key"].read_text().splitlines()[1] not in result.stdout + result.stderr
