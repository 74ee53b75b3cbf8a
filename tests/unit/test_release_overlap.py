"""The release orchestration with the engine faked at its boundary (build_one, publish_image;
both run for real in tests/e2e): an image is published as soon as its platforms are built,
while slower builds go on, and never when a platform failed."""

import anyio
import pytest

from pipeline import build, release
from pipeline.build import Built
from pipeline.plan import ImagePlan, Plan
from pipeline.publish import Published, RegistryAccess
from pipeline.settings import load_settings

PLATFORMS = ("linux/amd64", "linux/arm64")
SECONDS = {"ai-infra-fast": 0.01, "ai-infra-slow": 0.3, "ai-infra-broken": 0.01}


def image(name: str) -> ImagePlan:
    return ImagePlan(
        name=name.removeprefix("ai-infra-"), image=name, ref=f"h:5000/p/{name}:v1",
        dockerfile=f"src/{name}/Dockerfile", dockerfile_text="FROM busybox\n", target=None,
        phase="dependent", build_args={}, uses_build_platform=False,
    )  # fmt: skip


@pytest.fixture
def events(monkeypatch, tmp_path) -> list[str]:
    log: list[str] = []

    async def build_one(context, img, platform, native):
        await anyio.sleep(SECONDS[img.image])
        log.append(f"built {img.image} {platform}")
        if img.image == "ai-infra-broken" and platform == "linux/arm64":
            return Built(img, platform, 0.0, error="exit 1")
        return Built(img, platform, 0.0, container=object())

    async def publish_image(img, builds, access, per_arch_tags):
        log.append(f"publish {img.image}")
        return Published(img, digest="sha256:0", platforms=dict.fromkeys(PLATFORMS))

    async def native_platform():
        return "linux/amd64"

    monkeypatch.setattr(build, "build_one", build_one)
    monkeypatch.setattr(build, "native_platform", native_platform)
    monkeypatch.setattr(build, "build_context", lambda source: None)
    monkeypatch.setattr(release, "publish_image", publish_image)
    return log


@pytest.mark.anyio
async def test_each_image_is_published_once_built_while_others_build(events, tmp_path):
    plan = Plan(
        tag="v1", platforms=PLATFORMS, registry="h:5000/p", dependencies=(), skipped=(),
        components=tuple(image(n) for n in ("ai-infra-slow", "ai-infra-fast", "ai-infra-broken")),
    )  # fmt: skip
    settings = load_settings(tmp_path, {}, {"private_registry": "h:5000/p"})
    report = await release.release(plan, settings, None, RegistryAccess(), lambda _: None)
    assert events.index("publish ai-infra-fast") < events.index("built ai-infra-slow linux/amd64")
    assert "publish ai-infra-slow" in events
    assert "publish ai-infra-broken" not in events  # a platform failed: no index
    assert {row.image: row.status for row in report.images} == {
        "ai-infra-slow": "published",
        "ai-infra-fast": "published",
        "ai-infra-broken": "failed",
    }


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
