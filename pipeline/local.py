"""The core run from a local checkout (the CLI door): open the engine session, hand the
checkout and the registry password to the engine, write the outputs on this host."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import dagger
from dagger import dag

from pipeline import engine, offline
from pipeline.bundle.create import CreateResult
from pipeline.errors import BadInput, BuildFailed
from pipeline.plan import Plan
from pipeline.publish import RegistryAccess
from pipeline.release import Progress, release, secret_values
from pipeline.report import Report
from pipeline.settings import Settings

# What the engine may upload from the checkout; .env never leaves the host.
SOURCE_EXCLUDES = [".env", ".git", "**/node_modules"]


@dataclass(frozen=True)
class PasswordSpec:
    """`env:VAR` or `file:PATH`, as Dagger's own CLI takes secrets: never the value itself."""

    kind: str
    where: str

    @classmethod
    def parse(cls, text: str) -> PasswordSpec:
        kind, _, where = text.partition(":")
        if kind not in ("env", "file") or not where:
            raise BadInput("--password takes env:VAR or file:PATH, never the password itself")
        return cls(kind, where)

    def read(self, env: Mapping[str, str]) -> str:
        if self.kind == "env":
            if not env.get(self.where):
                raise BadInput(f"--password env:{self.where}: the variable is not set")
            return env[self.where]
        try:
            return Path(self.where).read_text().strip()
        except OSError as err:
            raise BadInput(f"--password file:{self.where}: {err.strerror}") from None


def host_source(source: Path) -> dagger.Directory:
    return dag.host().directory(str(source.resolve()), exclude=SOURCE_EXCLUDES)


async def cli_release(
    source: Path,
    settings: Settings,
    plan: Plan,
    username: str | None,
    password: PasswordSpec | None,
    ca_cert: Path | None,
    plain_http: bool,
    progress: Progress,
) -> Report:
    plaintext = password.read(os.environ) if password else None
    async with engine.session():
        secret = dag.set_secret("registry-password", plaintext) if plaintext else None
        access = RegistryAccess(username, secret, ca_cert, plain_http)
        secrets = secret_values(source, os.environ) | ({plaintext} if plaintext else set())
        return await release(plan, settings, host_source(source), access, progress, secrets)


async def cli_export(
    source: Path, settings: Settings, plan: Plan, output: Path, progress: Progress
) -> Report:
    async with engine.session():
        tarballs, report = await offline.export_images(
            plan, settings, host_source(source), progress
        )
        await tarballs.export(str(output))
    return report


async def cli_bundle(
    source: Path,
    settings: Settings,
    plan: Plan,
    output: Path,
    archive: str | None,
    progress: Progress,
) -> CreateResult:
    async with engine.session():
        result, _ = await offline.make_bundle(
            plan, settings, host_source(source), output, archive, progress
        )
    return result


def write_report(report: Report, path: Path | None, env: Mapping[str, str]) -> None:
    """The JSON report where asked, and the Markdown table in the GitHub job summary."""
    if path is not None:
        path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    if env.get("GITHUB_STEP_SUMMARY"):
        with open(env["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as summary:
            summary.write(report.to_markdown())


__all__ = ["BuildFailed", "PasswordSpec", "cli_bundle", "cli_export", "cli_release", "write_report"]
