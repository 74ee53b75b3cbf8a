"""The offline bundle of examples/mini-matrix against the lab: made through the CLI door,
checked on disk, verified (directory and .tar), pushed to the TLS + auth registry and read
back, refused when corrupt, resumed after an interrupted push, smaller than the per-image
exports, and readable by skopeo as a plain OCI layout."""

from __future__ import annotations

import json
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import MINI_MATRIX, MINI_MATRIX_IMAGES, PLATFORMS, ROOT, Lab, run_cli

from pipeline.oci import layout
from pipeline.oci.reference import parse_tagged

TAG = "v0.3.8"
RELEASE_IMAGES = MINI_MATRIX_IMAGES
# dependency.conf's two, and the one only docker-compose.yml.tpl names.
DEPENDENCY_REFS = ("busybox:1.36", "debian:bookworm-slim", "golang:1.19-bookworm")
ALL_REFS = tuple(f"{image}:{TAG}" for image in RELEASE_IMAGES) + DEPENDENCY_REFS
_SUMMARY = re.compile(
    r"(\d+) blobs uploaded \(\d+ bytes\), (\d+) already there, (\d+) mounted, (\d+) manifests"
)


# --- helpers -------------------------------------------------------------------------------------
def fresh_project() -> str:
    return f"bundle-{uuid.uuid4().hex[:10]}"


def inventory(bundle: Path) -> dict:
    return json.loads((bundle / layout.INVENTORY_FILE).read_text())


def graphs(bundle: Path) -> dict[str, layout.ImageGraph]:
    """Every image of the bundle's index.json, walked: ref name → its content graph."""
    return {
        top.annotations[layout.ANNOTATION_REF_NAME]: layout.walk_image(
            top, lambda d: layout.blob_path(bundle, d).read_bytes(), str(bundle)
        )
        for top in layout.read_index(bundle)
    }


def repository(project: str, ref: str) -> str:
    """Where `bundle push` puts an image: project/<last path component of its ref>."""
    return f"{project}/{parse_tagged(ref).name}"


def plain_blobs(graph: layout.ImageGraph) -> list[layout.Descriptor]:
    """Configs and layers (what push HEADs and uploads), not manifests or indexes."""
    return [d for d in graph.ordered if not (d.is_index or d.is_manifest)]


def blob_pairs(bundle: Path) -> int:
    """(repository, blob) pairs a push must account for: uploaded + skipped + mounted."""
    return sum(len(plain_blobs(g)) for g in graphs(bundle).values())


@dataclass(frozen=True)
class Pushed:
    project: str
    uploaded: int
    skipped: int
    mounted: int
    manifests: int
    seconds: float


def push_command(bundle: Path, lab: Lab, project: str) -> list[str]:
    return [
        sys.executable, "-m", "pipeline", "bundle", "push", str(bundle),
        "--registry", f"{lab.secure_registry}/{project}",
        "--username", lab.user, "--password-stdin", "--ca-cert", str(lab.ca_cert),
    ]  # fmt: skip


def run_push(bundle: Path, lab: Lab, project: str) -> subprocess.CompletedProcess:
    """`bundle push` in its own process, the password on stdin as an operator would give it."""
    return subprocess.run(
        push_command(bundle, lab, project),
        input=lab.password + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )


def push_ok(bundle: Path, lab: Lab, project: str) -> Pushed:
    started = time.monotonic()
    result = run_push(bundle, lab, project)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert lab.password not in result.stdout + result.stderr
    match = _SUMMARY.search(result.stdout)
    assert match, result.stdout
    uploaded, skipped, mounted, manifests = map(int, match.groups())
    return Pushed(project, uploaded, skipped, mounted, manifests, seconds)


def assert_registry_matches_inventory(lab: Lab, project: str, bundle: Path) -> None:
    """Every index read back by tag has the inventory's digest and per-platform manifests;
    every platform manifest is pullable by digest, with its config and layers present."""
    with lab.secure_client() as client:
        for image in inventory(bundle)["images"]:
            repo = repository(project, image["ref"])
            body, media_type = client.get_manifest(repo, image["tag"])
            assert layout.digest_bytes(body) == image["digest"], image["ref"]
            assert media_type == image["media_type"] == layout.OCI_INDEX
            listed = {
                d.platform: d.digest
                for d in (layout.Descriptor.parse(m, repo) for m in json.loads(body)["manifests"])
                if not d.is_attestation
            }
            assert listed == {p: v["digest"] for p, v in image["platforms"].items()}, repo
            for platform, entry in image["platforms"].items():
                manifest, _ = client.get_manifest(repo, entry["digest"])
                assert layout.digest_bytes(manifest) == entry["digest"], (repo, platform)
                doc = json.loads(manifest)
                for blob in [doc["config"], *doc["layers"]]:
                    assert client.blob_exists(repo, blob["digest"]), (repo, blob["digest"])


def registry_tags(lab: Lab, repo: str) -> list[str]:
    """Tags of a repository of the secure registry; [] when the repository does not exist."""
    response = httpx.get(
        f"https://{lab.secure_registry}/v2/{repo}/tags/list",
        auth=(lab.user, lab.password),
        verify=ssl.create_default_context(cafile=str(lab.ca_cert)),
    )
    if response.status_code == 404:
        return []
    response.raise_for_status()
    return response.json().get("tags") or []


def skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        pytest.fail("skopeo is missing: scripts/lab installs Debian's skopeo package")
    return path


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """The release of examples/mini-matrix as one bundle (plus its .tar), through the CLI door,
    alone in its own directory so leftovers beside it would show."""
    output = tmp_path_factory.mktemp("bundle") / f"mini-matrix-{TAG}"
    result = run_cli(
        "bundle", "create", "--source", str(MINI_MATRIX),
        "--output", str(output), "--archive", "tar",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"bundle {output}: {len(ALL_REFS)} images" in result.stdout
    return output


@pytest.fixture(scope="module")
def pushed(bundle: Path, lab: Lab) -> Pushed:
    """The bundle pushed once into a fresh project of the TLS + auth registry (a cold push)."""
    result = push_ok(bundle, lab, fresh_project())
    print(
        f"\ncold push: {result.uploaded} blobs uploaded, {result.skipped} skipped, "
        f"{result.mounted} mounted, {result.manifests} manifests in {result.seconds:.1f}s"
    )
    return result


# --- tests ---------------------------------------------------------------------------------------
def test_bundle_layout_holds_every_image_and_dependency_for_both_platforms(bundle: Path):
    """The bundle is an OCI layout (oci-layout, index.json, blobs/sha256) with inventory.json,
    SHA256SUMS and the deployment kit (kit/); index.json names exactly the 6 release images
    and the 3 dependencies by org.opencontainers.image.ref.name, each with linux/amd64 and
    linux/arm64."""
    assert sorted(p.name for p in bundle.iterdir()) == sorted(
        [
            layout.LAYOUT_FILE,
            layout.INDEX_FILE,
            layout.BLOBS_DIR,
            layout.INVENTORY_FILE,
            layout.CHECKSUMS_FILE,
            "kit",
        ]
    )
    assert (bundle / layout.BLOBS_DIR / layout.ALGORITHM).is_dir()
    marker = json.loads((bundle / layout.LAYOUT_FILE).read_text())
    assert marker == {"imageLayoutVersion": layout.LAYOUT_VERSION}

    walked = graphs(bundle)
    assert sorted(walked) == sorted(ALL_REFS)
    for ref, graph in walked.items():
        assert graph.top.is_index, ref
        assert sorted(graph.platforms) == sorted(PLATFORMS), ref

    listed = inventory(bundle)
    assert listed["platforms"] == list(PLATFORMS)
    assert sorted(i["ref"] for i in listed["images"]) == sorted(ALL_REFS)
    for image in listed["images"]:
        assert image["digest"] == walked[image["ref"]].top.digest
        assert sorted(image["platforms"]) == sorted(PLATFORMS)


def test_bundle_stores_each_blob_once_and_leaves_nothing_beside_it(bundle: Path):
    """The files in blobs/sha256 are exactly the distinct descriptors the images reference
    (a blob shared by several images is stored once, nothing unreferenced, no temp files),
    inventory.json counts them, and only the bundle and its .tar sit in the output directory
    (no .partial or .tarballs scratch left behind)."""
    referenced = {d.digest: d.size for g in graphs(bundle).values() for d in g.ordered}
    references = sum(len(g.ordered) for g in graphs(bundle).values())
    stored = sorted(p.relative_to(bundle).as_posix() for p in (bundle / "blobs").rglob("*"))
    assert stored == sorted(
        [f"{layout.BLOBS_DIR}/{layout.ALGORITHM}"] + [layout.blob_relpath(d) for d in referenced]
    )
    assert references > len(referenced), "the release shares blobs: some are referenced twice"
    blob_bytes = tree_bytes(bundle / layout.BLOBS_DIR)
    assert blob_bytes == sum(referenced.values())
    assert inventory(bundle)["blobs"] == {"count": len(referenced), "bytes": blob_bytes}
    assert sorted(p.name for p in bundle.parent.iterdir()) == [bundle.name, f"{bundle.name}.tar"]


@pytest.mark.parametrize("form", ["directory", "tar"])
def test_bundle_verify_passes_on_the_directory_and_its_archive(bundle: Path, form: str):
    """`bundle verify` exits 0 on the bundle and on its .tar, and extracting the archive to
    check it leaves no scratch directory behind."""
    target = bundle if form == "directory" else bundle.with_name(f"{bundle.name}.tar")
    result = run_cli("bundle", "verify", str(target))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"({len(ALL_REFS)} images)" in result.stdout
    assert sorted(p.name for p in bundle.parent.iterdir()) == [bundle.name, f"{bundle.name}.tar"]


def test_push_puts_every_index_into_the_registry_with_unchanged_digests(
    bundle: Path, pushed: Pushed, lab: Lab
):
    """A cold push into a fresh project of the TLS + auth registry uploads every distinct blob
    once (the others are mounted across repositories) and reads back, through the registry
    API, with the inventory's index and manifest digests; every platform is pullable."""
    distinct = inventory(bundle)["blobs"]["count"] - pushed.manifests
    assert pushed.uploaded == distinct
    assert pushed.skipped == 0
    assert pushed.uploaded + pushed.mounted == blob_pairs(bundle)
    assert pushed.manifests == len(ALL_REFS) * (1 + len(PLATFORMS))
    assert_registry_matches_inventory(lab, pushed.project, bundle)


def test_a_repeat_push_uploads_nothing(bundle: Path, pushed: Pushed, lab: Lab):
    """Pushing the same bundle again finds every blob in place: 0 uploaded, all skipped,
    digests unchanged."""
    again = push_ok(bundle, lab, pushed.project)
    print(
        f"\nrepeat push: {again.uploaded} blobs uploaded, {again.skipped} skipped "
        f"in {again.seconds:.1f}s (cold: {pushed.uploaded} uploaded in {pushed.seconds:.1f}s)"
    )
    assert (again.uploaded, again.mounted) == (0, 0)
    assert again.skipped == blob_pairs(bundle)
    assert_registry_matches_inventory(lab, pushed.project, bundle)


def test_a_corrupt_blob_fails_verify_and_push_uploads_nothing(
    bundle: Path, lab: Lab, tmp_path: Path
):
    """One flipped byte in one layer of a copy: verify exits 1 and names that digest; push
    exits 1 naming it too, before anything reaches the registry (no tag, no blob)."""
    copy = tmp_path / "corrupt"
    shutil.copytree(bundle, copy)
    gateway = graphs(copy)[f"ai-infra-gateway:{TAG}"]
    layer = gateway.platforms["linux/amd64"].blobs[-1]
    path = layout.blob_path(copy, layer.digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert (
        layout.hash_file(layout.blob_path(bundle, layer.digest))[0] == layer.digest
    )  # original intact

    verify = run_cli("bundle", "verify", str(copy))
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert layer.digest in verify.stderr
    assert "digest-mismatch" in verify.stderr

    project = fresh_project()
    push = run_push(copy, lab, project)
    assert push.returncode == 1, push.stdout + push.stderr
    assert layer.digest in push.stderr
    with lab.secure_client() as client:
        for ref, graph in graphs(copy).items():
            repo = repository(project, ref)
            assert registry_tags(lab, repo) == [], repo
            assert not any(client.blob_exists(repo, d.digest) for d in plain_blobs(graph)), repo


def test_an_interrupted_push_resumes_with_only_what_is_missing(bundle: Path, lab: Lab, tmp_path):
    """A push killed (SIGKILL) as soon as its first blob is in the registry, then run again:
    the rerun skips what the first run stored, uploads the rest (fewer than all distinct
    blobs), and the registry ends with the inventory's digests."""
    project = fresh_project()
    first_ref, first_graph = next(iter(graphs(bundle).items()))
    repo, watched = repository(project, first_ref), plain_blobs(first_graph)[0].digest
    log = tmp_path / "interrupted.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            push_command(bundle, lab, project),
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        process.stdin.write(lab.password + "\n")
        process.stdin.close()
        try:
            with lab.secure_client() as client:
                deadline = time.monotonic() + 300
                while not client.blob_exists(repo, watched):
                    assert process.poll() is None, f"push ended first: {log.read_text()[-2000:]}"
                    assert time.monotonic() < deadline, "no blob reached the registry in 300s"
                    time.sleep(0.02)
        finally:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL, "the push finished before it was killed"
    last_ref = list(graphs(bundle))[-1]  # pushed last: its tag would mean the push was done
    assert registry_tags(lab, repository(project, last_ref)) == []

    rerun = push_ok(bundle, lab, project)
    print(
        f"\nresumed push: {rerun.uploaded} blobs uploaded, {rerun.skipped} skipped, "
        f"{rerun.mounted} mounted in {rerun.seconds:.1f}s"
    )
    distinct = inventory(bundle)["blobs"]["count"] - rerun.manifests
    assert 0 < rerun.uploaded < distinct
    assert rerun.skipped > 0
    assert rerun.uploaded + rerun.skipped + rerun.mounted == blob_pairs(bundle)
    assert_registry_matches_inventory(lab, project, bundle)


def test_the_bundle_is_smaller_than_the_per_image_exports(bundle: Path, tmp_path: Path):
    """`export` writes one OCI tarball per image and per dependency, each carrying its own copy
    of shared base layers; the bundle stores them once, so its blobs take fewer bytes."""
    exported = tmp_path / "export"
    result = run_cli("export", "--source", str(MINI_MATRIX), "--output", str(exported))
    assert result.returncode == 0, result.stderr[-3000:]
    tarballs = sorted(exported.rglob("*.tar"))
    assert len(tarballs) == len(ALL_REFS), tarballs
    exports = sum(p.stat().st_size for p in tarballs)
    blobs = tree_bytes(bundle / layout.BLOBS_DIR)
    print(
        f"\nbundle blobs: {blobs} bytes ({blobs / 1e6:.1f} MB); sum of {len(tarballs)} exports: "
        f"{exports} bytes ({exports / 1e6:.1f} MB); ratio {blobs / exports:.2f}"
    )
    assert blobs < exports


def test_skopeo_reads_every_image_and_copies_one_with_all_platforms(bundle: Path, tmp_path: Path):
    """Debian's skopeo, a third-party OCI reader, resolves every ref name of the bundle to the
    inventory's index digest, and `skopeo copy --all` copies an image with both platforms to
    another layout, digest unchanged."""
    tool = skopeo()
    by_ref = {i["ref"]: i for i in inventory(bundle)["images"]}
    for ref in ALL_REFS:
        raw = subprocess.run(
            [tool, "inspect", "--raw", f"oci:{bundle}:{ref}"], capture_output=True, check=False
        )
        assert raw.returncode == 0, raw.stderr.decode()[-2000:]
        assert layout.digest_bytes(raw.stdout) == by_ref[ref]["digest"], ref

    ref = f"ai-infra-backend:{TAG}"
    inspect = subprocess.run(
        [tool, "inspect", f"oci:{bundle}:{ref}"], capture_output=True, text=True, check=False
    )
    assert inspect.returncode == 0, inspect.stderr[-2000:]
    assert json.loads(inspect.stdout)["Digest"] == by_ref[ref]["digest"]

    other = tmp_path / "other"
    copy = subprocess.run(
        [tool, "copy", "--all", f"oci:{bundle}:{ref}", f"oci:{other}:copied"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert copy.returncode == 0, copy.stderr[-2000:]
    copied = graphs(other)["copied"]
    assert copied.top.digest == by_ref[ref]["digest"]
    assert {p: m.descriptor.digest for p, m in copied.platforms.items()} == {
        p: v["digest"] for p, v in by_ref[ref]["platforms"].items()
    }


def test_a_delta_of_the_next_release_holds_only_what_changed(
    bundle: Path, pushed: Pushed, lab: Lab, tmp_path: Path
):
    """The next release, one gateway file changed: `bundle create --since` the bundle holds
    every manifest and config but only the layers the base lacks; it verifies against the
    base, and pushes into the project that holds the base, not into an empty one."""
    source = tmp_path / "src"
    shutil.copytree(MINI_MATRIX, source)
    conf = source / "src/gateway/httpd.conf"
    conf.write_text(conf.read_text() + "# the next release\n")
    delta = tmp_path / "delta"
    result = run_cli("bundle", "create", "--source", str(source), "--tag", "v0.3.9",
                     "--since", str(bundle), "--output", str(delta))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    base_inventory = (bundle / layout.INVENTORY_FILE).read_bytes()
    assert inventory(delta)["base"]["inventory"] == layout.digest_bytes(base_inventory)
    assert tree_bytes(delta) * 20 < tree_bytes(bundle), (tree_bytes(delta), tree_bytes(bundle))
    verified = run_cli("bundle", "verify", str(delta), "--base", str(bundle))
    assert verified.returncode == 0, verified.stderr[-3000:]
    assert "expected from the base" in verified.stdout + verified.stderr
    gateway = next(i for i in inventory(delta)["images"] if i["name"] == "ai-infra-gateway")
    kit = json.loads((delta / "kit" / "kit.json").read_text())["references"]
    assert [r["digest"] for r in kit if r["image"] == "ai-infra-gateway"] == [gateway["digest"]]
    onto_base = push_ok(delta, lab, pushed.project)
    assert onto_base.skipped > 0
    lone = run_push(delta, lab, fresh_project())
    assert lone.returncode == 1 and "nothing was pushed" in lone.stderr, lone.stderr[-2000:]


# --- the offline site's deployment kit ----------------------------------------------------------
def test_the_kit_names_every_image_where_the_site_pulls_it_by_the_bundle_s_digest(
    bundle: Path, lab: Lab, tmp_path: Path
):
    project = fresh_project()
    site_kit = tmp_path / "site-kit"
    result = subprocess.run(
        [*push_command(bundle, lab, project), "--kit-output", str(site_kit)],
        input=lab.password + "\n", capture_output=True, text=True, cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"the deployment kit for it in {site_kit}" in result.stdout
    references = json.loads((site_kit / "kit.json").read_text())["references"]
    held = {image["name"]: image["digest"] for image in inventory(bundle)["images"]}
    assert {r["image"] for r in references} == set(held) - {
        "ai-infra-apphub",
        "ai-infra-archprobe",
        "ai-infra-slurm-master",
    }  # fmt: skip (the compose file runs these)
    with lab.secure_client() as client:
        for ref in references:
            name, digest = ref["reference"].split("@")
            assert digest == held[ref["image"]] and name.startswith(f"{lab.secure_registry}/")
            body, _ = client.get_manifest(name.split("/", 1)[1], digest)
            assert layout.digest_bytes(body) == digest, ref
    # A compose implementation reads it, the site's values filled in from site.env's keys.
    env = site_kit / "site.env"
    env.write_text(env.read_text().replace("POSTGRES_PASSWORD=", "POSTGRES_PASSWORD=at-the-site"))
    config = subprocess.run(
        [docker_compose(), "--env-file", str(env), "-f", str(site_kit / "docker-compose.yml"),
         "--profile", "dev", "config"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert config.returncode == 0, config.stderr
    services = yaml.safe_load(config.stdout)["services"]
    pinned = {r["from"]: r["reference"] for r in references}
    assert services["gateway"]["image"] == pinned["docker-compose.yml.tpl:6"]
    assert services["backend"]["environment"]["POSTGRES_PASSWORD"] == "at-the-site"


def test_verify_names_an_image_the_kit_runs_that_the_bundle_does_not_hold(
    bundle: Path, tmp_path: Path
):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    portal = next(i for i in inventory(copy)["images"] if i["name"] == "ai-infra-portal")
    for name, key in ((layout.INDEX_FILE, "manifests"), (layout.INVENTORY_FILE, "images")):
        doc = json.loads((copy / name).read_text())
        doc[key] = [e for e in doc[key] if e.get("digest") != portal["digest"]]
        (copy / name).write_text(json.dumps(doc))
    sums = [line for line in (copy / layout.CHECKSUMS_FILE).read_text().splitlines()
            if not line.endswith((layout.INDEX_FILE, layout.INVENTORY_FILE))]  # fmt: skip
    for name in (layout.INDEX_FILE, layout.INVENTORY_FILE):
        sums.append(f"{layout.split_digest(layout.hash_file(copy / name)[0])[1]}  {name}")
    (copy / layout.CHECKSUMS_FILE).write_text("\n".join(sums) + "\n")
    result = run_cli("bundle", "verify", str(copy))
    assert result.returncode == 1
    assert f"docker-compose.yml.tpl:14: ai-infra-portal@{portal['digest']}" in result.stderr


def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail("docker-compose is missing: scripts/lab installs Debian's docker-compose")
    return path
