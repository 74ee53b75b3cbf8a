"""What build.sh prepares, and the AppHub it runs during builds, in a real release of
mini-matrix: read back from the registry's side."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import httpx
import pytest
from conftest import MINI_MATRIX, PLATFORMS, SSH_KEY_DIR, Lab, release_to_lab
from cryptography import x509
from cryptography.x509.oid import NameOID
from test_release import platform_files

from pipeline.errors import BundleError

TAG = "v0.3.8"


def test_apphub_serves_slurm_master_while_it_builds(lab: Lab, tmp_path, unique):
    project = f"serve-{unique}"
    result = release_to_lab(lab, MINI_MATRIX, project, tmp_path / "report.json",
                            "--components", "apphub,slurm-master")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr
    built = max(log.index(f"ok ai-infra-apphub {p}") for p in PLATFORMS)
    started = log.index("starting ai-infra-apphub for the builds that reach it: done")
    assert built < started < log.index("building ai-infra-slurm-master")
    packages = (MINI_MATRIX / "src/apphub/pkgs/slurm-deb/Packages").read_bytes()
    files = platform_files(lab, f"{project}/ai-infra-slurm-master", TAG)
    # Installed from the running AppHub, on each platform (arm64 under emulation).
    assert {p: f["opt/slurm/Packages"] for p, f in files.items()} == dict.fromkeys(
        PLATFORMS, packages
    )


def test_the_ssh_key_pair_is_made_once_kept_and_in_the_images_that_copy_it(released, lab):
    project, _ = released
    private, public = (SSH_KEY_DIR / "id_rsa").read_bytes(), (SSH_KEY_DIR / "id_rsa.pub")
    assert (SSH_KEY_DIR / "id_rsa").stat().st_mode & 0o777 == 0o600
    assert private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    expected = {
        "ai-infra-backend": {"root/.ssh/id_rsa": private},
        "ai-infra-apphub": {"root/.ssh/authorized_keys": public.read_bytes()},
        "ai-infra-slurm-master": {"root/.ssh/authorized_keys": public.read_bytes()},
    }
    for image, wanted in expected.items():
        for platform, files in platform_files(lab, f"{project}/{image}", TAG).items():
            assert {k: files.get(k) for k in wanted} == wanted, (image, platform)
    for files in platform_files(lab, f"{project}/ai-infra-backend-init", TAG).values():
        assert "root/.ssh/id_rsa" not in files  # its stages copy no key


def test_the_gateway_gets_its_conf_d_rendered_from_env_and_its_declared_args(released, lab):
    project, _ = released
    rendered = (
        b"# Rendered by the prepare step from .env (as build.sh renders src/nginx/conf.d).\n"
        b"server_name localhost\npublic_url http://localhost:8080/\nbackend postgres:5432\n"
    )
    for files in platform_files(lab, f"{project}/ai-infra-gateway", TAG).values():
        assert files["etc/gateway/conf.d/site.conf"] == rendered
    with lab.secure_client() as client:
        index = json.loads(client.get_manifest(f"{project}/ai-infra-gateway", TAG)[0])
        for entry in index["manifests"]:
            manifest = json.loads(client.get_manifest(f"{project}/ai-infra-gateway",
                                                      entry["digest"])[0])  # fmt: skip
            config = json.loads(lab.get_blob(f"{project}/ai-infra-gateway",
                                             manifest["config"]["digest"]))  # fmt: skip
            assert config["config"]["Labels"]["ai-infra.build-env"] == "development"


# --- what build.sh ssl-setup and build.sh download make, from a clean clone ------------------

MIRRORED = "https://github.com/coder/code-server/releases/download/v4.107.0"
DEBS = {
    "linux/amd64": "code-server_4.107.0_amd64.deb",
    "linux/arm64": "code-server_4.107.0_arm64.deb",
}


def clean_clone(tmp_path: Path) -> Path:
    """mini-matrix as a fresh clone has it: no TLS folder, no downloads, and no lock yet."""
    clone = tmp_path / "mini-matrix"
    shutil.copytree(MINI_MATRIX, clone, ignore=shutil.ignore_patterns(
        "downloads.lock", "ssh-key", "ssl", "code_server", ".env"))  # fmt: skip
    return clone


def mirrored(name: str) -> bytes:
    response = httpx.get(f"{os.environ['LAB_GITHUB_MIRROR']}{MIRRORED}/{name}", timeout=30)
    response.raise_for_status()
    return response.content


def test_a_clean_clone_releases_with_its_tls_folder_made_and_its_downloads_fetched_and_pinned(
    lab: Lab, tmp_path, unique
):
    clone, project = clean_clone(tmp_path), f"clone-{unique}"
    kept = tmp_path / "keys" / "ssh-key"
    result = release_to_lab(lab, clone, project, tmp_path / "report.json",
                            "--components", "archprobe,gateway",
                            env={"PIPELINE_SSH_KEY_DIR": str(kept)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lock = (clone / "downloads.lock").read_text().splitlines()
    pins = {line.split()[1]: line.split()[0] for line in lock if not line.startswith("#")}
    assert pins == {
        f"third_party/code_server/{name}": hashlib.sha256(mirrored(name)).hexdigest()
        for name in DEBS.values()
    }
    archprobe = platform_files(lab, f"{project}/ai-infra-archprobe", TAG)
    assert {p: f["opt/code-server.deb"] for p, f in archprobe.items()} == {
        p: mirrored(name) for p, name in DEBS.items()
    }  # each platform kept its architecture's, as singleuser's RUN picks it
    tls = kept.parent / "tls" / "mini-matrix.example"  # beside the key pair, per domain
    gateway = platform_files(lab, f"{project}/ai-infra-gateway", TAG)
    for files in gateway.values():
        assert files["etc/gateway/ssl/mini-matrix.example.crt"] == (tls / "server.crt").read_bytes()
        assert files["etc/gateway/ssl/ca/ca.key"] == (tls / "ca/ca.key").read_bytes()
    certificate = x509.load_pem_x509_certificate((tls / "server.crt").read_bytes())
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "mini-matrix.example"
    )
    assert not (clone / "src/gateway/ssl").exists()  # in the build context, never the checkout
    assert not (clone / "third_party/code_server").exists()


def test_a_download_that_is_not_what_the_lock_pins_stops_the_release_before_any_build(
    lab: Lab, tmp_path, unique
):
    clone, project = clean_clone(tmp_path), f"pin-{unique}"
    (clone / "downloads.lock").write_text(
        (MINI_MATRIX / "downloads.lock").read_text().replace("ee31d1dd", "00000000")
    )
    result = release_to_lab(lab, clone, project, tmp_path / "report.json",
                            "--components", "archprobe,gateway")  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(
        "error: third_party/code_server/code-server_4.107.0_amd64.deb: downloads.lock pins "
        "sha256:00000000"
    ), error
    assert "gave sha256:ee31d1dd" in error and error.endswith("nothing was built")
    assert "building ai-infra-" not in result.stderr
    with lab.secure_client() as client, pytest.raises(BundleError, match="404"):
        client.get_manifest(f"{project}/ai-infra-gateway", TAG)


def test_an_unreachable_mirror_is_one_line_naming_the_url_before_any_build(
    lab: Lab, tmp_path, unique
):
    clone = clean_clone(tmp_path)
    result = release_to_lab(lab, clone, f"mirror-{unique}", tmp_path / "report.json",
                            "--components", "archprobe",
                            env={"GITHUB_MIRROR": "http://nowhere.lab.internal:5447/"})  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(
        f"error: http://nowhere.lab.internal:5447/{MIRRORED}/code-server_4.107.0_amd64.deb: "
        "cannot download ("
    ), error
    assert "building ai-infra-" not in result.stderr
    assert not (clone / "downloads.lock").exists()
