"""The offline bundle of a release: build every image, export it with the third-party
images, and merge all of it into one OCI layout (pipeline.bundle does the merging)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import dagger

from pipeline.bundle.create import BundleImage, CreateResult, create_bundle
from pipeline.errors import BuildFailed
from pipeline.plan import Plan
from pipeline.release import Progress, build_for_export, dependency_tarballs, image_tarballs
from pipeline.report import Report
from pipeline.settings import Settings


async def export_images(
    plan: Plan, settings: Settings, source: dagger.Directory, progress: Progress
) -> tuple[dagger.Directory, Report]:
    """Multi-platform OCI tarballs of every image and dependency, as one directory."""
    builds, report = await build_for_export(plan, settings, source, progress)
    if not report.ok:
        return image_tarballs(plan, builds), report
    tarballs = image_tarballs(plan, builds).with_directory(
        "dependencies", dependency_tarballs(plan)
    )
    return tarballs, report


async def make_bundle(
    plan: Plan,
    settings: Settings,
    source: dagger.Directory,
    output: Path,
    archive: str | None,
    progress: Progress,
) -> tuple[CreateResult, Report]:
    for stale in remove_stale(output):
        progress(f"removed {stale}, left by an interrupted run")
    tarballs, report = await export_images(plan, settings, source, progress)
    if not report.ok:
        raise BuildFailed("bundle not made: " + "; ".join(report.failures))
    output.parent.mkdir(parents=True, exist_ok=True)
    # The pid in the name lets a later run tell a killed run's scratch from a live one's.
    scratch = Path(
        tempfile.mkdtemp(prefix=f".{output.name}.tarballs-{os.getpid()}-", dir=output.parent)
    )
    try:
        progress("exporting images from the engine")
        await tarballs.export(str(scratch))
        images = [
            BundleImage(name=i.image, ref=i.ref, tag=plan.tag, source=scratch / f"{i.image}.tar")
            for i in plan.components
        ] + [
            BundleImage(
                name=d.name,
                ref=d.image,
                tag=d.image.rsplit(":", 1)[-1],
                source=scratch / "dependencies" / f"{d.name}.tar",
            )
            for d in plan.dependencies
        ]
        progress(f"writing the bundle at {output}")
        result = create_bundle(output, images, list(plan.platforms), archive)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result, report


def remove_stale(output: Path) -> list[Path]:
    """Remove what a killed run (SIGKILL, power loss: no cleanup ran) left beside `output`:
    its scratch tarballs and the bundle and archive it had not finished, all named
    `.<name>[.tar[.zst]].<partial|tarballs>-<pid>...`. Only a dead pid's; never `output`, nor
    `.<name>.old-<pid>` (during a replace, that can be the only complete bundle left)."""
    name = re.escape(output.name)
    pattern = re.compile(rf"\.{name}(\.tar|\.tar\.zst)?\.(partial|tarballs)-(\d+)(-.*)?")
    removed = []
    if not output.parent.is_dir():
        return removed
    for entry in sorted(output.parent.iterdir()):
        match = pattern.fullmatch(entry.name)
        if match is None or _running(int(match.group(3))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
