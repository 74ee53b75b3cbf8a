"""How the run reaches the release registry: the login, its tries and timeout, and what is
done there beyond the push (signing, SBOMs); the engine gets the password as a secret of
this run alone."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dagger
from dagger import dag

from pipeline.oci.registry import RegistryClient
from pipeline.oci.sign import SigningKey
from pipeline.planning.settings import PUBLISH_TIMEOUT

PUBLISH_TRIES = 3
PUBLISH_BACKOFF = 1.0  # seconds before the 2nd try, doubled after each: 1s, 2s


@dataclass(frozen=True, kw_only=True)
class RegistryAccess:
    """How to reach the release registry. The engine gets the password as a Dagger secret of
    this run (`in_session`); the plaintext serves the registry API read-back, never a print."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_cert: Path | None = None  # for the read-back; the engine has its own trust config
    plain_http: bool = False
    # Why the read-back goes through the engine rather than the registry API (None: the
    # API): inside `dagger call` the code runs in a container that may not reach a registry
    # that only the engine reaches (reachable_from_here).
    through_engine: str | None = None
    timeout: float = PUBLISH_TIMEOUT
    tries: int = PUBLISH_TRIES
    backoff: float = PUBLISH_BACKOFF
    secret: dagger.Secret | None = field(default=None, repr=False)
    # Sign each published index (cosign's format) with our own client, after its read-back.
    sign_key: SigningKey | None = field(default=None, repr=False)
    # An SBOM (syft) of each published platform manifest, attached to it (pipeline/oci/sbom.py).
    sboms: bool = False

    def client(self, host: str, **options: Any) -> RegistryClient:
        """Our own client of the registry with this login (read-back, rights check)."""
        return RegistryClient(
            host,
            username=self.username,
            password=self.password,
            ca_cert=self.ca_cert,
            plain_http=self.plain_http,
            **options,
        )

    def in_session(self, timeout: float, client: dagger.Client = dag) -> RegistryAccess:
        """For this run, inside its engine session: the password as its secret (of the engine
        `client` reaches)."""
        secret = run_secret(self.password, client) if self.password else None
        return replace(self, secret=secret, timeout=timeout)


def run_secret(plaintext: str, client: dagger.Client = dag) -> dagger.Secret:
    """The registry password as a secret of this run alone.

    At 0.18.10 a call's result is cached engine-wide by its ID, side effects included:
    `with_registry_auth` registers the credential with the calling session only the first
    time. A secret whose ID is the same in two runs (a fixed name, or `env:VAR` under
    `dagger call`) left the second of two concurrent runs with no credential (HTTP 401).
    """
    return client.set_secret(f"registry-password-{uuid.uuid4().hex}", plaintext)
