"""The export step: every image built for every platform and written as multi-platform OCI
tarballs with the third-party images (`export_images`), or merged into one offline bundle
(`export_bundle`; pipeline.bundle writes and checks the layout). No registry is involved."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import dagger
from dagger import dag

from pipeline import engine
from pipeline.build import Built
from pipeline.bundle.archive import check_archive_format
from pipeline.bundle.create import BundleImage, CreateResult, create_bundle, remove_stale
from pipeline.bundle.delta import read_base
from pipeline.errors import BadInput, BuildFailed
from pipeline.events import Events
from pipeline.plan import Plan
from pipeline.release import build_in_waves, engine_steps
from pipeline.report import Report, finished, image_row, new_report
from pipeline.sign import SigningKey

# Where the tarballs go: a host folder (CLI), the function's result (`dagger call`).
Deliver = Callable[[dagger.Directory], Awaitable[None]]


async def export_images(
    plan: Plan,
    checkout: engine.Checkout,
    deliver: Deliver,
    events: Events,
    connect: engine.Connect = engine.session,
) -> Report:
    """`<image>.tar` for every fully built image and, when all built, `dependencies/*.tar`."""
    refuse_needs(plan)
    async with connect() as log:
        builds, report = await build_images(plan, checkout, events)
        tarballs = image_tarballs(plan, builds)
        if report.ok:
            tarballs = tarballs.with_directory("dependencies", dependency_tarballs(plan))
        await deliver(tarballs)
    return finished(report, plan, log, plan.secrets)


async def export_bundle(
    plan: Plan,
    checkout: engine.Checkout,
    output: Path,
    archive: str | None,
    events: Events,
    connect: engine.Connect = engine.session,
    since: Path | None = None,
    sign_key: SigningKey | None = None,
) -> CreateResult:
    """The release as one OCI layout at `output` (and its archive); nothing there unless whole.
    With `since` (a previous bundle or its inventory.json), a delta of it; with `sign_key`,
    every image signed."""
    refuse_needs(plan)
    check_archive_format(archive)
    if since is not None:
        read_base(since)  # before the builds: a wrong one is bad input
    for stale in remove_stale(output):
        events.note(f"removed {stale}, left by an interrupted run")
    async with connect() as log:
        builds, report = await build_images(plan, checkout, events)
        if report.ok:
            output.parent.mkdir(parents=True, exist_ok=True)
            with scratch_beside(output) as scratch:
                with events.step("exporting images from the engine"):
                    await (
                        image_tarballs(plan, builds)
                        .with_directory("dependencies", dependency_tarballs(plan))
                        .export(str(scratch))
                    )
                with events.step(f"writing the bundle at {output}"):
                    images = bundle_images(plan, scratch)
                    return create_bundle(
                        output, images, plan.platforms, archive, since=since, sign_key=sign_key
                    )
    report = finished(report, plan, log, plan.secrets)
    raise BuildFailed("bundle not made: " + "; ".join(report.failures))


def refuse_needs(plan: Plan) -> None:
    """docker_build can take another release image only from a registry: say so before any
    build."""
    needing = [f"{i.image} reads {', '.join(i.needs)}" for i in plan.components if i.needs]
    if needing:
        raise BadInput(
            f"{'; '.join(needing)} at build time: release to a registry first, "
            "or leave them out with --components"
        )


async def build_images(
    plan: Plan, checkout: engine.Checkout, events: Events
) -> tuple[dict[str, list[Built]], Report]:
    started = time.monotonic()
    steps = await engine_steps(plan, checkout, events)
    builds = await build_in_waves(plan, steps, events, published={})
    report = new_report(plan, steps.concurrency, time.monotonic() - started)
    for image in plan.components:
        report.images.append(image_row(image, builds[image.image], None, exported=True))
    return builds, report


def image_tarballs(plan: Plan, builds: dict[str, list[Built]]) -> dagger.Directory:
    """One multi-platform OCI tarball per fully built image: <image>.tar."""
    out = dag.directory()
    for image in plan.components:
        variants = [b.container for b in builds[image.image] if b.container is not None]
        if len(variants) == len(plan.platforms):
            tarball = dag.container().as_tarball(platform_variants=variants)
            out = out.with_file(f"{image.image}.tar", tarball)
    return out


def dependency_tarballs(plan: Plan) -> dagger.Directory:
    """Third-party images (dependency.conf), pulled for every release platform."""
    out = dag.directory()
    for dep in plan.dependencies:
        variants = [
            dag.container(platform=dagger.Platform(p)).from_(dep.image) for p in plan.platforms
        ]
        out = out.with_file(
            f"{dep.name}.tar", dag.container().as_tarball(platform_variants=variants)
        )
    return out


@contextlib.contextmanager
def scratch_beside(output: Path) -> Iterator[Path]:
    """A folder for the tarballs on the bundle's file system (hard links, one rename); the pid
    in its name lets a later run tell a killed run's scratch from a live one's."""
    scratch = Path(
        tempfile.mkdtemp(prefix=f".{output.name}.tarballs-{os.getpid()}-", dir=output.parent)
    )
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def bundle_images(plan: Plan, scratch: Path) -> list[BundleImage]:
    images = [
        BundleImage(name=i.image, ref=i.ref, tag=plan.tag, source=scratch / f"{i.image}.tar")
        for i in plan.components
    ]
    return images + [
        BundleImage(
            name=d.name,
            ref=d.image,
            tag=d.image.rsplit(":", 1)[-1],
            source=scratch / "dependencies" / f"{d.name}.tar",
        )
        for d in plan.dependencies
    ]
