"""The core run from a local checkout (the CLI door): open the engine session, hand the
checkout and the registry password to the engine, write the outputs on this host."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import dagger
from dagger import dag

from pipeline import buildlog, engine, offline
from pipeline.build import LOG_TAIL_LINES, dockerfile_path
from pipeline.bundle.create import CreateResult
from pipeline.errors import BadInput, BuildFailed
from pipeline.plan import Plan
from pipeline.publish import PUBLISH_TIMEOUT, Published, RegistryAccess, run_secret
from pipeline.release import Progress, published_so_far, release, secret_values
from pipeline.report import Report, redact
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
    access = RegistryAccess(
        username=username,
        ca_cert=ca_cert,
        plain_http=plain_http,
        timeout=publish_timeout(os.environ),
    )
    secrets = secret_values(source, os.environ) | ({plaintext} if plaintext else set())
    published: dict[str, Published] = {}
    with engine_log() as log:
        try:
            async with engine.session(log):
                access = replace(access, password=run_secret(plaintext) if plaintext else None)
                report = await release(
                    plan, settings, host_source(source), access, progress, secrets, published
                )
        except engine.EngineGone as err:
            raise engine.EngineGone(f"{err}; {published_so_far(plan, published)}") from None
        return with_log_tails(report, plan, log, secrets)


async def cli_export(
    source: Path, settings: Settings, plan: Plan, output: Path, progress: Progress
) -> Report:
    with engine_log() as log:
        async with engine.session(log):
            tarballs, report = await offline.export_images(
                plan, settings, host_source(source), progress
            )
            await export_whole(tarballs, output)
        return with_log_tails(report, plan, log, secret_values(source, os.environ))


async def export_whole(directory: dagger.Directory, output: Path) -> None:
    """Write under a temporary sibling, then rename: an interrupted export leaves nothing at
    `output` that looks complete."""
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        await directory.export(str(partial))
        partial.rename(output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def publish_timeout(env: Mapping[str, str]) -> float:
    """Seconds one publish try may take (PIPELINE_PUBLISH_TIMEOUT), checked before any build."""
    text = env.get("PIPELINE_PUBLISH_TIMEOUT", "").strip()
    if not text:
        return PUBLISH_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise BadInput(f"PIPELINE_PUBLISH_TIMEOUT={text!r}: not a number of seconds above 0")
    return seconds


def engine_log() -> TextIO:
    """Where the engine's progress goes: a real file (it is the CLI's stderr), read after the
    session for the output of failed steps, and deleted."""
    return tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace", prefix="engine-log-")


def with_log_tails(report: Report, plan: Plan, log: TextIO, secrets: set[str]) -> Report:
    """Put the last lines a failed step printed above BuildKit's one-line message."""
    log.seek(0)
    text = log.read()
    images = {image.image: image for image in plan.components}
    for row in report.images:
        image = images.get(row.image)
        for p in row.platforms:
            if image is None or p.status != "build-failed":
                continue
            tail = buildlog.failed_step_output(
                text, dockerfile_path(image), p.platform, image.target, LOG_TAIL_LINES
            )
            if tail:
                p.error = redact("\n".join([*tail, p.error or ""]).strip(), secrets)
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
