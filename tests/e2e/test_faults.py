"""Faults in the middle of a run: the engine killed or stalled, the registry restarted.

Each ends within a stated bound with one line saying what failed and what was published,
and the lab is running again afterwards (these tests stop and restart its processes, so
they need the lab's pid files: LAB_HOME).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import MINI_MATRIX, PLATFORMS, ROOT, Lab, published_manifests
from test_bundle import assert_registry_matches_inventory, push_command, run_push
from test_failures import _NeverAnswers, error_lines, one_error, serving

from pipeline.run import engine

# The watchdog's bound from the last answer (engine.py), plus one probe interval (the fault
# may come just after an answer) and the time to tidy up.
ENGINE_BOUND = engine.STALL_BOUND + engine.PROBE_EVERY + 10


def lab_home() -> Path:
    home = os.environ.get("LAB_HOME")
    if not home:
        pytest.fail("fault tests stop and restart the lab's processes: they need LAB_HOME")
    return Path(home)


def lab_pid(name: str) -> int:
    return int((lab_home() / f"{name}.pid").read_text())


def lab_script(*args: str) -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "lab"), *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]


def lab_up() -> None:
    """Start whatever of the lab is not running (the engine keeps its cache on disk)."""
    lab_script("up")


@pytest.fixture
def restores_lab():
    yield
    for pid_name in ("engine", "registry-secure"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(lab_pid(pid_name), signal.SIGCONT)  # a stalled one
    lab_up()


def release_command(registry: str, tag: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "pipeline", "release", "--source", str(MINI_MATRIX),
        "--tag", tag, "--registry", registry, *extra,
    ]  # fmt: skip


def secure(lab: Lab) -> list[str]:
    return [
        "--username", lab.user, "--password", "env:LAB_REGISTRY_PASSWORD",
        "--ca-cert", str(lab.ca_cert),
    ]  # fmt: skip


def run_with_fault(
    command: list[str],
    when: str,
    fault: Callable[[], None],
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess, float]:
    """Run `command`; when a progress line contains `when`, apply `fault` (once). Returns the
    result and the seconds from the fault to the end."""
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.PIPE if stdin is not None else None,
    )  # fmt: skip
    if stdin is not None:
        proc.stdin.write(stdin + "\n")
        proc.stdin.close()
    lines: list[str] = []
    faulted: list[float] = []

    def watch() -> None:
        for line in proc.stderr:
            lines.append(line)
            if when in line and not faulted:
                faulted.append(time.monotonic())
                fault()

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    try:
        out = proc.stdout.read()
        proc.wait(timeout=900)
    finally:
        proc.kill()
    reader.join(timeout=10)
    assert faulted, f"never saw {when!r}:\n{''.join(lines)[-3000:]}"
    result = subprocess.CompletedProcess(command, proc.returncode, out, "".join(lines))
    return result, time.monotonic() - faulted[0]


def one_line(result: subprocess.CompletedProcess) -> str:
    return (result.stdout.strip().splitlines() or [""])[-1] or error_lines(result.stderr)[-1]


def kill_engine() -> None:
    os.kill(lab_pid("engine"), signal.SIGKILL)


def stall_engine() -> None:
    os.kill(lab_pid("engine"), signal.SIGSTOP)


def assert_engine_line(result: subprocess.CompletedProcess, seconds: float) -> str:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    line = one_error(result)
    assert "the Dagger engine at" in line and "stopped answering" in line, line
    assert seconds < ENGINE_BOUND, (seconds, line)
    print(f"\nended {seconds:.1f}s after the fault: {line}")
    return line


def test_engine_killed_mid_build_ends_in_bound_then_a_rerun_succeeds(
    lab: Lab, unique: str, restores_lab
):
    """Go builds of a new tag take tens of seconds: the kill lands while they run."""
    registry, tag = f"{lab.secure_registry}/faults-{unique}", f"kb-{unique}"
    command = release_command(registry, tag, "--components", "backend", *secure(lab))
    result, seconds = run_with_fault(command, "building ai-infra-backend", kill_engine)
    line = assert_engine_line(result, seconds)
    assert "published: nothing" in line and "ai-infra-backend-init" in line
    lab_up()
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert set(published_manifests(lab, f"faults-{unique}/ai-infra-backend", tag)) == set(PLATFORMS)


def test_engine_stalled_mid_build_ends_in_bound(lab: Lab, unique: str, restores_lab):
    """SIGSTOP: the socket still accepts, nothing answers; only the watchdog can tell."""
    registry, tag = f"{lab.secure_registry}/faults-{unique}", f"sb-{unique}"
    command = release_command(registry, tag, "--components", "backend", *secure(lab))
    result, seconds = run_with_fault(command, "building ai-infra-backend", stall_engine)
    assert_engine_line(result, seconds)


def test_engine_killed_mid_publish_ends_in_bound(lab: Lab, unique: str, restores_lab):
    """A registry that never answers holds the publish open while the engine dies."""
    with serving(_NeverAnswers) as server:
        host = f"127.0.0.1:{server.server_address[1]}"
        command = release_command(f"{host}/slow", f"kp-{unique}", "--components", "gateway",
                                  "--plain-http")  # fmt: skip
        result, seconds = run_with_fault(command, "publishing", kill_engine)
    line = assert_engine_line(result, seconds)
    assert "published: nothing; not published: ai-infra-gateway" in line


def restart_secure_registry() -> None:
    pid = lab_pid("registry-secure")
    os.killpg(pid, signal.SIGKILL)
    threading.Timer(1.5, lab_up).start()


def test_registry_restarted_mid_push_is_retried_and_all_published(lab: Lab, unique: str):
    registry, tag = f"{lab.secure_registry}/faults-{unique}", f"rr-{unique}"
    command = release_command(registry, tag, *secure(lab))
    result, _ = run_with_fault(command, "publishing", restart_secure_registry)
    time.sleep(3)  # the restart timer, if the release won the race
    assert result.returncode == 0, result.stderr[-3000:]
    for image in ("ai-infra-gateway", "ai-infra-backend", "ai-infra-portal"):
        assert set(published_manifests(lab, f"faults-{unique}/{image}", tag)) == set(PLATFORMS)


def test_bundle_push_across_a_registry_restart_resumes(lab: Lab, unique: str, tmp_path: Path):
    """The registry goes away as the push starts and is back 1.5 s later: the push either
    rides it out on its retries or fails with one line; then a rerun completes it, and a
    third push finds everything there."""
    output, project = tmp_path / "bundle", f"faults-{unique}"
    made = subprocess.run(
        [sys.executable, "-m", "pipeline", "bundle", "create", "--source", str(MINI_MATRIX),
         "--components", "gateway,portal", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    command = push_command(output, lab, project)
    first, _ = run_with_fault(command, "push to", restart_secure_registry, stdin=lab.password)
    time.sleep(3)  # the restart timer
    print(f"\nfirst push across the restart: exit {first.returncode}, {one_line(first)}")
    if first.returncode != 0:
        assert len(error_lines(first.stderr)) == 1, first.stderr[-3000:]
        assert run_push(output, lab, project).returncode == 0
    assert_registry_matches_inventory(lab, project, output)
    again = run_push(output, lab, project)
    assert again.returncode == 0 and " 0 blobs uploaded" in again.stdout, again.stdout


# --- extra engines of the lab's: one reached over tcp, one with a small state directory ----------
@contextlib.contextmanager
def extra_engine(name: str, addr: str, tmpfs_size: str | None = None) -> Iterator[dict[str, str]]:
    """`scripts/lab engine-up` with a state directory of its own; the environment that points
    the CLI door at it. Stopped and removed afterwards."""
    root = lab_home() / f"engine-{name}"
    root.mkdir(exist_ok=True)
    if tmpfs_size:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={tmpfs_size}", "tmpfs", str(root)],
                       check=True)  # fmt: skip
    try:
        lab_script("engine-up", name, addr, str(root))
        yield {**os.environ, engine.RUNNER_HOST: addr}
    finally:
        lab_script("engine-down", name)
        if tmpfs_size:
            subprocess.run(["umount", str(root)], check=True)
        shutil.rmtree(root, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_engine_over_tcp_killed_mid_build_ends_in_bound(lab: Lab, unique: str):
    addr = f"tcp://127.0.0.1:{free_port()}"
    with extra_engine("tcp", addr) as env:
        registry, tag = f"{lab.secure_registry}/faults-{unique}", f"kt-{unique}"
        command = release_command(registry, tag, "--components", "backend", *secure(lab))
        kill = lambda: os.kill(lab_pid("engine-tcp"), signal.SIGKILL)  # noqa: E731
        result, seconds = run_with_fault(command, "building ai-infra-backend", kill, env=env)
    line = assert_engine_line(result, seconds)
    assert addr in line and "published: nothing" in line


def test_engine_out_of_disk_names_the_failed_build_and_publishes_the_rest(
    lab: Lab, unique: str, tmp_path: Path
):
    """300 MB of state: busybox fits, the Go toolchain image does not."""
    report = tmp_path / "report.json"
    with extra_engine("tiny", f"unix://{lab_home()}/engine-tiny.sock", "300m") as env:
        registry, tag = f"{lab.secure_registry}/faults-{unique}", f"disk-{unique}"
        command = release_command(registry, tag, "--components", "gateway,backend",
                                  *secure(lab), "--report-json", str(report))  # fmt: skip
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=900)  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert one_error(result).startswith("error: release incomplete: ai-infra-backend")
    rows = {row["image"]: row for row in json.loads(report.read_text())["images"]}
    assert rows["ai-infra-gateway"]["status"] == "published"
    for image in ("ai-infra-backend", "ai-infra-backend-init"):
        assert rows[image]["status"] == "failed"
        platforms = rows[image]["platforms"]  # both, or all() below would pass on none
        assert sorted(p["platform"] for p in platforms) == sorted(PLATFORMS)
        assert all("no space left on device" in p["error"] for p in platforms)
    assert set(published_manifests(lab, f"faults-{unique}/ai-infra-gateway", tag)) == set(PLATFORMS)


def test_the_arm64_engine_killed_mid_build_fails_arm64_alone_and_publishes_nothing(
    lab: Lab, unique: str, tmp_path: Path
):
    """PIPELINE_ENGINES: arm64 on an engine of its own, killed while it builds. The default
    engine's builds finish and are reported; no index lacks arm64; one line names the engine."""
    addr = f"tcp://127.0.0.1:{free_port()}"
    report = tmp_path / "report.json"
    with extra_engine("arm", addr):
        registry, tag = f"{lab.secure_registry}/faults-{unique}", f"ek-{unique}"
        command = release_command(registry, tag, "--components", "gateway,backend",
                                  "--engines", f"linux/arm64={addr}", *secure(lab),
                                  "--report-json", str(report))  # fmt: skip
        kill = lambda: os.kill(lab_pid("engine-arm"), signal.SIGKILL)  # noqa: E731
        result, seconds = run_with_fault(command, "building ai-infra-backend for linux/arm64", kill)
    print(f"\nengine-arm killed: exit {result.returncode}, {seconds:.1f}s later", one_error(result))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert seconds < ENGINE_BOUND
    assert one_error(result).startswith("error: release incomplete:")
    rows = {row["image"]: row for row in json.loads(report.read_text())["images"]}
    for image in ("ai-infra-backend", "ai-infra-backend-init"):
        amd64, arm64 = rows[image]["platforms"]
        assert rows[image]["status"] == "failed"
        assert (amd64["status"], amd64["engine"]) == ("not-published", "default")
        assert arm64["status"] == "build-failed" and arm64["engine"] == addr
        assert arm64["error"].startswith(f"engine {addr} for linux/arm64: stopped answering")
    assert "published" not in {
        r["status"] for r in rows.values() if r["image"] != "ai-infra-gateway"
    }
