"""The core both doors call: build a plan, then publish and/or export it, and report.

Data flows one way: plan -> builds (containers) -> publish | export -> report. Nothing here
parses arguments or prints for people; the doors do that.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path

import dagger
from dagger import dag

from pipeline.build import Built, build_all
from pipeline.dockerfile import replace_image
from pipeline.engine import default_concurrency
from pipeline.errors import BadInput
from pipeline.plan import ImagePlan, Plan, waves
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
    published: dict[str, Published] | None = None,
) -> Report:
    """Build everything, publish each image whose every platform built, report all of it.

    Images run in waves (usually one): an image that reads another release image (FROM,
    COPY --from) is built after that one is published, against its exact digest.
    """
    if not plan.registry:
        raise BadInput("release needs a registry: set PRIVATE_REGISTRY or pass --registry")
    started = time.monotonic()
    concurrency = settings.concurrency or await default_concurrency(progress)
    builds: dict[str, list[Built]] = {}
    published = {} if published is None else published  # the caller's, to tell what got out

    async def publish(image: ImagePlan, built: list[Built]) -> None:
        if not all(b.ok for b in built):
            return  # never an index that lacks a platform
        progress(f"publishing {image.ref}")
        result = await publish_image(image, built, access, settings.per_arch_tags)
        published[image.image] = result
        progress(f"{'published' if not result.error else 'FAILED'} {image.ref}")

    for wave in waves(plan.components):
        ready = [pin_needs(i, published) for i in wave if not blocked_by(i, published)]
        for image in wave:
            if blocked_by(image, published):
                builds[image.image] = not_built(image, plan.platforms, blocked_by(image, published))
        wave_plan = replace(plan, components=tuple(ready))
        builds |= group(await build_all(wave_plan, source, concurrency, progress, publish))
    report = new_report(plan, concurrency, time.monotonic() - started)
    for image in plan.components:
        report.images.append(image_row(image, builds[image.image], published.get(image.image)))
    return redacted(report, secrets)


def published_so_far(plan: Plan, published: Mapping[str, Published]) -> str:
    """For a run cut short: which images reached the registry and which did not."""
    done = [i.ref for i in plan.components if i.image in published and not published[i.image].error]
    rest = [i.image for i in plan.components if i.ref not in done]
    return f"published: {', '.join(done) or 'nothing'}; not published: {', '.join(rest) or 'none'}"


def blocked_by(image: ImagePlan, published: Mapping[str, Published]) -> list[str]:
    """The release images this one reads that did not make it into the registry."""
    return [n for n in image.needs if n not in published or published[n].error]


def not_built(image: ImagePlan, platforms: Iterable[str], missing: list[str]) -> list[Built]:
    why = f"not built: it reads {', '.join(missing)}, which was not published"
    return [Built(image, platform, 0.0, error=why) for platform in platforms]


def pin_needs(image: ImagePlan, published: Mapping[str, Published]) -> ImagePlan:
    """Point the Dockerfile at the published digest of each release image it reads."""
    text = image.dockerfile_text
    for name in image.needs:
        done = published[name]
        text = replace_image(text, name, f"{done.image.ref}@{done.digest}")
    return replace(image, dockerfile_text=text)


async def build_for_export(
    plan: Plan, settings: Settings, source: dagger.Directory, progress: Progress
) -> tuple[dict[str, list[Built]], Report]:
    needing = [f"{i.image} reads {', '.join(i.needs)}" for i in plan.components if i.needs]
    if needing:  # docker_build can only take other images from a registry
        raise BadInput(
            f"{'; '.join(needing)} at build time: release to a registry first, "
            "or leave them out with --components"
        )
    started = time.monotonic()
    concurrency = settings.concurrency or await default_concurrency(progress)
    builds = group(await build_all(plan, source, concurrency, progress))
    report = new_report(plan, concurrency, time.monotonic() - started)
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


def new_report(plan: Plan, concurrency: int, seconds: float) -> Report:
    return Report(
        tag=plan.tag,
        registry=plan.registry,
        platforms=list(plan.platforms),
        concurrency=concurrency,
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
        in_index = published is not None and b.platform in published.platforms
        manifest = published.platforms[b.platform] if in_index else None
        status = "build-failed" if not b.ok else "not-published"
        if b.ok and exported:
            status = "exported"
        elif in_index:
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
