"""Error types. Each carries the exit code the doors use; the message is one line for people."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class PipelineError(Exception):
    """Base of every error the pipeline reports to a person."""

    exit_code = 1


class BadInput(PipelineError):
    """Wrong settings, arguments or source layout: found before any build starts."""

    exit_code = 2


class BuildFailed(PipelineError):
    """One or more images did not build for one or more platforms."""


class DownloadFailed(PipelineError):
    """A file the prepare step downloads is unreachable or not the one its lock pins."""


class PublishFailed(PipelineError):
    """A registry refused, failed or returned an index that lacks a platform."""


class BundleError(PipelineError):
    """An offline bundle is incomplete, corrupt or could not be written or pushed."""


@contextmanager
def writing(what: str, path: Path, error: type[PipelineError] = PipelineError) -> Iterator[None]:
    """A file-system error while `path` is written (full, read-only, ...) is one line naming
    it; inside the engine session the SDK would blame "starting the engine session"."""
    try:
        yield
    except OSError as err:
        raise error(f"cannot write {what} {path} ({err.strerror or err})") from None
