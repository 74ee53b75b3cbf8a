"""One Dagger version everywhere: pyproject.toml's dagger-io pin states it; the module's
engineVersion, the lab's Go build, its SDK runtime source and the workflows' CLI must say the
same, or a user's CLI, the engine and the SDK refuse one another (0.19 and later check)."""

import re
import tomllib
from pathlib import Path

import yaml

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


WORKFLOWS = [*ROOT.glob(".github/workflows/*.yml"), *ROOT.glob(".gitea/workflows/*.yml")]


def test_every_workflow_runs_the_dagger_cli_of_the_pin():
    found = {}
    for path in WORKFLOWS:
        text = path.read_text()
        if "dagger/dagger-for-github" in text:
            found[str(path.relative_to(ROOT))] = re.findall(r'^\s+version: "([^"]+)"', text, re.M)
    # GitHub's and Gitea's release workflows, by path (both are release.yml).
    assert {".github/workflows/release.yml", ".gitea/workflows/release.yml"} <= found.keys(), found
    assert all(versions == [pinned()] for versions in found.values()), found


def test_the_gitea_release_runs_the_same_steps_as_github_s():
    """Same actions, inputs and environment in both; only the summary step's script differs
    (Gitea shows no job summary: the report goes to the log too)."""

    def steps(path: str) -> list[dict]:
        return yaml.safe_load((ROOT / path).read_text())["jobs"]["release"]["steps"]

    github, gitea = steps(".github/workflows/release.yml"), steps(".gitea/workflows/release.yml")
    assert [{k: v for k, v in s.items() if k != "run"} for s in gitea] == [
        {k: v for k, v in s.items() if k != "run"} for s in github
    ]
