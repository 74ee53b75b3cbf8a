"""load: put a verified bundle into the container runtime of this host.

containerd: ``ctr -n k8s.io images import --all-platforms`` (without the flag ctr keeps only
the host platform, containerd#10032); docker: ``docker load -i`` (Docker 25+ reads OCI
layouts; with the classic image store it keeps the host platform, with the containerd image
store all of them). Both read a ``.tar`` of the layout: an existing ``.tar`` bundle is passed
as it is, a directory or ``.tar.zst`` is archived to a scratch file first.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.bundle.archive import as_plain_tar, open_bundle
from pipeline.bundle.verify import verify_layout
from pipeline.errors import BadInput, BundleError
from pipeline.oci import layout

RUNTIMES = ("containerd", "docker")
DEFAULT_NAMESPACE = "k8s.io"  # the namespace the kubelet's CRI uses


@dataclass(frozen=True)
class LoadResult:
    into: str
    command: list[str]
    images: list[str]
    output: str


def load_command(into: str, archive: Path, namespace: str = DEFAULT_NAMESPACE) -> list[str]:
    if into == "containerd":
        return ["ctr", "-n", namespace, "images", "import", "--all-platforms", str(archive)]
    if into == "docker":
        return ["docker", "load", "-i", str(archive)]
    raise BadInput(f"cannot load into {into!r}; choose one of: {', '.join(RUNTIMES)}")


Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


def _run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


def load_bundle(
    path: Path,
    into: str,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    run: Runner = _run,
    which: Callable[[str], str | None] = shutil.which,
) -> LoadResult:
    """Verify the bundle (refusing a corrupt one), then import it with ``ctr`` or ``docker``."""
    load_command(into, Path("-"), namespace)  # reject a wrong runtime before any work
    with open_bundle(path) as root:
        verify_layout(root, None, label=path).raise_if_failed()
        refs = [d.annotations[layout.ANNOTATION_REF_NAME] for d in layout.read_index(root)]
        with as_plain_tar(path, root) as archive:
            command = load_command(into, archive, namespace)
            if which(command[0]) is None:
                raise BundleError(f"cannot load into {into}: {command[0]} is not on PATH")
            done = run(command)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout or "").strip().splitlines()
        last = lines[-1] if lines else "no output"
        raise BundleError(f"{command[0]} failed (exit {done.returncode}): {last}")
    return LoadResult(into=into, command=command, images=refs, output=done.stdout or "")
