"""A real release of examples/mini-matrix to the lab's TLS + auth registry, checked from the
registry's side: an index per image with both platforms, binaries of the right architecture,
and build stages that ran natively. (The Dagger door: test_dagger_call.py.)"""

from __future__ import annotations

import gzip
import io
import json
import tarfile

from conftest import MINI_MATRIX, MINI_MATRIX_IMAGES, PLATFORMS, Lab, release_to_lab

from pipeline.oci import layout

IMAGES = MINI_MATRIX_IMAGES
ELF_MACHINE = {"linux/amd64": 0x3E, "linux/arm64": 0xB7}  # e_machine: x86-64, AArch64


def platform_files(lab: Lab, repository: str, tag: str) -> dict[str, dict[str, bytes]]:
    """Every regular file of every layer, per platform, read through the registry API."""
    with lab.secure_client() as client:
        index = json.loads(client.get_manifest(repository, tag)[0])
        files: dict[str, dict[str, bytes]] = {}
        for entry in index["manifests"]:
            manifest = json.loads(client.get_manifest(repository, entry["digest"])[0])
            found: dict[str, bytes] = {}
            for layer in manifest["layers"]:
                blob = lab.get_blob(repository, layer["digest"])
                with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
                    for member in tar.getmembers():
                        if member.isfile():
                            found[member.name] = tar.extractfile(member).read()
            files[layout.platform_of(entry["platform"])] = found
    return files


def test_every_image_is_one_index_with_both_platforms(released, lab: Lab):
    project, report = released
    assert report["ok"] and [i["image"] for i in report["images"]] == list(IMAGES)
    with lab.secure_client() as client:
        for image in IMAGES:
            body, media_type = client.get_manifest(f"{project}/{image}", "v0.3.8")
            assert media_type == layout.OCI_INDEX
            platforms = {layout.platform_of(m["platform"]) for m in json.loads(body)["manifests"]}
            assert platforms == set(PLATFORMS), image
            row = next(i for i in report["images"] if i["image"] == image)
            assert row["digest"] == layout.digest_bytes(body)
            listed = {
                layout.platform_of(m["platform"]): m["digest"]
                for m in json.loads(body)["manifests"]
            }
            assert {p["platform"]: p["digest"] for p in row["platforms"]} == listed, image
            assert all(p["size"] for p in row["platforms"]), image


def test_go_binaries_are_built_for_each_target(released, lab: Lab):
    project, _ = released
    for image, binary in (
        ("ai-infra-backend", "backend"),
        ("ai-infra-backend-init", "backend-init"),
    ):
        files = platform_files(lab, f"{project}/{image}", "v0.3.8")
        for platform, machine in ELF_MACHINE.items():
            elf = files[platform][f"usr/local/bin/{binary}"]
            assert elf[:4] == b"\x7fELF"
            assert int.from_bytes(elf[18:20], "little") == machine, (image, platform)


def test_cross_compile_stage_ran_natively_and_run_steps_on_target(released, lab: Lab):
    project, _ = released
    backend = platform_files(lab, f"{project}/ai-infra-backend", "v0.3.8")
    # $BUILDPLATFORM stage: native (x86_64) for both targets, no QEMU.
    assert {backend[p]["etc/build-machine"].strip() for p in PLATFORMS} == {b"x86_64"}
    probe = platform_files(lab, f"{project}/ai-infra-archprobe", "v0.3.8")
    assert probe["linux/arm64"]["etc/build-arch"].split() == [b"aarch64", b"arm64"]
    assert probe["linux/amd64"]["etc/build-arch"].split() == [b"x86_64", b"amd64"]


def test_a_one_platform_release_publishes_and_reads_back(lab: Lab, tmp_path, unique):
    """One variant is published as a plain image manifest, no index: its platform is read
    from its config, a blob (it was asked for as a manifest, and the registry said 500)."""
    project = f"one-{unique}"
    for platform in PLATFORMS:
        tag = f"one-{platform.split('/')[1]}"
        report_path = tmp_path / f"{tag}.json"
        result = release_to_lab(lab, MINI_MATRIX, project, report_path, "--components",
                                "gateway", "--platforms", platform, "--tag", tag)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        (row,) = json.loads(report_path.read_text())["images"]
        (only,) = row["platforms"]
        assert row["status"] == "published" and only["platform"] == platform
        assert only["digest"].startswith("sha256:") and only["size"] > 0
        with lab.secure_client() as client:
            body, _ = client.get_manifest(f"{project}/ai-infra-gateway", tag)
        assert layout.digest_bytes(body) == row["digest"]
