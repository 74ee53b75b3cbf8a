"""The release orchestration with the engine faked at its boundary (build one image for one
platform, publish one image; both run for real in tests/e2e): when images are published,
what a failure blocks, how dependents are pinned, and what the report says and hides."""

from __future__ import annotations

import contextlib
import dataclasses

import anyio
import pytest

from pipeline.errors import BadInput, PipelineError
from pipeline.events import Events
from pipeline.oci.reference import tagged
from pipeline.planning.dockerfile import Dockerfile
from pipeline.planning.plan import ImagePlan, Plan
from pipeline.planning.run_config import RunConfig
from pipeline.run import engine, fleet, orchestrate
from pipeline.run.access import RegistryAccess
from pipeline.run.build import NOTHING_REACHED, Built, Reach
from pipeline.run.engine import EngineLog
from pipeline.run.publish import Published
from pipeline.run.report import Status
from pipeline.run.serve import Served
from pipeline.verbs import release

PLATFORMS = ("linux/amd64", "linux/arm64")
DIGEST = "sha256:" + "d" * 64


def image(name: str, text: str = "FROM busybox\n", needs: tuple[str, ...] = ()) -> ImagePlan:
    return ImagePlan(
        name=name.removeprefix("ai-infra-"), image=name, reference=tagged("h:5000/p", name, "v1"),
        dockerfile=Dockerfile(text, f"src/{name}/Dockerfile"), target=None,
        phase="dependent", build_args={}, needs=needs,
    )  # fmt: skip


def plan_of(*images: ImagePlan) -> Plan:
    return Plan(
        tag="v1", platforms=PLATFORMS, registry="h:5000/p", components=images,
        dependencies=(), skipped=(),
    )  # fmt: skip


class FakeEngine:
    """Builds and publishes in memory; `fail` names what fails: `image` (every platform),
    `image platform`, or `publish image`."""

    def __init__(
        self,
        seconds: dict[str, float] | None = None,
        fail: set[str] = frozenset(),
        services: dict[str, Served] | None = None,  # platform -> the service its builds reach
    ):
        self.seconds = seconds or {}
        self.fail = fail
        self.services = services or dict.fromkeys(
            PLATFORMS, Served("http://10.87.0.9:80", "linux/amd64")
        )
        self.log: list[str] = []
        self.built_from: dict[str, str] = {}  # image -> the Dockerfile text it was built from

    async def build(self, img: ImagePlan, platform: str, reach: Reach = NOTHING_REACHED) -> Built:
        await anyio.sleep(self.seconds.get(img.image, 0.0))
        self.log.append(f"built {img.image} {platform}")
        self.built_from[img.image] = img.dockerfile.text
        if {img.image, f"{img.image} {platform}"} & self.fail:
            return Built(img, platform, 0.5, error=f"exit 1 in {img.image} on {platform}")
        return Built(img, platform, 0.5, container=object())

    async def publish(self, img: ImagePlan, builds: list[Built]) -> Published:
        self.log.append(f"publish {img.image}")
        if f"publish {img.image}" in self.fail:
            return Published(img, error="registry h:5000: HTTP 500 Internal Server Error")
        return Published(img, digest=DIGEST, platforms=dict.fromkeys(PLATFORMS))

    async def serve(self, img: ImagePlan, builds: list[Built]) -> dict[str, Served]:
        self.log.append(f"serve {img.image}")
        if f"serve {img.image}" in self.fail:
            raise PipelineError("build-time service ai-infra-hub: no address")
        return self.services

    def steps(self, concurrency: int = 4) -> release.EngineSteps:
        return release.EngineSteps(self.build, self.serve, concurrency, self.publish)


async def run(plan: Plan, fake: FakeEngine, published: dict | None = None):
    published = {} if published is None else published
    return await release.publish_release(plan, fake.steps(), Events(), published)


@pytest.mark.anyio
async def test_each_image_is_published_once_built_while_others_build():
    fake = FakeEngine(seconds={"ai-infra-slow": 0.3}, fail={"ai-infra-broken linux/arm64"})
    plan = plan_of(image("ai-infra-slow"), image("ai-infra-fast"), image("ai-infra-broken"))
    report = await run(plan, fake)
    log = fake.log
    assert log.index("publish ai-infra-fast") < log.index("built ai-infra-slow linux/amd64")
    assert "publish ai-infra-slow" in log
    assert "publish ai-infra-broken" not in log  # a platform failed: no index
    assert {row.image: row.status for row in report.images} == {
        "ai-infra-slow": Status.PUBLISHED,
        "ai-infra-fast": Status.PUBLISHED,
        "ai-infra-broken": Status.FAILED,
    }
    broken = next(r for r in report.images if r.image == "ai-infra-broken")
    assert [(p.platform, p.status) for p in broken.platforms] == [
        ("linux/amd64", Status.NOT_PUBLISHED),
        ("linux/arm64", Status.BUILD_FAILED),
    ]
    assert report.failures == ["ai-infra-broken: build failed for linux/arm64"]
    assert not report.ok


@pytest.mark.anyio
async def test_a_dependent_is_built_from_the_published_digest_of_what_it_reads():
    base = image("ai-infra-base")
    app = image(
        "ai-infra-app", "FROM ai-infra-base:v1 AS b\nFROM busybox\n", needs=("ai-infra-base",)
    )
    fake = FakeEngine()
    report = await run(plan_of(base, app), fake)
    assert fake.log.index("publish ai-infra-base") < fake.log.index(
        "built ai-infra-app linux/amd64"
    )
    assert fake.built_from["ai-infra-app"].startswith(f"FROM h:5000/p/ai-infra-base:v1@{DIGEST}")
    assert report.ok and [r.status for r in report.images] == [Status.PUBLISHED] * 2


@pytest.mark.anyio
async def test_a_dependent_of_an_image_that_did_not_get_out_is_not_built():
    base = image("ai-infra-base")
    app = image("ai-infra-app", "FROM ai-infra-base:v1\n", needs=("ai-infra-base",))
    fake = FakeEngine(fail={"publish ai-infra-base"})
    published: dict[str, Published] = {}
    report = await run(plan_of(base, app), fake, published)
    assert not any("ai-infra-app" in line for line in fake.log)
    rows = {r.image: r for r in report.images}
    assert rows["ai-infra-base"].error == "registry h:5000: HTTP 500 Internal Server Error"
    assert [p.error for p in rows["ai-infra-app"].platforms] == [
        "not built: it reads ai-infra-base, which was not published"
    ] * 2
    assert rows["ai-infra-app"].status == Status.FAILED
    assert set(published) == {"ai-infra-base"}  # the caller sees what was tried


def served_plan() -> Plan:
    hub = dataclasses.replace(image("ai-infra-hub"), serves=80)
    user = dataclasses.replace(
        image("ai-infra-slurm", "FROM busybox\nARG HUB_URL\nARG ALLOW_SYSTEM_SLURM=false\n"),
        reaches={"HUB_URL": "ai-infra-hub"},
    )
    return plan_of(hub, user, image("ai-infra-other"))


@pytest.mark.anyio
async def test_an_image_reaching_a_build_time_service_builds_once_it_serves():
    fake = FakeEngine()
    report = await run(served_plan(), fake)
    log = fake.log
    assert log.index("serve ai-infra-hub") < log.index("built ai-infra-slurm linux/amd64")
    assert log.index("built ai-infra-other linux/amd64") < log.index("serve ai-infra-hub")
    assert report.ok and log.count("serve ai-infra-hub") == 1


async def build_args_of(plan: Plan, fake: FakeEngine) -> dict[str, dict]:
    """Release with `fake`; the build arguments each image x platform was built with."""
    args: dict[str, dict] = {}
    build = fake.build

    async def recording(img, platform, reach):
        urls = {arg: await service.address() for arg, service in reach.services.items()}
        args[f"{img.image} {platform}"] = img.build_args | dict(reach.args) | urls
        return await build(img, platform, reach)

    fake.build = recording
    await run(plan, fake)
    return args


@pytest.mark.anyio
async def test_the_service_url_is_passed_to_the_builds_that_reach_it(monkeypatch):
    fake = FakeEngine()
    args = await build_args_of(served_plan(), fake)
    url = {"HUB_URL": "http://10.87.0.9:80"}
    assert args["ai-infra-slurm linux/amd64"] == url
    # Another platform than the service's: what build.sh passes then, since it is declared.
    assert args["ai-infra-slurm linux/arm64"] == url | {"ALLOW_SYSTEM_SLURM": "true"}
    assert args["ai-infra-other linux/arm64"] == {}


@pytest.mark.anyio
async def test_with_an_engine_per_platform_each_build_reaches_the_service_on_its_engine():
    """Each engine serves its own copy (fleet.py): arm64's builds get arm64's, as a native
    arm64 host would run it, and so need no fallback."""
    fake = FakeEngine(
        services={
            "linux/amd64": Served("http://10.87.0.9:80", "linux/amd64"),
            "linux/arm64": Served("http://10.100.0.7:80", "linux/arm64"),
        }
    )
    args = await build_args_of(served_plan(), fake)
    assert args["ai-infra-slurm linux/amd64"] == {"HUB_URL": "http://10.87.0.9:80"}
    assert args["ai-infra-slurm linux/arm64"] == {"HUB_URL": "http://10.100.0.7:80"}


@pytest.mark.anyio
async def test_an_unreachable_engine_fails_its_platform_and_publishes_nothing_without_it():
    fake = FakeEngine()
    down = fleet.Engine("tcp://arm:1234", ("linux/arm64",), error="engine tcp://arm:1234 for "
                        "linux/arm64: unreachable (Connection refused)")  # fmt: skip
    unreachable = orchestrate.unreachable(down)

    async def build(img, platform, reach):
        chosen = unreachable if platform == "linux/arm64" else fake.build
        return await chosen(img, platform, reach)

    steps = release.EngineSteps(build, fake.serve, 4, fake.publish)
    plan = plan_of(image("ai-infra-a"), image("ai-infra-b"))
    report = await release.publish_release(plan, steps, Events(), {})
    assert not any(line.startswith("publish") for line in fake.log)
    for row in report.images:
        assert row.status == Status.FAILED
        amd64, arm64 = row.platforms
        assert (amd64.status, amd64.error) == (Status.NOT_PUBLISHED, None)  # built, kept
        assert arm64.status == Status.BUILD_FAILED and arm64.engine == "tcp://arm:1234"
        assert arm64.error == down.error
    assert report.failures == ["ai-infra-a, ai-infra-b: build failed for linux/arm64"]


@pytest.mark.anyio
@pytest.mark.parametrize("fail", ["ai-infra-hub linux/arm64", "serve ai-infra-hub"])
async def test_a_service_that_did_not_build_or_start_blocks_only_what_reaches_it(fail):
    fake = FakeEngine(fail={fail})
    report = await run(served_plan(), fake)
    rows = {r.image: r for r in report.images}
    assert rows["ai-infra-other"].status == Status.PUBLISHED
    assert {p.error for p in rows["ai-infra-slurm"].platforms} == {
        "not built: it reaches ai-infra-hub while it builds, which is not serving"
    }
    assert not any("built ai-infra-slurm" in line for line in fake.log)


def fake_connect(text: str = ""):
    @contextlib.asynccontextmanager
    async def connect():
        log = EngineLog()
        yield log
        log.text = text  # complete only once the session is over, as the real one

    return connect


@pytest.fixture(autouse=True)
def _no_registry(monkeypatch) -> None:
    """release() asks the registry about push rights first: tests/unit/test_push_rights.py."""
    monkeypatch.setattr(release, "check_push_rights", lambda plan, access: None)


@pytest.fixture
def fake_engine(monkeypatch) -> FakeEngine:
    fake = FakeEngine(fail={"ai-infra-leaky linux/arm64"})

    async def engine_steps(plan, run, checkout, events, engines, access):
        # Made a secret of this run in the session, with the run's timeout.
        run_access = access.in_session(run.publish_timeout)
        assert run_access.secret is not None and run_access.timeout == run.publish_timeout
        return fake.steps()

    monkeypatch.setattr(release, "engine_steps", engine_steps)
    return fake


# The engine's plain progress as buildlog.py reads it: the failed step printed a secret.
LEAKY_LOG = """\
1  : Directory.dockerBuild(dockerfile: "src/ai-infra-leaky/Dockerfile", platform: "linux/arm64"): Container!
2  : ┆ [2/2] RUN env && false
2  : ┆ [0.2s] | POSTGRES_PASSWORD=pg-Secr3t-value
2  : ┆ [0.2s] | token hunter2-pass
2  : ┆ [2/2] RUN env && false ERROR [0.3s]
2  : ┆ ! process "/bin/sh -c env && false" did not complete successfully: exit code: 1
"""  # noqa: E501


@pytest.mark.anyio
async def test_release_adds_the_failed_steps_output_and_redacts_every_secret(fake_engine):
    plan = plan_of(image("ai-infra-leaky"))
    run = RunConfig(secrets=frozenset({"pg-Secr3t-value"}))
    access = RegistryAccess(username="u", password="hunter2-pass", timeout=1.0)
    report = await release.release(
        plan, run, lambda: None, access, Events(), connect=fake_connect(LEAKY_LOG)
    )
    arm64 = report.images[0].platforms[1]
    assert arm64.status == Status.BUILD_FAILED
    assert arm64.error.splitlines() == [
        "POSTGRES_PASSWORD=***",
        "token ***",
        "exit 1 in ai-infra-leaky on linux/arm64",
    ]
    assert "Secr3t" not in report.to_markdown() and "hunter2" not in str(report.to_json())


@pytest.mark.anyio
async def test_the_plans_notes_are_said_before_the_builds():
    fake = FakeEngine()
    plan = dataclasses.replace(plan_of(image("ai-infra-a")), notes=("also built: hub",))
    lines: list[str] = []
    await release.publish_release(plan, fake.steps(), Events(lines.append), {})
    assert lines[0] == "also built: hub"


@pytest.mark.anyio
async def test_a_release_that_builds_no_image_is_bad_input_before_the_engine():
    plan = dataclasses.replace(plan_of(), selection=("os-base",))

    def no_engine():
        raise AssertionError("the engine was contacted")

    with pytest.raises(BadInput, match="PIPELINE_COMPONENTS=os-base builds no image: nothing"):
        await release.release(
            plan, RunConfig(), lambda: None, RegistryAccess(), Events(), connect=no_engine
        )


@pytest.mark.anyio
async def test_release_without_a_registry_is_bad_input_before_the_engine():
    plan = plan_of(image("ai-infra-a"))
    plan = dataclasses.replace(plan, registry=None)

    def no_engine():
        raise AssertionError("the engine was contacted")

    with pytest.raises(BadInput, match="release needs a registry"):
        await release.release(
            plan, RunConfig(), lambda: None, RegistryAccess(), Events(), connect=no_engine
        )


@pytest.mark.anyio
async def test_an_engine_gone_mid_run_says_what_got_out(monkeypatch):
    fake = FakeEngine(seconds={"ai-infra-slow": 5.0})

    async def engine_steps(plan, run, checkout, events, engines, access):
        return fake.steps()

    orchestrate = release.publish_release

    async def gone_after_fast_is_out(plan, steps, events, published):
        async with anyio.create_task_group() as group:
            group.start_soon(orchestrate, plan, steps, events, published)
            while "ai-infra-fast" not in published:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
        raise engine.EngineGone("the Dagger engine at unix:///x stopped answering")

    monkeypatch.setattr(release, "engine_steps", engine_steps)
    monkeypatch.setattr(release, "publish_release", gone_after_fast_is_out)
    with pytest.raises(engine.EngineGone) as caught:
        await release.release(
            plan_of(image("ai-infra-fast"), image("ai-infra-slow")), RunConfig(), lambda: None,
            RegistryAccess(), Events(), connect=fake_connect(),
        )  # fmt: skip
    assert str(caught.value) == (
        "the Dagger engine at unix:///x stopped answering; "
        "published: h:5000/p/ai-infra-fast:v1; not published: ai-infra-slow"
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_an_engines_setup_calls_run_together_and_fail_with_their_own_error():
    other_started = anyio.Event()

    async def first() -> int:
        await other_started.wait()  # awaited one after the other, this would never end
        return 1

    async def second() -> int:
        other_started.set()
        return 2

    with anyio.fail_after(5):
        assert await orchestrate.at_once(first(), second()) == [1, 2]

    async def failing() -> None:
        raise PipelineError("third_party/x.deb: sha256 mismatch")

    with pytest.raises(PipelineError, match="sha256 mismatch"):
        await orchestrate.at_once(second(), failing())
