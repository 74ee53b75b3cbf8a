"""Reuse of what did not change (pipeline/run/reuse.py), against the lab's registry and engines.

One copy of mini-matrix is released into one project again and again: unchanged, it is
reused whole (on another engine for arm64, and through `dagger call`); with one input of
each kind changed in its own image, exactly those images are built again; a new tag rebuilds
the images that declare VERSION; --rebuild builds what it would have reused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import anyio
import dagger
import pytest
from dagger import dag

from pipeline.oci import layout
from pipeline.run.inputs import INPUTS_LABEL
from pipeline.run.reuse import record_tag
from tests.e2e.conftest import (
    MINI_MATRIX,
    MINI_MATRIX_IMAGES,
    PLATFORMS,
    ROOT,
    SSH_KEY_DIR,
    TLS_DIR,
    Lab,
    marker_variants,
    release_to_lab,
)

# Each input kind, changed in an image of its own (the served one: AppHub, which
# slurm-master reaches while it builds); a file name is relative to the tree.
COPIED_FILE = "src/gateway/www/index.html"  # ai-infra-gateway COPYs it
BUILD_ARGUMENT = "PYPI_INDEX_URL"  # only ai-infra-archprobe declares it
BASE_IMAGE = "src/gitea/Dockerfile.tpl"  # ai-infra-gitea: FROM a base the test pushes
DOCKERFILE = "src/portal/Dockerfile.tpl"  # ai-infra-portal
SERVED = "src/apphub/pkgs/slurm-deb"  # ai-infra-apphub, hence ai-infra-slurm-master
CHANGED = {
    "ai-infra-gateway",
    "ai-infra-archprobe",
    "ai-infra-gitea",
    "ai-infra-portal",
    "ai-infra-apphub",
    "ai-infra-slurm-master",
}
NO_VERSION = {"ai-infra-apphub"}  # the one image that declares no ARG VERSION


def rows(report: dict) -> dict[tuple[str, str], dict]:
    return {(r["image"], p["platform"]): p for r in report["images"] for p in r["platforms"]}


def statuses(report: dict) -> dict[str, set[str]]:
    """status -> the images with a platform of that status."""
    found: dict[str, set[str]] = {}
    for (image, _), p in rows(report).items():
        found.setdefault(p["status"], set()).add(image)
    return found


class Tree:
    """A copy of mini-matrix released into one project of the lab's TLS registry."""

    def __init__(self, lab: Lab, root: Path, project: str) -> None:
        self.lab, self.root, self.project = lab, root, project
        self.base = f"{lab.registry}/{project}-base/busybox:1"  # gitea's, pushed by the test
        shutil.copytree(MINI_MATRIX, root)

    def release(self, tag: str, *extra: str) -> dict:
        report = self.root.parent / f"report-{tag}-{os.urandom(3).hex()}.json"
        result = release_to_lab(self.lab, self.root, self.project, report, "--tag", tag, *extra)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(report.read_text())

    def dagger_call_release(self, tag: str) -> dict:
        cli = os.environ.get("_EXPERIMENTAL_DAGGER_CLI_BIN") or shutil.which("dagger")
        assert cli, "no dagger CLI: run scripts/test (it starts the lab)"
        result = subprocess.run(
            [cli, "--progress=plain", "call", "-m", str(ROOT), "--source", ".", "release",
             "--tag", tag, "--registry", f"{self.lab.secure_registry}/{self.project}",
             "--username", self.lab.user, "--password", "env:LAB_REGISTRY_PASSWORD",
             "--ca-cert", str(self.lab.ca_cert), "--json-report",
             # The CLI door's kept pair and TLS folder: the same files in both doors' images.
             "--ssh-key", str(SSH_KEY_DIR), "--tls", str(TLS_DIR)],
            cwd=self.root, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout)

    def append(self, name: str, text: str) -> None:
        path = self.root / name
        path.write_text(path.read_text() + text)

    def edit(self, name: str, old: str, new: str) -> None:
        path = self.root / name
        text = path.read_text()
        assert old in text, (name, old)
        path.write_text(text.replace(old, new, 1))


async def push_base(lab: Lab, ref: str, marker: str) -> None:
    """A two-platform base image of our own under `ref` (another digest for each marker)."""
    async with dagger.connection(dagger.Config(log_output=None)):
        await dag.container().publish(ref, platform_variants=marker_variants(marker))


@pytest.fixture(scope="module")
def tree(lab: Lab, tmp_path_factory) -> Tree:
    project = f"reuse-{os.urandom(4).hex()}"
    made = Tree(lab, tmp_path_factory.mktemp("reuse") / "mini-matrix", project)
    anyio.run(push_base, lab, made.base, "first")
    made.edit(BASE_IMAGE, "FROM busybox:${BUSYBOX_VERSION}", f"FROM {made.base}")
    return made


@pytest.fixture(scope="module")
def first(tree: Tree) -> dict:
    return tree.release("v1")


def test_a_first_release_builds_everything_and_records_each_key(lab: Lab, tree: Tree, first):
    assert statuses(first) == {"published": set(MINI_MATRIX_IMAGES)}
    found = rows(first)
    with lab.secure_client() as client:
        for (image, platform), row in found.items():
            assert row["inputs"] and row["inputs"].startswith("sha256:"), (image, platform)
            repository = f"{tree.project}/{image}"
            body, _ = client.get_manifest(repository, record_tag(row["inputs"]))
            assert body == client.get_manifest(repository, row["digest"])[0], (image, platform)
            config = json.loads(client.get_blob(repository, json.loads(body)["config"]["digest"]))
            assert config["config"]["Labels"][INPUTS_LABEL] == row["inputs"]
    # One Dockerfile, two targets: two keys. Two platforms: two keys.
    for platform in PLATFORMS:
        targets = found["ai-infra-backend", platform], found["ai-infra-backend-init", platform]
        assert targets[0]["inputs"] != targets[1]["inputs"]
    assert found["ai-infra-gateway", PLATFORMS[0]]["inputs"] != found[
        "ai-infra-gateway", PLATFORMS[1]]["inputs"]  # fmt: skip


@pytest.fixture(scope="module")
def unchanged(tree: Tree, first) -> dict:
    second_engine = os.environ.get("LAB_ENGINE_2")
    assert second_engine, "LAB_ENGINE_2 is not set: start the lab with LAB_ENGINES=2"
    return tree.release("v1", "--engines", f"linux/arm64={second_engine}")


def test_nothing_changed_reuses_every_platform_on_any_engine(
    lab: Lab, tree: Tree, first, unchanged
):
    before, now = rows(first), rows(unchanged)
    # But one: on its own engine, slurm-master arm64 reaches the AppHub that engine serves,
    # the arm64 one, where on one engine it reached the amd64 one (and got the arguments
    # build.sh passes then): other inputs, so built again, as it should.
    other_service = ("ai-infra-slurm-master", "linux/arm64")
    assert {k: p["status"] for k, p in now.items()} == {
        k: "published" if k == other_service else "reused" for k in before
    }
    assert now[other_service]["inputs"] != before[other_service]["inputs"]
    for key, row in now.items():
        if key == other_service:
            continue
        assert (row["digest"], row["inputs"]) == (before[key]["digest"], before[key]["inputs"])
        pinned = f"{lab.secure_registry}/{tree.project}/{key[0]}@{row['digest']}"
        assert row["reused_from"] == pinned
    assert {p["engine"] for p in now.values() if p["platform"] == "linux/arm64"} != {"default"}


def test_dagger_call_reuses_what_the_cli_built(tree: Tree, first, unchanged):
    report = tree.dagger_call_release("v1")
    assert statuses(report) == {"reused": set(MINI_MATRIX_IMAGES)}
    before = rows(first)
    for key, row in rows(report).items():
        assert row["digest"] == before[key]["digest"], key


@pytest.fixture(scope="module")
def changed(lab: Lab, tree: Tree, first, unchanged) -> dict:
    tree.append(COPIED_FILE, "<p>changed</p>\n")
    (tree.root / ".env").write_text(f"{BUILD_ARGUMENT}=https://pypi.example/changed/\n")
    anyio.run(push_base, lab, tree.base, "second")
    tree.append(DOCKERFILE, 'LABEL changed="yes"\n')
    (tree.root / SERVED / "changed.txt").write_text("a new package\n")
    return tree.release("v1")


def test_each_input_kind_rebuilds_exactly_the_images_it_concerns(first, changed):
    assert statuses(changed) == {"published": CHANGED, "reused": set(MINI_MATRIX_IMAGES) - CHANGED}
    before = rows(first)
    for key, row in rows(changed).items():
        same = key[0] not in CHANGED
        assert (row["inputs"] == before[key]["inputs"]) is same, key
        assert (row["digest"] == before[key]["digest"]) is same, key


@pytest.fixture(scope="module")
def new_tag(tree: Tree, changed) -> dict:
    return tree.release("v2")


def test_a_new_tag_rebuilds_only_the_images_that_declare_version(new_tag):
    assert statuses(new_tag) == {
        "published": set(MINI_MATRIX_IMAGES) - NO_VERSION,
        "reused": NO_VERSION,
    }


def test_rebuild_builds_what_would_be_reused(new_tag, tree: Tree):
    report = tree.release("v2", "--components", "apphub", "--rebuild")
    assert statuses(report) == {"published": {"ai-infra-apphub"}}
    before = rows(new_tag)
    for key, row in rows(report).items():
        assert row["inputs"] == before[key]["inputs"], key  # the same inputs, built anyway


def test_a_one_platform_release_of_a_reused_image_is_its_manifest(lab: Lab, tree: Tree, new_tag):
    report = tree.release("one", "--components", "apphub", "--platforms", "linux/amd64")
    (row,) = report["images"]
    (platform,) = row["platforms"]
    assert platform["status"] == "reused"
    assert platform["digest"] == rows(new_tag)["ai-infra-apphub", "linux/amd64"]["digest"]
    with lab.secure_client() as client:  # no index of one: the manifest, as the engine does
        body, _ = client.get_manifest(f"{tree.project}/ai-infra-apphub", "one")
    assert layout.digest_bytes(body) == platform["digest"] == row["digest"]
