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
from pipeline.planning.prepare import new_key_pair
from pipeline.run import engine
from pipeline.run.engine import Deliver, exporting_to
from pipeline.run.report import Report

# What the engine may upload from the checkout; .env never leaves the host.
SOURCE_EXCLUDES = [".env", ".git", "**/node_modules"]


DEFAULT_SSH_KEY_DIR = Path(settings.DEFAULT_SSH_KEY_DIR)


def checkout(path: Path, ssh_key_dir: str | None = None) -> engine.Checkout:
    """The checkout as the engine sees it, and the SSH key pair kept on this host."""
    keys = Path(ssh_key_dir).expanduser() if ssh_key_dir else DEFAULT_SSH_KEY_DIR.expanduser()
    return engine.Checkout(
        directory=lambda client: client.host().directory(
            str(path.resolve()), exclude=SOURCE_EXCLUDES
        ),
        ssh_keys=ssh_key_store(keys),
    )


def ssh_key_store(folder: Path):
    """The key pair in `folder`, made there the first time (and said so)."""

    async def keys(events: Events, client: dagger.Client) -> dagger.Directory:
        if ensure_key_pair(folder):
            events.note(f"made a new SSH key pair in {folder}; later releases use it "
                        "(PIPELINE_SSH_KEY_DIR chooses the folder)")  # fmt: skip
        return client.host().directory(str(folder), include=["id_rsa", "id_rsa.pub"])

    return keys


def ensure_key_pair(folder: Path) -> bool:
    """Make the pair in `folder` unless it is there; whether it was made. The pair is made
    aside and renamed into place whole: of two first runs at once, one pair is kept, and both
    use it (each writing its own into the folder gave their images different keys)."""
    if (folder / "id_rsa").is_file():
        return False
    private, public = new_key_pair()
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    partial.mkdir(mode=0o700)
    _write_whole(partial / "id_rsa.pub", public, 0o644)
    _write_whole(partial / "id_rsa", private, 0o600)
    try:
        partial.rename(folder)  # replaces an empty folder, never a pair
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not (folder / "id_rsa").is_file():
            raise BadInput(
                f"{folder}: holds other files but no id_rsa (PIPELINE_SSH_KEY_DIR)"
            ) from None
        return False  # another run made its pair first
    return True


def _write_whole(path: Path, data: bytes, mode: int) -> None:
    """Whole or not at all: a half-written key would be kept for ever."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    partial.rename(path)


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
