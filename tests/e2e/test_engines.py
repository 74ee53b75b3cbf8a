"""Scale-out on the lab's two engines (`LAB_ENGINES=2 scripts/lab up`): linux/arm64 built on
the second engine, linux/amd64 on the first, each index joining what each engine pushed.

Which engine made a manifest is read from what it built: slurm-master holds the address of
the AppHub it reached while it built, on the container network of the engine that built it
(the default engine's is Dagger's 10.87.0.0/16, each extra engine's a /16 in 10.100-199).
The engines' content stores cannot tell: a 0.21 engine drops a session's blobs from its store
soon after the session ends (measured: all of a release's layers gone within a minute).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import pytest
from conftest import (
    MINI_MATRIX,
    MINI_MATRIX_IMAGES,
    PLATFORMS,
    Lab,
    lab_address,
    release_to_lab,
    run_cli,
)
from test_release import platform_files

from pipeline.errors import BundleError
from pipeline.oci import layout

TAG = "v0.3.8"


@pytest.fixture(scope="module")
def second_engine() -> str:
    return lab_address("LAB_ENGINE_2", "LAB_ENGINES=2 scripts/lab up")


APPHUB_LIST = "etc/apt/sources.list.d/apphub.list"


def engine_network(apt_source: str) -> str:
    """Which engine's network the AppHub URL in slurm-master's apt source is on."""
    address = apt_source.split("http://", 1)[1].split("/", 1)[0].split(":")[0]
    first, second = (int(part) for part in address.split(".")[:2])
    assert first == 10, apt_source
    if second == 87:
        return "default"
    assert 100 <= second <= 199, apt_source
    return "extra"


def manifests(lab: Lab, repository: str) -> dict[str, dict]:
    """platform -> (its manifest digest, the manifest) under the release tag."""
    with lab.secure_client() as client:
        index = json.loads(client.get_manifest(repository, TAG)[0])
        return {
            f"{m['platform']['os']}/{m['platform']['architecture']}": {
                "digest": m["digest"],
                **json.loads(client.get_manifest(repository, m["digest"])[0]),
            }
            for m in index["manifests"]
        }


def test_arm64_built_and_pushed_by_the_second_engine_amd64_by_the_first(
    lab: Lab, second_engine: str, tmp_path, unique, monkeypatch
):
    monkeypatch.setenv("PIPELINE_PER_ARCH_TAGS", "true")  # build.sh's -amd64/-arm64 tags too
    project = f"engines-{unique}"
    report_path = tmp_path / "report.json"
    result = release_to_lab(lab, MINI_MATRIX, project, report_path,
                            "--engines", f"linux/arm64={second_engine}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)  # the report, with its engine column
    report = json.loads(report_path.read_text())
    assert [row["image"] for row in report["images"]] == list(MINI_MATRIX_IMAGES)
    for row in report["images"]:
        assert row["status"] == "published", row
        engines = {p["platform"]: p["engine"] for p in row["platforms"]}
        assert engines == {"linux/amd64": "default", "linux/arm64": second_engine}
        found = manifests(lab, f"{project}/{row['image']}")
        assert set(found) == set(PLATFORMS)
        for p in row["platforms"]:  # the report names what the registry's index holds
            assert found[p["platform"]]["digest"] == p["digest"]
            per_arch = f"{TAG}-{p['platform'].split('/')[1]}"
            with lab.secure_client() as client:
                body, _ = client.get_manifest(f"{project}/{row['image']}", per_arch)
            assert layout.digest_bytes(body) == p["digest"], per_arch
    # Each platform's slurm-master reached the AppHub its own engine served, on that
    # engine's container network: so each platform was built on its own engine.
    files = platform_files(lab, f"{project}/ai-infra-slurm-master", TAG)
    networks = {p: engine_network(f[APPHUB_LIST].decode()) for p, f in files.items()}
    assert networks == {"linux/amd64": "default", "linux/arm64": "extra"}, networks


def test_an_unreachable_engine_fails_its_platform_and_nothing_is_published(
    lab: Lab, tmp_path, unique
):
    project = f"engines-{unique}"
    report_path = tmp_path / "report.json"
    gone = "unix:///run/no-such-engine/engine.sock"
    result = release_to_lab(lab, MINI_MATRIX, project, report_path, "--components", "gateway",
                            "--engines", f"linux/arm64={gone}")  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(
        "error: release incomplete: ai-infra-gateway: build failed for linux/arm64"
    )
    row = json.loads(report_path.read_text())["images"][0]
    amd64, arm64 = row["platforms"]
    assert (amd64["status"], amd64["engine"]) == ("not-published", "default")  # built, kept
    assert arm64["status"] == "build-failed" and arm64["engine"] == gone
    assert arm64["error"].startswith(f"engine {gone} for linux/arm64: unreachable")
    with lab.secure_client() as client, pytest.raises(BundleError, match="404"):
        client.get_manifest(f"{project}/ai-infra-gateway", TAG)


def test_a_bundle_from_two_engines_holds_each_engines_platform(second_engine: str, tmp_path):
    output = tmp_path / "bundle"
    result = run_cli("bundle", "create", "--source", str(MINI_MATRIX), "--output", str(output),
                     "--components", "gateway,backend,slurm-master", "--engines",
                     f"linux/arm64={second_engine}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    verified = run_cli("bundle", "verify", str(output))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    inventory = json.loads((output / "inventory.json").read_text())
    images = {i["name"]: i for i in inventory["images"] if i["name"].startswith("ai-infra-")}
    assert set(images) == {
        "ai-infra-gateway", "ai-infra-backend", "ai-infra-backend-init",
        "ai-infra-apphub", "ai-infra-slurm-master",
    }  # fmt: skip
    for image in images.values():
        assert set(image["platforms"]) == set(PLATFORMS)
    networks = {}
    for platform, entry in images["ai-infra-slurm-master"]["platforms"].items():
        manifest = json.loads(layout.blob_path(output, entry["digest"]).read_bytes())
        for la in manifest["layers"]:
            blob = gzip.decompress(layout.blob_path(output, la["digest"]).read_bytes())
            with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
                if APPHUB_LIST in tar.getnames():
                    source = tar.extractfile(APPHUB_LIST).read().decode()
                    networks[platform] = engine_network(source)
    assert networks == {"linux/amd64": "default", "linux/arm64": "extra"}, networks


def test_export_from_two_engines_writes_one_index_per_image_with_both(second_engine: str, tmp_path):
    output = tmp_path / "export"
    result = run_cli("export", "--source", str(MINI_MATRIX), "--output", str(output),
                     "--components", "gateway,gitea", "--engines",
                     f"linux/arm64={second_engine}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with tarfile.open(output / "ai-infra-gateway.tar") as tar:
        top = json.loads(tar.extractfile("index.json").read())["manifests"]
        assert [m["mediaType"] for m in top] == [layout.OCI_INDEX]
        index = json.loads(tar.extractfile(layout.blob_relpath(top[0]["digest"])).read())
    assert {layout.platform_of(m["platform"]) for m in index["manifests"]} == set(PLATFORMS)
    planned = run_cli(
        "plan", "--source", str(MINI_MATRIX), "--components", "gateway,gitea", "--json"
    )
    dependencies = [f"{d['name']}.tar" for d in json.loads(planned.stdout)["dependencies"]]
    assert dependencies and sorted(p.name for p in (output / "dependencies").iterdir()) == sorted(
        dependencies
    )
