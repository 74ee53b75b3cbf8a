"""Build every image of a plan for every platform, in parallel, in one engine session.

A build that fails does not stop the others: each image x platform ends as a Built with
either a container or the tail of its log, and the caller decides what may be published.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import dagger

from pipeline.errors import PipelineError
from pipeline.events import Events
from pipeline.planning.plan import ImagePlan, Plan
from pipeline.planning.prepare import kept_folders
from pipeline.run import engine
from pipeline.run.engine import build_platform_args
from pipeline.run.fetch import fetched
from pipeline.run.inputs import INPUTS_LABEL, BaseDigests, input_key
from pipeline.run.reuse import Found

LOG_TAIL_LINES = 25
# Never in a build context: .env holds the platform's runtime secrets.
CONTEXT_EXCLUDED_FILES = [".env"]


@dataclass
class Built:
    image: ImagePlan
    platform: str
    seconds: float
    container: dagger.Container | None = None
    error: str | None = None  # tail of the build log when it failed
    engine: str | None = None  # the engine that built it, when the run has several
    inputs: str | None = None  # its input key (run/inputs.py); None: not knowable
    reused: Found | None = None  # not built: an earlier release's, of the same inputs

    @property
    def ok(self) -> bool:
        return self.container is not None


class Service(Protocol):
    async def address(self) -> str: ...  # started when first asked (run/serve.Served)


@dataclass(frozen=True)
class Reach:
    """What one build gets from the build-time services it reaches (AppHub), set when its
    wave starts: the service of each build arg (APPHUB_URL), build.sh's extra args where that
    service runs another platform than the build's, and the services as its input key sees
    them (an address differs every session)."""

    services: Mapping[str, Service] = field(default_factory=dict)
    args: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)


NOTHING_REACHED = Reach()
# One image for one platform, with what it reaches; the engine's is `engine_builder`, tests
# pass fakes.
BuildOne = Callable[[ImagePlan, str, Reach], Awaitable[Built]]
# The same, as build_all runs it: what each build reaches already chosen.
BuildJob = Callable[[ImagePlan, str], Awaitable[Built]]
# An earlier build of these inputs (image, platform, key), as a container of the engine.
LookUp = Callable[[ImagePlan, str, str], Awaitable[tuple[Found, dagger.Container] | None]]
ImageDone = Callable[[ImagePlan, list[Built]], Awaitable[None]]


def build_context(source: dagger.Directory) -> dagger.Directory:
    return source.without_files(CONTEXT_EXCLUDED_FILES).without_directory(".git")


async def prepared_context(
    plan: Plan, checkout: engine.Checkout, events: Events, client: dagger.Client
) -> dagger.Directory:
    """The checkout, as `client`'s engine reads it, with the prepare step's files in it."""
    context = build_context(checkout.directory(client))
    for made in plan.generated:
        if made.text is not None:
            context = context.with_new_file(made.path, made.text)
    for store, folder in kept_folders(plan.generated).items():
        context = context.with_directory(folder, await checkout.kept(store, events, client))
    files, first = await fetched([g.download for g in plan.generated if g.download], client)
    for path, file in files.items():
        context = context.with_file(path, file)
    if first:
        checkout.pin(first, events)
    return context


def dockerfile_in_context(
    context: dagger.Directory, image: ImagePlan
) -> tuple[dagger.Directory, str]:
    """Put the text the plan decided on (a rendered template, or the Dockerfile itself) where
    the build reads it."""
    path = image.dockerfile.built_at
    return context.with_new_file(path, image.dockerfile.text), path


def build_args(image: ImagePlan, native: str, reach: Reach) -> list[dagger.BuildArg]:
    values = image.build_args | dict(reach.args)
    if image.dockerfile.uses_build_platform:
        values |= build_platform_args(native)
    return [dagger.BuildArg(name=k, value=v) for k, v in sorted(values.items())]


def log_tail(err: Exception, lines: int = LOG_TAIL_LINES) -> str:
    if isinstance(err, dagger.ExecError):
        text = "\n".join(part for part in (err.stdout, err.stderr, step_failed(err)) if part)
    else:
        text = str(err)
    return "\n".join(text.strip().splitlines()[-lines:])


def step_failed(err: dagger.ExecError) -> str:
    """BuildKit's line for the failed RUN step, from the command the error names: Dagger
    0.21's own message for it says no more than `failed to clone built container state`."""
    if not err.command:
        return err.message
    command = " ".join(err.command)
    return f'process "{command}" did not complete successfully: exit code: {err.exit_code}'


async def build_one(
    context: dagger.Directory,
    image: ImagePlan,
    platform: str,
    args: list[dagger.BuildArg],
    key: str | None,
) -> Built:
    started = time.monotonic()
    with_file, path = dockerfile_in_context(context, image)
    container = with_file.docker_build(
        dockerfile=path, platform=dagger.Platform(platform), build_args=args,
        target=image.target or "",
    )  # fmt: skip
    if key:
        container = container.with_label(INPUTS_LABEL, key)
    try:
        container = await container.sync()
    except dagger.QueryError as err:  # ExecError included: a RUN step failed
        return Built(image, platform, time.monotonic() - started, error=log_tail(err), inputs=key)
    return Built(image, platform, time.monotonic() - started, container=container, inputs=key)


def engine_builder(
    context: dagger.Directory,
    native: str,
    client: dagger.Client,
    label: str | None = None,
    look_up: LookUp | None = None,
    slots: anyio.CapacityLimiter | None = None,
    events: Events | None = None,
) -> BuildOne:
    """Builds from the prepared context; $BUILDPLATFORM stages on `native`, the engine's.
    With `look_up`, what an earlier release built from the same inputs is taken instead;
    `slots` bounds the builds (and look-ups) at once of every engine, in plan order."""
    bases = BaseDigests(client)
    slots = slots or anyio.CapacityLimiter(1)

    async def build(image: ImagePlan, platform: str, reach: Reach) -> Built:
        # A slot from the start, taken in plan order (the limiter is first come, first
        # served): a look-up ahead of a build keeps the order builds start in.
        async with slots:
            started = time.monotonic()
            args = build_args(image, native, reach)
            key = await keyed(image, platform, args, reach, context, bases, client)
            found = await look_up(image, platform, key) if look_up and key else None
            if found:
                built = Built(image, platform, time.monotonic() - started, container=found[1],
                              inputs=key, reused=found[0])  # fmt: skip
            else:
                built = await with_services(context, image, platform, args, reach, key, events)
        built.engine = label
        return built

    return build


async def with_services(
    context: dagger.Directory,
    image: ImagePlan,
    platform: str,
    args: list[dagger.BuildArg],
    reach: Reach,
    key: str | None,
    events: Events | None = None,
) -> Built:
    """Build, with the address of each build-time service it reaches (started now if it is
    the first build to need it)."""
    services = reach.services
    try:
        urls = [dagger.BuildArg(name=a, value=await s.address()) for a, s in services.items()]
    except (PipelineError, dagger.DaggerError) as err:
        names = ", ".join(image.reaches[a] for a in services)
        why = f"not built: {names} did not start: {' '.join(str(err).split())[:300]}"
        return Built(image, platform, 0.0, error=why, inputs=key)
    if events is not None:
        events.note(f"building {image.image} for {platform}")
    kept = [a for a in args if a.name not in services]  # the service's address wins
    return await build_one(context, image, platform, sorted(kept + urls, key=_name), key)


def _name(arg: dagger.BuildArg) -> str:
    return arg.name


async def keyed(
    image: ImagePlan,
    platform: str,
    args: list[dagger.BuildArg],
    reach: Reach,
    context: dagger.Directory,
    bases: BaseDigests,
    client: dagger.Client,
) -> str | None:
    """The input key; None when an input cannot be read now (a base that does not resolve,
    a source missing): then the build says what is wrong, in its own words."""
    try:
        return await input_key(image, platform, args, reach.inputs, context, bases, client)
    except dagger.QueryError:
        return None


async def build_all(
    images: Sequence[ImagePlan],
    platforms: Sequence[str],
    build: BuildJob,
    concurrency: int | None,
    events: Events,
    image_done: ImageDone | None = None,
) -> list[Built]:
    """Every image x platform, at most `concurrency` solves at once (None: `build` takes
    its own slots), in plan order.

    `image_done` runs as soon as the last platform of an image has finished (built or not),
    while the other builds go on: a release publishes there, so pushing overlaps building.
    """
    limiter = anyio.CapacityLimiter(concurrency) if concurrency else None
    jobs = [(image, platform) for image in images for platform in platforms]
    results: list[Built | None] = [None] * len(jobs)
    done = 0

    async def run(slot: int, image: ImagePlan, platform: str) -> None:
        nonlocal done
        if limiter is None:  # the build step takes its own slots
            built = await build(image, platform)
        else:
            async with limiter:
                events.note(f"building {image.image} for {platform}")
                built = await build(image, platform)
        results[slot] = built
        done += 1
        mark = "reused" if built.reused else "ok" if built.ok else "FAILED"
        events.note(f"[{done}/{len(jobs)}] {mark} {image.image} {platform} ({built.seconds:.1f}s)")
        mine = [b for b in results if b is not None and b.image.image == image.image]
        if image_done is not None and len(mine) == len(platforms):
            await image_done(image, mine)

    async with anyio.create_task_group() as group:
        for slot, (image, platform) in enumerate(jobs):
            group.start_soon(run, slot, image, platform)
    return [built for built in results if built is not None]
