"""Bad input through the CLI's entry point, with no engine to reach: each case ends in one
`error:` line and exit 2 before any build (contacting the engine would fail with exit 1,
starting a process fails the test), and the control case shows that good input does go for
the engine."""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.doors.cli import main
from pipeline.planning.settings import ENV_NAMES

MINI_MATRIX = Path(__file__).resolve().parents[2] / "examples" / "mini-matrix"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    def run(*args: str, env: dict[str, str]) -> Result:
        for name in [*ENV_NAMES.values(), "PIPELINE_DEBUG"]:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(SystemExit) as info:
            main(list(args))
        out, err = capsys.readouterr()
        return Result(info.value.code or 0, out, err)

    return run


def one_error(result: Result) -> str:
    """The run's single `error: ...` line, which must also be the last line of stderr."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert result.stderr.rstrip().splitlines()[-1] == lines[0]
    return lines[0]


NO_ENGINE = {"_EXPERIMENTAL_DAGGER_RUNNER_HOST": "unix:///nonexistent"}


def copy_of(tmp_path: Path, change) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(MINI_MATRIX, repo)
    change(repo)
    return repo


def _no_backend_dockerfile(repo: Path) -> None:
    (repo / "src/backend/Dockerfile").unlink()


def _no_portal_version(repo: Path) -> None:
    for name in (".env.example", ".env"):  # the example fills what .env lacks
        text = (repo / ".env.example").read_text()
        (repo / name).write_text(re.sub(r"(?m)^PORTAL_VERSION=.*\n", "", text))


def _reads_the_gateway(repo: Path) -> None:
    (repo / "src/node").mkdir()
    (repo / "src/node/Dockerfile").write_text(
        "FROM busybox:1.36\nCOPY --from=ai-infra-gateway:latest /www /www\n"
    )


def _env_not_utf8(repo: Path) -> None:
    (repo / ".env").write_bytes(b"IMAGE_TAG=v1\nPOSTGRES_PASSWORD=\xff\xfe-Secr3t\n")


def _env_line_malformed(repo: Path) -> None:
    (repo / ".env").write_text("IMAGE_TAG=v1\n\n# the database\nPOSTGRES_PASSWORD Secr3t\n")


BAD_INPUT = {
    "unknown component": (
        None, ["release", "--components", "gatewy"], "PIPELINE_COMPONENTS: unknown 'gatewy'",
    ),
    "empty component list": (
        None, ["release", "--components", ""],
        "error: PIPELINE_COMPONENTS='' (from arguments): an empty list selects nothing; "
        "unset it to build every component",
    ),
    "empty component list in the environment": (
        None, ["plan"], "PIPELINE_COMPONENTS='' (from environment): an empty list selects nothing",
    ),
    "malformed tag": (None, ["release", "--tag", "v1/../x"], "IMAGE_TAG='v1/../x'"),
    "unknown platform": (
        None, ["release", "--platforms", "linux/amd64,linux/s390x"], "unknown platform 'linux/s3",
    ),
    "missing Dockerfile": (
        _no_backend_dockerfile, ["release"],
        "src/backend/build-targets.conf names images but src/backend has no Dockerfile",
    ),
    "missing template variable": (
        _no_portal_version, ["release"],
        "src/portal/Dockerfile.tpl: template variable PORTAL_VERSION has no value",
    ),
    "unreadable .env": (_env_not_utf8, ["release"], ".env: cannot read (not UTF-8)"),
    "malformed .env line": (
        _env_line_malformed, ["plan"], "error: .env:4: not a KEY=VALUE line",
    ),
    "no registry": (None, ["release", "--registry", ""], "release needs a registry"),
    "malformed registry": (None, ["release", "--registry", "https://h/p"], "PRIVATE_REGISTRY="),
    "registry with a password": (
        None, ["release", "--registry", "robot:hunter2@h.example/p"],
        "PRIVATE_REGISTRY='***@h.example/p' (from arguments): a registry holds no user or password",
    ),
    "registry port too high": (
        None, ["release", "--registry", "h.example:99999/p"], "port 99999 is not in 1-65535",
    ),
    "registry port 0": (None, ["plan", "--registry", "h.example:0/p"], "port 0 is not in 1-65535"),
    "registry not a host": (
        None, ["plan", "--registry", "harbor"],
        "'harbor' is not a registry host (no dot, no port, not localhost); "
        "expected host[:port]/project",
    ),
    "password as a value": (None, ["release", "--password", "hunter2"], "--password takes env:"),
    "password variable unset": (
        None, ["release", "--username", "u", "--password", "env:NO_SUCH_VARIABLE"],
        "error: --password env:NO_SUCH_VARIABLE: the variable is not set",
    ),
    "password without a user": (
        None, ["release", "--password", "env:X"], "error: --password needs --username",
    ),
    "password from stdin without a user": (
        None, ["release", "--password-stdin"], "error: --password-stdin needs --username",
    ),
    "user without a password": (
        None, ["release", "--username", "robot"],
        "error: --username needs --password env:VAR|file:PATH or --password-stdin",
    ),
    "two passwords": (
        None, ["release", "--username", "u", "--password", "env:X", "--password-stdin"],
        "error: give --password or --password-stdin, not both",
    ),
    "missing CA": (None, ["release", "--ca-cert", "/nonexistent/ca.crt"], "--ca-cert"),
    "report in a missing folder": (
        None, ["release", "--report-json", "/no/such/dir/r.json"],
        "error: --report-json /no/such/dir/r.json: folder /no/such/dir does not exist",
    ),
    "report on a folder": (
        None, ["release", "--report-json", "{tmp}"], "--report-json {tmp}: is a directory",
    ),
    "bad publish timeout": (None, ["release", "--tag", "v1"], "PIPELINE_PUBLISH_TIMEOUT='soon'"),
    "bundle: unknown component": (
        None, ["bundle", "create", "--components", "nope"], "unknown 'nope'",
    ),
    "bundle: malformed tag": (None, ["bundle", "create", "--tag", "-x"], "IMAGE_TAG='-x'"),
    "bundle: archive format": (
        None, ["bundle", "create", "--archive", "zip"], "unknown archive format 'zip'",
    ),
    "bundle: missing template variable": (
        _no_portal_version, ["bundle", "create"], "PORTAL_VERSION has no value",
    ),
    "bundle: output exists": (None, ["bundle", "create", "--output", "{tmp}"], "already exists"),
    "export: reads a release image": (
        _reads_the_gateway, ["export", "--components", "node,gateway", "--output", "{tmp}/x"],
        "ai-infra-node reads ai-infra-gateway at build time: release to a registry first",
    ),
    "bundle: reads a release image": (
        _reads_the_gateway, ["bundle", "create", "--components", "node,gateway"],
        "ai-infra-node reads ai-infra-gateway at build time",
    ),
    "bundle: --since missing": (
        None, ["bundle", "create", "--since", "/no/such/bundle"],
        "error: previous bundle /no/such/bundle does not exist",
    ),
    "bundle: --since not a bundle": (
        None, ["bundle", "create", "--since", "{tmp}"], "is not a bundle: it has no inventory.json",
    ),
    "bundle: --sign-key given as the key": (
        None, ["bundle", "create", "--sign-key", "MHcCAQEEIFd7AAJ"],
        "error: --sign-key takes env:VAR or file:PATH, never the key itself",
    ),
    "bundle: --sign-key not a key": (
        None, ["bundle", "create", "--sign-key", f"file:{MINI_MATRIX / 'README.md'}"],
        "README.md: not a PEM private key",
    ),
    "per-arch tag too long": (
        None, ["release", "--tag", "v" + "1" * 125],
        "error: IMAGE_TAG is 126 characters, and with PIPELINE_PER_ARCH_TAGS=true the release "
        "also pushes <IMAGE_TAG>-amd64 (132 characters) while a tag has at most 128: shorten "
        "IMAGE_TAG to 122 characters or set PIPELINE_PER_ARCH_TAGS=false",
    ),
    "per-arch tag too long on arm/v7": (
        None, ["plan", "--tag", "v" + "1" * 122, "--platforms", "linux/arm/v7"],
        "also pushes <IMAGE_TAG>-armv7 (129 characters)",
    ),
    "release of a dependency only": (
        None, ["release", "--components", "os-base"],
        "error: PIPELINE_COMPONENTS=os-base builds no image: it selects only dependencies: "
        "os-base (third-party images, which release does not push); name a component "
        "(src/<name>/Dockerfile) too",
    ),
    "bundle: --sign-key variable unset": (
        None, ["bundle", "create", "--sign-key", "env:NO_SUCH_SIGN_KEY"],
        "error: --sign-key env:NO_SUCH_SIGN_KEY: the variable is not set",
    ),
}  # fmt: skip


CASE_ENV = {
    "password without a user": {"X": "hunter2"},
    "two passwords": {"X": "hunter2"},
    "bad publish timeout": {"PIPELINE_PUBLISH_TIMEOUT": "soon"},
    "empty component list in the environment": {"PIPELINE_COMPONENTS": ""},
    "per-arch tag too long": {"PIPELINE_PER_ARCH_TAGS": "true"},
    "per-arch tag too long on arm/v7": {"PIPELINE_PER_ARCH_TAGS": "true"},
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_8_bad_input_is_one_line_exit_2_before_any_engine(case: str, tmp_path: Path, run_cli):
    change, args, expected = BAD_INPUT[case]
    source = copy_of(tmp_path, change) if change else MINI_MATRIX
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    expected = expected.replace("{tmp}", str(tmp_path))
    where = ["--source", str(source)]
    if args[0] == "release" and "--registry" not in args:
        where += ["--registry", "127.0.0.1:5000/bad-input"]
    if args[:2] == ["bundle", "create"] and "--output" not in args:
        where += ["--output", str(tmp_path / "out" / "bundle")]
    env = dict(NO_ENGINE)
    env |= CASE_ENV.get(case, {})
    result = run_cli(*args, *where, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    line = one_error(result)
    assert expected in line
    assert result.stderr.count("\n") == 1  # nothing else: no build, no engine
    for secret in ("Secr3t", "hunter2"):
        assert secret not in result.stderr + result.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("registry", "expected"),
    [
        ("127.0.0.1:99999/p", "registry '127.0.0.1:99999/p': port 99999 is not in 1-65535"),
        ("h.example/AI", "registry 'h.example/AI': not host[:port]/project"),
        ("robot:hunter2@h.example/p", "registry '***@h.example/p': a registry holds no user"),
    ],
)
def test_bundle_push_refuses_a_bad_registry_at_once(
    registry: str, expected: str, tmp_path: Path, run_cli, monkeypatch
):
    """Exit 2 before stdin is read, the bundle opened or a host tried."""
    monkeypatch.setattr("sys.stdin", None)  # reading it would fail the test
    result = run_cli(
        "bundle", "push", str(tmp_path / "no-bundle"), "--registry", registry,
        "--username", "robot", "--password-stdin", env={},
    )  # fmt: skip
    assert result.returncode == 2
    assert one_error(result).startswith(f"error: {expected}")
    assert "hunter2" not in result.stderr + result.stdout


def test_8_good_input_does_reach_for_the_engine(run_cli):
    """The control for the cases above: with no engine, good input fails with exit 1 (quickly,
    rather than the CLI retrying a missing socket for ever)."""
    started = time.monotonic()
    result = run_cli(
        "release", "--source", str(MINI_MATRIX), "--registry", "127.0.0.1:5000/x", env=NO_ENGINE
    )
    assert result.returncode == 1
    assert one_error(result) == (
        "error: cannot reach the Dagger engine at unix:///nonexistent (No such file or directory)"
    )
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: (r / "src/backend/Dockerfile").write_text("FROM busybox\nRUNN echo\n"),
         "src/backend/Dockerfile:2: unknown instruction 'RUNN'"),
        (lambda r: (r / "src/backend/Dockerfile").write_text("ARG X=1\nFROM\n"),
         "src/backend/Dockerfile:2: FROM names no image"),
        (lambda r: (r / "src/backend/Dockerfile").write_bytes(b"\x7fELF\x02\x01\x01junk\n"),
         "src/backend/Dockerfile:1: not text (control characters): not a Dockerfile"),
        (lambda r: (r / "src/backend/Dockerfile").write_text("RUN true\nFROM busybox\n"),
         "src/backend/Dockerfile:1: RUN before the first FROM (only ARG may be)"),
        (lambda r: (r / "src/x").symlink_to("/usr/share"),
         "src/x: a symbolic link out of the checkout (to /usr/share)"),
        (lambda r: ((r / "src/gateway/Dockerfile").unlink(),
                    (r / "src/gateway/Dockerfile").symlink_to("/etc/passwd")),
         "src/gateway/Dockerfile: a symbolic link out of the checkout (to /etc/passwd)"),
        (lambda r: [shutil.rmtree(p) for p in (r / "src").iterdir()],
         "no component (src/<name>/Dockerfile) and no dependency.conf"),
    ],
)  # fmt: skip
def test_plan_finds_broken_dockerfiles_and_links_out_of_the_tree(change, expected, tmp_path,
                                                                  run_cli):  # fmt: skip
    repo = copy_of(tmp_path, change)
    result = run_cli("plan", "--source", str(repo), env=NO_ENGINE)
    assert result.returncode == 2, result.stderr
    assert expected in one_error(result)
