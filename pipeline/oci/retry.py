"""The one retry policy for registry traffic, sync (the registry client) and async (a push
by the engine): a bounded number of tries with exponential backoff (``backoff``, then twice
that, ...), only after a failure marked Transient; anything else ends at once."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

T = TypeVar("T")


class Transient(Exception):
    """A failure worth another try (connection trouble, no answer, 429, 5xx)."""


class GaveUp(Exception):
    """Every try failed; ``last`` is the last Transient, for the caller's one-line error."""

    def __init__(self, tries: int, last: BaseException | None) -> None:
        super().__init__(f"gave up after {tries} tries: {last}")
        self.tries = tries
        self.last = last


def _policy(tries: int, backoff: float, sleep: Callable[[float], Any]) -> dict[str, Any]:
    tries = max(tries, 1)

    def give_up(state: RetryCallState) -> NoReturn:
        raise GaveUp(tries, state.outcome.exception() if state.outcome else None)

    return {
        "stop": stop_after_attempt(tries),
        "wait": wait_exponential(multiplier=backoff),
        "retry": retry_if_exception_type(Transient),
        "sleep": sleep,
        "retry_error_callback": give_up,
    }


def retry(
    attempt: Callable[[], T],
    *,
    tries: int,
    backoff: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``attempt()`` until it returns or raises anything but Transient; GaveUp after ``tries``."""
    return Retrying(**_policy(tries, backoff, sleep))(attempt)


async def retry_async(
    attempt: Callable[[], Awaitable[T]],
    *,
    tries: int,
    backoff: float,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> T:
    """``retry`` for a coroutine function; waits with ``anyio.sleep``."""
    return await AsyncRetrying(**_policy(tries, backoff, sleep))(attempt)
