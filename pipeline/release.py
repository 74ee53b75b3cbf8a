"""The release step both doors run: build every image, publish each one whose every platform
built, report all of it.

`release` opens the session and hands the engine's build and publish to `publish_release`,
the orchestration, which tests run with fakes (tests/e2e run the real ones).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import dagger

from pipeline import engine
from pipeline.build import BuildOne, Built, build_all, engine_builder
from pipeline.dockerfile import replace_image
from pipeline.errors import BadInput
from pipeline.events import Events
from pipeline.plan import ImagePlan, Plan, waves
from pipeline.publish import Published, RegistryAccess, publish_image
from pipeline.report import Report, finished, image_row, new_report, published_so_far

PublishOne = Callable[[ImagePlan, list[Built]], Awaitable[Published]]


@dataclass(frozen=True)
class ReleaseSteps:
    """What the orchestration asks of the engine."""

    build: BuildOne
    publish: PublishOne
    concurrency: int


async def release(
    plan: Plan,
    source: engine.Source,
    access: RegistryAccess,
    events: Events,
    connect: engine.Connect = engine.session,
) -> Report:
    """The release of `plan`; a run cut short by the engine says what got out before."""
    if not plan.registry:
        raise BadInput("release needs a registry: set PRIVATE_REGISTRY or pass --registry")
    published: dict[str, Published] = {}
    try:
        async with connect() as log:
            run_access = access.in_session(plan.publish_timeout)
            steps = await engine_steps(plan, source(), run_access, events)
            report = await publish_release(plan, steps, events, published)
    except engine.EngineGone as err:
        raise engine.EngineGone(f"{err}; {published_so_far(plan, published)}") from None
    secrets = plan.secrets | ({access.password} if access.password else set())
    return finished(report, plan, log, secrets)


async def engine_steps(
    plan: Plan, source: dagger.Directory, access: RegistryAccess, events: Events
) -> ReleaseSteps:
    async def publish(image: ImagePlan, built: list[Built]) -> Published:
        return await publish_image(image, built, access, plan.per_arch_tags)

    concurrency = plan.concurrency or await engine.default_concurrency(events)
    return ReleaseSteps(await engine_builder(source), publish, concurrency)


async def publish_release(
    plan: Plan,
    steps: ReleaseSteps,
    events: Events,
    published: dict[str, Published],
) -> Report:
    """Images run in waves (usually one): an image that reads another release image (FROM,
    COPY --from) is built after that one is published, against its exact digest. Each image
    is published as soon as its platforms are built; `published` fills as images get out."""
    started = time.monotonic()
    builds: dict[str, list[Built]] = {}

    async def publish(image: ImagePlan, built: list[Built]) -> None:
        if not all(b.ok for b in built):
            return  # never an index that lacks a platform
        events.note(f"publishing {image.ref}")
        result = await steps.publish(image, built)
        published[image.image] = result
        events.note(f"{'published' if not result.error else 'FAILED'} {image.ref}")

    for wave in waves(plan.components):
        ready = [pin_needs(i, published) for i in wave if not blocked_by(i, published)]
        for image in wave:
            if blocked_by(image, published):
                builds[image.image] = not_built(image, plan.platforms, blocked_by(image, published))
        done = await build_all(
            ready, plan.platforms, steps.build, steps.concurrency, events, publish
        )
        builds |= group(done)
    report = new_report(plan, steps.concurrency, time.monotonic() - started)
    for image in plan.components:
        report.images.append(image_row(image, builds[image.image], published.get(image.image)))
    return report


def group(builds: Iterable[Built]) -> dict[str, list[Built]]:
    by_image: dict[str, list[Built]] = {}
    for built in builds:
        by_image.setdefault(built.image.image, []).append(built)
    return by_image


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
