"""The orchestration on an arm64 engine (Docker Desktop on an arm64 Mac), where amd64 is the
emulated platform. The lab's engine is amd64, so the engine's platform is faked here at its
boundary (`engine.native_platform`); tests/e2e builds on the real one."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.events import Events
from pipeline.planning.run_config import RunConfig
from pipeline.run import build, engine, fleet, orchestrate, serve
from pipeline.run.build import Built
from pipeline.run.serve import Served
from pipeline.verbs import release
from tests.unit.test_orchestration import PLATFORMS, image, plan_of

NATIVE = "linux/arm64"


@pytest.fixture
def arm64_engine(monkeypatch) -> dict[str, list]:
    """Fakes the engine's calls under engine_steps; records what each build and serve got."""
    seen: dict[str, list] = {"builds": [], "served": []}

    async def native_platform(client):
        return NATIVE

    async def prepared_context(plan, checkout, events, client):
        return "context"

    async def build_one(context, img, platform, args, key):
        seen["builds"].append((img.image, platform, {a.name: a.value for a in args}))
        return Built(img, platform, 0.1, container=object())

    async def keyed(img, platform, args, reach, context, bases, client):
        return None  # no registry here: nothing to reuse

    async def serve_one(img, built, client):
        seen["served"].append((img.image, built.platform))
        return Served("http://10.87.0.9:80", built.platform)

    async def concurrency(events, client):
        return 2

    monkeypatch.setattr(engine, "native_platform", native_platform)
    monkeypatch.setattr(engine, "default_concurrency", concurrency)
    monkeypatch.setattr(orchestrate, "prepared_context", prepared_context)
    monkeypatch.setattr(build, "build_one", build_one)
    monkeypatch.setattr(build, "keyed", keyed)
    monkeypatch.setattr(serve, "serve", serve_one)
    return seen


async def release_on_arm64(plan) -> None:
    engines = [fleet.Engine(fleet.DEFAULT, PLATFORMS, client=object())]
    steps = await release.engine_steps(plan, RunConfig(), None, Events(), engines)
    await release.publish_release(plan, steps, Events(), {})


def args_of(seen, name: str) -> dict[str, dict]:
    return {platform: args for img, platform, args in seen["builds"] if img == name}


@pytest.mark.anyio
async def test_build_platform_stages_run_on_arm64_and_cross_compile_for_amd64(arm64_engine):
    go = image("ai-infra-go", "FROM --platform=$BUILDPLATFORM golang AS b\nFROM busybox\n")
    assert go.uses_build_platform
    await release_on_arm64(plan_of(go, image("ai-infra-plain")))
    args = args_of(arm64_engine, "ai-infra-go")
    build_platform = {"BUILDPLATFORM": NATIVE, "BUILDOS": "linux", "BUILDARCH": "arm64"}
    for platform in PLATFORMS:  # amd64's build stage too: native, cross-compiling to amd64
        assert args[platform] | build_platform == args[platform], platform
        assert args[platform]["BUILDVARIANT"] == ""
    # A Dockerfile with no $BUILDPLATFORM gets none: its stages run as the target platform.
    assert all("BUILDPLATFORM" not in a for a in args_of(arm64_engine, "ai-infra-plain").values())


@pytest.mark.anyio
async def test_the_served_image_runs_its_arm64_variant_and_amd64_builds_fall_back(arm64_engine):
    hub = dataclasses.replace(image("ai-infra-hub"), serves=80)
    slurm = dataclasses.replace(
        image("ai-infra-slurm", "FROM busybox\nARG HUB_URL\nARG ALLOW_SYSTEM_SLURM=false\n"),
        reaches={"HUB_URL": "ai-infra-hub"},
    )
    await release_on_arm64(plan_of(hub, slurm))
    assert arm64_engine["served"] == [("ai-infra-hub", NATIVE)]  # not emulated amd64
    args = args_of(arm64_engine, "ai-infra-slurm")
    assert args[NATIVE] == {"HUB_URL": "http://10.87.0.9:80"}
    # AppHub holds arm64's Slurm packages only: amd64 takes the distribution's, as build.sh.
    assert args["linux/amd64"] == {"HUB_URL": "http://10.87.0.9:80", "ALLOW_SYSTEM_SLURM": "true"}
