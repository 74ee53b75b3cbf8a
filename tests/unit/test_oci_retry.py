"""pipeline.oci.retry: the one policy, sync and async: bounded tries, exponential backoff, only
Transient failures retried, GaveUp carrying the last one."""

from pathlib import Path

import anyio
import pytest

from pipeline.oci import registry
from pipeline.oci.retry import GaveUp, Transient, retry, retry_async
from pipeline.run import access

# The retry policies are told on the registries page (moved there from README.md).
README = Path(__file__).resolve().parents[2] / "docs" / "harbor.md"


class Flaky:
    """Fails with the given exceptions, in order, then returns "done"."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


def test_transient_failures_are_retried_with_doubling_waits():
    sleeps: list[float] = []
    attempt = Flaky(Transient("a"), Transient("b"), Transient("c"))
    assert retry(attempt, tries=4, backoff=0.5, sleep=sleeps.append) == "done"
    assert sleeps == [0.5, 1.0, 2.0]


def test_gave_up_carries_the_last_failure_and_the_tries():
    sleeps: list[float] = []
    attempt = Flaky(*[Transient(f"try {n}") for n in range(1, 4)])
    with pytest.raises(GaveUp) as caught:
        retry(attempt, tries=3, backoff=1.0, sleep=sleeps.append)
    assert (caught.value.tries, str(caught.value.last)) == (3, "try 3")
    assert sleeps == [1.0, 2.0] and attempt.calls == 3


def test_other_failures_end_at_once():
    attempt = Flaky(ValueError("refused"))
    with pytest.raises(ValueError, match="refused"):
        retry(attempt, tries=3, backoff=1.0, sleep=lambda s: None)
    assert attempt.calls == 1


def test_async_uses_the_same_policy():
    sleeps: list[float] = []
    flaky = Flaky(Transient("a"), Transient("b"))

    async def attempt() -> str:
        return flaky()

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def main() -> None:
        assert await retry_async(attempt, tries=3, backoff=1.0, sleep=sleep) == "done"
        with pytest.raises(GaveUp):
            await retry_async(attempt_always_down, tries=2, backoff=1.0, sleep=sleep)

    async def attempt_always_down() -> str:
        raise Transient("down")

    anyio.run(main)
    assert sleeps == [1.0, 2.0, 1.0]


@pytest.mark.parametrize(
    ("tries", "backoff", "gave_up"),
    [
        (access.PUBLISH_TRIES, access.PUBLISH_BACKOFF, "gave up after"),
        (registry.TRIES, registry.BACKOFF_SECONDS, "failed after"),
    ],
)
def test_readme_states_each_retry_policy(tries: int, backoff: float, gave_up: str):
    """Pushes through the engine and requests of our registry client retry differently: the
    registries page (docs/harbor.md) says both, as the policy waits and as the error line counts."""
    sleeps: list[float] = []
    with pytest.raises(GaveUp):
        retry(Flaky(*[Transient("x")] * tries), tries=tries, backoff=backoff, sleep=sleeps.append)
    waits = ", ".join(f"{s:g} s" for s in sleeps)
    readme = " ".join(README.read_text().split())
    assert f"{tries} tries, {waits} apart (`{gave_up} {tries} tries`)" in readme
