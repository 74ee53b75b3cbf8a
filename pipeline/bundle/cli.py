"""The bundle's verbs as a typer app (``create`` is wired by the main CLI: it needs the engine).

Each command only translates arguments into one call; errors are PipelineError subclasses that
the main CLI prints as one line with their exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.bundle.load import DEFAULT_NAMESPACE, load_bundle
from pipeline.bundle.progress import StderrBar
from pipeline.bundle.push import push_bundle
from pipeline.bundle.verify import verify_bundle
from pipeline.errors import BadInput, BundleError
from pipeline.oci.errors import LoginRequired, UntrustedCertificate
from pipeline.oci.reference import RegistryTarget

app = typer.Typer(
    name="bundle",
    help="Offline bundle (an OCI image layout): verify, push into a registry, load on a host.",
    no_args_is_help=True,
)

BundlePath = Annotated[
    Path, typer.Argument(help="Bundle directory, or its .tar / .tar.zst archive.", metavar="BUNDLE")
]


def split_platforms(values: list[str] | None) -> list[str] | None:
    """``--platforms linux/amd64,linux/arm64`` and repeated ``--platforms`` both work."""
    if not values:
        return None
    return [p.strip() for value in values for p in value.split(",") if p.strip()]


@app.command()
def verify(
    bundle: BundlePath,
    platforms: Annotated[
        list[str] | None,
        typer.Option(help="Platforms every image must have (default: the bundle's inventory)."),
    ] = None,
) -> None:
    """Check every blob (exists, size, sha256), every image's platforms, the inventory and
    SHA256SUMS."""
    report = verify_bundle(bundle, split_platforms(platforms))
    for failure in report.failures:
        typer.echo(failure.describe(), err=True)
    if not report.ok:
        raise BundleError(f"bundle {bundle}: {report.summary()}")
    typer.echo(f"bundle {bundle}: {report.summary()}")


@app.command()
def push(
    bundle: BundlePath,
    registry: Annotated[
        str, typer.Option(help="Target as host[:port]/project, e.g. harbor.example.com/ai-infra.")
    ],
    username: Annotated[str | None, typer.Option(help="Registry user.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    ca_cert: Annotated[
        Path | None, typer.Option(help="CA certificate (PEM) that signed the registry's TLS.")
    ] = None,
    insecure_http: Annotated[
        bool, typer.Option("--insecure-http", help="Talk plain HTTP (a lab registry).")
    ] = False,
) -> None:
    """Push every image, all platforms, digests unchanged; a rerun uploads only what is
    missing."""
    RegistryTarget.parse(registry)  # bad input ends before stdin is read or a host is tried
    password = read_password(password_stdin, username)
    try:
        report = push_bundle(
            bundle,
            registry,
            username=username,
            password=password,
            ca_cert=ca_cert,
            insecure_http=insecure_http,
            progress=StderrBar(),
        )
    except LoginRequired as err:  # core errors name no flag: this door adds its own
        raise BundleError(f"{err}: pass --username and --password-stdin") from None
    except UntrustedCertificate as err:
        raise BundleError(f"{err}: pass the CA that signed it with --ca-cert") from None
    for image in report.images:
        typer.echo(f"{image.target}@{image.digest} ({', '.join(image.platforms)})")
    typer.echo(report.summary())


def read_password(password_stdin: bool, username: str | None) -> str | None:
    if password_stdin and username is None:
        raise BadInput("--password-stdin needs --username")
    if username is not None and not password_stdin:
        raise BadInput("--username needs --password-stdin (the password is never an argument)")
    if not password_stdin:
        return None
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise BadInput("--password-stdin read an empty password")
    return password


@app.command()
def load(
    bundle: BundlePath,
    into: Annotated[str, typer.Option(help="containerd (ctr, namespace k8s.io) or docker.")],
    namespace: Annotated[str, typer.Option(help="containerd namespace.")] = DEFAULT_NAMESPACE,
) -> None:
    """Import every image, all platforms, into this host's containerd or Docker."""
    result = load_bundle(bundle, into, namespace=namespace)
    typer.echo(f"loaded {len(result.images)} images into {into}: {' '.join(result.command)}")
