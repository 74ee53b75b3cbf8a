"""An image that reads another release image at build time (as AI-Infra-Matrix's slurm images
do with COPY --from=ai-infra-slurm-master:latest) is built after it, from its published digest."""

from __future__ import annotations

import json
import shutil

from conftest import MINI_MATRIX, Lab, release_to_lab, run_cli
from test_release import platform_files

from pipeline.oci import layout

NODE_DOCKERFILE = """\
ARG VERSION=dev
FROM busybox:1.36
COPY --from=ai-infra-gateway:latest /www/banner.txt /etc/gateway-banner.txt
LABEL org.opencontainers.image.version="${VERSION}"
"""


def test_dependent_image_waits_for_and_uses_the_published_one(lab: Lab, tmp_path, unique):
    source = tmp_path / "repo"
    shutil.copytree(MINI_MATRIX, source)
    (source / "src" / "node").mkdir()
    (source / "src" / "node" / "Dockerfile").write_text(NODE_DOCKERFILE)
    (source / "src" / "node" / "build.conf").write_text("BUILD_PHASE=dependent\n")
    project = f"needs-{unique}"
    report_path = tmp_path / "report.json"

    plan = run_cli("plan", "--source", str(source), "--components", "node,gateway", "--json")
    node = next(c for c in json.loads(plan.stdout)["components"] if c["name"] == "node")
    assert node["needs"] == ["ai-infra-gateway"]

    result = release_to_lab(lab, source, project, report_path, "--components", "node,gateway")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr
    assert log.index("published") < log.index("building ai-infra-node")
    files = platform_files(lab, f"{project}/ai-infra-node", "v0.3.8")
    banner = (MINI_MATRIX / "src" / "shared" / "banner.txt").read_bytes()
    assert {p: f["etc/gateway-banner.txt"] for p, f in files.items()} == {
        "linux/amd64": banner,
        "linux/arm64": banner,
    }

    export = run_cli("export", "--source", str(source), "--components", "node,gateway",
                     "--output", str(tmp_path / "out"))  # fmt: skip
    assert export.returncode == 2
    assert "ai-infra-node reads ai-infra-gateway" in export.stderr


def test_per_arch_tags_when_asked(lab: Lab, tmp_path, unique):
    """PIPELINE_PER_ARCH_TAGS=true: beside the index, <tag>-amd64 / <tag>-arm64 single images."""
    project = f"arch-tags-{unique}"
    result = run_cli(
        "release", "--source", str(MINI_MATRIX), "--components", "gateway",
        "--registry", f"{lab.secure_registry}/{project}", "--ca-cert", str(lab.ca_cert),
        "--username", lab.user, "--password", "env:LAB_REGISTRY_PASSWORD",
        env={"PIPELINE_PER_ARCH_TAGS": "true"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with lab.secure_client() as client:
        index = json.loads(client.get_manifest(f"{project}/ai-infra-gateway", "v0.3.8")[0])
        by_platform = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
        for arch in ("amd64", "arm64"):
            body, media_type = client.get_manifest(f"{project}/ai-infra-gateway", f"v0.3.8-{arch}")
            assert media_type == "application/vnd.oci.image.manifest.v1+json"
            config = json.loads(body)["config"]["digest"]
            assert (
                json.loads(lab.get_blob(f"{project}/ai-infra-gateway", config))["architecture"]
                == arch
            )
            assert layout.digest_bytes(body) == by_platform[arch]
