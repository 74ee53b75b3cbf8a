"""The files `build.sh download` fetches into `third_party/` (GitHub release assets), for the
COPYs of planned Dockerfiles that the checkout lacks; and the lock file that pins them.

build.sh's `download_third_party` fetches `${GITHUB_MIRROR}https://github.com/<repo>/releases/
download/<tag>/<file>`, the version from `.env` (`<NAME>_VERSION`) or its default, and checks
nothing. Here the engine fetches each file into the build context only, and
`downloads.lock` (beside the checkout's `.env`, committed by the user) holds each file's
sha256 from its first fetch: a later mismatch stops the release before any build.
Not here: munge, slurm and saltstack (their files are in the repository) and singularity
(build.sh's names are not the ones apphub reads).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import BadInput

LOCK_FILE = "downloads.lock"
ARCHES = ("amd64", "arm64")


@dataclass(frozen=True)
class Release:
    """One `third_party/<folder>/` of build.sh's download map."""

    folder: str
    repo: str
    version_key: str
    default: str  # .env.example's value
    names: tuple[str, ...]  # file names; {v}: the version without its v, {arch}

    def files(self, version: str) -> dict[str, str]:
        """file name -> its release URL (without a mirror)."""
        bare = version.removeprefix("v")
        base = f"https://github.com/{self.repo}/releases/download/v{bare}"
        names = [n.format(v=bare, arch=a) for n in self.names for a in ARCHES]
        return {name: f"{base}/{name}" for name in dict.fromkeys(names)}


RELEASES = {
    r.folder: r
    for r in (
        Release("code_server", "coder/code-server", "CODE_SERVER_VERSION", "v4.107.0",
                ("code-server_{v}_{arch}.deb", "code-server-{v}-{arch}.rpm")),
        Release("prometheus", "prometheus/prometheus", "PROMETHEUS_VERSION", "v3.4.1",
                ("prometheus-{v}.linux-{arch}.tar.gz",)),
        Release("node_exporter", "prometheus/node_exporter", "NODE_EXPORTER_VERSION", "v1.8.2",
                ("node_exporter-{v}.linux-{arch}.tar.gz",)),
        Release("alertmanager", "prometheus/alertmanager", "ALERTMANAGER_VERSION", "v0.28.1",
                ("alertmanager-{v}.linux-{arch}.tar.gz",)),
        Release("categraf", "flashcatcloud/categraf", "CATEGRAF_VERSION", "v0.4.25",
                ("categraf-v{v}-linux-{arch}.tar.gz",)),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Download:
    path: str  # where builds see it, from the root
    url: str  # through the mirror, when one is set
    sha256: str | None  # the lock's; None: not fetched before


def wanted(
    sources: Iterable[str], present: set[str], values: Mapping[str, str], lock: Mapping[str, str]
) -> list[Download]:
    """The downloads that the COPY sources under `third_party/` select and the checkout
    lacks (a source the checkout has, or that no download matches, is left to the check)."""
    mirror = values.get("GITHUB_MIRROR", "")
    found: dict[str, Download] = {}
    for source in sources:
        path = os.path.normpath(source.lstrip("/")).rstrip("/")
        parts = path.split("/")
        if len(parts) < 2 or parts[0] != "third_party" or parts[1] not in RELEASES:
            continue
        if path in present or fnmatch.filter(present, path):
            continue
        release = RELEASES[parts[1]]
        version = values.get(release.version_key) or release.default
        for name, url in release.files(version).items():
            file = f"third_party/{release.folder}/{name}"
            if len(parts) == 2 or fnmatch.fnmatch(file, path):
                found[file] = Download(file, f"{mirror}{url}", lock.get(file))
    return list(found.values())


def read_lock(root: Path) -> dict[str, str]:
    """path -> sha256 from `downloads.lock` (`<sha256>  <path>  <url>` lines)."""
    lock = root / LOCK_FILE
    if not lock.is_file():
        return {}
    pins = {}
    for number, line in enumerate(lock.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 3 or len(fields[0]) != 64:
            raise BadInput(f"{lock} line {number}: expected '<sha256>  <path>  <url>'")
        pins[fields[1]] = fields[0]
    return pins


def lock_lines(downloads: Iterable[tuple[Download, str]]) -> list[str]:
    return [f"{sha256}  {d.path}  {d.url}" for d, sha256 in sorted(downloads, key=_by_path)]


def _by_path(pair: tuple[Download, str]) -> str:
    return pair[0].path


def write_lock(root: Path, fetched: Iterable[tuple[Download, str]]) -> None:
    """Add the first fetches to the lock (whole or not at all), keeping its other lines."""
    lock = root / LOCK_FILE
    old = lock.read_text().splitlines() if lock.is_file() else [
        "# sha256, path and URL of each file the release pipeline downloaded (commit it)"
    ]  # fmt: skip
    partial = lock.with_name(f".{LOCK_FILE}.partial-{os.getpid()}")
    partial.write_text("\n".join([*old, *lock_lines(fetched)]) + "\n")
    partial.rename(lock)
