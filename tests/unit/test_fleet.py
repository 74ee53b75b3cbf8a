"""fleet.py: which engine builds which platform, and what happens to the work on an engine
that stops answering mid-run (the e2e tests run it on the lab's two engines)."""

from __future__ import annotations

import dataclasses

import anyio
import dagger
import pytest
from test_orchestration import image, plan_of

from pipeline.run import engine, fleet
from pipeline.run import orchestrate as release
from pipeline.run.build import NOTHING_REACHED, Built

ARM = "tcp://arm-builder:1234"


class FakeClient:
    """Answers the watchdog's probe, or not."""

    def __init__(self, answers: bool = True):
        self.answers = answers

    async def version(self) -> str:
        if not self.answers:
            raise dagger.TransportError("connection refused")
        return "v0.18.10"


def arm_engine(client: FakeClient) -> fleet.Engine:
    watchdog = engine.Watchdog(client, ARM)  # type: ignore[arg-type]
    return fleet.Engine(ARM, ("linux/arm64",), client, watchdog=watchdog)  # type: ignore[arg-type]


def test_platforms_not_named_build_on_the_default_engine():
    plan = dataclasses.replace(plan_of(image("ai-infra-a")), engines={"linux/arm64": ARM})
    assert fleet.assignment(plan) == {"default": ("linux/amd64",), ARM: ("linux/arm64",)}
    assert fleet.assignment(plan_of(image("ai-infra-a"))) == {
        "default": ("linux/amd64", "linux/arm64")
    }


@pytest.mark.anyio
async def test_a_build_on_an_engine_that_stops_answering_ends_with_one_line(monkeypatch):
    monkeypatch.setattr(engine, "PROBE_EVERY", 0.01)
    client = FakeClient()
    one = arm_engine(client)

    async def slow(img, platform, reach):
        client.answers = False  # the engine dies while this build runs
        await anyio.sleep(30)
        raise AssertionError("not cut short")

    with anyio.fail_after(5):
        async with one.watchdog.watching(on_gone=one.lost):
            built = await release.guarded(one, slow)(
                image("ai-infra-a"), "linux/arm64", NOTHING_REACHED
            )
            later = await release.guarded(one, slow)(
                image("ai-infra-b"), "linux/arm64", NOTHING_REACHED
            )
    assert built.error.startswith(f"engine {ARM} for linux/arm64: stopped answering (last answer")
    assert (built.engine, later.error) == (ARM, built.error)  # nothing more starts there


@pytest.mark.anyio
async def test_an_error_of_a_live_engine_is_its_own_and_of_a_dead_one_names_the_engine():
    async def broken(img, platform, reach):
        raise dagger.TransportError("stream reset")

    alive = arm_engine(FakeClient(answers=True))
    with pytest.raises(dagger.TransportError):
        await release.guarded(alive, broken)(image("ai-infra-a"), "linux/arm64", NOTHING_REACHED)

    dead = arm_engine(FakeClient(answers=False))
    built = await release.guarded(dead, broken)(image("ai-infra-a"), "linux/arm64", NOTHING_REACHED)
    assert built.error.startswith(f"engine {ARM} for linux/arm64: stopped answering")

    async def failed_step(img, platform, reach):  # a failed RUN on an engine that then went away
        return Built(img, platform, 1.0, error="exit code: 1")

    again = arm_engine(FakeClient(answers=False))
    built = await release.guarded(again, failed_step)(
        image("ai-infra-a"), "linux/arm64", NOTHING_REACHED
    )
    assert built.error.startswith(f"engine {ARM} for linux/arm64: stopped answering")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
