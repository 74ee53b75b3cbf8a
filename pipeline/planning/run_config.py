"""How to run a plan, beside the plan (what to build and where it goes): resolved once from
the same settings, and none of it changes an image."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.planning.settings import PUBLISH_TIMEOUT, Settings


@dataclass(frozen=True)
class RunConfig:
    concurrency: int | None = None  # builds at once; None: the engines' CPUs
    rebuild: bool = False  # build even what an earlier release built from the same inputs
    publish_timeout: float = PUBLISH_TIMEOUT
    ssh_key_dir: str | None = None  # where the checkout keeps the generated key pair
    # Values no report may show; never printed (repr).
    secrets: frozenset[str] = field(default=frozenset(), repr=False)


def run_config(settings: Settings) -> RunConfig:
    return RunConfig(
        concurrency=settings.concurrency,
        rebuild=settings.rebuild,
        publish_timeout=settings.publish_timeout,
        ssh_key_dir=settings.ssh_key_dir,
        secrets=settings.secret_values,
    )
