"""Paths through the CLI's entry point: every path argument is checked for its kind and
permissions before any work (exit 2, one line naming it and the OS's reason).

The tests run as root, which permission bits do not stop: the OS's refusals are raised at
the boundary (os.listdir, os.stat, os.scandir, tempfile.mkdtemp, a blob's copy), plus a real
refusal where this machine has one (/sys takes no new folder, even from root)."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import pytest

MINI_MATRIX = Path(__file__).resolve().parents[2] / "examples" / "mini-matrix"
EACCES = PermissionError(errno.EACCES, "Permission denied")


@pytest.fixture(autouse=True)
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_EXPERIMENTAL_DAGGER_RUNNER_HOST", "unix:///nonexistent")


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
