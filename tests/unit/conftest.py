"""Fixtures that write small fake AI-Infra-Matrix trees into tmp_path.

The fake tree copies the shapes that matter from the real repository: a template next to a
rendered Dockerfile with mirrors baked in, build-targets.conf (backend), a component that is also
a dependency (gitea), a dependency whose template variables are unset (safeline), build.sh's
escaped rendering (`mysql:8\\.0`), a directory that is neither (shared), and secrets in .env.
"""

import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

# Values that must never appear in build values, plan JSON or printed output.
SECRETS = {
    "POSTGRES_PASSWORD": "pg-s3cret-value",
    "JWT_SECRET": "jwt-s3cret-value",
    "OPENAI_API_KEY": "sk-s3cret-value",
    "JUPYTERHUB_CRYPT_KEY": "crypt-s3cret-value",
    "GITEA_ADMIN_TOKEN": "token-s3cret-value",
}

ENV_EXAMPLE = "\n".join(
    [
        "# AI Infrastructure Matrix",
        "IMAGE_TAG=v0.3.8",
        "PRIVATE_REGISTRY=",
        "TARGET_PLATFORMS=linux/amd64,linux/arm64",
        "GO_PROXY=https://goproxy.cn,direct",
        "APT_MIRROR=mirrors.aliyun.com",
        "NPM_REGISTRY=https://registry.npmmirror.com",
        "GOLANG_IMAGE_VERSION=1.25-bookworm",
        "GITEA_VERSION=1.25.1",
        "MYSQL_VERSION=8.0",
        "KEYCLOAK_VERSION=26.0",
        "N9E_FE_VERSION=",
        "EXTERNAL_HOST=localhost",
        'LDAP_ORGANISATION="AI Infrastructure"',
        *(f"{key}={value}" for key, value in SECRETS.items()),
        "",
    ]
)

BACKEND_TPL = """\
# Build stage
ARG GOLANG_IMAGE_VERSION={{GOLANG_IMAGE_VERSION}}
FROM golang:${GOLANG_IMAGE_VERSION} AS builder
ARG GO_PROXY=https://goproxy.cn,direct
ARG APT_MIRROR={{APT_MIRROR}}
ARG JWT_SECRET
ARG VERSION="dev"
RUN set -eux; \\
    # a comment inside a continuation
    echo building
FROM golang:${GOLANG_IMAGE_VERSION} AS backend
ARG VERSION="dev"
FROM golang:${GOLANG_IMAGE_VERSION} AS backend-init
ARG VERSION="dev"
"""

FILES = {
    ".env.example": ENV_EXAMPLE,
    "src/backend/Dockerfile.tpl": BACKEND_TPL,
    # build.sh's rendering, mirrors baked in and escaped: the template must win over it.
    "src/backend/Dockerfile": BACKEND_TPL.replace("{{APT_MIRROR}}", "baked\\.mirror").replace(
        "{{GOLANG_IMAGE_VERSION}}", "1\\.25"
    ),
    "src/backend/build-targets.conf": (
        "# Target Name | Image Suffix\n"
        "backend ai-infra-backend\n"
        "backend-init ai-infra-backend-init\n"
    ),
    "src/backend/build.conf": "BUILD_PHASE=dependent\n",
    "src/frontend/Dockerfile": (
        "ARG NPM_REGISTRY=https://registry.npmjs.org\nFROM node:22 AS build\n"
        "ARG REACT_APP_API_URL=/api\nFROM ubuntu:22.04\nARG VERSION\n"
    ),
    "src/gitea/Dockerfile.tpl": (
        "ARG GITEA_VERSION={{GITEA_VERSION}}\nFROM gitea/gitea:${GITEA_VERSION}\n"
    ),
    "src/gitea/dependency.conf.tpl": "gitea/gitea:{{GITEA_VERSION}}\n",
    "src/gitea/build.conf": "BUILD_PHASE=foundation\n",
    "src/nginx/Dockerfile.tpl": (
        "ARG UBUNTU_VERSION=22.04\nFROM ubuntu:${UBUNTU_VERSION}\nARG APT_MIRROR={{ APT_MIRROR }}\n"
    ),
    "src/nginx/build.conf": "BUILD_PHASE=foundation\n",
    "src/mysql/dependency.conf": "mysql:8\\.0\n",
    "src/mysql/dependency.conf.tpl": "mysql:{{MYSQL_VERSION}}\n",
    "src/redis/dependency.conf": "# cache\n\nredis:7-alpine\n",
    "src/redis-copy/dependency.conf": "redis:7-alpine\n",
    "src/safeline/dependency.conf.tpl": (
        "# SafeLine WAF\n{{SAFELINE_IMAGE_PREFIX}}/safeline-tengine{{SAFELINE_REGION}}"
        ":{{SAFELINE_IMAGE_TAG}}\n"
    ),
    "src/shared/sso/index.html": "<html></html>\n",
}


def write_tree(root: Path, files: Mapping[str, str]) -> Path:
    """Write `files` (relative path -> text) under root; return root."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fake AI-Infra-Matrix checkout shaped like the real one."""
    return write_tree(tmp_path / "repo", FILES)


@pytest.fixture
def tree(tmp_path: Path) -> Callable[[Mapping[str, str]], Path]:
    """Write a custom tree: `tree({"src/x/Dockerfile": "FROM scratch"})`."""
    counter = iter(range(1000))
    return lambda files: write_tree(tmp_path / f"tree{next(counter)}", files)


@pytest.fixture
def secrets() -> dict[str, str]:
    """The secret keys and values written into the fake `.env.example`."""
    return dict(SECRETS)


@pytest.fixture(autouse=True)
def _no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests are pure: any subprocess is a bug."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"unit tests must not start processes: {args!r}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """Run the CLI in-process through `main` (the one place errors become exit codes):
    `cli("plan", ...)` gives (exit code, stdout, stderr). The CLI reads os.environ: the
    runner's own settings are kept out."""
    from pipeline.doors.cli import main
    from pipeline.planning.settings import ENV_NAMES

    for name in [*ENV_NAMES.values(), "PIPELINE_DEBUG"]:
        monkeypatch.delenv(name, raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as info:
            main(list(args))
        out, err = capsys.readouterr()
        return info.value.code or 0, out, err

    return run
