"""Several runs through one engine at once, as two CI jobs on one build host would: each must
succeed as it would alone (same user and password, same registry project).

The engine keeps some names engine-wide (a named secret is one such: the first run's value was
handed to the second); these tests catch any name two runs could share by mistake.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import MINI_MATRIX, PLATFORMS, ROOT, Lab, published_manifests
from test_bundle import assert_registry_matches_inventory, push_command
from test_dagger_call import dagger_cli, release_args

# Thin images: the runs overlap on publishing, where names and credentials matter.
COMPONENTS = "gateway,gitea,portal"
IMAGES = ("ai-infra-gateway", "ai-infra-gitea", "ai-infra-portal")
BOUND = 900  # seconds for all runs of one test together


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def release_command(lab: Lab, project: str, tag: str) -> list[str]:
    return cli(
        "release", "--source", str(MINI_MATRIX), "--tag", tag, "--components", COMPONENTS,
        "--registry", f"{lab.secure_registry}/{project}", "--username", lab.user,
        "--password", "env:LAB_REGISTRY_PASSWORD", "--ca-cert", str(lab.ca_cert),
    )  # fmt: skip


def run_together(commands: list[list[str]], stdin: list[str | None] | None = None) -> list:
    """Start every command at once; wait for all, within BOUND seconds in total."""
    stdin = stdin or [None] * len(commands)
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            c,
            cwd=ROOT,
            text=True,
            stdin=subprocess.PIPE if i is not None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for c, i in zip(commands, stdin, strict=True)
    ]
    results = []
    for proc, given in zip(procs, stdin, strict=True):
        left = max(1.0, BOUND - (time.monotonic() - started))
        out, err = proc.communicate(input=given, timeout=left)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    print(f"\n{len(commands)} runs at once: {time.monotonic() - started:.1f}s")
    return results


def assert_released(lab: Lab, project: str, tag: str) -> None:
    for image in IMAGES:
        assert set(published_manifests(lab, f"{project}/{image}", tag)) == set(PLATFORMS), image


def test_three_releases_at_once_all_succeed(lab: Lab, unique):
    project, tags = f"load-{unique}", [f"v0.3.{n}-{unique}" for n in range(3)]
    results = run_together([release_command(lab, project, tag) for tag in tags])
    for tag, result in zip(tags, results, strict=True):
        assert result.returncode == 0, (tag, result.stderr[-3000:])
        assert_released(lab, project, tag)


def test_a_release_and_a_bundle_create_at_once(lab: Lab, unique, tmp_path: Path):
    project, output = f"load-{unique}", tmp_path / "bundle"
    bundle = cli(
        "bundle", "create", "--source", str(MINI_MATRIX), "--tag", f"b-{unique}",
        "--components", COMPONENTS, "--output", str(output),
    )  # fmt: skip
    released, bundled = run_together([release_command(lab, project, f"r-{unique}"), bundle])
    assert released.returncode == 0, released.stderr[-3000:]
    assert bundled.returncode == 0, bundled.stderr[-3000:]
    assert_released(lab, project, f"r-{unique}")
    assert run_cli_ok("bundle", "verify", str(output))


def test_a_bundle_push_while_a_release_publishes_to_the_same_project(
    lab: Lab, unique, tmp_path: Path
):
    project, output = f"load-{unique}", tmp_path / "bundle"
    assert run_cli_ok(
        "bundle", "create", "--source", str(MINI_MATRIX), "--tag", f"b-{unique}",
        "--components", COMPONENTS, "--output", str(output),
    )  # fmt: skip
    released, pushed = run_together(
        [release_command(lab, project, f"r-{unique}"), push_command(output, lab, project)],
        stdin=[None, lab.password + "\n"],
    )
    assert released.returncode == 0, released.stderr[-3000:]
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert_released(lab, project, f"r-{unique}")
    assert_registry_matches_inventory(lab, project, output)


def test_two_dagger_call_releases_at_once(lab: Lab, unique):
    project, tags = f"load-door-{unique}", [f"d{n}-{unique}" for n in range(2)]
    results = run_together(
        [
            [
                dagger_cli(),
                "--progress=plain",
                "call",
                "--source",
                "examples/mini-matrix",
                *release_args(lab, project, tag),
                "--components",
                COMPONENTS,
                "--json-report",
            ]
            for tag in tags
        ]  # fmt: skip
    )
    for tag, result in zip(tags, results, strict=True):
        assert result.returncode == 0, (tag, result.stderr[-3000:])
        assert json.loads(result.stdout)["ok"]
        assert_released(lab, project, tag)


def run_cli_ok(*args: str) -> bool:
    result = subprocess.run(cli(*args), cwd=ROOT, capture_output=True, text=True, timeout=BOUND)
    assert result.returncode == 0, result.stderr[-3000:]
    return True
