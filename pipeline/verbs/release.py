"""The release step both doors run: build every image, publish each one whose every platform
built, report all of it.

`release` opens the session and hands the engine's build, publish and serve to
pipeline/run/orchestrate.py, which tests run with fakes (tests/e2e run the real ones).
"""

from __future__ import annotations

import time

import anyio

from pipeline.events import Events
from pipeline.planning.plan import Plan, check_releasable
from pipeline.planning.run_config import RunConfig
from pipeline.run import engine, fleet
from pipeline.run.access import RegistryAccess
from pipeline.run.orchestrate import EngineSteps, build_in_waves, engine_steps
from pipeline.run.publish import Published, check_push_rights, reachable_from_here
from pipeline.run.report import Report, finished, image_row, new_report, published_so_far


async def release(
    plan: Plan,
    run: RunConfig,
    checkout: engine.Checkout,
    access: RegistryAccess,
    events: Events,
    connect: engine.Connect = engine.session,
    may_not_reach: bool = False,
) -> Report:
    """The release of `plan`, run as `run` says; a run cut short by the engine says what got
    out before. `may_not_reach`: this code may not reach the registry the engine pushes to (it
    runs in a module's container): asked first, and read back through the engine if it
    cannot."""
    check_releasable(plan)
    if may_not_reach:
        access = await anyio.to_thread.run_sync(reachable_from_here, plan, access)
    await anyio.to_thread.run_sync(check_push_rights, plan, access)
    published: dict[str, Published] = {}
    try:
        async with connect() as log, fleet.fleet(plan, events) as engines:
            steps = await engine_steps(plan, run, checkout, events, engines, access)
            report = await publish_release(plan, steps, events, published)
    except engine.EngineGone as err:
        raise engine.EngineGone(f"{err}; {published_so_far(plan, published)}") from None
    secrets = run.secrets | ({access.password} if access.password else set())
    report.read_back_through_engine = access.through_engine
    return finished(report, plan, fleet.joined_log(log, engines), secrets)


async def publish_release(
    plan: Plan, steps: EngineSteps, events: Events, published: dict[str, Published]
) -> Report:
    """Each image is published as soon as its platforms are built; `published` fills as
    images get out."""
    started = time.monotonic()
    builds = await build_in_waves(plan, steps, events, published)
    report = new_report(plan, steps.concurrency, time.monotonic() - started)
    for image in plan.components:
        report.images.append(image_row(image, builds[image.image], published.get(image.image)))
    return report
