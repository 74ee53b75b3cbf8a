"""The CLI door, run in-process through `main` (the one place errors become exit codes)."""

import json
from itertools import takewhile
from pathlib import Path

import pytest


def test_plan_json_shape(repo: Path, cli, secrets):
    code, out, err = cli("plan", "--source", str(repo), "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert {"tag", "platforms", "components", "dependencies"} <= set(data)
    assert set(data["components"][0]) == {
        "name", "image", "ref", "dockerfile", "target", "phase", "needs", "build_args",
        "serves", "reaches", "private_key",
    }  # fmt: skip
    assert set(data["dependencies"][0]) == {"name", "image", "origins"}
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
    assert lines[1] == "refs IMAGE:v0.3.8 (no registry)"
    header = next(line for line in lines if line.startswith("COMPONENT  IMAGE"))
    backend = next(line for line in lines if line.startswith("backend "))
    assert backend.index("src/backend/Dockerfile.tpl") == header.index("DOCKERFILE")  # aligned
    assert backend.split()[-2:] == ["dependent", "-"]  # PHASE, NEEDS
    assert header.split()[-1] == "NEEDS"
    args = lines[lines.index("COMPONENT  BUILD ARGS") :]
    assert "backend    APT_MIRROR, GOLANG_IMAGE_VERSION, GO_PROXY, VERSION" in args
    assert any(line.startswith("DEPENDENCY") for line in lines)
    skipped = next(line for line in lines if line.startswith("safeline"))
    assert "SAFELINE_ENABLED is not true" in skipped
    assert "goproxy.cn" not in out
    assert not [value for value in secrets.values() if value in out]


def test_plan_table_stays_narrow(repo: Path, cli):
    """Long registries, needs and many build args: no line passes 120 characters; what does
    not fit wraps onto lines of its own, under its column."""
    names = [f"COMPONENT_NUMBER_{n}_VERSION" for n in range(12)]
    (repo / ".env").write_text(
        (repo / ".env.example").read_text() + "".join(f"{n}=1\n" for n in names)
    )
    (repo / "src/slurmd").mkdir()
    (repo / "src/slurmd/Dockerfile").write_text(
        "".join(f"ARG {n}\n" for n in names)
        + "FROM ai-infra-frontend\nCOPY --from=ai-infra-backend-init:latest /x /x\n"
        + "COPY --from=ai-infra-gitea /y /y\nCOPY --from=ai-infra-nginx /z /z\n"
    )
    registry = "harbor.internal.example-corporation.com:8443/ai-infra-matrix/release-candidates"
    code, out, _ = cli("plan", "--source", str(repo), "--registry", registry)
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == f"refs {registry}/IMAGE:v0.3.8"
    assert max(map(len, lines)) <= 120, max(lines, key=len)
    slurmd = lines.index(next(line for line in lines if line.startswith("slurmd ")))
    header = next(line for line in lines if line.startswith("COMPONENT  IMAGE"))
    rows = [lines[slurmd], *takewhile(lambda line: line.startswith(" "), lines[slurmd + 1 :])]
    needs = " ".join(row[header.index("NEEDS") :] for row in rows)
    assert needs == "ai-infra-backend-init, ai-infra-frontend, ai-infra-gitea, ai-infra-nginx"
    args = lines[lines.index("COMPONENT  BUILD ARGS") :]
    first = next(i for i, line in enumerate(args) if line.startswith("slurmd "))
    assert args[first + 1].startswith(" " * len("COMPONENT  "))  # wrapped, under its column
    assert all(n in " ".join(args) for n in names)


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


def test_plan_names_the_engine_of_each_platform_and_json_keeps_them(repo: Path, cli):
    engines = "linux/arm64=tcp://arm-builder:1234"
    code, out, _ = cli("plan", "--source", str(repo), "--engines", engines)
    assert code == 0
    assert out.splitlines()[2] == (
        "engines linux/amd64 on the default engine; linux/arm64 on tcp://arm-builder:1234"
    )
    code, out, _ = cli("plan", "--source", str(repo), "--engines", engines, "--json")
    assert json.loads(out)["engines"] == {"linux/arm64": "tcp://arm-builder:1234"}
    code, _, err = cli("plan", "--source", str(repo), "--engines", "linux/arm64=arm-builder")
    assert code == 2 and err.strip() == (
        "error: PIPELINE_ENGINES='linux/arm64=arm-builder' (from arguments): 'arm-builder' is not "
        "an engine address (unix|tcp|tls|ssh|kube-pod|docker-container|container|container+docker|"
        "container+podman|container+nerdctl|container+finch://...)"
    )
