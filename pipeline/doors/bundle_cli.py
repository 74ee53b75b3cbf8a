"""The bundle's verbs as a typer app (``create`` is wired by the main CLI: it needs the engine).

Each command only translates arguments into one call; errors are PipelineError subclasses that
the main CLI prints as one line with their exit code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.bundle.delta import NeedsBase
from pipeline.bundle.load import DEFAULT_NAMESPACE, load_bundle
from pipeline.bundle.progress import StderrBar
from pipeline.bundle.push import push_bundle
from pipeline.bundle.sboms import image_packages
from pipeline.bundle.verify import verify_bundle
from pipeline.doors import flags
from pipeline.errors import BadInput, BundleError
from pipeline.oci.access import wrong_protocol
from pipeline.oci.errors import LoginRequired, UntrustedCertificate, WrongProtocol
from pipeline.oci.reference import RegistryTarget
from pipeline.oci.sign import fingerprint, load_public_key

# -h as well as --help, on every command (the main CLI's too).
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="bundle",
    help="Offline bundle (an OCI image layout): verify, push into a registry, load on a host.",
    no_args_is_help=True,
    context_settings=CONTEXT_SETTINGS,
)

BundlePath = Annotated[
    Path, typer.Argument(help="Bundle directory, or its .tar / .tar.zst archive.", metavar="BUNDLE")
]


BasePath = Annotated[
    Path | None,
    typer.Option(
        "--base",
        help="For a delta: the bundle (folder or archive) it was made against.",
        metavar="PREVIOUS",
    ),
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
    base: BasePath = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="Public key (PEM): every image must carry a signature made with its private key.",
            metavar="PUB.pem",
        ),
    ] = None,
) -> None:
    """Check every blob (exists, size, sha256), every image's platforms, the inventory and
    SHA256SUMS. A delta's blobs left to its base are counted; with --base, checked there.
    With --key, every image's signature too."""
    public = load_public_key(key) if key is not None else None
    report = verify_bundle(bundle, split_platforms(platforms), base, public)
    for failure in report.failures:
        typer.echo(failure.describe(), err=True)
    if report.base is not None:
        typer.echo(report.delta_line())
    if not report.ok:
        raise BundleError(f"bundle {bundle}: {report.summary()}")
    typer.echo(f"bundle {bundle}: {report.summary()}")
    if public is not None:
        typer.echo(f"every image signed with key {fingerprint(public)}")


@app.command()
def packages(
    bundle: BundlePath,
    image: Annotated[str, typer.Argument(help="The image, by name or reference.")],
    platform: Annotated[
        str | None, typer.Option(help="Its platform (default: the bundle's first).")
    ] = None,
) -> None:
    """Print one image's packages from its SBOM (name, version, kind), offline."""
    for pkg in image_packages(bundle, image, platform):
        typer.echo(" ".join(p for p in (pkg.name, pkg.version, pkg.kind) if p))


@app.command()
def push(
    bundle: BundlePath,
    registry: Annotated[
        str, typer.Option(help="Target as host[:port]/project, e.g. harbor.example.com/ai-infra.")
    ],
    username: flags.Username = None,
    password: flags.Password = None,
    password_stdin: flags.PasswordStdin = False,
    ca_cert: flags.CaCert = None,
    plain_http: flags.PlainHttp = False,
    insecure_http: Annotated[bool, typer.Option("--insecure-http", hidden=True)] = False,
    kit_output: Annotated[
        Path | None,
        typer.Option(
            help="Where the deployment kit for this registry goes (default: "
            "beside the bundle, BUNDLE.kit).",
            metavar="DIR",
        ),
    ] = None,
) -> None:
    """Push every image, all platforms, digests unchanged; a rerun uploads only what is
    missing. Then the bundle's deployment kit, its images named where they now are."""
    RegistryTarget.parse(registry)  # bad input ends before stdin is read or a host is tried
    if insecure_http:  # the old name of --plain-http, kept so that scripts go on working
        typer.echo("warning: --insecure-http is deprecated; use --plain-http", err=True)
    login = flags.registry_login(
        username, password, password_stdin, ca_cert, plain_http or insecure_http,
        env=os.environ, stdin=sys.stdin,
    )  # fmt: skip
    try:
        report = push_bundle(bundle, registry, login, progress=StderrBar(), kit_output=kit_output)
    except LoginRequired as err:  # core errors name no flag: this door adds its own
        raise BundleError(f"{err}: pass --username with --password or --password-stdin") from None
    except UntrustedCertificate as err:
        raise BundleError(f"{err}: pass the CA that signed it with --ca-cert") from None
    except WrongProtocol as err:
        raise wrong_protocol(err) from None
    for image in report.images:
        typer.echo(f"{image.target}@{image.digest} ({', '.join(image.platforms)})")
    typer.echo(report.summary())


@app.command()
def load(
    bundle: BundlePath,
    into: Annotated[str, typer.Option(help="containerd (ctr, namespace k8s.io) or docker.")],
    namespace: Annotated[str, typer.Option(help="containerd namespace.")] = DEFAULT_NAMESPACE,
    base: BasePath = None,
) -> None:
    """Import every image, all platforms, into this host's containerd or Docker."""
    try:
        result = load_bundle(bundle, into, namespace=namespace, base=base)
    except NeedsBase as err:  # the core names no flag: this door adds its own
        raise BadInput(f"{err}: pass it with --base PREVIOUS") from None
    typer.echo(f"loaded {len(result.images)} images into {into}: {' '.join(result.command)}")
