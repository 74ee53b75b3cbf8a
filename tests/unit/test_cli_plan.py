"""The CLI door, run in-process through `main` (the one place errors become exit codes)."""

import json
from pathlib import Path

import pytest


def test_plan_json_shape(repo: Path, cli, secrets):
    code, out, err = cli("plan", "--source", str(repo), "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert {"tag", "platforms", "components", "dependencies"} <= set(data)
    assert set(data["components"][0]) == {
        "name", "image", "ref", "dockerfile", "target", "phase", "needs", "build_args",
    }  # fmt: skip
    assert set(data["dependencies"][0]) == {"name", "image"}
    assert [s["name"] for s in data["skipped"]] == ["safeline"]
    assert not [value for value in secrets.values() if value in out]


def test_plan_options_override_env(repo: Path, cli, monkeypatch):
    monkeypatch.setenv("IMAGE_TAG", "from-env")
    code, out, _ = cli(
        "plan", "--source", str(repo), "--json", "--tag", "v2",
        "--registry", "harbor.example.com/ai", "--platforms", "linux/arm64",
        "--components", "frontend",
    )  # fmt: skip
    data = json.loads(out)
    assert code == 0
    assert (data["tag"], data["platforms"]) == ("v2", ["linux/arm64"])
    assert [c["ref"] for c in data["components"]] == ["harbor.example.com/ai/ai-infra-frontend:v2"]


def test_plan_reads_process_env(repo: Path, cli, monkeypatch):
    monkeypatch.setenv("IMAGE_TAG", "from-env")
    _, out, _ = cli("plan", "--source", str(repo), "--json")
    assert json.loads(out)["tag"] == "from-env"


def test_plan_table(repo: Path, cli, secrets):
    code, out, _ = cli("plan", "--source", str(repo))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("tag v0.3.8")
    header = next(line for line in lines if line.startswith("COMPONENT"))
    backend = next(line for line in lines if line.startswith("backend "))
    assert backend.index("ai-infra-backend:v0.3.8") == header.index("REF")  # aligned
    assert "APT_MIRROR, GOLANG_IMAGE_VERSION, GO_PROXY, VERSION" in backend
    assert any(line.startswith("DEPENDENCY") for line in lines)
    skipped = next(line for line in lines if line.startswith("safeline"))
    assert "no value for SAFELINE_IMAGE_PREFIX" in skipped
    assert "goproxy.cn" not in out
    assert not [value for value in secrets.values() if value in out]


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["--tag", "bad tag"], "error: IMAGE_TAG='bad tag'"),
        (["--platforms", "linux/amd64,linux/mips"], "error: TARGET_PLATFORMS="),
        (["--components", "backnd"], "error: PIPELINE_COMPONENTS: unknown 'backnd'"),
        (["--registry", "https://harbor"], "error: PRIVATE_REGISTRY="),
    ],
)
def test_bad_input_exits_2_with_one_stderr_line(repo: Path, cli, args, start):
    code, out, err = cli("plan", "--source", str(repo), *args)
    assert code == 2
    assert out == ""
    assert err.startswith(start)
    assert err.count("\n") == 1


def test_missing_src_exits_2(tmp_path: Path, cli):
    code, _, err = cli("plan", "--source", str(tmp_path))
    assert (
        code == 2
        and err == f"error: {tmp_path}: no src/ directory (is this an AI-Infra-Matrix checkout?)\n"
    )


def test_debug_shows_traceback(repo: Path, cli):
    code, _, err = cli("--debug", "plan", "--source", str(repo), "--tag", "bad tag")
    assert code == 2
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: IMAGE_TAG")


def test_debug_from_env(repo: Path, cli, monkeypatch):
    monkeypatch.setenv("PIPELINE_DEBUG", "1")
    _, _, err = cli("plan", "--source", str(repo), "--tag", "bad tag")
    assert "Traceback" in err


@pytest.mark.parametrize("args", [["--help"], ["plan", "--help"]])
def test_help_renders(cli, args):
    code, out, _ = cli(*args)
    assert code == 0 and "Usage:" in out
