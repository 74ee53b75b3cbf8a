"""load_bundle: the command it builds and what it hands over; the runtime itself is a boundary."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from pipeline.bundle import create_bundle, load_bundle, load_command
from pipeline.errors import BadInput, BundleError
from pipeline.oci import layout

try:
    from tests.unit import bundle_fixtures as bf
except ImportError:  # tests/unit is not a package
    import bundle_fixtures as bf


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("load")
    sources = bf.two_sources(root / "src")
    create_bundle(root / "bundle", [s.image for s in sources], bf.PLATFORMS, archive="tar")
    return root / "bundle", sources


class FakeRunner:
    """Records the command and checks, while it runs, the archive it was given."""

    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.returncode, self.stderr = returncode, stderr
        self.commands: list[list[str]] = []
        self.members: list[str] = []

    def __call__(self, command):
        self.commands.append(list(command))
        with tarfile.open(command[-1]) as tar:
            self.members = tar.getnames()
        return subprocess.CompletedProcess(command, self.returncode, "unpacked\n", self.stderr)


def found(name: str) -> str:
    return f"/usr/bin/{name}"


def test_commands() -> None:
    archive = Path("/srv/bundle.tar")
    assert load_command("containerd", archive) == [
        "ctr",
        "-n",
        "k8s.io",
        "images",
        "import",
        "--all-platforms",
        "/srv/bundle.tar",
    ]
    assert load_command("containerd", archive, "default")[2] == "default"
    assert load_command("docker", archive) == ["docker", "load", "-i", "/srv/bundle.tar"]
    with pytest.raises(BadInput, match="containerd, docker"):
        load_command("podman", archive)


@pytest.mark.parametrize("into", ["containerd", "docker"])
def test_directory_is_archived_on_the_fly(bundle, into: str) -> None:
    path, sources = bundle
    runner = FakeRunner()

    result = load_bundle(path, into, run=runner, which=found)

    [command] = runner.commands
    assert command[0] == ("ctr" if into == "containerd" else "docker")
    assert {"oci-layout", "index.json"} <= set(runner.members)  # layout at the archive root
    assert not Path(command[-1]).exists()  # the scratch archive is gone
    assert result.images == [s.image.ref for s in sources]


def test_tar_archive_is_passed_as_it_is(bundle) -> None:
    path, _ = bundle
    archive = path.with_name("bundle.tar")
    runner = FakeRunner()

    load_bundle(archive, "containerd", run=runner, which=found)

    assert runner.commands[0][-1] == str(archive)


def test_corrupt_bundle_is_refused_and_nothing_runs(bundle, tmp_path: Path) -> None:
    path, sources = bundle
    copy = tmp_path / "bundle"
    shutil.copytree(path, copy)
    manifest = sources[0].platform_manifests["linux/amd64"]
    (copy / layout.blob_relpath(manifest)).unlink()
    runner = FakeRunner()

    with pytest.raises(BundleError, match=f"missing: blob {manifest}"):
        load_bundle(copy, "containerd", run=runner, which=found)
    assert runner.commands == []


def test_missing_tool(bundle) -> None:
    path, _ = bundle
    with pytest.raises(BundleError, match="ctr is not on PATH"):
        load_bundle(path, "containerd", run=FakeRunner(), which=lambda name: None)


def test_failed_import_reports_the_last_line(bundle) -> None:
    path, _ = bundle
    runner = FakeRunner(returncode=1, stderr="unpacking...\nctr: failed to import: no space left\n")
    with pytest.raises(BundleError, match="ctr failed \\(exit 1\\): ctr: failed to import"):
        load_bundle(path, "containerd", run=runner, which=found)


def test_unknown_runtime_is_bad_input(bundle) -> None:
    path, _ = bundle
    with pytest.raises(BadInput):
        load_bundle(path, "podman", run=FakeRunner(), which=found)
