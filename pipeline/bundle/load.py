"""load: put a verified bundle into the container runtime of this host.

containerd: ``ctr -n k8s.io images import --all-platforms`` (without the flag ctr keeps only
the host platform, containerd#10032); docker: ``docker load -i`` (Docker 25+ reads OCI
layouts; with the classic image store it keeps the host platform, with the containerd image
store all of them). Both read a ``.tar`` of the layout: an existing ``.tar`` bundle is passed
as it is, a directory or ``.tar.zst`` is archived to a scratch file first. A delta is merged
with the blobs it expects from its base (hard links where possible) in a scratch layout, so
the runtime gets the whole release: it has no notion of a base.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.bundle.archive import as_plain_tar, open_bundle, scratch_dir
from pipeline.bundle.delta import NeedsBase, open_base, read_delta
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
    base: Path | None = None,
    run: Runner = _run,
    which: Callable[[str], str | None] = shutil.which,
) -> LoadResult:
    """Verify the bundle (refusing a corrupt one), then import it with ``ctr`` or ``docker``.
    A delta needs ``base``, the bundle it was made against."""
    load_command(into, Path("-"), namespace)  # reject a wrong runtime before any work
    with open_bundle(path) as root:
        delta = read_delta(root)
        if delta is not None and base is None:  # before any check: bad input, said at once
            raise NeedsBase(
                f"bundle {path} is a delta of {delta.tag}: loading it needs the bundle it was "
                "made against"
            )
        with _whole_release(path, root, base) as archive:
            refs = [d.annotations[layout.ANNOTATION_REF_NAME] for d in layout.read_index(root)]
            command = load_command(into, archive, namespace)
            if which(command[0]) is None:
                raise BundleError(f"cannot load into {into}: {command[0]} is not on PATH")
            done = run(command)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout or "").strip().splitlines()
        last = lines[-1] if lines else "no output"
        raise BundleError(f"{command[0]} failed (exit {done.returncode}): {last}")
    return LoadResult(into=into, command=command, images=refs, output=done.stdout or "")


@contextmanager
def _whole_release(path: Path, root: Path, base: Path | None) -> Iterator[Path]:
    """A verified ``.tar`` of the whole release: the bundle itself, or a delta merged with the
    blobs it expects from ``base`` (checked there first)."""
    if base is None:
        verify_layout(root, None, label=path).raise_if_failed()
        with as_plain_tar(path, root) as archive:
            yield archive
        return
    with open_base(base) as base_root:
        report = verify_layout(root, None, label=path, base=base_root, base_label=base)
        report.raise_if_failed()
        with scratch_dir(root.parent, f"{path.name}.whole") as whole:
            for name in layout.iter_files(root):
                _link_or_copy(root / name, whole / name)
            for digest in report.from_base:
                _link_or_copy(layout.blob_path(base_root, digest), layout.blob_path(whole, digest))
            with as_plain_tar(whole, whole) as archive:
                yield archive


def _link_or_copy(source: Path, dest: Path) -> None:
    """A hard link costs no space; another file system or a refusing one gets a copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
