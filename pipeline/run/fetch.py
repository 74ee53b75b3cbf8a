"""The prepare step's downloads, fetched by the engine before any build (Dagger's HTTP
fetch: the engine caches it) and checked against `downloads.lock`."""

from __future__ import annotations

import re
from collections.abc import Sequence

import dagger

from pipeline.errors import DownloadFailed
from pipeline.planning.downloads import LOCK_FILE, Download
from pipeline.run.engine import CPU_PROBE_IMAGE

_MISMATCH = re.compile(r"checksum mismatch: expected (sha256:\w+), got (sha256:\w+)")


async def fetched(
    downloads: Sequence[Download], client: dagger.Client
) -> tuple[dict[str, dagger.File], list[tuple[Download, str]]]:
    """Each download's file; and the sha256 of those fetched for the first time."""
    files: dict[str, dagger.File] = {}
    first: list[tuple[Download, str]] = []
    for download in downloads:
        checksum = f"sha256:{download.sha256}" if download.sha256 else None
        file = client.http(download.url, checksum=checksum)
        try:
            await file.sync()
            if download.sha256 is None:
                first.append((download, await sha256(file, client)))
        except dagger.QueryError as err:
            raise _failed(download, err) from None
        files[download.path] = file
    return files, first


async def sha256(file: dagger.File, client: dagger.Client) -> str:
    out = await (
        client.container()
        .from_(CPU_PROBE_IMAGE)
        .with_mounted_file("/download", file)
        .with_exec(["sha256sum", "/download"])
        .stdout()
    )
    return out.split()[0]


def _failed(download: Download, err: dagger.QueryError) -> DownloadFailed:
    message = " ".join(str(err).split())
    mismatch = _MISMATCH.search(message)
    if mismatch:
        expected, got = mismatch.groups()
        return DownloadFailed(
            f"{download.path}: {LOCK_FILE} pins {expected} but {download.url} gave {got}; "
            "nothing was built"
        )
    return DownloadFailed(f"{download.url}: cannot download ({message[:200]}); nothing was built")
