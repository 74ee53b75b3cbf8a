"""The orchestration both verbs run on the engines: each platform built, served and (for a
release) pushed on its own engine (`engine_steps`), images in waves as the layout orders them,
each published as soon as its platforms are built (`build_in_waves`).

Tests run it with fakes at its boundary (tests/e2e run the real ones).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import anyio
import dagger

from pipeline.errors import PipelineError
from pipeline.events import Events
from pipeline.planning.plan import ImagePlan, Plan, waves
from pipeline.planning.run_config import RunConfig
from pipeline.run import engine, fleet, reuse, serve
from pipeline.run.access import RegistryAccess
from pipeline.run.build import (
    NOTHING_REACHED,
    BuildJob,
    BuildOne,
    Built,
    LookUp,
    Reach,
    build_all,
    engine_builder,
    prepared_context,
)
from pipeline.run.publish import Published, authed, publish_image, publish_stitched
from pipeline.run.serve import FOREIGN_PLATFORM_ARGS, Served

PublishOne = Callable[[ImagePlan, list[Built]], Awaitable[Published]]
# Start a built image as a build-time service: platform -> the service its builds reach.
ServeOne = Callable[[ImagePlan, list[Built]], Awaitable[dict[str, Served]]]


@dataclass(frozen=True)
class EngineSteps:
    """What the orchestration asks of the engines; `publish` None: nothing leaves them."""

    build: BuildOne
    serve: ServeOne
    concurrency: int
    publish: PublishOne | None = None
    # Tag what was built with its input key's record, once published (reuse.py).
    record: Callable[[Published, list[Built]], Awaitable[None]] | None = None
    # The build step takes its own slots and says when it builds: build_all starts every job.
    limited: bool = False


async def engine_steps(
    plan: Plan,
    run: RunConfig,
    checkout: engine.Checkout,
    events: Events,
    engines: list[fleet.Engine],
    access: RegistryAccess | None = None,
) -> EngineSteps:
    """The engines' steps for this run (publishing only when given registry access): each
    platform is built, served and pushed on its own engine."""
    builders: dict[str, BuildOne] = {}
    accesses: dict[str | None, RegistryAccess] = {}
    natives: dict[str, str] = {}
    concurrency = 0
    slots = anyio.CapacityLimiter(1)  # every engine's builds at once, set below
    for one in engines:
        if one.client is None:
            builders |= dict.fromkeys(one.platforms, unreachable(one))
            continue
        context, natives[one.label], cpus = await at_once(
            prepared_context(plan, checkout, events, one.client),
            engine.native_platform(one.client),
            engine_cpus(run, events, one.client),
        )
        if access is not None:
            accesses[one.label] = access.in_session(run.publish_timeout, one.client)
        look_up = reusing(run, accesses.get(one.label), one.client)
        builder = engine_builder(context, natives[one.label], one.client, one.label, look_up,
                                 slots, events)  # fmt: skip
        builders |= dict.fromkeys(one.platforms, guarded(one, builder) if one.watchdog else builder)
        concurrency += cpus

    async def build(image: ImagePlan, platform: str, reach: Reach) -> Built:
        return await builders[platform](image, platform, reach)

    async def serve_one(image: ImagePlan, built: list[Built]) -> dict[str, Served]:
        served: dict[str, Served] = {}
        for one in engines:
            mine = [b for b in built if b.platform in one.platforms and b.ok]
            if one.client is None or not mine:
                continue
            # The engine's own platform, as build.sh runs AppHub on the build host's.
            chosen = next((b for b in mine if b.platform == natives[one.label]), mine[0])
            start = starter(image, chosen, one.client, events)
            served |= dict.fromkeys(
                one.platforms, Served(None, chosen.platform, chosen.inputs, start)
            )
        return served

    if access is not None and access.through_engine and not run.rebuild:
        events.note("nothing is reused: finding an earlier build needs the registry's API")
    publish = None
    by_label = {one.label: one for one in engines}
    if access is not None:

        async def publish(image: ImagePlan, built: list[Built]) -> Published:
            if plan.engines:
                return await publish_stitched(
                    image,
                    built,
                    lambda b: accesses[b.engine],
                    plan.per_arch_tags,
                    lambda b: by_label[b.engine].guarded(),
                )
            return await publish_image(image, built, accesses[fleet.DEFAULT], plan.per_arch_tags)

    record = None
    if access is not None and not access.through_engine:

        async def record(published: Published, built: list[Built]) -> None:
            await anyio.to_thread.run_sync(recorded, published, built, access)

    slots.total_tokens = max(concurrency, 1)
    return EngineSteps(build, serve_one, max(concurrency, 1), publish, record, limited=True)


async def engine_cpus(run: RunConfig, events: Events, client: dagger.Client) -> int:
    return run.concurrency or await engine.default_concurrency(events, client)


async def at_once(*steps: Awaitable[Any]) -> list[Any]:
    """Await independent engine calls together: a run's fixed cost is their longest, not
    their sum."""
    results: list[Any] = [None] * len(steps)

    async def one(n: int, step: Awaitable[Any]) -> None:
        results[n] = await step

    try:
        async with anyio.create_task_group() as group:
            for n, step in enumerate(steps):
                group.start_soon(one, n, step)
    except BaseExceptionGroup as grouped:  # a step's own error (one line), not the group's
        raise grouped.exceptions[0] from None
    return results


def starter(image: ImagePlan, built: Built, client: dagger.Client, events: Events):
    """Start `built` as a service when a build first asks its address."""

    async def start() -> str:
        with events.step(f"starting {image.image} for the builds that reach it"):
            started = await serve.serve(image, built, client)
        assert started.url is not None
        return started.url

    return start


def reusing(run: RunConfig, access: RegistryAccess | None, client: dagger.Client) -> LookUp | None:
    """How a build finds an earlier one of its inputs: in the release registry, through its
    API (so not through the engine alone, nor with --rebuild, nor with no registry)."""
    if access is None or access.through_engine or run.rebuild:
        return None

    async def look_up(image: ImagePlan, platform: str, key: str):
        found = await anyio.to_thread.run_sync(reuse.find, image.reference, key, platform, access)
        if found is None:
            return None
        pulled = client.container(platform=dagger.Platform(platform))
        return found, authed(pulled, image.reference, access).from_(found.pinned)

    return look_up


def recorded(published: Published, built: list[Built], access: RegistryAccess) -> None:
    """The records of an image's platforms that were built (not reused) and published."""
    keyed = []
    for b in built:
        manifest = published.platforms.get(b.platform)
        if b.inputs and not b.reused and manifest is not None:
            keyed.append((manifest.descriptor.digest, b.inputs))
    reuse.record(published.image.reference, keyed, access)


def guarded(one: fleet.Engine, build: BuildOne) -> BuildOne:
    """A build on another engine than the session's: if that engine goes away meanwhile, the
    build ends with its one line (the session's own engine ends the whole run instead)."""

    async def run(image: ImagePlan, platform: str, reach: Reach) -> Built:
        try:
            with one.guarded():
                built = await build(image, platform, reach)
        except Exception as err:  # a dead engine's client fails in more ways than DaggerError
            if not isinstance(err, engine.EngineUnavailable) and not await one.confirm_gone():
                raise
            return Built(image, platform, 0.0, error=one.error, engine=one.label)
        if not built.ok and await one.confirm_gone():
            built.error = one.error
        return built

    return run


def unreachable(one: fleet.Engine) -> BuildOne:
    async def build(image: ImagePlan, platform: str, reach: Reach) -> Built:
        return Built(image, platform, 0.0, error=one.error, engine=one.label)

    return build


async def build_in_waves(
    plan: Plan, steps: EngineSteps, events: Events, published: dict[str, Published]
) -> dict[str, list[Built]]:
    """Images run in waves (usually one): an image that reads another release image (FROM,
    COPY --from) is built after that one is published, against its exact digest; one that
    reaches a build-time service, after that service is built and started."""
    builds: dict[str, list[Built]] = {}
    served: dict[str, dict[str, Served]] = {}  # served image -> platform -> its service
    for note in plan.notes:
        events.note(note)

    async def image_done(image: ImagePlan, built: list[Built]) -> None:
        if steps.publish is None or not all(b.ok for b in built):
            return  # never an index that lacks a platform
        events.note(f"publishing {image.ref}")
        result = await steps.publish(image, built)
        published[image.image] = result
        events.note(f"{'published' if not result.error else 'FAILED'} {image.ref}")
        if steps.record is not None and not result.error:
            try:
                await steps.record(result, built)
            except PipelineError as err:  # only a later reuse is lost: said, not failed
                events.note(f"{image.image}: its input records were not written: {err}")

    for wave in waves(plan.components):
        ready = []
        reached: dict[str, dict[str, Reach]] = {}  # image -> platform -> what it reaches
        for image in wave:
            missing = blocked_by(image, published, served)
            if missing:
                builds[image.image] = not_built(image, plan.platforms, missing)
            else:
                ready.append(pin_needs(image, published))
                reached[image.image] = reaches(image, served, plan.platforms)
        concurrency = None if steps.limited else steps.concurrency
        build = reaching(steps.build, reached)
        done = await build_all(ready, plan.platforms, build, concurrency, events, image_done)
        builds |= group(done)
        served |= await start_services(plan, ready, builds, steps, events)
    return builds


async def start_services(
    plan: Plan,
    built: list[ImagePlan],
    builds: Mapping[str, list[Built]],
    steps: EngineSteps,
    events: Events,
) -> dict[str, dict[str, Served]]:
    """Serve each image just built that a later image reaches, if it built everywhere."""
    reached = {name for i in plan.components for name in i.reaches.values()}
    served = {}
    for image in built:
        if image.image in reached and all(b.ok for b in builds[image.image]):
            try:  # the engines' serve starts each variant when a build first needs it
                served[image.image] = await steps.serve(image, builds[image.image])
            except (PipelineError, dagger.DaggerError) as err:
                events.note(f"{image.image} did not start: {' '.join(str(err).split())[:300]}")
    return served


def group(builds: Iterable[Built]) -> dict[str, list[Built]]:
    by_image: dict[str, list[Built]] = {}
    for built in builds:
        by_image.setdefault(built.image.image, []).append(built)
    return by_image


def blocked_by(
    image: ImagePlan,
    published: Mapping[str, Published],
    served: Mapping[str, Mapping[str, Served]],
) -> str | None:
    """Why this image cannot be built: what it reads or reaches that is not there."""
    unread = [n for n in image.needs if n not in published or published[n].error]
    unreached = [n for n in image.reaches.values() if n not in served]
    why = []
    if unread:
        why.append(f"it reads {', '.join(unread)}, which was not published")
    if unreached:
        why.append(f"it reaches {', '.join(unreached)} while it builds, which is not serving")
    return "; ".join(why) or None


def not_built(image: ImagePlan, platforms: Iterable[str], why: str) -> list[Built]:
    return [Built(image, platform, 0.0, error=f"not built: {why}") for platform in platforms]


def pin_needs(image: ImagePlan, published: Mapping[str, Published]) -> ImagePlan:
    """Point the Dockerfile at the published digest of each release image it reads."""
    pinned = image.dockerfile
    for name in image.needs:
        done = published[name]
        pinned = pinned.with_image(name, f"{done.image.ref}@{done.digest}")
    return replace(image, dockerfile=pinned)


def reaching(build: BuildOne, reached: Mapping[str, Mapping[str, Reach]]) -> BuildJob:
    """`build`, each image x platform given what it reaches."""

    async def job(image: ImagePlan, platform: str) -> Built:
        return await build(image, platform, reached[image.image].get(platform, NOTHING_REACHED))

    return job


def reaches(
    image: ImagePlan, served: Mapping[str, Mapping[str, Served]], platforms: Iterable[str]
) -> dict[str, Reach]:
    """What each platform's build reaches: each build-time service (its URL becomes
    APPHUB_URL=... when the build runs), the one on its own engine; and, where that service
    runs another platform than the build's, what build.sh passes then."""
    if not image.reaches:
        return {}
    declared = set(image.dockerfile.declared_args)
    foreign = {k: v for k, v in FOREIGN_PLATFORM_ARGS.items() if k in declared}
    found = {}
    for platform in platforms:
        services = {arg: served[name][platform] for arg, name in image.reaches.items()}
        away = any(service.platform != platform for service in services.values())
        # The service as the key sees it: its image's key (an address differs every session);
        # with none, something no other key has, so the image is never reused.
        keys = {
            arg: f"{image.reaches[arg]} {service.inputs or 'unknown ' + uuid.uuid4().hex}"
            for arg, service in services.items()
        }
        found[platform] = Reach(services, foreign if away else {}, keys)
    return found
