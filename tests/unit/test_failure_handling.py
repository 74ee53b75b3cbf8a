"""The failure paths without an engine: the failed step's output found in the engine's log,
publish retries and their one-line errors, grouped failures, leftovers of killed runs, and
checks that run before the engine is contacted. tests/e2e/test_failures.py injects the same
faults against the lab."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import anyio
import dagger
import gql
import pytest
from dagger._exceptions import QueryErrorValue

from pipeline.bundle.create import remove_stale
from pipeline.doors import cli
from pipeline.errors import BadInput, PublishFailed
from pipeline.oci.reference import tagged
from pipeline.planning.settings import PUBLISH_TIMEOUT, load_settings
from pipeline.run import engine
from pipeline.run.access import RegistryAccess
from pipeline.run.build import log_tail
from pipeline.run.buildlog import failed_step_output
from pipeline.run.publish import push, push_error
from pipeline.run.report import ImageRow, PlatformRow, Report

# The shape of Dagger 0.18's plain progress (colours as it prints them), trimmed from a real
# run: archprobe fails on arm64; backend's shared build stage fails under the `backend` build
# and so also fails `backend-init`; amd64 steps print too but succeed.
ENGINE_LOG = """\
\x1b[95m16  : \x1b[0m\x1b[90;2m┆ \x1b[0mDirectory.dockerBuild(\
dockerfile: "src/archprobe/Dockerfile", platform: "linux/amd64", \
buildArgs: [{name: "VERSION", value: "v0.3.8"}]): Container!
17  : ┆ Directory.dockerBuild(dockerfile: "src/archprobe/Dockerfile", platform: "linux/arm64", \
buildArgs: [{name: "VERSION", value: "v0.3.8"}]): Container!
16  : ┆ Directory.dockerBuild(dockerfile: "src/archprobe/Dockerfile", platform: "linux/amd64", \
buildArgs: []): Container!
22  : ┆ ┆ [2/3] RUN echo "checking $(uname -m)" && [ "$(uname -m)" != aarch64 ]
22  : ┆ ┆ [0.9s] | checking x86_64
17  : ┆ Directory.dockerBuild(dockerfile: "src/archprobe/Dockerfile", platform: "linux/arm64", \
buildArgs: []): Container!
24  : ┆ ┆ [2/3] RUN echo "checking $(uname -m)" && [ "$(uname -m)" != aarch64 ]
24  : ┆ ┆ \x1b[90m[1.1s] \x1b[0m\x1b[90m|\x1b[0m checking aarch64
24  : ┆ ┆ [1.1s] | aarch64 is not supported
22  : ┆ ┆ [2/3] RUN echo "checking $(uname -m)" && [ "$(uname -m)" != aarch64 ] DONE [1.3s]
36  : ┆ Directory.dockerBuild(
36  : ┆ ┆ dockerfile: "src/backend/Dockerfile"
36  : ┆ ┆ platform: "linux/arm64"
36  : ┆ ┆ target: "backend"
36  : ┆ ): Container!
38  : ┆ ┆ [build 6/7] RUN echo "go: cannot build for arm64" && false
38  : ┆ ┆ [3.0s] | go: cannot build for arm64
17  : ┆ Directory.dockerBuild(dockerfile: "src/archprobe/Dockerfile", platform: "linux/arm64", \
buildArgs: []): Container!
24  : ┆ ┆ [2/3] RUN echo "checking $(uname -m)" && [ "$(uname -m)" != aarch64 ] ERROR [1.6s]
24  : ┆ ┆ ! process "/bin/sh -c echo ..." did not complete successfully: exit code: 1
36  : ┆ Directory.dockerBuild(
36  : ┆ ┆ dockerfile: "src/backend/Dockerfile"
36  : ┆ ┆ platform: "linux/arm64"
36  : ┆ ┆ target: "backend"
36  : ┆ ): Container!
38  : ┆ ┆ [build 6/7] RUN echo "go: cannot build for arm64" && false ERROR [5.6s]
38  : ┆ ┆ ! process "/bin/sh -c echo ..." did not complete successfully: exit code: 1
36  : ┆ Directory.dockerBuild ERROR [5.9s]
"""


ARM64_REFUSED = "aarch64 is not supported"


@pytest.mark.parametrize(
    ("dockerfile", "platform", "target", "expected"),
    [
        ("src/archprobe/Dockerfile", "linux/arm64", None, ["checking aarch64", ARM64_REFUSED]),
        ("src/archprobe/Dockerfile", "linux/amd64", None, []),  # printed, but did not fail
        ("src/backend/Dockerfile", "linux/arm64", "backend", ["go: cannot build for arm64"]),
        ("src/backend/Dockerfile", "linux/arm64", "backend-init", ["go: cannot build for arm64"]),
        ("src/backend/Dockerfile", "linux/amd64", "backend", []),
        ("src/portal/Dockerfile", "linux/arm64", None, []),
    ],
)  # fmt: skip
def test_failed_step_output_is_found_per_build(dockerfile, platform, target, expected):
    assert failed_step_output(ENGINE_LOG, dockerfile, platform, target) == expected


def test_failed_step_output_keeps_the_tail_and_survives_garbage():
    assert failed_step_output(ENGINE_LOG, "src/archprobe/Dockerfile", "linux/arm64", None, 1) == [
        "aarch64 is not supported"
    ]
    assert failed_step_output("not a log\n\x00\n: :\n", "a", "linux/amd64", None) == []


REFUSED = (
    "failed to export: failed to push 127.0.0.1:43599/p/img:t1: failed to do request: Head "
    '"http://127.0.0.1:43599/v2/p/img/blobs/sha256:6f92": dial tcp 127.0.0.1:43599: '
    "connect: connection refused"
)
UNAVAILABLE = (
    "failed to export: failed to push 127.0.0.1:34547/p/img:t1: unexpected status from HEAD "
    "request to http://127.0.0.1:34547/v2/p/img/blobs/sha256:2e97: 503 Service Unavailable"
)
UNAUTHORIZED = UNAVAILABLE.replace("503 Service Unavailable", "401 Unauthorized")
FORBIDDEN = UNAVAILABLE.replace("503 Service Unavailable", "403 Forbidden")


@pytest.mark.parametrize(
    ("text", "user", "line"),
    [
        (REFUSED, None, "registry h:1: connection refused"),
        (UNAVAILABLE, None, "registry h:1: HTTP 503 Service Unavailable"),
        (UNAUTHORIZED, "lab", "registry h:1 refused the credentials of user 'lab' (HTTP 401)"),
        (UNAUTHORIZED, None, "registry h:1 requires a login (HTTP 401)"),
        (FORBIDDEN, "ci", "registry h:1 denies user 'ci' the right to push (HTTP 403)"),
    ],
)  # fmt: skip
def test_push_error_is_short_and_names_the_registry(text, user, line):
    assert push_error("h:1", text, user) == line


class FakeBase:
    """Stands in for dag.container(): publish fails with the given texts, then succeeds."""

    def __init__(self, failures: list[str | float]) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def publish(self, ref: str, platform_variants: list) -> str:
        self.calls += 1
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, float):  # a registry that does not answer
                await anyio.sleep(failure)
            else:
                request = gql.GraphQLRequest(gql.gql("{ container { id } }"))
                raise dagger.QueryError([QueryErrorValue(message=failure)], request)
        return f"{ref}@sha256:{'a' * 64}"


ACCESS = RegistryAccess(username="lab", timeout=0.2, tries=3, backoff=0.01)


def run_push(base: FakeBase) -> str:
    return anyio.run(push, base, tagged("h:1/p", "img", "v1"), [], ACCESS)


def test_transient_failures_are_retried_then_succeed():
    base = FakeBase([REFUSED, UNAVAILABLE])
    assert run_push(base).startswith("h:1/p/img:v1@sha256:")
    assert base.calls == 3


def test_a_400_is_retried_as_concurrent_pushes_of_one_repository_race():
    raced = UNAVAILABLE.replace("HEAD", "PUT").replace("503 Service Unavailable", "400 Bad Request")
    base = FakeBase([raced])
    assert run_push(base).startswith("h:1/p/img:v1@sha256:")
    assert base.calls == 2
    with pytest.raises(PublishFailed, match=r"HTTP 400 Bad Request \(gave up after 3 tries\)"):
        run_push(FakeBase([raced] * 3))


@pytest.mark.parametrize(
    ("failures", "message"),
    [
        ([REFUSED] * 3, "registry h:1: connection refused (gave up after 3 tries)"),
        ([UNAVAILABLE] * 3, "registry h:1: HTTP 503 Service Unavailable (gave up after 3 tries)"),
        ([5.0] * 3, "registry h:1: no answer within 0.2s (gave up after 3 tries)"),
    ],
)
def test_bounded_retries_end_in_one_line_naming_the_registry(failures, message):
    base = FakeBase(failures)
    with pytest.raises(PublishFailed) as caught:
        run_push(base)
    assert str(caught.value) == message
    assert base.calls == 3


def test_a_refused_login_is_not_retried():
    base = FakeBase([UNAUTHORIZED, UNAUTHORIZED])
    with pytest.raises(PublishFailed, match=r"credentials of user 'lab' \(HTTP 401\)$"):
        run_push(base)
    assert base.calls == 1


def test_failures_are_grouped_when_every_image_fails_alike():
    down = "registry h:1: connection refused (gave up after 3 tries)"
    report = Report(tag="v1", registry="h:1/p", platforms=["linux/amd64"], concurrency=1)
    for name in ("a", "b"):
        row = ImageRow(image=name, ref=f"h:1/p/{name}:v1", status="failed", error=down)
        report.images.append(row)
    report.images.append(
        ImageRow(
            image="c",
            ref="h:1/p/c:v1",
            status="failed",
            platforms=[PlatformRow(platform="linux/amd64", status="build-failed", seconds=1.0)],
        )
    )
    assert report.failures == [f"a, b: {down}", "c: build failed for linux/amd64"]


def test_stale_leftovers_of_dead_runs_are_removed(tmp_path: Path):
    dead = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no process has it
    alive = os.getpid()
    output = tmp_path / "bundle"
    names = {
        f".bundle.partial-{dead}": True,
        f".bundle.tarballs-{dead}-x1y2": True,
        f".bundle.tar.partial-{dead}": True,
        f".bundle.tar.zst.partial-{dead}": True,
        f".bundle.partial-{alive}": False,  # a live run's work
        f".other.partial-{dead}": False,  # another bundle's
        f".bundle.extract-{dead}": False,  # not ours to judge
        f".bundle.old-{dead}": False,  # may be the only complete bundle left
    }
    for name in names:
        path = tmp_path / name
        if "tar." in name:
            path.write_bytes(b"half an archive")
        else:
            (path / "blobs").mkdir(parents=True)
    removed = remove_stale(output)
    assert sorted(p.name for p in removed) == sorted(n for n, gone in names.items() if gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        n for n, gone in names.items() if not gone
    )


@pytest.mark.parametrize("text", ["soon", "0", "-5", "nan", "inf"])
def test_publish_timeout_must_be_positive_seconds(text: str):
    with pytest.raises(BadInput, match="PIPELINE_PUBLISH_TIMEOUT"):
        load_settings(None, {"PIPELINE_PUBLISH_TIMEOUT": text}, {})
    assert load_settings(None, {"PIPELINE_PUBLISH_TIMEOUT": "2.5"}, {}).publish_timeout == 2.5
    assert load_settings(None, {}, {}).publish_timeout == PUBLISH_TIMEOUT


def test_a_missing_engine_socket_fails_fast():
    with pytest.raises(engine.EngineUnavailable, match="unix:///nonexistent"):
        engine.check_runner_host({engine.RUNNER_HOST: "unix:///nonexistent"})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(engine.EngineUnavailable, match="refused"):
            engine.check_runner_host({engine.RUNNER_HOST: f"tcp://127.0.0.1:{port}"})
    # Inside `dagger run`, or a runner only the CLI knows how to reach: not ours to check.
    engine.check_runner_host({engine.RUNNER_HOST: "unix:///x", "DAGGER_SESSION_PORT": "1"})
    engine.check_runner_host({engine.RUNNER_HOST: "docker-container://dagger"})


def test_cli_error_is_one_line_even_for_a_multi_line_message(monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise PublishFailed("registry h:1 said:\nsomething\n  on several lines")

    monkeypatch.setattr(cli, "resolve", fail)
    with pytest.raises(SystemExit) as caught:
        cli.main(["release", "--source", "."])
    assert caught.value.code == 1
    assert capsys.readouterr().err == "error: registry h:1 said: something on several lines\n"


def test_bundle_create_refuses_an_existing_output_before_building(repo: Path, capsys):
    (repo / "out").mkdir()
    with pytest.raises(SystemExit) as caught:
        cli.main(["bundle", "create", "--source", str(repo), "--output", str(repo / "out")])
    assert caught.value.code == 2
    expected = f"error: {repo / 'out'} already exists; remove it or choose another --output\n"
    assert capsys.readouterr().err == expected


def test_a_failed_step_ends_with_buildkit_s_line_for_it():
    """Dagger 0.21's message for a failed RUN step says only `failed to clone built container
    state`; the command its exec error names says which step (as tests/e2e sees for real)."""
    value = QueryErrorValue(
        message="failed to clone built container state: exit code: 1",
        extensions={"_type": "EXEC_ERROR", "cmd": ["/bin/sh", "-c", "make && false"],
                    "exitCode": 1, "stdout": "making", "stderr": "oops"},
    )  # fmt: skip
    err = dagger.QueryError([value], gql.GraphQLRequest(gql.gql("{ container { id } }")))
    assert isinstance(err, dagger.ExecError)
    assert log_tail(err).splitlines() == [
        "making",
        "oops",
        'process "/bin/sh -c make && false" did not complete successfully: exit code: 1',
    ]


@pytest.mark.parametrize("session_alive", [False, True])
def test_a_dead_session_process_is_not_blamed_on_a_live_engine(
    monkeypatch, tmp_path, session_alive
):
    """The SDK's `dagger session` child gone while the engine still takes connections: the
    line says so, rather than that the engine stopped answering."""
    path = str(tmp_path / "engine.sock")
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(path)
        listening.listen()
        monkeypatch.setenv(engine.RUNNER_HOST, f"unix://{path}")
        monkeypatch.setattr(engine, "session_children", lambda: [object()] if session_alive else [])
        watch = engine.Watchdog()
        watch.lost()
        message = watch.message()
    if session_alive:
        assert message.startswith(f"the Dagger engine at unix://{path} stopped answering")
    else:
        assert message.startswith("the Dagger CLI's session process of this run ended (last answer")
        assert message.endswith(f"the engine at unix://{path} still answers: run again")
    # Both gone: the engine is blamed.
    assert watch.message().startswith(f"the Dagger engine at unix://{path} stopped answering")
