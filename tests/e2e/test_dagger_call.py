"""The Dagger door as users run it: `dagger call` of this module on the engine.

The module runs in a container of the engine. Against a registry on the network (the lab's,
by name, like a Harbor on a LAN) it does what the CLI door does; against one that the engine
alone reaches (the lab's loopback one) it still publishes, read back through the engine.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

from conftest import (
    MINI_MATRIX,
    MINI_MATRIX_IMAGES,
    PLATFORMS,
    ROOT,
    SSH_KEY_DIR,
    TLS_DIR,
    Lab,
    run_cli,
)

from pipeline.oci import layout

FUNCTIONS = ("export", "offline-bundle", "plan", "release")


def dagger_cli() -> str:
    """The CLI the SDK uses (the lab's build), else a `dagger` on PATH (a standard install)."""
    found = os.environ.get("_EXPERIMENTAL_DAGGER_CLI_BIN") or shutil.which("dagger")
    assert found, "no dagger CLI: run scripts/test (it starts the lab) or install dagger"
    return found


def dagger(
    *args: str, timeout: float = 1200, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [dagger_cli(), "--progress=plain", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def call(*args: str, source: Path = MINI_MATRIX) -> subprocess.CompletedProcess:
    return dagger("call", "--source", str(source.relative_to(ROOT)), *args)


BUILT_WITH_A_SERVICE = {"ai-infra-slurm-master"}


def release_args(lab: Lab, project: str, tag: str, registry: str | None = None) -> list[str]:
    return [
        "release", "--tag", tag, "--registry", f"{registry or lab.secure_registry}/{project}",
        "--username", lab.user, "--password", "env:LAB_REGISTRY_PASSWORD",
        "--ca-cert", str(lab.ca_cert),
        # The pair and TLS folder the CLI door made and keeps: the same in both doors' images.
        "--ssh-key", str(SSH_KEY_DIR), "--tls", str(TLS_DIR),
    ]  # fmt: skip


def rows(report: dict) -> dict[tuple[str, str], tuple]:
    """(image, platform) -> what both doors must agree on."""
    return {
        (row["image"], p["platform"]): (p["status"], p["digest"], p["size"])
        for row in report["images"]
        for p in row["platforms"]
    }


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if "error: " in line]


def test_dagger_functions_lists_the_four_functions_with_their_docs():
    result = dagger("functions")
    assert result.returncode == 0, result.stderr[-3000:]
    listed = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    for name in FUNCTIONS:
        assert name in listed, result.stdout
        assert len(listed[name].split()) > 2, f"{name} has no description: {listed[name]}"


def test_dagger_call_plan_equals_the_cli_plan():
    door = call("plan")
    cli = run_cli("plan", "--source", str(MINI_MATRIX), "--json")
    assert door.returncode == 0, door.stderr[-3000:]
    assert cli.returncode == 0, cli.stderr
    assert json.loads(door.stdout) == json.loads(cli.stdout)


def test_dagger_call_release_gives_the_cli_door_s_rows_and_index_digests(
    lab: Lab, released, unique
):
    """The same tree through both doors, on the TLS + auth registry the module's container
    reaches by name: read back through the registry API, the same report rows (digest and
    size in every one) and the same images: the same digests when the engine reused the CLI
    door's build, else the same content and history but for the build's clock (0.21 stamps
    it in; its cache does not always keep a build between sessions)."""
    cli_project, cli_report = released
    project = f"door-{unique}"
    result = call(*release_args(lab, project, "v0.3.8"), "--json-report")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["ok"] and [i["image"] for i in report["images"]] == list(MINI_MATRIX_IMAGES)
    assert report["read_back_through_engine"] is None
    door_rows, cli_rows = rows(report), rows(cli_report)
    assert door_rows.keys() == cli_rows.keys()
    rebuilt = set()
    for (image, platform), (status, digest, size) in door_rows.items():
        assert status == "published" and digest.startswith("sha256:") and size > 0, image
        if image in BUILT_WITH_A_SERVICE:  # its history holds that session's AppHub URL
            continue
        _, cli_digest, _ = cli_rows[image, platform]
        if digest != cli_digest:
            rebuilt.add(image)
            door = lab.built_content(f"{project}/{image}", digest)
            assert door == lab.built_content(f"{cli_project}/{image}", cli_digest), platform
    print(f"built again by the door (same content, another clock): {sorted(rebuilt)}")
    cli_index = {row["image"]: row["digest"] for row in cli_report["images"]}
    for row in report["images"]:
        with lab.secure_client() as client:
            body, _ = client.get_manifest(f"{project}/{row['image']}", "v0.3.8")
        assert row["digest"] == layout.digest_bytes(body), row["image"]
        if row["image"] not in BUILT_WITH_A_SERVICE | rebuilt:
            assert row["digest"] == cli_index[row["image"]], row["image"]
    assert lab.password not in result.stdout + result.stderr


def test_dagger_call_release_signs_what_cosign_verifies(lab: Lab, unique, tmp_path):
    """`--sign-key` and `--sbom` through the door, on the TLS + auth registry: cosign verifies
    the index and each platform manifest; syft, in the module's container, read each one with
    the login and CA the release has, and its SBOM is attached by the tag schema (no referrers
    API in distribution 2.x)."""
    key, public = tmp_path / "key.pem", tmp_path / "key.pub.pem"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                    str(key)], check=True, capture_output=True)  # fmt: skip
    subprocess.run(["openssl", "ec", "-in", str(key), "-pubout", "-out", str(public)],
                   check=True, capture_output=True)  # fmt: skip
    project = f"door-sig-{unique}"
    result = dagger(
        "call", "--source", str(MINI_MATRIX.relative_to(ROOT)),
        *release_args(lab, project, "v0.3.8"), "--components", "gateway",
        "--sign-key", "env:DOOR_SIGN_KEY", "--sbom", "--json-report",
        env={"DOOR_SIGN_KEY": key.read_text()},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(result.stdout)["images"]
    assert {(p["sbom_via"], bool(p["sbom"])) for p in row["platforms"]} == {("tag-schema", True)}
    assert row["signature"] and key.read_text().splitlines()[1] not in result.stdout + result.stderr
    cosign = os.environ.get("LAB_COSIGN", "")
    assert os.access(cosign, os.X_OK), f"LAB_COSIGN={cosign!r}: run scripts/lab up"
    config = docker_config(tmp_path, lab)
    for digest in [row["digest"], *(p["digest"] for p in row["platforms"])]:
        verified = subprocess.run(
            [cosign, "verify", "--key", str(public), "--insecure-ignore-tlog=true",
             f"{lab.secure_registry}/{project}/ai-infra-gateway@{digest}"],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "SSL_CERT_FILE": str(lab.ca_cert), "COSIGN_PASSWORD": "",
                 "DOCKER_CONFIG": str(config)},
        )  # fmt: skip
        assert verified.returncode == 0, verified.stderr
        assert f'"docker-manifest-digest":"{digest}"' in verified.stdout


def docker_config(root: Path, lab: Lab) -> Path:
    """A docker config with the lab's login, which cosign reads."""
    folder = root / "docker"
    folder.mkdir()
    auth = base64.b64encode(f"{lab.user}:{lab.password}".encode()).decode()
    config = {"auths": {lab.secure_registry: {"auth": auth}}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_registry_the_module_cannot_reach_is_read_back_through_the_engine(lab: Lab, unique):
    """The lab's loopback registry: the engine (a host process) pushes to it; the module's
    container cannot reach it, so the read-back goes through the engine and says so."""
    loopback = os.environ.get("LAB_LOOPBACK_REGISTRY")
    assert loopback, "LAB_LOOPBACK_REGISTRY unset: run scripts/lab up"
    project = f"door-lo-{unique}"
    args = release_args(lab, project, "v0.3.8", registry=loopback)
    result = call(*args, "--components", "gateway", "--json-report")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    (row,) = report["images"]
    assert row["status"] == "published" and row["digest"].startswith("sha256:")
    assert {p["platform"] for p in row["platforms"]} == set(PLATFORMS)
    assert all(p["digest"] is None for p in row["platforms"])
    assert report["read_back_through_engine"].startswith(
        f"{loopback} does not answer from the module's container"
    ), report["read_back_through_engine"]
    markdown = call(*args, "--components", "gateway")
    assert markdown.returncode == 0, markdown.stderr[-3000:]
    assert "Read back through the engine: " in markdown.stdout


def test_dagger_call_offline_bundle_exports_a_bundle_that_verifies(tmp_path):
    out = tmp_path / "bundle"
    result = call("offline-bundle", "--tag", "v0.3.8", "export", "--path", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    inventory = json.loads((out / "inventory.json").read_text())
    refs = {image["ref"] for image in inventory["images"]}
    assert {f"{name}:v0.3.8" for name in MINI_MATRIX_IMAGES} <= refs, refs
    verify = run_cli("bundle", "verify", str(out))
    assert verify.returncode == 0, verify.stderr[-3000:]


def test_dagger_call_offline_bundle_since_a_previous_one_signed_verifies_offline(tmp_path):
    """`--since` (the previous inventory.json), `--sign-key env:VAR` and `--sbom` (syft in the
    module's container, from the lock), through the door."""
    key, public = tmp_path / "key.pem", tmp_path / "key.pub.pem"
    openssl = ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)]
    subprocess.run(openssl, check=True, capture_output=True)
    subprocess.run(["openssl", "ec", "-in", str(key), "-pubout", "-out", str(public)],
                   check=True, capture_output=True)  # fmt: skip
    base = tmp_path / "base"
    made = run_cli("bundle", "create", "--source", str(MINI_MATRIX), "--output", str(base),
                   "--tag", "v0.3.8", "--components", "gateway")  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    out = tmp_path / "delta"
    result = dagger(
        "call", "--source", str(MINI_MATRIX.relative_to(ROOT)), "offline-bundle",
        "--tag", "v0.3.9", "--components", "gateway", "--since", str(base / "inventory.json"),
        "--sign-key", "env:BUNDLE_SIGN_KEY", "--sbom", "export", "--path", str(out),
        env={"BUNDLE_SIGN_KEY": key.read_text()},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert key.read_text().splitlines()[1] not in result.stdout + result.stderr
    inventory = json.loads((out / "inventory.json").read_text())
    assert inventory["base"] and inventory["signing"]["public_key"].startswith("sha256:")
    assert all(sorted(i["sboms"]) == ["linux/amd64", "linux/arm64"] for i in inventory["images"])
    alone = run_cli("bundle", "verify", str(out), "--key", str(public))
    assert alone.returncode == 0, alone.stdout + alone.stderr
    whole = run_cli("bundle", "verify", str(out), "--base", str(base), "--key", str(public))
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert "every image signed with key sha256:" in whole.stdout


def test_bad_input_through_the_door_is_one_line_like_the_cli():
    door = call("plan", "--tag", "bad tag!")
    cli = run_cli("plan", "--source", str(MINI_MATRIX), "--tag", "bad tag!")
    assert door.returncode == cli.returncode == 2, door.stderr[-3000:]
    assert "Traceback" not in door.stderr
    (cli_line,) = error_lines(cli)
    assert any(cli_line in line for line in error_lines(door)), door.stderr[-3000:]


def test_unknown_component_through_the_door_is_one_line():
    door = call("plan", "--components", "nosuch")
    assert door.returncode == 2 and "Traceback" not in door.stderr
    assert any("nosuch" in line for line in error_lines(door)), door.stderr[-3000:]


def test_wrong_password_through_the_door_is_one_line_and_never_shown(lab: Lab, unique):
    wrong = f"wrong-{unique}"
    result = subprocess.run(
        [dagger_cli(), "--progress=plain", "call", "--source", "examples/mini-matrix",
         *release_args(lab, f"door-{unique}", "v0.3.8"), "--components", "gateway"],
        capture_output=True, text=True, cwd=ROOT, timeout=1200,
        env={**os.environ, "LAB_REGISTRY_PASSWORD": wrong},
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert any("refused the credentials" in line for line in error_lines(result)), result.stderr
    assert wrong not in result.stdout + result.stderr
