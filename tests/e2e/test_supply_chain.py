"""The supply chain of a bundle, with the real syft and cosign: `bundle create --sbom
--sign-key` of one mini-matrix image, its SBOMs (SPDX JSON naming image, platform and
manifest digest) checked offline and listed as packages, pushed to a registry with the
referrers API (the lab's referrers registry) and to one without (Debian's docker-registry:
the tag schema), where cosign verifies the index, each platform manifest and each SBOM; a
delta made with --sbom carries SBOMs of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import MINI_MATRIX, ROOT, Lab, lab_address, run_cli

from pipeline.oci import layout, sbom
from pipeline.oci.registry import RegistryClient


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("keys")
    private, public = root / "key.pem", root / "key.pub.pem"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                    str(private)], check=True, capture_output=True)  # fmt: skip
    subprocess.run(["openssl", "ec", "-in", str(private), "-pubout", "-out", str(public)],
                   check=True, capture_output=True)  # fmt: skip
    return private, public


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, keys) -> Path:
    output = tmp_path_factory.mktemp("supply") / "bundle"
    result = run_cli(
        "bundle", "create", "--source", str(MINI_MATRIX), "--components", "gateway",
        "--output", str(output), "--sbom", "--sign-key", f"file:{keys[0]}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SBOMs" in result.stdout, result.stdout
    return output


@pytest.fixture(scope="module")
def referrers_registry() -> str:
    return lab_address("LAB_REFERRERS_REGISTRY")


def gateway(bundle: Path) -> dict:
    inventory = json.loads((bundle / "inventory.json").read_text())
    return next(i for i in inventory["images"] if i["name"] == "ai-infra-gateway")


def test_every_platform_has_an_spdx_sbom_naming_it(bundle: Path) -> None:
    entry = gateway(bundle)
    assert sorted(entry["sboms"]) == ["linux/amd64", "linux/arm64"]
    for platform, listed in entry["sboms"].items():
        assert listed["subject"] == entry["platforms"][platform]["digest"]
        manifest = layout.blob_path(bundle, listed["digest"]).read_bytes()
        doc = json.loads(
            sbom.document_of(manifest, lambda d: layout.blob_path(bundle, d).read_bytes())
        )
        assert (
            doc["spdxVersion"] == "SPDX-2.3"
            and "Tool: syft-1.18.1" in doc["creationInfo"]["creators"]
        )
        assert doc["comment"] == sbom.describes(entry["ref"], platform, listed["subject"])
        assert doc["name"] == f"{entry['ref'].rsplit(':', 1)[0]}@{listed['subject']}"


def test_verify_and_packages_offline(bundle: Path, keys) -> None:
    verified = run_cli("bundle", "verify", str(bundle), "--key", str(keys[1]))
    assert verified.returncode == 0, verified.stderr[-3000:]
    listed = run_cli("bundle", "packages", str(bundle), "ai-infra-gateway",
                     "--platform", "linux/arm64")  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert any(line.startswith("busybox ") for line in listed.stdout.splitlines()), listed.stdout


def cosign_verify(public: Path, ref: str) -> subprocess.CompletedProcess:
    cosign = os.environ.get("LAB_COSIGN", "")
    assert os.access(cosign, os.X_OK), f"LAB_COSIGN={cosign!r}: run scripts/lab up"
    return subprocess.run(
        [cosign, "verify", "--key", str(public), "--insecure-ignore-tlog=true",
         "--allow-http-registry", "--allow-insecure-registry", ref],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("kind", [sbom.REFERRERS, sbom.TAG_SCHEMA])
def test_push_attaches_each_sbom_and_cosign_verifies_every_manifest(
    bundle: Path, keys, lab: Lab, referrers_registry: str, unique: str, kind: str
) -> None:
    host = referrers_registry if kind == sbom.REFERRERS else lab.registry
    project = f"supply-{unique}"
    pushed = run_cli("bundle", "push", str(bundle), "--registry", f"{host}/{project}",
                     "--plain-http")  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert f"2 SBOMs ({kind})" in pushed.stdout, pushed.stdout
    entry, repository = gateway(bundle), f"{project}/ai-infra-gateway"
    with RegistryClient(host, plain_http=True) as client:
        assert (client.referrers(repository, entry["digest"]) is None) == (kind == sbom.TAG_SCHEMA)
        for platform, listed in entry["sboms"].items():
            found = [
                m["digest"] for m in sbom.listed_referrers(client, repository, listed["subject"])
            ]
            assert found == [listed["digest"]], platform
            manifest, _ = client.get_manifest(repository, listed["digest"])
            read = lambda d: client.get_blob(repository, d)  # noqa: E731
            assert sbom.problem(manifest, read, listed["subject"], platform) is None
    children = [p["digest"] for p in entry["platforms"].values()]
    sboms = [listed["digest"] for listed in entry["sboms"].values()]
    for digest in [entry["digest"], *children, *sboms]:  # every manifest, the SBOMs' too
        verified = cosign_verify(keys[1], f"{host}/{repository}@{digest}")
        assert verified.returncode == 0, verified.stderr


def test_a_delta_carries_sboms_of_its_own(bundle: Path, tmp_path: Path) -> None:
    delta = tmp_path / "delta"
    result = run_cli(
        "bundle", "create", "--source", str(MINI_MATRIX), "--components", "gateway",
        "--tag", "v0.3.9", "--since", str(bundle), "--output", str(delta), "--sbom",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(gateway(delta)["sboms"]) == ["linux/amd64", "linux/arm64"]
    assert gateway(delta)["sboms"] != gateway(bundle)["sboms"]  # its own: v0.3.9's names
    verified = run_cli("bundle", "verify", str(delta), "--base", str(bundle))
    assert verified.returncode == 0, verified.stderr[-3000:]


def test_release_sbom_attaches_one_per_platform_and_signs_every_manifest(
    bundle: Path, keys, lab: Lab, unique: str, tmp_path: Path
) -> None:
    """`release --sbom --sign-key` into the plain registry (no referrers API: the tag schema;
    the engine pushes there): each row names its SBOM and how it was attached."""
    report_path = tmp_path / "report.json"
    result = run_cli(
        "release", "--source", str(MINI_MATRIX), "--components", "gateway",
        "--registry", f"{lab.registry}/rel-{unique}", "--plain-http", "--tag", f"s-{unique}",
        "--sbom", "--sign-key", f"file:{keys[0]}", "--report-json", str(report_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(signed) (SBOMs: tag-schema)" in result.stdout, result.stdout
    (row,) = json.loads(report_path.read_text())["images"]
    repository = f"rel-{unique}/ai-infra-gateway"
    with RegistryClient(lab.registry, plain_http=True) as client:
        for platform in row["platforms"]:
            assert platform["sbom_via"] == sbom.TAG_SCHEMA
            listed = [
                m["digest"] for m in sbom.listed_referrers(client, repository, platform["digest"])
            ]
            assert listed == [platform["sbom"]]
            manifest, _ = client.get_manifest(repository, platform["sbom"])
            read = lambda d: client.get_blob(repository, d)  # noqa: E731
            assert sbom.problem(manifest, read, platform["digest"], platform["platform"]) is None
            for digest in (platform["digest"], platform["sbom"]):  # the SBOM is signed too
                verified = cosign_verify(keys[1], f"{lab.registry}/{repository}@{digest}")
                assert verified.returncode == 0, verified.stderr


def exported_gateway_sboms(folder: Path) -> None:
    """The export's SBOMs, by the real syft: one per platform, naming the manifest of that
    platform in the tarball beside it, with the packages of busybox's base."""
    with tarfile.open(folder / "ai-infra-gateway.tar") as tar:
        index = json.loads(tar.extractfile("index.json").read())
        top = index["manifests"][0]
        if top["mediaType"].endswith("index.v1+json"):
            index = json.loads(tar.extractfile(f"blobs/sha256/{top['digest'][7:]}").read())
    platforms = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"]
                 for m in index["manifests"]}  # fmt: skip
    assert set(platforms) == {"linux/amd64", "linux/arm64"}
    for platform, digest in platforms.items():
        spdx = (folder / f"ai-infra-gateway.{platform.replace('/', '-')}.spdx.json").read_bytes()
        doc = json.loads(spdx)
        assert doc["comment"].endswith(f"platform {platform}, manifest {digest}"), doc["comment"]
        assert sbom.packages(spdx), platform  # syft found what the image holds


def test_export_sbom_writes_one_beside_each_tarball_in_both_doors(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = run_cli("export", "--source", str(MINI_MATRIX), "--components", "gateway",
                     "--output", str(out), "--sbom")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 SBOMs" in result.stdout, result.stdout
    exported_gateway_sboms(out)
    door = tmp_path / "door"
    cli = os.environ.get("_EXPERIMENTAL_DAGGER_CLI_BIN")
    assert cli, "no dagger CLI: run scripts/test (it starts the lab)"
    result = subprocess.run(
        [cli, "--progress=plain", "call", "--source", str(MINI_MATRIX.relative_to(ROOT)),
         "export", "--components", "gateway", "--sbom", "export", "--path", str(door)],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    exported_gateway_sboms(door)
