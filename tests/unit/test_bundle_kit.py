"""The offline site's deployment kit: the compose file and helm values pinned by digest to
what the bundle holds, moved to the site's registry on push, checked by verify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from pipeline.planning import kit
from pipeline.planning.plan import resolve_plan

ROOT = Path(__file__).resolve().parents[2]
MINI_MATRIX = ROOT / "examples" / "mini-matrix"
FIXTURE = Path(__file__).parent / "fixtures" / "ai-infra-matrix"


def inventory_of(plan) -> dict:
    """What a bundle of `plan` would list: each image with a digest of its own."""
    images = [(i.image, i.ref) for i in plan.components] + [
        (d.name, d.image) for d in plan.dependencies
    ]
    return {"images": [{"name": n, "ref": r, "digest": f"sha256:{n.encode().hex():0<64}"[:71]}
                       for n, r in images]}  # fmt: skip


def written(tmp_path: Path, plan, registry: str | None) -> Path:
    inventory = inventory_of(plan)
    folder = tmp_path / "kit"
    folder.mkdir()
    for name, data in kit.kit_files(plan.kit, kit.pins(inventory, registry), registry).items():
        (folder / name).write_bytes(data)
    return folder


def test_mini_matrix_s_compose_file_names_every_image_by_the_bundle_s_digest(tmp_path):
    plan = resolve_plan(MINI_MATRIX, {}, {})
    folder = written(tmp_path, plan, "harbor.example.com/ai-infra")
    digests = {e["name"]: e["digest"] for e in inventory_of(plan)["images"]}
    services = yaml.safe_load((folder / kit.COMPOSE).read_text())["services"]
    assert services["gateway"]["image"] == (
        f"harbor.example.com/ai-infra/ai-infra-gateway@{digests['ai-infra-gateway']}"
    )
    assert services["shell"]["image"] == f"harbor.example.com/ai-infra/busybox@{digests['gitea']}"
    assert services["go-tools"]["image"].endswith(f"/golang@{digests['golang']}")
    assert services["waf"]["image"] == "chaitin/safeline-tengine:9.3.0"  # rendered, not shipped
    assert services["backend"]["environment"]["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD}"
    assert services["portal"]["environment"]["TZ"] == "Asia/Shanghai"  # {{TZ}}: not a secret
    manifest = json.loads((folder / kit.KIT_JSON).read_text())
    assert len(manifest["references"]) == 8
    assert manifest["not_pinned"] == [
        "docker-compose.yml.tpl:50: waf: SAFELINE_ENABLED is not true"
    ]
    assert (folder / kit.SITE_ENV).read_text().splitlines()[1:] == ["POSTGRES_PASSWORD="]
    assert kit.missing_from_bundle(folder, inventory_of(plan)) == []


def test_a_secret_s_value_never_reaches_the_kit(tmp_path):
    plan = resolve_plan(MINI_MATRIX, {"POSTGRES_PASSWORD": "pg-s3cret-value"}, {})
    folder = written(tmp_path, plan, None)
    assert not [p for p in folder.iterdir() if b"pg-s3cret-value" in p.read_bytes()]


def test_push_moves_the_references_to_the_site_s_registry_and_keeps_the_digests(tmp_path):
    plan = resolve_plan(MINI_MATRIX, {}, {})
    folder = written(tmp_path, plan, None)
    before = json.loads((folder / kit.KIT_JSON).read_text())["references"]
    assert before[0]["reference"].startswith("ai-infra-gateway@sha256:")
    moved = kit.rewritten(folder, inventory_of(plan), "site.lan:5000/matrix")
    refs = json.loads(moved[kit.KIT_JSON])["references"]
    assert [r["digest"] for r in refs] == [r["digest"] for r in before]
    assert all(r["reference"].startswith("site.lan:5000/matrix/") for r in refs)
    services = yaml.safe_load(moved[kit.COMPOSE])["services"]
    assert services["gateway"]["image"] == refs[0]["reference"]


def test_verify_names_an_image_the_kit_references_and_the_bundle_lacks(tmp_path):
    plan = resolve_plan(MINI_MATRIX, {}, {})
    folder = written(tmp_path, plan, None)
    inventory = inventory_of(plan)
    gone = next(e for e in inventory["images"] if e["name"] == "ai-infra-portal")
    inventory["images"].remove(gone)
    assert kit.missing_from_bundle(folder, inventory) == [
        f"docker-compose.yml.tpl:14: ai-infra-portal@{gone['digest']}"
    ]
    compose = folder / kit.COMPOSE  # an image line edited by hand: neither pinned nor left out
    compose.write_text(
        compose.read_text().replace(gone["digest"], "").replace("portal@", "portal:9")
    )
    assert kit.missing_from_bundle(folder, inventory)[-1] == (
        "docker-compose.yml:14: ai-infra-portal:9"
    )


def test_the_real_repository_s_helm_images_are_pinned_in_one_values_file(tmp_path):
    root = tmp_path / "ai-infra-matrix"
    shutil.copytree(FIXTURE, root)
    for name, image in {"redis": "redis:7-alpine", "postgres": "postgres:15-alpine"}.items():
        (root / "src" / name).mkdir(parents=True)
        (root / "src" / name / "dependency.conf").write_text(f"{image}\n")
    plan = resolve_plan(root, {}, {})
    folder = written(tmp_path, plan, "harbor.example.com/ai-infra")
    values = yaml.safe_load((folder / kit.HELM).read_text())
    helm = {h.where: h for h in plan.kit.helm}
    assert helm, plan.kit.left
    for h in helm.values():
        node = values
        for key in h.path:
            node = node[key]
        digest = kit.pins(inventory_of(plan), None)[h.image].digest
        assert node["tag"].endswith(f"@{digest}") and node["repository"].startswith(
            "harbor.example.com/ai-infra/"
        ), h
    assert kit.missing_from_bundle(folder, inventory_of(plan)) == []
