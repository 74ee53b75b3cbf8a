"""Harbor's way of logging in, against the lab's token-auth registry (lab/token-service):
Bearer tokens per repository scope, robot accounts with a `$` in the name, a project path.
Every door that talks to a registry: the release (both doors), and bundle push."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import MINI_MATRIX, PLATFORMS, Lab, run_cli
from test_dagger_call import call

from pipeline.bundle.push import push_bundle
from pipeline.oci.registry import RegistryClient, RegistryLogin

TAG = "v0.3.8"


@dataclass(frozen=True)
class TokenLab:
    registry: str
    user: str  # may push
    reader: str  # may only pull
    brief: str  # may push; its tokens live 5 s
    password: str
    ca_cert: Path
    log: Path

    def grants(self, since: int) -> list[str]:
        """The token service's lines written after byte `since` of its log."""
        with self.log.open("rb") as f:
            f.seek(since)
            return f.read().decode().splitlines()

    def log_size(self) -> int:
        return self.log.stat().st_size


@pytest.fixture(scope="module")
def token_lab(lab: Lab) -> TokenLab:
    names = ("LAB_TOKEN_REGISTRY", "LAB_TOKEN_USER", "LAB_TOKEN_READER", "LAB_TOKEN_BRIEF",
             "LAB_TOKEN_LOG")  # fmt: skip
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        pytest.fail(f"the lab's token registry is not up ({', '.join(missing)} unset)")
    env = os.environ
    return TokenLab(env["LAB_TOKEN_REGISTRY"], env["LAB_TOKEN_USER"], env["LAB_TOKEN_READER"],
                    env["LAB_TOKEN_BRIEF"], lab.password, lab.ca_cert,
                    Path(env["LAB_TOKEN_LOG"]))  # fmt: skip


def release(token_lab: TokenLab, project: str, user: str, report: Path, *extra: str):
    return run_cli(
        "release", "--source", str(MINI_MATRIX), "--components", "gateway",
        "--registry", f"{token_lab.registry}/{project}", "--ca-cert", str(token_lab.ca_cert),
        "--username", user, "--password", "env:LAB_REGISTRY_PASSWORD",
        "--report-json", str(report), *extra,
    )  # fmt: skip


def test_a_release_publishes_and_reads_back_with_tokens(token_lab, tmp_path, unique):
    project, since = f"tok-{unique}", token_lab.log_size()
    result = release(token_lab, project, token_lab.user, tmp_path / "report.json")
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads((tmp_path / "report.json").read_text())["images"][0]
    # Read back through the registry API with a Bearer token: every platform's manifest.
    assert row["status"] == "published" and row["digest"].startswith("sha256:")
    assert {p["platform"] for p in row["platforms"] if p["digest"] and p["size"]} == set(PLATFORMS)
    repository = f"{project}/ai-infra-gateway"
    asked = [line for line in token_lab.grants(since) if repository in line]
    # Ours (the rights check, the read-back) and BuildKit's (the push) each asked for it.
    assert any(f"granted={repository}:pull,push" in line for line in asked), asked
    assert all(f"user={token_lab.user}" in line for line in asked)


def test_a_user_without_push_rights_is_told_before_any_build(token_lab, tmp_path, unique):
    result = release(token_lab, f"tok-{unique}", token_lab.reader, tmp_path / "report.json")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: registry {token_lab.registry}: user {token_lab.reader!r} may not push to "
        f"project tok-{unique} (its token grants no push); give the account push rights on "
        "the project"
    )
    assert "building" not in result.stderr
    assert not (tmp_path / "report.json").exists()


def door_release(token_lab: TokenLab, project: str, user: str):
    return call(
        "release", "--tag", TAG, "--components", "gateway",
        "--registry", f"{token_lab.registry}/{project}", "--ca-cert", str(token_lab.ca_cert),
        "--username", user, "--password", "env:LAB_REGISTRY_PASSWORD", "--json-report",
    )  # fmt: skip


def test_dagger_call_release_logs_in_with_tokens(token_lab, unique):
    result = door_release(token_lab, f"tok-door-{unique}", token_lab.user)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["ok"] and report["images"][0]["status"] == "published"
    # Read back through the registry API from the module's container, as the CLI does.
    platforms = report["images"][0]["platforms"]
    assert {p["platform"] for p in platforms if p["digest"] and p["size"]} == set(PLATFORMS)
    assert token_lab.password not in result.stdout + result.stderr


def test_dagger_call_tells_a_user_without_push_rights_before_any_build(token_lab, unique):
    started = time.monotonic()
    result = door_release(token_lab, f"tok-door-{unique}", token_lab.reader)
    assert result.returncode == 2, result.stderr[-3000:]
    line = (
        f"error: registry {token_lab.registry}: user {token_lab.reader!r} may not push to "
        f"project tok-door-{unique} (its token grants no push); give the account push rights "
        "on the project"
    )
    assert line in result.stderr and "Traceback" not in result.stderr
    assert "building" not in result.stderr and "dockerBuild" not in result.stderr
    print(f"refused in {time.monotonic() - started:.1f}s: {line}")


class Slow:
    """A byte meter that takes its time (so tokens expire mid-push) and can stop the push
    after `stop_after` steps, as a killed run would."""

    def __init__(self, seconds: float, stop_after: int | None = None) -> None:
        self.seconds, self.stop_after, self.steps = seconds, stop_after, 0

    def start(self, total: int, label: str) -> None:
        pass

    def advance(self, n: int) -> None:
        self.steps += 1
        if self.stop_after is not None and self.steps > self.stop_after:
            raise KeyboardInterrupt
        time.sleep(self.seconds)

    def finish(self) -> None:
        pass


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "bundle"
    result = run_cli("bundle", "create", "--source", str(MINI_MATRIX), "--components",
                     "gateway,portal", "--output", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_bundle_push_renews_tokens_resumes_and_skips(token_lab, small_bundle, unique):
    target = f"{token_lab.registry}/tok-push-{unique}"
    login = RegistryLogin(username=token_lab.brief, password=token_lab.password,
                          ca_cert=token_lab.ca_cert)  # fmt: skip
    with pytest.raises(KeyboardInterrupt):  # killed part way: some blobs are in
        push_bundle(small_bundle, target, login, progress=Slow(0, stop_after=3))
    since = token_lab.log_size()
    # Slow enough that the 5 s tokens run out in the middle: renewed, not a failure.
    resumed = push_bundle(small_bundle, target, login, progress=Slow(1.0))
    assert resumed.blobs_skipped > 0 and resumed.blobs_uploaded > 0
    grants = [g for g in token_lab.grants(since) if f"user={token_lab.brief}" in g]
    repository = f"tok-push-{unique}/ai-infra-gateway"
    assert sum(f"granted={repository}:pull,push" in g for g in grants) >= 2, grants
    again = push_bundle(small_bundle, target, login)
    assert again.blobs_uploaded == 0 and again.blobs_skipped == resumed.blobs_skipped + (
        resumed.blobs_uploaded + resumed.blobs_mounted
    )
    # Read back by another account of the project, as a site's pull would.
    with RegistryClient(
        token_lab.registry,
        username=token_lab.reader,
        password=token_lab.password,
        ca_cert=token_lab.ca_cert,
    ) as client:
        body, _ = client.get_manifest(f"tok-push-{unique}/ai-infra-gateway", TAG)
    platforms = {f"{m['platform']['os']}/{m['platform']['architecture']}"
                 for m in json.loads(body)["manifests"]}  # fmt: skip
    assert platforms >= set(PLATFORMS)
