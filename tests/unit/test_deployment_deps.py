"""Third-party images the deployment runs (pipeline/planning/deployment.py), merged into the plan's
dependencies with dependency.conf's: rendering, deduplication, origins, profiles, skips, helm."""

import json
import shutil
from pathlib import Path

import pytest

from pipeline.doors import console
from pipeline.errors import BadInput
from pipeline.oci.reference import canonical
from pipeline.planning.deployment import dependency_name, deployment_images, interpolate
from pipeline.planning.plan import resolve_plan
from pipeline.planning.render import fill
from pipeline.planning.settings import load_settings

FIXTURE = Path(__file__).parent / "fixtures" / "ai-infra-matrix"

# The fake repository's deployment, shaped like upstream's (line numbers matter: see ORIGINS).
COMPOSE = """\
services:
  backend:
    image: ai-infra-backend:{{IMAGE_TAG}}
  apphub:
    image: ${PRIVATE_REGISTRY}ai-infra-apphub:{{IMAGE_TAG}}
  redis:
    image: redis:7-alpine
  mysql:
    image: docker.io/library/mysql:8.0
  seaweedfs-master:
    image: {{SEAWEEDFS_IMAGE}}:{{SEAWEEDFS_VERSION}}
    volumes:
      - {{CGROUP_MOUNT}}
  seaweedfs-filer:
    image: {{SEAWEEDFS_IMAGE}}:{{SEAWEEDFS_VERSION}}
    environment:
      TZ: {{TZ}}
      JWT: {{JWT_SECRET}}
  victoriametrics:
    image: victoriametrics/victoria-metrics:{{VICTORIAMETRICS_VERSION}}
  argocd-repo-server:
    image: quay.io/argoproj/argocd:${ARGOCD_VERSION:-v2.13.3}
    profiles:
      - argocd
      - gitops
  built-here:
    image: example/built:1
    build: ./src/built
  safeline-tengine:
    image: {{SAFELINE_IMAGE_PREFIX}}/safeline-tengine{{SAFELINE_REGION}}:{{SAFELINE_IMAGE_TAG}}
    profiles: [safeline]
"""
RUNTIME = (
    "SEAWEEDFS_IMAGE=chrislusf/seaweedfs\nSEAWEEDFS_VERSION=3.80\nTZ=Asia/Shanghai\n"
    "VICTORIAMETRICS_VERSION=v1.115.0\nSAFELINE_ENABLED=false\nSAFELINE_IMAGE_PREFIX=chaitin\n"
    "SAFELINE_REGION=\nSAFELINE_IMAGE_TAG=9.3.0\n"
)


@pytest.fixture
def deployed(repo: Path) -> Path:
    """The fake repository with a compose template and the runtime keys it uses."""
    (repo / "docker-compose.yml.tpl").write_text(COMPOSE)
    with (repo / ".env.example").open("a") as env:
        env.write(RUNTIME)
    return repo


def plan_for(root: Path, env=None, **overrides):
    return resolve_plan(root, env or {}, overrides)


def deps(plan) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(d.name, d.image, d.origins) for d in plan.dependencies]


# --- compose ---------------------------------------------------------------------------------


def test_compose_images_join_dependency_conf_once_each_with_every_origin(deployed: Path):
    assert deps(plan_for(deployed)) == [
        ("gitea", "gitea/gitea:1.25.1", ("src/gitea/dependency.conf.tpl",)),
        ("mysql", "mysql:8.0", ("src/mysql/dependency.conf.tpl", "docker-compose.yml.tpl:9")),
        (
            "redis",
            "redis:7-alpine",
            (
                "src/redis/dependency.conf",
                "src/redis-copy/dependency.conf",
                "docker-compose.yml.tpl:7",
            ),
        ),
        (
            "seaweedfs",
            "chrislusf/seaweedfs:3.80",
            ("docker-compose.yml.tpl:11", "docker-compose.yml.tpl:15"),
        ),
        (
            "victoria-metrics",
            "victoriametrics/victoria-metrics:v1.115.0",
            ("docker-compose.yml.tpl:20",),
        ),
        ("argocd", "quay.io/argoproj/argocd:v2.13.3", ("docker-compose.yml.tpl:22",)),
    ]  # fmt: skip


def test_safeline_profile_is_skipped_unless_enabled(deployed: Path):
    skipped = {s.name: s.reason for s in plan_for(deployed).skipped}
    assert skipped["chaitin/safeline-tengine:9.3.0"] == (
        "docker-compose.yml.tpl:30: SAFELINE_ENABLED is not true"
    )
    enabled = plan_for(deployed, {"SAFELINE_ENABLED": "true"})
    assert (
        "safeline-tengine",
        "chaitin/safeline-tengine:9.3.0",
        ("docker-compose.yml.tpl:30",),
    ) in (deps(enabled))
    assert [s.name for s in enabled.skipped] == ["safeline"]  # dependency.conf.tpl's, as before


def test_template_variable_without_value_skips_the_image_naming_it(deployed: Path):
    text = COMPOSE.replace("{{VICTORIAMETRICS_VERSION}}", "{{VM_VERSION}}")
    (deployed / "docker-compose.yml.tpl").write_text(text)
    plan = plan_for(deployed)
    assert "victoria-metrics" not in [d.name for d in plan.dependencies]
    reasons = {s.name: s.reason for s in plan.skipped}
    assert reasons["victoriametrics/victoria-metrics:{{VM_VERSION}}"] == (
        "docker-compose.yml.tpl:20: no value for VM_VERSION (set them to include it)"
    )


def test_an_image_left_out_in_several_services_is_skipped_once(deployed: Path):
    plan = plan_for(deployed, {"SEAWEEDFS_VERSION": ""})
    seaweedfs = [s for s in plan.skipped if "SEAWEEDFS" in s.name]
    assert [(s.name, s.reason) for s in seaweedfs] == [
        (
            "{{SEAWEEDFS_IMAGE}}:{{SEAWEEDFS_VERSION}}",
            "docker-compose.yml.tpl:11: no value for SEAWEEDFS_VERSION (set them to include it)",
        )
    ]


def test_an_empty_value_is_fine_when_the_reference_is_whole(deployed: Path):
    # SAFELINE_REGION= is empty upstream on purpose: the image is still chaitin/safeline-tengine.
    plan = plan_for(deployed, {"SAFELINE_ENABLED": "true"})
    assert "chaitin/safeline-tengine:9.3.0" in [d.image for d in plan.dependencies]


def test_a_secret_is_never_used_to_render(deployed: Path, secrets):
    text = COMPOSE + "  leaky:\n    image: registry.example.com/{{JWT_SECRET}}/x:1\n"
    (deployed / "docker-compose.yml.tpl").write_text(text)
    plan = plan_for(deployed, {"GITEA_ADMIN_TOKEN": "env-token-s3cret"})
    reason = {s.name: s.reason for s in plan.skipped}["registry.example.com/{{JWT_SECRET}}/x:1"]
    assert (
        reason == "docker-compose.yml.tpl:33: JWT_SECRET look secret and are never used to render"
    )
    printed = json.dumps(plan.to_json()) + console.plan_table(plan)
    assert not [v for v in [*secrets.values(), "env-token-s3cret"] if v in printed]
    values = load_settings(deployed, {"GITEA_ADMIN_TOKEN": "x"}, {}).public_values
    assert not set(values) & {*secrets, "GITEA_ADMIN_TOKEN"}
    assert values["SEAWEEDFS_IMAGE"] == "chrislusf/seaweedfs"  # runtime keys are there


def test_compose_variables_resolve_from_values_else_their_default():
    values = {"ARGOCD_VERSION": "v3.0.0", "EMPTY": ""}
    assert interpolate("argocd:${ARGOCD_VERSION:-v2.13.3}", values) == ("argocd:v3.0.0", [])
    assert interpolate("argocd:${NOPE:-v2.13.3}", values) == ("argocd:v2.13.3", [])
    assert interpolate("x:${EMPTY:-1}", values) == ("x:1", [])
    assert interpolate("x:${EMPTY-1}", values) == ("x:", [])
    assert interpolate("x:$ARGOCD_VERSION", values) == ("x:v3.0.0", [])
    assert interpolate("x:${NOPE}", values) == ("x:", ["NOPE"])
    assert interpolate("x:${EMPTY:?needed}", values) == ("x:", ["EMPTY"])
    assert interpolate("$$x", values) == ("$x", [])


def test_argocd_from_the_env_file_wins_over_the_default(deployed: Path):
    plan = plan_for(deployed, {"ARGOCD_VERSION": "v2.14.0"})
    assert "quay.io/argoproj/argocd:v2.14.0" in [d.image for d in plan.dependencies]


def test_plain_compose_file_is_read_when_there_is_no_template(repo: Path):
    (repo / "docker-compose.yml").write_text("services:\n  cache:\n    image: memcached\n")
    assert deps(plan_for(repo))[-1] == (
        "memcached",
        "memcached:latest",  # a pull with no tag takes latest; the bundle names it so
        ("docker-compose.yml:3",),
    )
    (repo / "docker-compose.yml.tpl").write_text("services:\n  c:\n    image: memcached:1.6\n")
    assert deps(plan_for(repo))[-1][1:] == ("memcached:1.6", ("docker-compose.yml.tpl:3",))


def test_component_filter_leaves_deployment_images_out(deployed: Path):
    plan = plan_for(deployed, components="backend,redis")
    assert deps(plan) == [("redis", "redis:7-alpine", ("src/redis/dependency.conf",))]
    assert plan.skipped == ()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("services:\n  a:\n    image: [x, y]\n", r"^docker-compose\.yml\.tpl:3: expected a single"),
        (
            "services:\n  a:\n    image: x:1\n  b: [\n",
            r"^docker-compose\.yml\.tpl:5: not valid YAML",
        ),
        ("services: [a]\n", r"^docker-compose\.yml\.tpl:1: `services` is not a mapping"),
        ("services:\n  a:\n    image: Bad/Name:1\n", r"tpl:3: 'Bad/Name:1' is not a valid image"),
        ("services:\n  a:\n    image: x:1\n    profiles: safeline\n", r"tpl:4: `profiles` is not"),
    ],
)
def test_odd_compose_file_is_bad_input_naming_file_and_line(repo: Path, text, match):
    (repo / "docker-compose.yml.tpl").write_text(text)
    with pytest.raises(BadInput, match=match):
        plan_for(repo)


# --- helm ------------------------------------------------------------------------------------

CHART = {
    "helm/app/Chart.yaml": "apiVersion: v2\nname: app\nappVersion: '2.4'\n",
    "helm/app/values.yaml": """\
global:
  imageRegistry: ""
web:
  image:
    repository: ai-infra-frontend
    tag: v0.3.8
  sidecars:
    - name: exporter
      metrics:
        image:
          registry: quay.io
          repository: prometheus/node-exporter
          tag: v1.8.0
store:
  image:
    repository: chrislusf/seaweedfs
    tag: 3.80
app:
  image:
    repository: example/app
""",
    "helm/app/charts/db/Chart.yaml": "apiVersion: v2\nname: db\n",
    "helm/app/charts/db/values.yaml": "image:\n  repository: patroni/patroni\n",
    "helm/app/charts/cache-1.0.0.tgz": "not read: packed subcharts are left alone",
}


def test_helm_values_images_nested_with_registry_and_app_version(tree):
    root = tree(CHART)
    found, left = deployment_images(root, {})
    assert [(f.image, f.origin) for f in found] == [
        ("quay.io/prometheus/node-exporter:v1.8.0", "helm/app/values.yaml:10"),
        ("chrislusf/seaweedfs:3.80", "helm/app/values.yaml:15"),  # as written, not 3.8
        ("example/app:2.4", "helm/app/values.yaml:19"),  # no tag: the chart's appVersion
    ]
    assert [(s.image, s.reason) for s in left] == [
        (
            "patroni/patroni",
            "helm/app/charts/db/values.yaml:1: no tag, and helm/app/charts/db/Chart.yaml "
            "has no appVersion",
        )
    ]


def test_helm_images_reach_the_plan_and_the_json(tree):
    root = tree({**CHART, "src/store/dependency.conf": "chrislusf/seaweedfs:3.80\n"})
    data = plan_for(root).to_json()
    assert data["dependencies"] == [
        {
            "name": "store",
            "image": "chrislusf/seaweedfs:3.80",
            "origins": ["src/store/dependency.conf", "helm/app/values.yaml:15"],
        },
        {
            "name": "node-exporter",
            "image": "quay.io/prometheus/node-exporter:v1.8.0",
            "origins": ["helm/app/values.yaml:10"],
        },
        {"name": "app", "image": "example/app:2.4", "origins": ["helm/app/values.yaml:19"]},
    ]
    assert data["skipped"][0]["name"] == "patroni/patroni"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a: [\n", r"^helm/app/values\.yaml:2: not valid YAML"),
        ("image:\n  repository: [x]\n", r"^helm/app/values\.yaml:1: expected a single value"),
        ("image:\n  repository: x\n  tag: a b\n", r"^helm/app/values\.yaml:1: 'x:a b' is not"),
    ],
)
def test_odd_helm_values_are_bad_input_naming_file_and_line(tree, text, match):
    root = tree({"helm/app/values.yaml": text})
    with pytest.raises(BadInput, match=match):
        deployment_images(root, {})


# --- names, text, spelling -------------------------------------------------------------------


def test_dependency_names_are_unique_and_deterministic():
    assert dependency_name("quay.io/argoproj/argocd:v2.13.3", set()) == "argocd"
    assert dependency_name("chrislusf/seaweedfs:latest", {"seaweedfs"}) == "seaweedfs-latest"
    taken = {"redis", "redis-7.2"}
    assert dependency_name("bitnami/redis:7.2", taken) == "bitnami-redis-7.2"
    taken |= {"bitnami-redis-7.2"}
    assert dependency_name("other.io/bitnami/redis:7.2", taken) == "bitnami-redis-7.2-2"


def test_a_derived_name_never_takes_a_dependency_conf_name(repo: Path):
    (repo / "docker-compose.yml").write_text("services:\n  r:\n    image: bitnami/redis:7.2\n")
    assert deps(plan_for(repo))[-1][:2] == ("redis-7.2", "bitnami/redis:7.2")


def test_text_plan_shows_where_each_dependency_was_found(deployed: Path):
    text = console.plan_table(plan_for(deployed))
    assert "DEPENDENCY        IMAGE" in text and "FOUND IN" in text
    assert "src/redis/dependency.conf +2" in text
    assert "victoriametrics/victoria-metrics:v1.115.0  docker-compose.yml.tpl:20\n" in text


def test_one_spelling_per_image():
    assert (
        canonical("redis:7")
        == canonical("docker.io/library/redis:7")
        == ("docker.io/library/redis:7")
    )
    assert canonical("memcached") == "docker.io/library/memcached:latest"
    assert canonical("quay.io/argoproj/argocd:v2") == "quay.io/argoproj/argocd:v2"
    assert canonical("bitnami/redis:7") != canonical("redis:7")


def test_fill_renders_what_it_can_and_empties_the_rest():
    assert fill("a {{X}} b {{ Y }}", {"X": "1"}) == "a 1 b "


# --- the real repository (trimmed copies of its files, see tests/unit/fixtures) --------------


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    root = tmp_path / "ai-infra-matrix"
    shutil.copytree(FIXTURE, root)
    for name, image in {"redis": "redis:7-alpine", "postgres": "postgres:15-alpine"}.items():
        (root / "src" / name).mkdir(parents=True)
        (root / "src" / name / "dependency.conf").write_text(f"{image}\n")
    return root


def test_real_repository_extra_images(upstream: Path):
    plan = plan_for(upstream)
    images = {d.image: d for d in plan.dependencies}
    for image in (
        "chrislusf/seaweedfs:3.80",
        "victoriametrics/victoria-metrics:v1.115.0",
        "quay.io/argoproj/argocd:v2.13.3",
        "patroni/patroni:3.2.2-p1",
        "bitnami/jmx-exporter:0.19.0",
        "oliver006/redis_exporter:v1.55.0-alpine",
    ):
        assert image in images, image
    assert len(images["chrislusf/seaweedfs:3.80"].origins) == 3  # master, volume, filer
    assert len(images["quay.io/argoproj/argocd:v2.13.3"].origins) == 2
    assert images["redis:7-alpine"].origins[0] == "src/redis/dependency.conf"
    assert len(images["redis:7-alpine"].origins) == 4  # conf, compose, values, redis-cluster
    assert not [i for i in images if "ai-infra-" in i or "safeline" in i]
    safeline = [s for s in plan.skipped if "safeline" in s.name]
    assert len(safeline) == 7
    assert all(s.reason.endswith(": SAFELINE_ENABLED is not true") for s in safeline)
    names = [d.name for d in plan.dependencies]
    assert len(names) == len(set(names))
    assert {"seaweedfs", "victoria-metrics", "argocd", "patroni"} <= set(names)


def test_real_repository_with_safeline_enabled(upstream: Path):
    plan = plan_for(upstream, {"SAFELINE_ENABLED": "true"})
    safeline = [d.image for d in plan.dependencies if "safeline" in d.image]
    assert len(safeline) == 7 and "chaitin/safeline-postgres:15.2" in safeline
    assert not [s for s in plan.skipped if "safeline" in s.name]


# --- examples/mini-matrix ----------------------------------------------------------------------

MINI_MATRIX = Path(__file__).resolve().parents[2] / "examples" / "mini-matrix"
# What lab/seed-images puts in the lab's registry for both platforms (docker.io resolves there).
LAB_IMAGES = {"busybox:1.36", "debian:bookworm-slim", "golang:1.19-bookworm"}


def test_mini_matrix_compose_adds_one_lab_image_and_skips_safeline():
    plan = resolve_plan(MINI_MATRIX, {}, {})
    assert [(d.name, d.image, len(d.origins)) for d in plan.dependencies] == [
        ("gitea", "busybox:1.36", 3),  # gitea's and toolbox's dependency.conf, and compose
        ("os-base", "debian:bookworm-slim", 2),
        ("golang", "golang:1.19-bookworm", 1),  # only the compose file names it
    ]
    assert {d.image for d in plan.dependencies} <= LAB_IMAGES  # the e2e bundle pulls them
    assert [(s.name, s.reason.split(": ", 1)[1]) for s in plan.skipped] == [
        ("chaitin/safeline-tengine:9.3.0", "SAFELINE_ENABLED is not true")
    ]
