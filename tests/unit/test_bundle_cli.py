"""The bundle typer app: arguments in, one call out; the password only from stdin."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.bundle import PushReport
from pipeline.doors import bundle_cli as cli
from pipeline.errors import BadInput, BundleError
from pipeline.oci import layout
from pipeline.oci.errors import LoginRequired, UntrustedCertificate

try:
    from tests.unit import bundle_fixtures as bf
except ImportError:  # tests/unit is not a package
    import bundle_fixtures as bf

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return bf.two_image_bundle(tmp_path_factory.mktemp("cli"))


def test_verify_ok(bundle: Path) -> None:
    result = runner.invoke(cli.app, ["verify", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "checks passed" in result.output


def test_verify_platforms_comma_separated(bundle: Path) -> None:
    result = runner.invoke(
        cli.app, ["verify", str(bundle), "--platforms", "linux/amd64,linux/riscv64"]
    )
    assert isinstance(result.exception, BundleError)
    assert "2 of" in str(result.exception)
    assert "platform-missing: platform ai-infra-backend linux/riscv64" in result.output


def test_verify_names_a_corrupt_blob(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    blob = next((copy / "blobs" / "sha256").iterdir())
    blob.write_bytes(b"x" * blob.stat().st_size)

    result = runner.invoke(cli.app, ["verify", str(copy)])

    assert isinstance(result.exception, BundleError)
    assert f"digest-mismatch: blob sha256:{blob.name}" in result.output
    assert layout.blob_relpath(f"sha256:{blob.name}") in result.output


def fake_push(calls: list):
    def push(path, registry, login, **kw):
        calls.append((path, registry, login))
        return PushReport(registry=registry, blobs_uploaded=3, bytes_uploaded=10)

    return push


def test_push_reads_the_password_from_stdin_and_never_prints_it(bundle: Path, monkeypatch) -> None:
    calls: list = []
    monkeypatch.setattr(cli, "push_bundle", fake_push(calls))
    result = runner.invoke(
        cli.app,
        [
            "push",
            str(bundle),
            "--registry",
            "harbor.local/ai-infra",
            "--username",
            "admin",
            "--password-stdin",
            "--ca-cert",
            __file__,
        ],
        input="Harbor12345\n",
    )

    assert result.exit_code == 0, result.output
    [(path, registry, login)] = calls
    assert registry == "harbor.local/ai-infra"
    assert login.username == "admin" and login.password == "Harbor12345"
    assert login.ca_cert == Path(__file__) and login.plain_http is False
    assert "Harbor12345" not in result.output
    assert "3 blobs uploaded" in result.output


def test_push_takes_the_password_as_release_does(bundle: Path, monkeypatch) -> None:
    calls: list = []
    monkeypatch.setattr(cli, "push_bundle", fake_push(calls))
    monkeypatch.setenv("HARBOR_PASSWORD", "Harbor12345")
    args = ["push", str(bundle), "--registry", "h.test/p", "--plain-http"]
    result = runner.invoke(
        cli.app, [*args, "--username", "admin", "--password", "env:HARBOR_PASSWORD"]
    )
    assert result.exit_code == 0, result.output
    [(_, _, login)] = calls
    assert (login.username, login.password, login.plain_http) == ("admin", "Harbor12345", True)


def test_push_still_takes_the_old_name_of_plain_http(bundle: Path, monkeypatch) -> None:
    calls: list = []
    monkeypatch.setattr(cli, "push_bundle", fake_push(calls))
    result = runner.invoke(
        cli.app, ["push", str(bundle), "--registry", "h.test/p", "--insecure-http"]
    )
    assert result.exit_code == 0, result.output
    assert calls[0][2].plain_http is True
    assert "--insecure-http is deprecated; use --plain-http" in result.output
    help_text = runner.invoke(cli.app, ["push", "--help"]).output
    assert "--insecure-http" not in help_text and "--plain-http" in help_text


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (
            LoginRequired("registry h requires a login (HTTP 401)"),
            "--username with --password or --password-stdin",
        ),
        (UntrustedCertificate("registry h: its TLS certificate is not trusted"), "--ca-cert"),
    ],
)
def test_push_adds_the_flag_that_fixes_it(bundle: Path, monkeypatch, error, hint) -> None:
    def failing_push(path, registry, login, **kw):
        raise error

    monkeypatch.setattr(cli, "push_bundle", failing_push)
    result = runner.invoke(cli.app, ["push", str(bundle), "--registry", "h.test/p"])
    assert isinstance(result.exception, BundleError)
    assert str(result.exception).startswith(f"{error}: pass ")
    assert str(result.exception).endswith(hint)


@pytest.mark.parametrize(
    "args",
    [["--username", "admin"], ["--password-stdin"]],
)
def test_push_credentials_come_in_pairs(bundle: Path, args: list[str]) -> None:
    args = ["push", str(bundle), "--registry", "h.test/p", *args]
    result = runner.invoke(cli.app, args, input="pw\n")
    assert isinstance(result.exception, BadInput)


def test_load_passes_runtime_and_namespace(bundle: Path, monkeypatch) -> None:
    calls = []

    def fake_load(path, into, namespace, base):
        calls.append((path, into, namespace, base))
        from pipeline.bundle import LoadResult

        return LoadResult(into=into, command=["ctr"], images=["a"], output="")

    monkeypatch.setattr(cli, "load_bundle", fake_load)
    result = runner.invoke(cli.app, ["load", str(bundle), "--into", "containerd"])
    assert result.exit_code == 0, result.output
    assert calls == [(bundle, "containerd", "k8s.io", None)]
