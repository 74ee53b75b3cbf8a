"""Paths through the CLI's entry point: every path argument is checked for its kind and
permissions before any work (exit 2, one line naming it and the OS's reason); a file-system
error while a bundle or an export is written is one line naming it (exit 1), nothing left
that looks complete; SIGTERM cleans up as SIGINT does.

The tests run as root, which permission bits do not stop: the OS's refusals are raised at
the boundary (os.listdir, os.stat, os.scandir, tempfile.mkdtemp, a blob's copy), plus a real
refusal where this machine has one (/sys takes no new folder, even from root)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import tempfile
from pathlib import Path

import anyio
import dagger
import gql
import pytest
from dagger._exceptions import QueryErrorValue

from pipeline.bundle import archive, create_bundle
from pipeline.bundle import create as create_module
from pipeline.bundle.create import CreateResult
from pipeline.doors.host import folder
from pipeline.errors import BundleError, PipelineError
from pipeline.run.engine import exporting_to

try:
    from tests.unit import bundle_fixtures as bf
except ImportError:  # tests/unit is not a package
    import bundle_fixtures as bf

MINI_MATRIX = Path(__file__).resolve().parents[2] / "examples" / "mini-matrix"
EACCES = PermissionError(errno.EACCES, "Permission denied")


@pytest.fixture(autouse=True)
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_EXPERIMENTAL_DAGGER_RUNNER_HOST", "unix:///nonexistent")


class SigtermNotHandled(BaseException):
    pass


def unhandled(signum, frame):
    raise SigtermNotHandled  # rather than end the test run, as SIGTERM's default would


@pytest.fixture(autouse=True)
def sigterm_fails_the_test():
    saved = signal.signal(signal.SIGTERM, unhandled)
    # A run started in the background (`cmd &`, nohup, some CI runners) ignores SIGINT; these
    # tests are about a run that takes it, as one in a terminal does.
    saved_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, saved_int)
    assert signal.signal(signal.SIGTERM, saved) is unhandled  # the code put it back


def error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def refuse(monkeypatch, module, name: str, path: Path, error: OSError) -> None:
    """`module.name(path, ...)` raises `error` for `path` alone, as the OS would."""
    real = getattr(module, name)

    def refusing(target, *args, **kwargs):
        if Path(target) == path:
            raise type(error)(error.errno, error.strerror, str(path))
        return real(target, *args, **kwargs)

    monkeypatch.setattr(module, name, refusing)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    shutil.copytree(MINI_MATRIX, tmp_path / "repo")
    return tmp_path / "repo"


# --- the checkout ---------------------------------------------------------------------------


def test_source_naming_a_file(cli, tmp_path: Path):
    (tmp_path / "f").write_text("x")
    code, out, err = cli("plan", "--source", str(tmp_path / "f"))
    assert (code, out) == (2, "")
    assert error_line(err) == (
        f"error: --source {tmp_path / 'f'}: is a file, not a folder (the AI-Infra-Matrix checkout)"
    )


def test_source_missing(cli, tmp_path: Path):
    code, _, err = cli("release", "--source", str(tmp_path / "no"), "--registry", "h.test/p")
    assert (code, error_line(err)) == (2, f"error: --source {tmp_path / 'no'}: does not exist")


def test_source_unreadable(cli, checkout: Path, monkeypatch):
    refuse(monkeypatch, os, "listdir", checkout, EACCES)
    code, _, err = cli("plan", "--source", str(checkout))
    assert (code, error_line(err)) == (
        2,
        f"error: --source {checkout}: cannot read it (Permission denied)",
    )


@pytest.mark.parametrize(
    ("name", "path", "shown"),
    [
        ("listdir", "src/slurm-master", "src/slurm-master"),  # a component folder
        ("stat", "src/gateway/Dockerfile", "src/gateway/Dockerfile"),  # a file the layout reads
        ("scandir", "src/gateway/www", "src/gateway/www"),  # a folder a build would upload
    ],
)
def test_an_unreadable_part_of_the_checkout(cli, checkout: Path, monkeypatch, name, path, shown):
    refuse(monkeypatch, os, name, checkout / path, EACCES)
    code, out, err = cli("plan", "--source", str(checkout))
    assert (code, out) == (2, "")
    assert error_line(err) == f"error: {shown}: cannot read (Permission denied)"


# --- where the run writes -------------------------------------------------------------------


def output_args(verb: str, output: Path) -> list[str]:
    base = ["--source", str(MINI_MATRIX), "--output", str(output)]
    return [*verb.split(), *base]


@pytest.mark.parametrize("verb", ["export", "bundle create"])
@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
        (EACCES, "Permission denied"),
    ],
)
def test_output_where_nothing_may_be_written(verb, error, reason, cli, tmp_path, monkeypatch):
    refuse(monkeypatch, tempfile, "mkdtemp", tmp_path, error)
    monkeypatch.setattr(tempfile, "mkdtemp", _dir_keyword(tempfile.mkdtemp))
    code, _, err = cli(*output_args(verb, tmp_path / "out" / "b"))
    assert (code, error_line(err)) == (
        2,
        f"error: --output {tmp_path / 'out' / 'b'}: cannot write in {tmp_path} ({reason})",
    )
    assert list(tmp_path.iterdir()) == []


def _dir_keyword(mkdtemp):
    """`mkdtemp(prefix=..., dir=X)` as `refuse` sees it: X first."""
    return lambda *args, dir=None, **kw: mkdtemp(dir, *args, **kw) if dir else mkdtemp(*args, **kw)


@pytest.mark.parametrize("verb", ["export", "bundle create"])
def test_output_under_a_file(verb, cli, tmp_path: Path):
    (tmp_path / "f").write_text("x")
    code, _, err = cli(*output_args(verb, tmp_path / "f" / "b"))
    assert (code, error_line(err)) == (
        2,
        f"error: --output {tmp_path / 'f' / 'b'}: {tmp_path / 'f'} is a file, not a folder",
    )


def test_output_on_a_file_system_that_refuses_for_real(cli):
    try:
        os.rmdir(tempfile.mkdtemp(dir="/sys"))
        pytest.skip("/sys takes new folders here")
    except OSError as err:
        reason = err.strerror
    code, _, err = cli(*output_args("bundle create", Path("/sys/bundles/b")))
    assert (code, error_line(err)) == (
        2,
        f"error: --output /sys/bundles/b: cannot write in /sys ({reason})",
    )


# --- a bundle that cannot be written whole --------------------------------------------------


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".bundle"))


@pytest.fixture
def sources(tmp_path: Path):
    return bf.two_sources(tmp_path / "src")


def failing_copy(monkeypatch, after: int, fail) -> None:
    real, calls = create_module.copy_blob, []

    def copy(*args, **kwargs):
        calls.append(1)
        if len(calls) == after:
            fail()
        return real(*args, **kwargs)

    monkeypatch.setattr(create_module, "copy_blob", copy)


def raise_(error: BaseException):
    def fail():
        raise error

    return fail


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        (OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
    ],
)
def test_a_full_or_read_only_file_system_while_the_bundle_is_written(
    error, reason, sources, tmp_path: Path, monkeypatch
):
    failing_copy(monkeypatch, 3, raise_(error))
    out = tmp_path / "bundle"
    with pytest.raises(BundleError) as caught:
        create_bundle(out, [s.image for s in sources], bf.PLATFORMS, archive="tar")
    assert str(caught.value) == f"cannot write the bundle {out} ({reason})"
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_full_file_system_while_the_archive_is_written(sources, tmp_path: Path, monkeypatch):
    def full(root, fileobj, mtime):
        fileobj.write(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive, "_write_tar", full)
    out = tmp_path / "bundle"
    with pytest.raises(BundleError) as caught:
        create_bundle(out, [s.image for s in sources], bf.PLATFORMS, archive="tar.zst")
    assert str(caught.value) == (
        f"cannot write the archive {out}.tar.zst (No space left on device)"
    )
    assert not out.exists() and leftovers(tmp_path) == []  # the bundle goes with its archive


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_blobs_are_copied_leaves_nothing(
    signum, sources, tmp_path: Path, monkeypatch
):
    failing_copy(monkeypatch, 3, lambda: signal.raise_signal(signum))
    out = tmp_path / "bundle"
    with pytest.raises(KeyboardInterrupt):
        create_bundle(out, [s.image for s in sources], bf.PLATFORMS)
    assert not out.exists() and leftovers(tmp_path) == []


def test_sigint_while_the_archive_is_written_leaves_no_bundle(sources, tmp_path: Path, monkeypatch):
    """Stopped before it is complete: no folder without the archive that was asked for."""

    def interrupted(root, fileobj, mtime):
        fileobj.write(b"x" * 10)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(archive, "_write_tar", interrupted)
    out = tmp_path / "bundle"
    with pytest.raises(KeyboardInterrupt):
        create_bundle(out, [s.image for s in sources], bf.PLATFORMS, archive="tar")
    assert not out.exists() and not (tmp_path / "bundle.tar").exists()
    assert leftovers(tmp_path) == []


# --- the same through the CLI, the engine's part faked --------------------------------------


@pytest.fixture
def bundle_create(cli, sources, tmp_path: Path, monkeypatch):
    """`bundle create` whose builds are done: only the writing of the bundle is real."""

    async def export_bundle(plan, run, checkout, output, archive, events, **kw) -> CreateResult:
        return create_bundle(output, [s.image for s in sources], bf.PLATFORMS, archive)

    monkeypatch.setattr("pipeline.verbs.export.export_bundle", export_bundle)
    out = tmp_path / "out" / "bundle"
    return lambda: cli(*output_args("bundle create", out), "--archive", "tar"), out


def test_cli_a_full_disk_is_one_line(bundle_create, monkeypatch):
    run, out = bundle_create
    failing_copy(monkeypatch, 2, raise_(OSError(errno.ENOSPC, "No space left on device")))
    code, _, err = run()
    assert (code, error_line(err)) == (
        1,
        f"error: cannot write the bundle {out} (No space left on device)",
    )
    assert list(out.parent.iterdir()) == []


def test_cli_sigterm_cleans_up_as_sigint_does(bundle_create, monkeypatch):
    run, out = bundle_create
    failing_copy(monkeypatch, 2, lambda: signal.raise_signal(signal.SIGTERM))
    code, _, _ = run()
    assert code == 128 + signal.SIGTERM
    assert list(out.parent.iterdir()) == []


def test_cli_sigterm_anywhere_ends_as_sigint_does(cli, monkeypatch):
    """Outside the bundle's writing too: SIGTERM does what SIGINT does there."""

    def terminated(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr("pipeline.doors.cli.resolve", terminated)
    code, out, _ = cli("plan", "--source", str(MINI_MATRIX))
    assert (code, out) == (128 + signal.SIGTERM, "")


def test_cli_sigint_while_the_archive_is_written_stops_it(bundle_create, monkeypatch):
    """In the event loop, asyncio takes SIGINT as a cancel for the next await: the bundle
    used to be finished first, and the run exit 130 all the same."""

    def interrupted(root, fileobj, mtime):
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(archive, "_write_tar", interrupted)
    run, out = bundle_create
    code, _, _ = run()
    assert code == 130
    assert list(out.parent.iterdir()) == []


class FakeDirectory:
    """An engine directory whose export to this host fails as the engine says it."""

    def __init__(self, text: str) -> None:
        self.text = text

    async def export(self, path: str) -> str:
        Path(path).mkdir()  # half written
        (Path(path) / "ai-infra-gateway.tar").write_bytes(b"x")
        request = gql.GraphQLRequest(gql.gql("{ directory { id } }"))
        raise dagger.QueryError([QueryErrorValue(message=self.text)], request)


FULL = "failed to export: write /out/.x.partial-1/ai-infra-gateway.tar: no space left on device"


def test_an_export_the_engine_cannot_write_is_one_line(tmp_path: Path):
    out = tmp_path / "exported"
    with pytest.raises(PipelineError) as caught:
        anyio.run(folder(out), FakeDirectory(FULL))
    assert str(caught.value) == f"cannot write {out} (No space left on device)"
    assert list(tmp_path.iterdir()) == []


def test_other_engine_errors_at_export_are_not_called_a_full_disk(tmp_path: Path):
    with pytest.raises(dagger.QueryError):
        anyio.run(folder(tmp_path / "exported"), FakeDirectory("pull access denied for x"))
    assert list(tmp_path.iterdir()) == []


def test_several_engines_writing_at_once_fail_as_one(tmp_path: Path):
    async def two_exports() -> None:
        with exporting_to(tmp_path / "b"):
            async with anyio.create_task_group() as group:
                group.start_soon(FakeDirectory(FULL).export, str(tmp_path / "one"))
                group.start_soon(
                    FakeDirectory("read-only file system").export, str(tmp_path / "two")
                )

    with pytest.raises(
        PipelineError,
        match=r"^cannot write .*/b \((No space left on device|Read-only file system)\)$",
    ):
        anyio.run(two_exports)
