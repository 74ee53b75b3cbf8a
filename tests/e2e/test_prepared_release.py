"""What build.sh prepares, and the AppHub it runs during builds, in a real release of
mini-matrix: read back from the registry's side."""

from __future__ import annotations

import json

from conftest import MINI_MATRIX, PLATFORMS, SSH_KEY_DIR, Lab, release_to_lab
from test_release import platform_files

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
