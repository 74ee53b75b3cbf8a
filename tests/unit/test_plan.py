import json
from pathlib import Path

import pytest

from pipeline.errors import BadInput
from pipeline.planning.dockerfile import Dockerfile
from pipeline.planning.layout import discover
from pipeline.planning.plan import Skipped, check_builds_an_image, make_plan, resolve_plan
from pipeline.planning.settings import load_settings


def plan_for(root: Path, env=None, **overrides):
    return resolve_plan(root, env or {}, overrides)


def by_image(plan):
    return {c.image: c for c in plan.components}


# --- components ----------------------------------------------------------------------------


def test_order_is_foundation_then_dependent_each_sorted(repo: Path):
    plan = plan_for(repo)
    assert [(c.phase, c.image) for c in plan.components] == [
        ("foundation", "ai-infra-gitea"),
        ("foundation", "ai-infra-nginx"),
        ("dependent", "ai-infra-backend"),
        ("dependent", "ai-infra-backend-init"),
        ("dependent", "ai-infra-frontend"),
    ]


def test_one_dockerfile_two_images_with_targets(repo: Path):
    images = by_image(plan_for(repo))
    backend, init = images["ai-infra-backend"], images["ai-infra-backend-init"]
    assert (backend.name, backend.target) == ("backend", "backend")
    assert (init.name, init.target) == ("backend", "backend-init")
    assert backend.dockerfile.path == init.dockerfile.path == "src/backend/Dockerfile.tpl"
    assert images["ai-infra-frontend"].target is None


def test_refs_with_and_without_registry(repo: Path):
    assert by_image(plan_for(repo))["ai-infra-backend"].ref == "ai-infra-backend:v0.3.8"
    plan = plan_for(repo, private_registry="harbor.example.com/ai-infra", image_tag="v1.0.0")
    assert plan.registry == "harbor.example.com/ai-infra"
    assert by_image(plan)["ai-infra-backend-init"].ref == (
        "harbor.example.com/ai-infra/ai-infra-backend-init:v1.0.0"
    )


def test_template_wins_over_committed_dockerfile(repo: Path):
    backend = by_image(plan_for(repo))["ai-infra-backend"]
    assert "ARG APT_MIRROR=mirrors.aliyun.com" in backend.dockerfile.text
    assert "baked" not in backend.dockerfile.text and "{{" not in backend.dockerfile.text


def test_template_only_and_dockerfile_only_components(repo: Path):
    images = by_image(plan_for(repo))
    assert images["ai-infra-nginx"].dockerfile.path == "src/nginx/Dockerfile.tpl"
    assert "ARG APT_MIRROR=mirrors.aliyun.com" in images["ai-infra-nginx"].dockerfile.text
    assert images["ai-infra-frontend"].dockerfile.path == "src/frontend/Dockerfile"


def test_build_args_are_only_declared_args(repo: Path):
    images = by_image(plan_for(repo, {"JWT_SECRET": "env-s3cret"}))
    # frontend declares NPM_REGISTRY, REACT_APP_API_URL (no build value) and VERSION.
    assert images["ai-infra-frontend"].build_args == {
        "NPM_REGISTRY": "https://registry.npmmirror.com",
        "VERSION": "v0.3.8",
    }
    # backend declares JWT_SECRET: a secret is never a build value, so never an argument.
    assert images["ai-infra-backend"].build_args == {
        "GOLANG_IMAGE_VERSION": "1.25-bookworm",
        "GO_PROXY": "https://goproxy.cn,direct",
        "APT_MIRROR": "mirrors.aliyun.com",
        "VERSION": "v0.3.8",
    }


def test_empty_build_value_is_not_passed(repo: Path):
    images = by_image(plan_for(repo, {"NPM_REGISTRY": ""}))
    assert "NPM_REGISTRY" not in images["ai-infra-frontend"].build_args


def test_target_missing_from_dockerfile_names_file_and_target(tree):
    root = tree({"src/a/Dockerfile": "FROM x AS a", "src/a/build-targets.conf": "nope ai-infra-a"})
    with pytest.raises(BadInput, match=r"src/a/Dockerfile: no stage named 'nope'"):
        plan_for(root)


def test_template_missing_variable_names_file_and_variable(tree):
    root = tree({"src/a/Dockerfile.tpl": "ARG V={{KEYCLOAK_VERSION}}\nFROM x:${V}"})
    with pytest.raises(BadInput) as info:
        plan_for(root)
    assert str(info.value) == (
        "src/a/Dockerfile.tpl: template variable KEYCLOAK_VERSION has no value "
        "(set it in .env or the environment)"
    )


def test_template_secret_variable_is_withheld(tree):
    root = tree({".env": "JWT_SECRET=x\n", "src/a/Dockerfile.tpl": "ARG S={{JWT_SECRET}}"})
    with pytest.raises(BadInput, match="JWT_SECRET is withheld from builds"):
        plan_for(root)


def test_template_empty_value_renders_empty(tree):
    # nightingale: `N9E_FE_VERSION=` in .env.example means "latest"; the Dockerfile handles "".
    root = tree(
        {
            ".env": "N9E_FE_VERSION=\n",
            "src/a/Dockerfile.tpl": "ARG N9E_FE_VERSION={{N9E_FE_VERSION}}\nFROM busybox\n",
        }
    )
    component = plan_for(root).components[0]
    assert "ARG N9E_FE_VERSION=\n" in component.dockerfile.text + "\n"
    assert component.build_args == {}


def test_template_can_use_image_tag(tree):
    root = tree({"src/a/Dockerfile.tpl": "FROM base:{{IMAGE_TAG}}"})
    assert plan_for(root, image_tag="v9").components[0].dockerfile.text == "FROM base:v9"


def test_uses_build_platform_is_reported(tree):
    root = tree({"src/a/Dockerfile": "FROM --platform=$BUILDPLATFORM golang AS b\nFROM x"})
    assert plan_for(root).components[0].uses_build_platform is True


# --- dependencies --------------------------------------------------------------------------


def test_safeline_is_left_out_unless_its_switch_is_true(repo: Path):
    assert plan_for(repo).skipped == (
        Skipped("safeline", "SAFELINE_ENABLED is not true (set it to include safeline, as "
                "build.sh does)"),
    )  # fmt: skip
    assert plan_for(repo, {"SAFELINE_ENABLED": "false"}).skipped[0].name == "safeline"
    assert (
        plan_for(repo, {"SAFELINE_ENABLED": "true"})
        .skipped[0]
        .reason.startswith("src/safeline/dependency.conf.tpl: no value for")
    )


def test_dependencies_rendered_deduplicated_and_safeline_skipped(repo: Path):
    plan = plan_for(repo, {"SAFELINE_ENABLED": "true"})
    assert [(d.name, d.image) for d in plan.dependencies] == [
        ("gitea", "gitea/gitea:1.25.1"),
        ("mysql", "mysql:8.0"),  # the template wins over build.sh's `mysql:8\.0`
        ("redis", "redis:7-alpine"),  # redis-copy names the same image: listed once
    ]
    assert plan.skipped == (
        Skipped(
            "safeline",
            "src/safeline/dependency.conf.tpl: no value for SAFELINE_IMAGE_PREFIX, "
            "SAFELINE_REGION, SAFELINE_IMAGE_TAG (set them to include it)",
        ),
    )


def test_dependency_template_with_values_is_included(repo: Path):
    (repo / "src/safeline/dependency.conf.tpl").write_text("chaitin/tengine:{{SAFELINE_VERSION}}")
    plan = plan_for(repo, {"SAFELINE_VERSION": "9.1", "SAFELINE_ENABLED": "true"})
    assert ("safeline", "chaitin/tengine:9.1") in [(d.name, d.image) for d in plan.dependencies]
    assert plan.skipped == ()


def test_dependency_skip_says_when_a_value_is_set_but_not_a_build_value(repo: Path):
    plan = plan_for(
        repo,
        {"SAFELINE_IMAGE_PREFIX": "chaitin", "SAFELINE_REGION": "-g", "SAFELINE_ENABLED": "true"},
    )
    assert plan.skipped[0].reason == (
        "src/safeline/dependency.conf.tpl: no value for SAFELINE_IMAGE_TAG (set them to include "
        "it); SAFELINE_IMAGE_PREFIX, SAFELINE_REGION not build values (*_VERSION, *_IMAGE or "
        "allow-listed)"
    )


@pytest.mark.parametrize(
    ("files", "match"),
    [
        (
            {"src/d/dependency.conf": "mysql:8\\.0\n"},
            r"src/d/dependency\.conf: 'mysql:8\\\\\.0' is not",
        ),
        ({"src/d/dependency.conf": "# nothing\n"}, r"src/d/dependency\.conf: expected one image"),
        ({"src/d/dependency.conf": "a:1\nb:2\n"}, r"found 2 lines"),
        (
            {".env": "D_VERSION=1 2\n", "src/d/dependency.conf.tpl": "d:{{D_VERSION}}"},
            "'d:1 2' is not",
        ),
    ],
)
def test_broken_dependency_reference_is_bad_input(tree, files, match):
    with pytest.raises(BadInput, match=match):
        plan_for(tree(files))


# --- filter, JSON, doors ----------------------------------------------------------------------


def test_component_filter_keeps_named_components_and_dependencies(repo: Path):
    plan = plan_for(repo, components="backend,gitea")
    assert [c.image for c in plan.components] == [
        "ai-infra-gitea",
        "ai-infra-backend",
        "ai-infra-backend-init",
    ]
    assert [d.name for d in plan.dependencies] == ["gitea"]
    assert plan.skipped == ()


MINI_MATRIX = Path(__file__).resolve().parents[2] / "examples" / "mini-matrix"


def test_a_selection_gets_the_service_it_reaches_while_it_builds():
    plan = plan_for(MINI_MATRIX, components="slurm-master")
    images = by_image(plan)
    assert list(images) == ["ai-infra-apphub", "ai-infra-slurm-master"]
    assert images["ai-infra-slurm-master"].reaches == {"APPHUB_URL": "ai-infra-apphub"}
    assert plan.notes == (
        "PIPELINE_COMPONENTS leaves out what its images need while they build; also built: "
        "apphub (ai-infra-slurm-master reaches it as APPHUB_URL while it builds)",
    )
    assert plan.dependencies == ()  # apphub is built for slurm-master, not released with its own
    assert plan_for(MINI_MATRIX, components="apphub,slurm-master").notes == ()


def test_a_selection_gets_the_release_image_it_reads(tree):
    root = tree({
        "src/node/Dockerfile": "FROM busybox:1.36\nCOPY --from=ai-infra-gateway:latest /w /w\n",
        "src/gateway/Dockerfile": "FROM ai-infra-base:v1\n",
        "src/base/Dockerfile": "FROM busybox:1.36\n",
        "src/other/Dockerfile": "FROM busybox:1.36\n",
    })  # fmt: skip
    plan = plan_for(root, components="node")
    assert [c.image for c in plan.components] == [
        "ai-infra-base", "ai-infra-gateway", "ai-infra-node"
    ]  # fmt: skip
    assert by_image(plan)["ai-infra-node"].needs == ("ai-infra-gateway",)
    assert plan.notes[0].endswith(
        "also built: base (ai-infra-gateway reads ai-infra-base); "
        "gateway (ai-infra-node reads ai-infra-gateway)"
    )


def test_an_unselected_component_is_not_read(tree):
    """Only what the selection needs is planned: a broken component left out stays out."""
    root = tree({"src/a/Dockerfile": "FROM busybox\n", "src/b/Dockerfile": "RUNN x\n"})
    assert [c.image for c in plan_for(root, components="a").components] == ["ai-infra-a"]


def test_a_run_that_builds_no_image_is_refused(repo: Path):
    only_a_dependency = plan_for(repo, components="mysql")
    with pytest.raises(BadInput, match=r"^PIPELINE_COMPONENTS=mysql builds no image: it selects "
                       r"only dependencies: mysql \(third-party"):  # fmt: skip
        check_builds_an_image(only_a_dependency, dependencies_count=False)
    check_builds_an_image(only_a_dependency, dependencies_count=True)  # export, bundle: its tar
    switched_off = plan_for(repo, components="safeline")
    with pytest.raises(BadInput, match=r"safeline builds no image: safeline is skipped \(SAFE"):
        check_builds_an_image(switched_off, dependencies_count=True)


def test_per_arch_tags_within_the_limit_plan(repo: Path):
    tag = "v" + "1" * 121  # 122 + "-arm64": 128
    plan = plan_for(repo, {"PIPELINE_PER_ARCH_TAGS": "true"}, image_tag=tag)
    assert plan.tag == tag
    with pytest.raises(BadInput, match="IMAGE_TAG is 123 characters"):
        plan_for(repo, {"PIPELINE_PER_ARCH_TAGS": "true"}, image_tag=tag + "1")
    assert plan_for(repo, image_tag=tag + "1" * 6).tag  # 128 without per-arch tags


def test_unknown_component_lists_known_ones(repo: Path):
    with pytest.raises(BadInput) as info:
        plan_for(repo, {"PIPELINE_COMPONENTS": "backnd"})
    message = str(info.value)
    assert "unknown 'backnd'" in message and "did you mean 'backend'" in message
    assert "known: backend, frontend, gitea, mysql, nginx, redis, redis-copy, safeline" in message


def test_to_json_shape_and_no_values(repo: Path, secrets):
    data = plan_for(repo, {"GITEA_ADMIN_TOKEN": "x"}).to_json()
    assert set(data) == {
        "tag", "platforms", "registry", "engines", "components", "dependencies", "skipped",
        "generated", "notes",
    }  # fmt: skip
    assert data["tag"] == "v0.3.8" and data["platforms"] == ["linux/amd64", "linux/arm64"]
    backend = data["components"][2]
    assert backend == {
        "name": "backend",
        "image": "ai-infra-backend",
        "ref": "ai-infra-backend:v0.3.8",
        "dockerfile": "src/backend/Dockerfile.tpl",
        "target": "backend",
        "phase": "dependent",
        "needs": [],
        "serves": None,
        "reaches": [],
        "private_key": False,
        "build_args": ["APT_MIRROR", "GOLANG_IMAGE_VERSION", "GO_PROXY", "VERSION"],
    }
    assert data["dependencies"][0] == {
        "name": "gitea",
        "image": "gitea/gitea:1.25.1",
        "origins": ["src/gitea/dependency.conf.tpl"],
    }
    text = json.dumps(data)
    assert "goproxy.cn" not in text  # names only, never values
    assert not [value for value in secrets.values() if value in text]


def test_make_plan_directly(repo: Path):
    settings = load_settings(repo, {}, {"target_platforms": "linux/arm64"})
    plan = make_plan(discover(repo), settings, repo)
    assert plan.platforms == ("linux/arm64",)


def test_resolve_plan_missing_source(tmp_path: Path):
    with pytest.raises(BadInput, match="source directory does not exist"):
        resolve_plan(tmp_path / "nope", {}, {})


# --- Dockerfile reading ----------------------------------------------------------------------

DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG GOLANG_IMAGE=golang:1.25 UBUNTU_VERSION
arg lower_case=1
FROM ${GOLANG_IMAGE} AS Builder
ARG A=1 B \\
    # comment inside a continuation
    C="x y"
RUN cat <<EOF > /f
ARG NOT_AN_ARG
FROM not-a-stage AS fake
EOF
RUN echo done
FROM --platform=${BUILDPLATFORM} ubuntu:${UBUNTU_VERSION} AS runtime
ARG VERSION="dev"
"""


def test_declared_args_forms():
    assert Dockerfile(DOCKERFILE).declared_args == [
        "GOLANG_IMAGE",
        "UBUNTU_VERSION",
        "lower_case",
        "A",
        "B",
        "C",
        "VERSION",
    ]


def test_stage_names_and_targets():
    assert Dockerfile(DOCKERFILE).stage_names == ["builder", "runtime"]
    assert Dockerfile(DOCKERFILE).has_target("builder")
    assert Dockerfile(DOCKERFILE).has_target("Runtime")
    assert not Dockerfile(DOCKERFILE).has_target("fake")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM --platform=$BUILDPLATFORM golang AS b", True),
        ("from --platform=${BUILDPLATFORM} golang", True),
        ('FROM --platform="$BUILDPLATFORM" golang', True),
        ("FROM --platform=$TARGETPLATFORM golang", False),
        ("FROM golang\nRUN echo $BUILDPLATFORM", False),
        ("FROM --platform=$BUILDPLATFORMX golang", False),
    ],
)
def test_uses_build_platform(text, expected):
    assert Dockerfile(text).uses_build_platform is expected


def test_escape_directive():
    text = "# escape=`\nFROM x\nARG A=1 `\n    B=2\n"
    assert Dockerfile(text).declared_args == ["A", "B"]
