"""The offline bundle of a release: build every image, export it with the third-party
images, and merge all of it into one OCI layout (pipeline.bundle does the merging)."""

from __future__ import annotations

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
    tarballs, report = await export_images(plan, settings, source, progress)
    if not report.ok:
        raise BuildFailed("bundle not made: " + "; ".join(report.failures))
    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{output.name}.tarballs-", dir=output.parent))
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
