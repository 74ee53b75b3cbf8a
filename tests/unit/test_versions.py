"""One Dagger version everywhere: pyproject.toml's dagger-io pin states it; the module's
engineVersion, the lab's Go build, its SDK runtime source and the workflows' CLI must say the
same, or a user's CLI, the engine and the SDK refuse one another (0.19 and later check)."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pinned() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d.split("==")[1] for d in deps if d.startswith("dagger-io=="))


def test_dagger_json_engine_version_is_the_pin():
    assert (ROOT / "dagger.json").read_text().count(f'"engineVersion": "v{pinned()}"') == 1


def test_the_lab_builds_dagger_and_its_go_sdk_at_the_pin():
    gomod = (ROOT / "lab/go/go.mod").read_text()
    assert f"require github.com/dagger/dagger v{pinned()}\n" in gomod
    assert f"replace dagger.io/dagger => dagger.io/dagger v{pinned()}\n" in gomod


def test_the_lab_has_the_python_sdk_runtime_of_the_pin():
    runtime = ROOT.parent / "shared/third_party" / f"dagger-v{pinned()}" / "sdk/python/runtime"
    assert (runtime / "dagger.json").is_file(), runtime


def test_every_workflow_runs_the_dagger_cli_of_the_pin():
    workflows = [*ROOT.glob(".github/workflows/*.yml"), *ROOT.glob(".gitea/workflows/*.yml")]
    found = {}
    for path in workflows:
        text = path.read_text()
        if "dagger/dagger-for-github" in text:
            found[path.name] = re.findall(r'^\s+version: "([^"]+)"', text, re.M)
    assert found, "no workflow runs dagger-for-github"
    assert all(versions == [pinned()] for versions in found.values()), found
