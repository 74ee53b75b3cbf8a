"""Image references, ``[host[:port]/]path[:tag][@digest]``: the one parser, and the grammar
of github.com/distribution/reference (without IPv6 hosts, not used by this project)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.errors import BadInput

DOCKER_HUB = "docker.io"

_HOST_PART = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
HOST = rf"{_HOST_PART}(?:\.{_HOST_PART})*(?::[0-9]{{1,5}})?"
PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
PATH = rf"{PATH_PART}(?:/{PATH_PART})*"
TAG_LIMIT = 128  # characters
TAG = rf"[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{TAG_LIMIT - 1}}}"
DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

HOST_RE = re.compile(HOST)
PATH_RE = re.compile(PATH)
TAG_RE = re.compile(TAG)
DIGEST_RE = re.compile(DIGEST)
# Where images go: a host, then an optional project path (Harbor: host/project).
REGISTRY_RE = re.compile(rf"(?P<host>{HOST})(?:/(?P<project>{PATH}))?")
REGISTRY_FORM = "host[:port]/project, e.g. harbor.example.com/ai-infra"


@dataclass(frozen=True)
class Reference:
    """The parts of a reference as written; ``host`` is None when it names no registry."""

    host: str | None
    path: str  # the repository inside its registry
    tag: str | None
    digest: str | None

    @property
    def registry(self) -> str:
        return self.host or DOCKER_HUB

    @property
    def name(self) -> str:
        """The last path component: ``harbor.example.com/ai-infra/backend:v1`` → ``backend``."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def repository(self) -> str:
        """``host/path``, as cosign names it (go-containerregistry's ``Repository.Name()``):
        ``redis:7`` → ``index.docker.io/library/redis``."""
        if self.registry != DOCKER_HUB:
            return f"{self.registry}/{self.path}"
        path = self.path if "/" in self.path else f"library/{self.path}"
        return f"index.{DOCKER_HUB}/{path}"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.host, self.path, tag, None)

    def __str__(self) -> str:
        return (
            (f"{self.host}/" if self.host else "")
            + self.path
            + (f":{self.tag}" if self.tag else "")
            + (f"@{self.digest}" if self.digest else "")
        )


def tagged(registry: str | None, name: str, tag: str) -> Reference:
    """``<registry>/<name>:<tag>`` from its parts; ``registry`` is a checked PRIVATE_REGISTRY
    (``host[:port][/project]``), or None for a bare name."""
    if registry is None:
        return Reference(None, name, tag, None)
    host, _, project = registry.partition("/")
    return Reference(host, f"{project}/{name}" if project else name, tag, None)


def names_a_host(first: str) -> bool:
    """Whether a reference's first part is a registry host, as docker reads it:
    ``confluentinc/cp-kafka`` is a Docker Hub path, ``harbor/p`` too."""
    return "." in first or ":" in first or first == "localhost"


def parse(ref: str) -> Reference:
    """Split a reference without validating it, so that text with unexpanded ARGs
    (``${REGISTRY}/x:${VERSION}``) still splits; ``is_reference`` validates."""
    rest, at, digest = ref.partition("@")
    host = None
    first, slash, remainder = rest.partition("/")
    if slash and names_a_host(first):
        host, rest = first, remainder
    head, slash, last = rest.rpartition("/")
    name, colon, tag = last.partition(":")
    return Reference(
        host=host,
        path=f"{head}{slash}{name}",
        tag=tag if colon else None,
        digest=digest if at else None,
    )


def parse_tagged(ref: str) -> Reference:
    """A reference that must carry a tag and no digest (what a bundle names its images by);
    ValueError says what is wrong."""
    parsed = parse(ref)
    if parsed.digest is not None:
        raise ValueError(f"reference must carry a tag, not a digest: {ref!r}")
    if not parsed.tag:
        raise ValueError(f"reference has no tag: {ref!r}")
    if not parsed.path or "" in parsed.path.split("/"):
        raise ValueError(f"reference has no repository: {ref!r}")
    return parsed


def image_name(ref: str) -> str:
    """``host/project/ai-infra-x:${VERSION}`` → ``ai-infra-x``."""
    return parse(ref).name


def canonical(ref: str) -> str:
    """One spelling per image, so two spellings of one image are not taken for two images:
    ``redis:7``, ``docker.io/library/redis:7`` → ``docker.io/library/redis:7``; no tag and no
    digest means ``latest``, as a pull does."""
    parsed = parse(ref)
    path = parsed.path
    if parsed.registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    tag = parsed.tag or ("latest" if parsed.digest is None else None)
    return (
        f"{parsed.registry}/{path}"
        + (f":{tag}" if tag else "")
        + (f"@{parsed.digest}" if parsed.digest else "")
    )


def is_reference(ref: str) -> bool:
    """True for a complete image reference such as `redis:7-alpine` or `host:5000/a/b:t`."""
    parsed = parse(ref)
    return bool(
        (parsed.host is None or HOST_RE.fullmatch(parsed.host))
        and PATH_RE.fullmatch(parsed.path)
        and (parsed.tag is None or TAG_RE.fullmatch(parsed.tag))
        and (parsed.digest is None or DIGEST_RE.fullmatch(parsed.digest))
    )


def is_image_name(name: str) -> bool:
    """True for a repository path without host or tag, such as `ai-infra-backend`."""
    return PATH_RE.fullmatch(name) is not None


def hide_credentials(text: str) -> str:
    """``robot:hunter2@host/p`` → ``***@host/p``: what a message may show of a registry (a
    project path has no ``@``, so everything before the last one is the user and password)."""
    _userinfo, at, rest = text.rpartition("@")
    return f"***@{rest}" if at else text


def check_registry(text: str, *, project_required: bool) -> tuple[str, str | None]:
    """``host[:port][/project]`` → (host, project); ValueError says what is wrong without
    repeating the text, which may hold a password."""
    if "@" in text:
        raise ValueError("a registry holds no user or password: pass --username and --password")
    match = REGISTRY_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"not {REGISTRY_FORM} (no scheme, the project in lowercase)")
    host, project = match["host"], match["project"]
    port = host.partition(":")[2]
    if port and not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port} is not in 1-65535")
    if not names_a_host(host):  # images pushed there would go to Docker Hub
        raise ValueError(
            f"{host!r} is not a registry host (no dot, no port, not localhost); "
            f"expected {REGISTRY_FORM}"
        )
    if project_required and not project:
        raise ValueError(f"no project; expected {REGISTRY_FORM}")
    return host, project


@dataclass(frozen=True)
class RegistryTarget:
    """``host[:port]/project[/sub]``: where images go; ``repository(name)`` = project/name."""

    host: str
    project: str

    @classmethod
    def parse(cls, text: str) -> RegistryTarget:
        value = text.strip().removeprefix("https://").removeprefix("http://").strip("/")
        try:
            host, project = check_registry(value, project_required=True)
        except ValueError as exc:
            raise BadInput(f"registry {hide_credentials(text)!r}: {exc}") from None
        assert project is not None  # project_required
        return cls(host=host, project=project)

    def repository(self, name: str) -> str:
        return f"{self.project}/{name}"

    def __str__(self) -> str:
        return f"{self.host}/{self.project}"
