"""Engine tests: a real Dagger engine and the lab's registries (scripts/test starts them).

Without them these tests fail loudly; they never skip, so a CI that lost its engine is red.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import ssl
import subprocess
import sys
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import dagger
import httpx
import pytest
from dagger import dag

from pipeline.oci import layout
from pipeline.oci.registry import RegistryClient

ROOT = Path(__file__).resolve().parents[2]
MINI_MATRIX = ROOT / "examples" / "mini-matrix"
PLATFORMS = ("linux/amd64", "linux/arm64")
# What a release of examples/mini-matrix publishes, in plan order.
MINI_MATRIX_IMAGES = (
    "ai-infra-apphub",
    "ai-infra-archprobe",
    "ai-infra-gateway",
    "ai-infra-gitea",
    "ai-infra-backend",
    "ai-infra-backend-init",
    "ai-infra-portal",
    "ai-infra-slurm-master",
)
# Where the CLI door keeps the SSH key pair it made for mini-matrix (it has no ssh-key/),
# and beside it the gateway's TLS folder (for SSL_DOMAIN of its .env.example).
SSH_KEY_DIR = Path(
    os.environ.get("PIPELINE_SSH_KEY_DIR", "~/.local/share/ai-infra-matrix/ssh-key")
).expanduser()
TLS_DIR = SSH_KEY_DIR.parent / "tls" / "mini-matrix.example"
LAB_VARIABLES = (
    "LAB_REGISTRY",
    "LAB_SECURE_REGISTRY",
    "LAB_REGISTRY_USER",
    "LAB_REGISTRY_PASSWORD",
    "LAB_CA_CERT",
    "LAB_GITHUB_MIRROR",
)


@dataclass(frozen=True)
class Lab:
    registry: str  # plain HTTP
    secure_registry: str  # TLS + htpasswd
    user: str
    password: str = field(repr=False)  # never in a failure message
    ca_cert: Path

    def plain_client(self) -> RegistryClient:
        return RegistryClient(self.registry, plain_http=True)

    def secure_client(self, password: str | None = None) -> RegistryClient:
        return RegistryClient(
            self.secure_registry,
            username=self.user,
            password=password or self.password,
            ca_cert=self.ca_cert,
        )

    def get_blob(self, repository: str, digest: str) -> bytes:
        """A whole blob of the secure registry, checked against its digest (the pipeline
        itself never reads blobs back: it checks manifests)."""
        response = httpx.get(
            f"https://{self.secure_registry}/v2/{repository}/blobs/{digest}",
            auth=(self.user, self.password),
            verify=ssl.create_default_context(cafile=str(self.ca_cert)),
            follow_redirects=True,
            timeout=120,
        )
        response.raise_for_status()
        assert layout.digest_bytes(response.content) == digest, f"{repository} {digest}"
        return response.content

    def built_content(self, repository: str, digest: str) -> tuple:
        """What a platform manifest was built from and holds, without the build's clock:
        Dagger 0.21 stamps the build time into the config's history and into the folders a
        COPY makes, so an image built again from the same inputs has another digest."""
        with self.secure_client() as client:
            manifest = json.loads(client.get_manifest(repository, digest)[0])
        config = json.loads(self.get_blob(repository, manifest["config"]["digest"]))
        config.pop("created", None)
        config.pop("rootfs")  # the layers' digests: compared by their entries below
        history = [{k: v for k, v in h.items() if k != "created"} for h in config.pop("history")]
        return (
            json.dumps(config, sort_keys=True),
            history,
            [layer_entries(self.get_blob(repository, la["digest"])) for la in manifest["layers"]],
        )


def layer_entries(blob: bytes) -> list[tuple]:
    """A layer's entries: name, type, mode, owner, link and content, not the time."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        return [
            (m.name, m.type, m.mode, m.uid, m.gid, m.linkname,
             hashlib.sha256(tar.extractfile(m).read()).hexdigest() if m.isfile() else None)
            for m in tar.getmembers()
        ]  # fmt: skip


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def lab_address(name: str, start: str = "scripts/lab up") -> str:
    """A lab part's address from its variable; unset fails the test, naming how to start it."""
    address = os.environ.get(name)
    if not address:
        pytest.fail(f"{name} is not set: start the lab with {start}")
    return address


@pytest.fixture(scope="session")
def lab() -> Lab:
    missing = [name for name in LAB_VARIABLES if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"engine tests need the lab ({', '.join(missing)} unset): run scripts/test, "
            'which starts it, or eval "$(scripts/lab env)" after scripts/lab up'
        )
    env = os.environ
    return Lab(
        registry=env["LAB_REGISTRY"],
        secure_registry=env["LAB_SECURE_REGISTRY"],
        user=env["LAB_REGISTRY_USER"],
        password=env["LAB_REGISTRY_PASSWORD"],
        ca_cert=Path(env["LAB_CA_CERT"]),
    )


@pytest.fixture(scope="module")
async def engine(lab: Lab):
    """One engine session per test module, as the pipeline itself uses one per run (per
    module, not per session: test_faults.py restarts the engine)."""
    try:
        async with dagger.connection(dagger.Config()):
            yield
    except dagger.ClientConnectionError as err:
        pytest.fail(f"no Dagger engine reachable: {err}")


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The CLI door in its own process, hence its own engine session and credentials."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        timeout=1800,
    )


def release_to_lab(
    lab: Lab, source: Path, project: str, report: Path, *extra: str, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`release` of `source` into a project of its own on the lab's TLS + auth registry."""
    return run_cli(
        "release", "--source", str(source), "--registry", f"{lab.secure_registry}/{project}",
        "--username", lab.user, "--password", "env:LAB_REGISTRY_PASSWORD",
        "--ca-cert", str(lab.ca_cert), "--report-json", str(report), *extra, env=env,
    )  # fmt: skip


def secure_auth(container: dagger.Container, lab: Lab) -> dagger.Container:
    secret = dag.set_secret("lab-registry-password", lab.password)
    return container.with_registry_auth(lab.secure_registry, lab.user, secret)


def marker_variants(text: str) -> list[dagger.Container]:
    """A small image per platform, different on each run so nothing comes from a cache."""
    return [
        dag.container(platform=dagger.Platform(p))
        .from_("busybox:1.36")
        .with_new_file("/marker", f"{text} {p}\n")
        for p in PLATFORMS
    ]


@pytest.fixture(scope="session")
def released(lab: Lab, tmp_path_factory) -> tuple[str, dict]:
    """One release through the CLI door into a project of its own (tag v0.3.8)."""
    project = f"e2e-{uuid.uuid4().hex[:6]}"
    report_path = tmp_path_factory.mktemp("report") / "report.json"
    result = release_to_lab(lab, MINI_MATRIX, project, report_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return project, json.loads(report_path.read_text())


def published_manifests(lab: Lab, repository: str, tag: str) -> dict[str, str]:
    """What the registry holds under a tag: platform -> manifest digest."""
    with lab.secure_client() as client:
        index = json.loads(client.get_manifest(repository, tag)[0])
    return {layout.platform_of(m["platform"]): m["digest"] for m in index["manifests"]}
