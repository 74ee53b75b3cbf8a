"""The release workflows run by a real Actions runner: act (the lab's build, `LAB_ACT`), which
Gitea's act_runner is built on, in host mode (`-P ubuntu-latest=-self-hosted`).

Each run is a tag push to a copy of examples/mini-matrix laid out as an AI-Infra-Matrix
checkout, holding the workflow file unchanged, served by a small forge (git's smart HTTP on
loopback) that actions/checkout clones the tag from, as from GitHub or Gitea. The actions are
their own code from ../shared/third_party/actions (act's --local-repository); dagger-for-github
finds the lab's `dagger` of the pinned version on PATH; the variables and the secret come in
as the workflow reads them. act's JSON log gives each step's summary (`$GITHUB_STEP_SUMMARY`).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import shutil
import ssl
import subprocess
import tarfile
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import MINI_MATRIX, MINI_MATRIX_IMAGES, PLATFORMS, ROOT, Lab, published_manifests

from pipeline.planning import tls
from pipeline.planning.prepare import new_key_pair, write_files

ACTIONS = ROOT.parent / "shared" / "third_party" / "actions"
USES = ("actions/checkout@v4", "dagger/dagger-for-github@v8.4.1")
SLUG = "ai-infra/ai-infra-matrix"  # the repository on the forge
BUILT_WITH_A_SERVICE = {"ai-infra-slurm-master"}  # its build arg holds the session's AppHub URL
GITHUB = ".github/workflows/release.yml"
GITEA = ".gitea/workflows/release.yml"
# Broken on purpose for one platform: its amd64 half builds, and must not get out alone.
BROKEN = (
    'RUN [ "$(uname -m)" != aarch64 ] '
    '|| { echo "gateway does not build for arm64 (broken on purpose)" >&2; exit 3; }\n'
)


@dataclass(frozen=True)
class Run:
    returncode: int
    log: str  # act's output, JSON lines
    summaries: list[str]  # each step's $GITHUB_STEP_SUMMARY, in order
    job_result: str | None

    @property
    def summary(self) -> str:
        return "".join(self.summaries)


def pinned() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d.split("==")[1] for d in deps if d.startswith("dagger-io=="))


def act_bin() -> str:
    found = os.environ.get("LAB_ACT", "")
    assert os.access(found, os.X_OK), f"LAB_ACT={found!r}: run scripts/lab up (or scripts/lab act)"
    return found


@functools.cache
def key_pair() -> tuple[bytes, bytes]:
    return new_key_pair()


@functools.cache
def tls_folder() -> dict[str, bytes | tls.Link]:
    return tls.tls_files("mini-matrix.example")  # the gateway's SSL_DOMAIN


def checkout(root: Path, workflow: str, tag: str, broken: bool = False) -> Path:
    """A git repository laid out as AI-Infra-Matrix (mini-matrix), with the workflow as it is
    in this project, at a commit tagged `tag`. It holds an ssh-key/ pair and the gateway's
    TLS folder (the same in every tree), used as they are: what `dagger call` otherwise keeps
    in the engine's cache volumes was not the same from one run to the next here
    (docs/ci.md)."""
    repo = root / "repo"
    shutil.copytree(MINI_MATRIX, repo)
    (repo / "ssh-key").mkdir()
    private, public = key_pair()
    (repo / "ssh-key/id_rsa").write_bytes(private)
    (repo / "ssh-key/id_rsa.pub").write_bytes(public)
    write_files(repo / "src/gateway/ssl", tls_folder())
    (repo / workflow).parent.mkdir(parents=True)
    shutil.copy(ROOT / workflow, repo / workflow)
    if broken:
        dockerfile = repo / "src/gateway/Dockerfile"
        text = dockerfile.read_text()
        first_copy = text.index("COPY ")
        dockerfile.write_text(text[:first_copy] + BROKEN + text[first_copy:])
    git = ["git", "-C", str(repo), "-c", "user.name=lab", "-c", "user.email=lab@lab.internal"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["add", "-f", "ssh-key", "src/gateway/ssl"], ["commit", "-qm", "release"],
                 ["tag", tag]):  # fmt: skip
        subprocess.run([*git, *args], check=True, capture_output=True)
    return repo


class Forge:
    """Bare repositories under `root`, served over git's smart HTTP (git http-backend) on
    loopback: what actions/checkout fetches a tag from, as from GitHub or Gitea."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fetches = 0
        forge = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_args) -> None:
                pass

            def do_GET(self) -> None:
                self.backend()

            def do_POST(self) -> None:
                forge.fetches += self.path.endswith("/git-upload-pack")
                self.backend()

            def backend(self) -> None:
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {
                    "PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(forge.root),
                    "GIT_HTTP_EXPORT_ALL": "1", "REQUEST_METHOD": self.command,
                    "PATH_INFO": path, "QUERY_STRING": query, "REMOTE_ADDR": "127.0.0.1",
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                }  # fmt: skip
                cgi = subprocess.run(["git", "http-backend"], input=body, env=env,
                                     capture_output=True, timeout=120)  # fmt: skip
                head, _, payload = cgi.stdout.partition(b"\r\n\r\n")
                status, headers = 200, []
                for line in head.decode().split("\r\n"):
                    name, _, value = line.partition(": ")
                    if name.lower() == "status":
                        status = int(value.split()[0])
                    elif name:
                        headers.append((name, value))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def push(self, repo: Path, slug: str) -> None:
        """`repo` (branches and tags) as the forge's `slug`, replacing what it held."""
        bare = self.root / f"{slug}.git"
        shutil.rmtree(bare, ignore_errors=True)
        subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)],
                       check=True, capture_output=True)  # fmt: skip


@pytest.fixture(scope="module")
def forge(tmp_path_factory) -> Iterator[Forge]:
    served = Forge(tmp_path_factory.mktemp("forge"))
    yield served
    served.server.shutdown()


def run_act(
    lab: Lab, forge: Forge, root: Path, repo: Path, workflow: str, tag: str, project: str
) -> Run:
    """`act push` of a tag event, as a runner gets it from GitHub or Gitea: the job clones the
    tag from the forge (actions/checkout's own code; act would copy the working tree)."""
    forge.push(repo, SLUG)
    event = root / "event.json"
    event.write_text(json.dumps({"ref": f"refs/tags/{tag}", "ref_name": tag, "ref_type": "tag"}))
    variables = {
        "HARBOR_REGISTRY": f"{lab.secure_registry}/{project}",
        "HARBOR_USERNAME": lab.user,
        "HARBOR_CA_CERT": str(lab.ca_cert),  # the lab's Harbor has a private CA, as a site's
        "PIPELINE_MODULE": str(ROOT),  # this pipeline, as a path on the runner
    }
    (root / "vars").write_text("".join(f"{k}={v}\n" for k, v in variables.items()))
    secrets = root / "secrets"  # a file, not a command-line argument
    secrets.touch(mode=0o600)
    # GITHUB_TOKEN: actions/checkout's `token`, which the forge does not check.
    secrets.write_text(f"HARBOR_PASSWORD={lab.password}\nGITHUB_TOKEN=lab-forge-token\n")
    local = [f"--local-repository={use}={ACTIONS / use}" for use in USES]
    # The runner's own environment has the lab's engine and dagger, not its password.
    env = {k: v for k, v in os.environ.items() if "PASSWORD" not in k}
    result = subprocess.run(
        [act_bin(), "push", "--eventpath", str(event), "--workflows", workflow,
         "-P", "ubuntu-latest=-self-hosted", *local, "--no-skip-checkout",
         "--env", f"GITHUB_SERVER_URL={forge.url}", "--env", f"GITHUB_REPOSITORY={SLUG}",
         "--var-file", str(root / "vars"), "--secret-file", str(secrets), "--json"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    log = result.stdout + result.stderr
    (root / "act.log").write_text(log)  # kept with the test's tmp_path, for a failure
    summaries, job_result = [], None
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("command") == "summary":
            summaries.append(entry["content"])
        job_result = entry.get("jobResult") or job_result
    return Run(result.returncode, log, summaries, job_result)


def dagger_call_release(lab: Lab, repo: Path, tag: str, project: str) -> dict:
    """The same release from a laptop: `dagger call` of this module on the same tree."""
    cli = os.environ.get("_EXPERIMENTAL_DAGGER_CLI_BIN") or shutil.which("dagger")
    assert cli, "no dagger CLI: run scripts/test (it starts the lab)"
    result = subprocess.run(
        [cli, "--progress=plain", "call", "-m", str(ROOT), "--source", ".", "release",
         "--tag", tag, "--registry", f"{lab.secure_registry}/{project}",
         "--username", lab.user, "--password", "env:LAB_REGISTRY_PASSWORD",
         "--ca-cert", str(lab.ca_cert), "--json-report"],
        cwd=repo, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def tags(lab: Lab, repository: str) -> list[str]:
    response = httpx.get(
        f"https://{lab.secure_registry}/v2/{repository}/tags/list",
        auth=(lab.user, lab.password),
        verify=ssl.create_default_context(cafile=str(lab.ca_cert)),
        timeout=30,
    )
    if response.status_code == 404:
        return []
    response.raise_for_status()
    return response.json().get("tags") or []


def registry_rows(lab: Lab, project: str, tag: str) -> dict[tuple[str, str], str]:
    """(image, platform) -> the manifest digest the registry's index names."""
    return {
        (image, platform): digest
        for image in MINI_MATRIX_IMAGES
        for platform, digest in published_manifests(lab, f"{project}/{image}", tag).items()
    }


def image_content(lab: Lab, repository: str, digest: str) -> tuple:
    """A one-platform image with its timestamps left out: its config, and each layer's
    entries (name, type, mode, owner, size, link, sha256 of the bytes)."""
    verify = ssl.create_default_context(cafile=str(lab.ca_cert))

    def get(kind: str, ref: str, accept: str = "") -> bytes:
        response = httpx.get(
            f"https://{lab.secure_registry}/v2/{repository}/{kind}/{ref}",
            auth=(lab.user, lab.password), verify=verify, follow_redirects=True, timeout=120,
            headers={"Accept": accept} if accept else {},
        )  # fmt: skip
        response.raise_for_status()
        return response.content

    manifest = json.loads(get("manifests", digest, "application/vnd.oci.image.manifest.v1+json"))
    config = json.loads(get("blobs", manifest["config"]["digest"]))
    config.pop("created", None)
    config.pop("rootfs", None)  # the layers' digests: compared by content below
    for step in config.get("history", []):
        step.pop("created", None)
    layers = []
    for layer in manifest["layers"]:
        with tarfile.open(fileobj=io.BytesIO(get("blobs", layer["digest"])), mode="r:*") as tar:
            entries = []
            for m in tar.getmembers():
                data = tar.extractfile(m).read() if m.isfile() else b""
                entries.append((m.name, m.type, m.mode, m.uid, m.gid, m.size, m.linkname,
                                hashlib.sha256(data).hexdigest()))  # fmt: skip
            layers.append(entries)
    return json.dumps(config, sort_keys=True), layers


def same_images_but_timestamps(lab: Lab, a: tuple[str, dict], b: tuple[str, dict]) -> None:
    """Both releases' images hold the same config and files, every platform (but images
    built with a served AppHub, whose build argument holds each session's address). Their
    digests differ: a layer keeps its files' times, and a checkout's are its own (Dagger
    0.21 has no SOURCE_DATE_EPOCH rewrite, dagger/dagger#7721)."""
    (project_a, rows_a), (project_b, rows_b) = a, b
    assert rows_a.keys() == rows_b.keys()
    for (image, platform), digest in rows_a.items():
        if image in BUILT_WITH_A_SERVICE:
            continue
        got = image_content(lab, f"{project_a}/{image}", digest)
        want = image_content(lab, f"{project_b}/{image}", rows_b[image, platform])
        assert got[0] == want[0], (image, platform, "config", got[0], want[0])
        assert len(got[1]) == len(want[1]), (image, platform, "layers")
        for n, (ours, theirs) in enumerate(zip(got[1], want[1], strict=True)):
            only = [e for e in ours if e not in theirs], [e for e in theirs if e not in ours]
            assert ours == theirs, (image, platform, f"layer {n}", only)


def reported(run: Run, rows: dict[tuple[str, str], str]) -> None:
    """The job summary's report names each digest the registry holds."""
    for (image, platform), digest in rows.items():
        short = digest.removeprefix("sha256:")[:12]
        assert f"| {image} | {platform} | published | `sha256:{short}` |" in run.summary, image


def assert_green(run: Run, lab: Lab, project: str, tag: str) -> None:
    assert run.returncode == 0 and run.job_result == "success", run.log[-5000:]
    assert f"Syncing repository: {SLUG}" in run.log  # actions/checkout ran
    assert lab.password not in run.log
    assert f"## Release {tag} to {lab.secure_registry}/{project}" in run.summary, run.summary
    for image in MINI_MATRIX_IMAGES:
        assert f"{lab.secure_registry}/{project}/{image}:{tag}@sha256:" in run.summary, image


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return checkout(tmp_path_factory.mktemp("gh"), GITHUB, "v0.3.8")


@pytest.fixture(scope="module")
def local_release(lab: Lab, tree: Path, unique_module: str) -> tuple[str, dict]:
    """`dagger call release` of a clone of the tag the workflow runs on (as a maintainer's
    laptop has it: git keeps no file mode but the executable bit, so the clone's keys are what
    actions/checkout writes too), into a project of its own."""
    project = f"ci-local-{unique_module}"
    clone = tree.parent / "clone"
    subprocess.run(["git", "clone", "-q", "--branch", "v0.3.8", str(tree), str(clone)],
                   check=True, capture_output=True)  # fmt: skip
    report = dagger_call_release(lab, clone, "v0.3.8", project)
    rows = {
        (row["image"], p["platform"]): p["digest"]
        for row in report["images"]
        for p in row["platforms"]
    }
    return project, rows


@pytest.fixture(scope="module")
def github_run(lab: Lab, forge: Forge, tree: Path, unique_module: str) -> tuple[Run, str]:
    project = f"ci-gh-{unique_module}"
    fetches = forge.fetches
    run = run_act(lab, forge, tree.parent, tree, GITHUB, "v0.3.8", project)
    assert forge.fetches > fetches, "actions/checkout fetched nothing from the forge"
    return run, project


@pytest.fixture(scope="module")
def unique_module() -> str:
    return os.urandom(5).hex()


def test_the_github_release_on_a_tag_push_publishes_what_dagger_call_does(
    lab: Lab, github_run, local_release
):
    run, project = github_run
    assert_green(run, lab, project, "v0.3.8")
    # dagger-for-github found the lab's CLI of the pinned version and installed nothing.
    assert f"dagger v{pinned()} is already installed, skipping installation" in run.log
    in_registry = registry_rows(lab, project, "v0.3.8")
    assert {p for _, p in in_registry} == set(PLATFORMS)
    reported(run, in_registry)
    same_images_but_timestamps(lab, (project, in_registry), local_release)


def test_the_gitea_release_runs_the_same_way_and_publishes_the_same(
    lab: Lab, forge: Forge, tmp_path, github_run, unique_module
):
    repo = checkout(tmp_path, GITEA, "v0.3.8")
    project = f"ci-gitea-{unique_module}"
    run = run_act(lab, forge, tmp_path, repo, GITEA, "v0.3.8", project)
    assert_green(run, lab, project, "v0.3.8")
    in_registry = registry_rows(lab, project, "v0.3.8")
    reported(run, in_registry)
    github_project = github_run[1]
    same_images_but_timestamps(
        lab, (project, in_registry), (github_project, registry_rows(lab, github_project, "v0.3.8"))
    )


def test_a_release_with_an_image_that_does_not_build_is_a_red_job_publishing_no_partial_index(
    lab: Lab, forge: Forge, tmp_path, unique_module
):
    repo = checkout(tmp_path, GITHUB, "v0.3.9", broken=True)
    project = f"ci-red-{unique_module}"
    run = run_act(lab, forge, tmp_path, repo, GITHUB, "v0.3.9", project)
    assert run.returncode != 0 and run.job_result == "failure", run.log[-5000:]
    assert lab.password not in run.log
    summary = run.summary
    assert f"## Release v0.3.9 to {lab.secure_registry}/{project}" in summary, run.log[-5000:]
    assert "| ai-infra-gateway | linux/arm64 | build-failed |" in summary, summary
    assert "| ai-infra-gateway | linux/amd64 | not-published |" in summary, summary
    assert "### ai-infra-gateway failed" in summary and "broken on purpose" in summary, summary
    # Nothing partial: no gateway index with amd64 alone; every other image whole.
    assert tags(lab, f"{project}/ai-infra-gateway") == []
    for image in MINI_MATRIX_IMAGES:
        if image != "ai-infra-gateway":
            platforms = published_manifests(lab, f"{project}/{image}", "v0.3.9")
            assert set(platforms) == set(PLATFORMS), image


def test_act_reads_every_workflow_of_both_forges():
    """Every workflow parses under the runner's own schema (test.yml too: docs/ci.md says what
    a GitHub runner needs for it that this lab cannot show)."""
    for workflow in [*ROOT.glob(".github/workflows/*.yml"), *ROOT.glob(".gitea/workflows/*.yml")]:
        result = subprocess.run(
            [act_bin(), "--list", "--workflows", str(workflow)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, (workflow, result.stdout + result.stderr)
        assert workflow.name in result.stdout, result.stdout
