"""The flags of every command that talks to a registry (`release`, `bundle push`), defined
once, and the one place they become a login: the same names, the same rules, the same errors.

The password never is an argument: `--password env:VAR|file:PATH` (as Dagger's own CLI takes
secrets) or `--password-stdin` (as `docker login` does).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, TextIO

import typer

from pipeline.errors import BadInput
from pipeline.oci.access import PasswordSpec
from pipeline.oci.registry import RegistryLogin

Username = Annotated[str | None, typer.Option("--username", help="Registry user.")]
Password = Annotated[
    str | None,
    typer.Option(
        "--password",
        metavar="env:VAR|file:PATH",
        help="Registry password from a variable or a file (never the password itself).",
    ),
]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the registry password from standard input.")
]
CaCert = Annotated[
    Path | None,
    typer.Option("--ca-cert", help="CA certificate (PEM) that signed the registry's TLS."),
]
PlainHttp = Annotated[
    bool, typer.Option("--plain-http", help="The registry speaks plain HTTP (a lab registry).")
]
Sbom = Annotated[
    bool,
    typer.Option(
        "--sbom",
        help="An SBOM (SPDX JSON, by syft) of every image and platform, attached to its "
        "platform manifest.",
    ),
]
# Given like a password: where the key is, never the key (pipeline/oci/sign.py reads it).
SignKey = Annotated[
    str | None,
    typer.Option(
        "--sign-key",
        metavar="env:VAR|file:PATH",
        help="Sign each image index and its platform manifests (cosign's format) with this "
        "PEM EC P-256 private key.",
    ),
]


def registry_login(
    username: str | None,
    password: str | None,
    password_stdin: bool,
    ca_cert: Path | None,
    plain_http: bool,
    *,
    env: Mapping[str, str],
    stdin: TextIO,
) -> RegistryLogin:
    """Check the flags together, then read the password; every mistake is BadInput, found
    before any engine or registry is contacted."""
    spec = PasswordSpec.parse(password) if password is not None else None
    if spec and password_stdin:
        raise BadInput("give --password or --password-stdin, not both")
    given = "--password" if spec else "--password-stdin" if password_stdin else None
    if given and username is None:
        raise BadInput(f"{given} needs --username")
    if username is not None and given is None:
        raise BadInput("--username needs --password env:VAR|file:PATH or --password-stdin")
    if ca_cert is not None and not ca_cert.is_file():
        raise BadInput(f"--ca-cert {ca_cert}: no such file")
    secret = spec.read(env) if spec else _read_stdin(stdin) if password_stdin else None
    return RegistryLogin(username, secret, ca_cert, plain_http)


def _read_stdin(stdin: TextIO) -> str:
    secret = stdin.readline().rstrip("\r\n")
    if not secret:
        raise BadInput("--password-stdin read an empty password")
    return secret
