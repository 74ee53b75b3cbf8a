"""The core both doors call: build a plan, then publish and/or export it, and report.

Data flows one way: plan -> builds (containers) -> publish | export -> report. Nothing here
parses arguments or prints for people; the doors do that.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import anyio
import dagger
from dagger import dag

from pipeline.build import Built, build_all
from pipeline.errors import BadInput
from pipeline.plan import ImagePlan, Plan
from pipeline.publish import Published, RegistryAccess, publish_image
from pipeline.report import ImageRow, PlatformRow, Report, redact
from pipeline.settings import Settings, is_secret, read_env_file

Progress = Callable[[str], None]


def secret_values(source: Path | None, env: Mapping[str, str]) -> set[str]:
    """Values of secret-looking keys in .env and the environment, to redact from reports."""
    file_values, _ = read_env_file(source)
    return {v for layer in (file_values, env) for k, v in layer.items() if is_secret(k) and v}


def group(builds: Iterable[Built]) -> dict[str, list[Built]]:
    by_image: dict[str, list[Built]] = {}
    for built in builds:
        by_image.setdefault(built.image.image, []).append(built)
    return by_image


async def release(
    plan: Plan,
    settings: Settings,
    source: dagger.Directory,
    access: RegistryAccess,
    progress: Progress,
    secrets: set[str] = frozenset(),
) -> Report:
    """Build everything, publish each image whose every platform built, report all of it."""
    if not plan.registry:
        raise BadInput("release needs a registry: set PRIVATE_REGISTRY or pass --registry")
    started = time.monotonic()
    builds = group(await build_all(plan, source, settings.concurrency, progress))
    published: dict[str, Published] = {}

    async def publish(image: ImagePlan) -> None:
        progress(f"publishing {image.ref}")
        result = await publish_image(image, builds[image.image], access, settings.per_arch_tags)
        published[image.image] = result
        progress(f"{'published' if not result.error else 'FAILED'} {image.ref}")

    async with anyio.create_task_group() as tasks:
        for image in plan.components:
            if all(b.ok for b in builds[image.image]):
                tasks.start_soon(publish, image)
    report = new_report(plan, settings, time.monotonic() - started)
    for image in plan.components:
        report.images.append(image_row(image, builds[image.image], published.get(image.image)))
    return redacted(report, secrets)


async def build_for_export(
    plan: Plan, settings: Settings, source: dagger.Directory, progress: Progress
) -> tuple[dict[str, list[Built]], Report]:
    started = time.monotonic()
    builds = group(await build_all(plan, source, settings.concurrency, progress))
    report = new_report(plan, settings, time.monotonic() - started)
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


def new_report(plan: Plan, settings: Settings, seconds: float) -> Report:
    return Report(
        tag=plan.tag,
        registry=plan.registry,
        platforms=list(plan.platforms),
        concurrency=settings.concurrency,
        wall_seconds=seconds,
        dependencies=[d.image for d in plan.dependencies],
        skipped=[{"name": s.name, "reason": s.reason} for s in plan.skipped],
    )


def image_row(
    image: ImagePlan, builds: list[Built], published: Published | None, exported: bool = False
) -> ImageRow:
    built_all = all(b.ok for b in builds)
    row = ImageRow(image=image.image, ref=image.ref, status="failed")
    if published is not None:
        row.digest, row.error = published.digest, published.error
    for b in builds:
        manifest = published.platforms.get(b.platform) if published else None
        status = "build-failed" if not b.ok else "not-published"
        if b.ok and exported:
            status = "exported"
        elif manifest is not None:
            status = "published"
        row.platforms.append(
            PlatformRow(
                platform=b.platform,
                status=status,
                seconds=round(b.seconds, 1),
                digest=manifest.descriptor.digest if manifest else None,
                size=manifest.total_bytes if manifest else None,
                error=b.error,
            )
        )
    if built_all and exported:
        row.status = "exported"
    elif built_all and published is not None and not published.error:
        row.status = "published"
    elif built_all and published is None:
        row.error = "not published"
    return row


def redacted(report: Report, secrets: set[str]) -> Report:
    for image in report.images:
        image.error = redact(image.error, secrets)
        for p in image.platforms:
            p.error = redact(p.error, secrets)
    return report
