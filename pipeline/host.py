"""The CLI door's host adapter: what it takes from this machine (the checkout) and writes back
to it (exported folders, the JSON report, the job summary); the registry password is read by
registry_flags."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import dagger
from dagger import dag

from pipeline import engine
from pipeline.errors import BadInput
from pipeline.export import Deliver
from pipeline.report import Report

# What the engine may upload from the checkout; .env never leaves the host.
SOURCE_EXCLUDES = [".env", ".git", "**/node_modules"]


def checkout(path: Path) -> engine.Source:
    """The checkout as the engine sees it (named once the session is open)."""
    return lambda: dag.host().directory(str(path.resolve()), exclude=SOURCE_EXCLUDES)


def folder(output: Path) -> Deliver:
    """Write an engine directory at `output`: under a temporary sibling, then renamed, so an
    interrupted export leaves nothing at `output` that looks complete."""

    async def deliver(directory: dagger.Directory) -> None:
        partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
        output.parent.mkdir(parents=True, exist_ok=True)
        try:
            await directory.export(str(partial))
            partial.rename(output)
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    return deliver


def check_writable(path: Path, flag: str) -> None:
    """A file written at the end of a run: found unwritable now, not after every build."""
    if path.is_dir():
        raise BadInput(f"{flag} {path}: is a directory")
    folder = path.parent
    if not folder.is_dir():
        raise BadInput(f"{flag} {path}: folder {folder} does not exist")
    target = path if path.exists() else folder
    if not os.access(target, os.W_OK):
        raise BadInput(f"{flag} {path}: {target} is not writable")


def write_report(report: Report, path: Path | None, env: Mapping[str, str]) -> None:
    """The JSON report where asked, and the Markdown table in the GitHub job summary."""
    if path is not None:
        path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    if env.get("GITHUB_STEP_SUMMARY"):
        with open(env["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as summary:
            summary.write(report.to_markdown())
