"""The CLI door's host adapter: what it takes from this machine (the checkout) and writes back
to it (exported folders, the JSON report, the job summary); the registry password is read by
flags.py."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import dagger

from pipeline.errors import BadInput, writing
from pipeline.events import Events
from pipeline.planning import settings
from pipeline.planning.downloads import LOCK_FILE, Download, write_lock
from pipeline.planning.prepare import SSH_KEY_STORE, kept_files, kept_names, write_files
from pipeline.run import engine
from pipeline.run.engine import Deliver, exporting_to
from pipeline.run.report import Report

# What the engine may upload from the checkout; .env never leaves the host.
SOURCE_EXCLUDES = [".env", ".git", "**/node_modules"]


DEFAULT_SSH_KEY_DIR = Path(settings.DEFAULT_SSH_KEY_DIR)


def checkout(path: Path, ssh_key_dir: str | None = None) -> engine.Checkout:
    """The checkout as the engine sees it, the stores kept on this host (the SSH key pair's
    folder, TLS folders beside it) and its downloads.lock."""
    keys = Path(ssh_key_dir).expanduser() if ssh_key_dir else DEFAULT_SSH_KEY_DIR.expanduser()
    return engine.Checkout(
        directory=lambda client: client.host().directory(
            str(path.resolve()), exclude=SOURCE_EXCLUDES
        ),
        kept=kept_store(keys),
        pin=lock_pinning(path),
    )


def kept_store(ssh_key_dir: Path):
    """Each store's files in its folder (the SSH key pair's is `ssh_key_dir`, the others are
    beside it), made there the first time (and said so)."""

    async def kept(store: str, events: Events, client: dagger.Client) -> dagger.Directory:
        folder = ssh_key_dir if store == SSH_KEY_STORE else ssh_key_dir.parent / store
        if ensure_made(folder, store):
            events.note(f"made {store} in {folder}; later releases use it"
                        " (PIPELINE_SSH_KEY_DIR chooses the folder)")  # fmt: skip
        return client.host().directory(str(folder), include=list(kept_names(store)))

    return kept


def lock_pinning(root: Path):
    def pin(first: list[tuple[Download, str]], events: Events) -> None:
        write_lock(root, first)
        events.note(f"pinned {len(first)} download(s) in {root / LOCK_FILE}: commit it")

    return pin


def ensure_key_pair(folder: Path) -> bool:
    return ensure_made(folder, SSH_KEY_STORE)


def ensure_made(folder: Path, store: str) -> bool:
    """Make the store's files in `folder` unless they are there; whether they were made. They
    are made aside and renamed into place whole: of two first runs at once, one set is kept,
    and both use it (each writing its own into the folder gave their images different keys)."""
    first = kept_names(store)[0]
    if (folder / first).is_file():
        return False
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    partial.mkdir(mode=0o700)
    write_files(partial, kept_files(store))
    try:
        partial.rename(folder)  # replaces an empty folder, never a kept set
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not (folder / first).is_file():
            raise BadInput(
                f"{folder}: holds other files but no {first} (PIPELINE_SSH_KEY_DIR)"
            ) from None
        return False  # another run made its set first
    return True


def folder(output: Path) -> Deliver:
    """Write an engine directory at `output`: under a temporary sibling, then renamed, so an
    interrupted export leaves nothing at `output` that looks complete."""

    async def deliver(directory: dagger.Directory) -> None:
        partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
        try:
            with writing("the export", output), exporting_to(output):
                output.parent.mkdir(parents=True, exist_ok=True)
                await directory.export(str(partial))
                partial.rename(output)
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    return deliver


def check_folder(path: Path, flag: str, what: str) -> None:
    """A folder the run reads (the checkout): there, a folder, and readable."""
    if not path.exists():
        raise BadInput(f"{flag} {path}: does not exist")
    if not path.is_dir():
        raise BadInput(f"{flag} {path}: is a file, not a folder ({what})")
    try:
        os.listdir(path)
    except OSError as err:
        raise BadInput(f"{flag} {path}: cannot read it ({err.strerror})") from None


def check_output_folder(path: Path, flag: str) -> None:
    """A folder the run makes at the end (its missing parents too): the nearest folder that
    exists above it must take a new entry, found now and not after every build."""
    above = next(p for p in path.absolute().parents if os.path.exists(p))
    if not above.is_dir():
        raise BadInput(f"{flag} {path}: {above} is a file, not a folder")
    try:  # a real try, not os.access: that passes root where a write still fails (/sys)
        os.rmdir(tempfile.mkdtemp(prefix=".write-check-", dir=above))
    except OSError as err:
        raise BadInput(f"{flag} {path}: cannot write in {above} ({err.strerror})") from None


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
