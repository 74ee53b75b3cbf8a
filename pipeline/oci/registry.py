"""The part of the OCI distribution API that a bundle push and a release read-back need, over
httpx (see pipeline/bundle/push.py for why no registry library): ping, blob HEAD, blob upload
(cross-repository mount, else one streamed monolithic PUT), manifest PUT of exact bytes with
any media type, manifest GET, and GET of a small blob (a signature's payload).

Auth follows the registry's challenge: Basic, or Bearer tokens from the realm it names (Harbor,
registry:2 with token auth), scoped per repository and refreshed on a 401. Transport errors,
429 and 5xx are retried (retry.py); a 401/403 ends at once with one line (errors.py).
"""

from __future__ import annotations

import base64
import io
import json
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NoReturn, TypeVar

import httpx

from pipeline.errors import BadInput, BundleError
from pipeline.oci import layout
from pipeline.oci.errors import (
    LoginRequired,
    Refused,
    UntrustedCertificate,
    WrongProtocol,
    refusal,
)
from pipeline.oci.retry import GaveUp, Transient, retry

USER_AGENT = "ai-infra-matrix-pipeline (bundle push)"
TRIES = 4
BACKOFF_SECONDS = 0.5
TIMEOUT = httpx.Timeout(30.0, read=300.0, write=300.0)
# The protocol probe before the first real request: short, one try; no answer in time is
# the retried requests' business, not a verdict.
PROBE_TIMEOUT = httpx.Timeout(5.0)
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')
T = TypeVar("T")


@dataclass(frozen=True)
class RegistryLogin:
    """Who logs in with which password (both or neither), and how to reach the host."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_cert: Path | None = None
    plain_http: bool = False

    def __post_init__(self) -> None:
        if (self.username is None) != (self.password is None):
            raise BadInput("give both a username and a password, or neither")


class RegistryClient:
    def __init__(
        self,
        host: str,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_cert: Path | None = None,
        plain_http: bool = False,
        tries: int = TRIES,
        backoff: float = BACKOFF_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout = TIMEOUT,
    ) -> None:
        self.host = host
        self.username = username
        self._password = password
        self.plain_http = plain_http
        self.base = f"{'http' if plain_http else 'https'}://{host}"
        self.tries = max(tries, 1)
        self.backoff = backoff
        self.sleep = sleep
        verify: ssl.SSLContext | bool = True
        if ca_cert is not None:
            if not ca_cert.is_file():
                raise BadInput(f"CA certificate {ca_cert} does not exist")
            try:
                verify = ssl.create_default_context(cafile=str(ca_cert))
            except (ssl.SSLError, OSError) as exc:
                raise BadInput(f"CA certificate {ca_cert} cannot be read: {exc}") from None
        self._transport = transport
        self._client = httpx.Client(
            verify=verify,
            transport=transport,
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
        )
        self._basic: str | None = None
        self._tokens: dict[str, str] = {}  # scope key → "Bearer …"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- operations ---------------------------------------------------------------------------
    def ping(self) -> None:
        """Reach the registry and check the credentials before any upload; WrongProtocol at
        once when it speaks the other protocol."""
        self.check_protocol()
        response = self._retrying("connect", lambda: self._send("GET", "/v2/", None))
        if response.status_code != 200:
            self._fail(response, "connect")

    def blob_exists(self, repository: str, digest: str) -> bool:
        url = f"/v2/{repository}/blobs/{digest}"
        response = self._retrying(
            f"check blob {digest}",
            lambda: self._send("HEAD", url, repository, follow_redirects=True),
        )
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        self._fail(response, f"check blob {digest} in {repository}")

    def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        opener: Callable[[], BinaryIO],
        on_bytes: Callable[[int], None] = lambda n: None,
        mount_from: str | None = None,
    ) -> bool:
        """Put one blob into ``repository``; True if it was uploaded, False if mounted from
        ``mount_from`` (the registry already had it there)."""
        sent = 0

        def body() -> Iterator[bytes]:
            nonlocal sent
            if sent:  # a retry: take back what the last try reported
                on_bytes(-sent)
                sent = 0
            with opener() as f:
                while chunk := f.read(layout.CHUNK):
                    sent += len(chunk)
                    on_bytes(len(chunk))
                    yield chunk

        def attempt() -> bool:
            start = self._start_upload(repository, digest, mount_from)
            if start.status_code == 201 and mount_from:
                return False
            if start.status_code != 202:
                self._fail(start, f"start upload of {digest} to {repository}")
            location = start.headers.get("Location")
            if not location:
                raise BundleError(f"registry {self.host} gave no upload location for {digest}")
            url = self._upload_url(location).copy_merge_params({"digest": digest})
            done = self._send(
                "PUT",
                str(url),
                repository,
                content=body,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
            if done.status_code not in (201, 204):
                self._fail(done, f"upload blob {digest} to {repository}")
            got = done.headers.get("Docker-Content-Digest")
            if got and got != digest:
                raise BundleError(f"registry {self.host} stored blob {digest} as {got}")
            return True

        return self._retrying(f"upload blob {digest} to {repository}", attempt)

    def mount_blob(self, repository: str, digest: str, source: str) -> bool:
        """Mount a blob of ``source`` into ``repository`` without sending it (a delta does not
        hold it); False if the registry would not. It then opens an upload instead, which is
        cancelled so as to leave nothing behind."""

        def attempt() -> bool:
            start = self._start_upload(repository, digest, source)
            if start.status_code == 201:
                return True
            location = start.headers.get("Location")
            if start.status_code != 202 or not location:
                self._fail(start, f"mount blob {digest} from {source} into {repository}")
            self._send("DELETE", str(self._upload_url(location)), repository)
            return False

        return self._retrying(f"mount blob {digest} into {repository}", attempt)

    def put_manifest(self, repository: str, reference: str, media_type: str, body: bytes) -> str:
        """PUT a manifest or index exactly as stored (so its digest stays); returns the digest
        the registry computed, checked against the bytes."""
        expected = layout.digest_bytes(body)
        response = self._retrying(
            f"put manifest {reference} to {repository}",
            lambda: self._send(
                "PUT",
                f"/v2/{repository}/manifests/{reference}",
                repository,
                content=lambda: iter([body]),
                headers={"Content-Type": media_type, "Content-Length": str(len(body))},
            ),
        )
        if response.status_code not in (200, 201):
            self._fail(response, f"put manifest {reference} to {repository}")
        got = response.headers.get("Docker-Content-Digest")
        if got and got != expected:
            raise BundleError(
                f"registry {self.host} changed manifest {reference} of {repository}: "
                f"{expected} became {got}"
            )
        return expected

    def push_blobs_of(
        self, repository: str, manifest: bytes, read_blob: Callable[[str], bytes], what: str
    ) -> None:
        """Upload the config and layers of a small manifest (a signature, an SBOM) that the
        registry lacks, before the manifest itself is put."""
        doc = layout.loads(manifest, what)
        for raw in [doc["config"], *doc["layers"]]:
            desc = layout.Descriptor.parse(raw, what)
            if not self.blob_exists(repository, desc.digest):
                data = read_blob(desc.digest)
                self.upload_blob(repository, desc.digest, desc.size, lambda d=data: io.BytesIO(d))

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        """The exact bytes and media type of a manifest or index (to read a release back)."""
        response = self._retrying(
            f"get manifest {reference} of {repository}",
            lambda: self._send(
                "GET",
                f"/v2/{repository}/manifests/{reference}",
                repository,
                headers={"Accept": ", ".join(sorted(layout.INDEX_TYPES | layout.MANIFEST_TYPES))},
            ),
        )
        if response.status_code != 200:
            self._fail(response, f"get manifest {reference} of {repository}")
        return response.content, response.headers.get("Content-Type", "")

    def referrers(self, repository: str, digest: str) -> bytes | None:
        """The referrers API's index of what refers to ``digest``; None when the registry has
        no such API (404, or anything but an index: distribution 2.x answers 404)."""
        response = self._retrying(
            f"list referrers of {digest} in {repository}",
            lambda: self._send("GET", f"/v2/{repository}/referrers/{digest}", repository),
        )
        if response.status_code in (401, 403):
            self._fail(response, f"list referrers of {digest} in {repository}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if response.status_code != 200 or media_type != layout.OCI_INDEX:
            return None
        return response.content

    def get_blob(self, repository: str, digest: str) -> bytes:
        """A small blob (a signature's payload), checked against its digest."""
        response = self._retrying(
            f"get blob {digest} of {repository}",
            lambda: self._send(
                "GET", f"/v2/{repository}/blobs/{digest}", repository, follow_redirects=True
            ),
        )
        if response.status_code != 200:
            self._fail(response, f"get blob {digest} of {repository}")
        if layout.digest_bytes(response.content) != digest:
            raise BundleError(f"registry {self.host}: blob {digest} of {repository} is corrupt")
        return response.content

    def check_protocol(self) -> None:
        """One short GET of /v2/: a TLS error, a dropped connection or a 400 (a TLS port's
        answer to plain HTTP) may mean the other protocol, which is then asked once."""
        try:
            response = self._client.get(self.base + "/v2/", timeout=PROBE_TIMEOUT)
        except (httpx.TimeoutException, httpx.ConnectError) as exc:
            if not _is_tls_error(exc):
                return  # no answer: not a verdict on the protocol
        except httpx.TransportError:
            pass  # a TLS port that drops plain HTTP
        else:
            if not (self.plain_http and response.status_code == 400):
                return
        if self._answers_other_protocol():
            raise WrongProtocol(self.host, plain=not self.plain_http)

    def _answers_other_protocol(self) -> bool:
        other = "https" if self.plain_http else "http"
        # Only whether it speaks TLS at all: its certificate is the real requests' business.
        with httpx.Client(verify=False, transport=self._transport, timeout=PROBE_TIMEOUT) as probe:
            try:
                response = probe.get(f"{other}://{self.host}/v2/")
            except httpx.TransportError:
                return False
        return other == "https" or response.status_code != 400

    # --- plumbing -----------------------------------------------------------------------------
    def may_push(self, repository: str) -> bool | None:
        """Whether this login may push to `repository`, as far as a registry says before any
        push: a token service (Harbor's) grants scopes; under Basic auth only the login itself
        can be checked (ping), so None."""
        self.ping()
        self._retrying(
            f"ask for the rights on {repository}",
            lambda: self._send("GET", f"/v2/{repository}/tags/list", repository),
        )
        token = self._tokens.get(_scope_key(repository, None))
        claims = _jwt_claims(token.removeprefix("Bearer ")) if token else None
        if claims is None:
            return None
        granted = [a for a in claims.get("access") or [] if a.get("name") == repository]
        return any("push" in (a.get("actions") or []) for a in granted)

    def _start_upload(self, repository: str, digest: str, mount_from: str | None) -> httpx.Response:
        """POST an upload; with ``mount_from``, ask to mount the blob from that repository."""
        return self._send(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            repository,
            params={"mount": digest, "from": mount_from} if mount_from else None,
            extra_pull=[mount_from] if mount_from else [],
            headers={"Content-Length": "0"},
        )

    def _upload_url(self, location: str) -> httpx.URL:
        url = httpx.URL(self.base).join(location)
        if url.netloc.decode() == self.host and url.scheme != httpx.URL(self.base).scheme:
            url = url.copy_with(scheme=httpx.URL(self.base).scheme)  # proxy said http/https
        return url

    def _retrying(self, what: str, attempt: Callable[[], T]) -> T:
        try:
            return retry(attempt, tries=self.tries, backoff=self.backoff, sleep=self.sleep)
        except GaveUp as exc:
            raise BundleError(
                f"registry {self.host}: {what} failed after {exc.tries} tries: {exc.last}"
            ) from None

    def _send(
        self,
        method: str,
        path_or_url: str,
        repository: str | None,
        *,
        content: Callable[[], Iterator[bytes]] | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        extra_pull: list[str] | None = None,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        """One request with auth: on a 401, answer the challenge once and send it again."""
        url = path_or_url if "://" in path_or_url else self.base + path_or_url
        key = _scope_key(repository, extra_pull)
        response = None
        for auth_round in range(2):
            request_headers = dict(headers or {})
            authorization = self._tokens.get(key) or self._basic
            if authorization:
                request_headers["Authorization"] = authorization
            try:
                response = self._client.request(
                    method,
                    url,
                    params=params,
                    headers=request_headers,
                    content=content() if content else None,
                    follow_redirects=follow_redirects,
                )
            except httpx.TransportError as exc:
                if _is_tls_verification(exc):
                    raise UntrustedCertificate(
                        f"registry {self.host}: its TLS certificate is not trusted"
                    ) from None
                raise Transient(f"{type(exc).__name__}: {exc}") from None
            if response.status_code == 429 or response.status_code >= 500:
                raise Transient(f"HTTP {response.status_code}{_errors(response)}")
            if response.status_code != 401 or auth_round == 1:
                return response
            challenge = response.headers.get("WWW-Authenticate", "")
            self._authenticate(challenge, repository, extra_pull, key)
        assert response is not None
        return response

    def _authenticate(
        self, challenge: str, repository: str | None, extra_pull: list[str] | None, key: str
    ) -> None:
        scheme, _, rest = challenge.strip().partition(" ")
        params = {
            m.group(1).lower(): m.group(2) or m.group(3) or ""
            for m in _CHALLENGE_PARAM.finditer(rest)
        }
        if scheme.lower() == "basic":
            if self.username is None:
                raise LoginRequired(refusal(self.host, 401, None))
            self._basic = _basic_header(self.username, self._password or "")
            return
        if scheme.lower() != "bearer" or "realm" not in params:
            raise BundleError(f"registry {self.host} asks for unsupported auth {scheme or '?'}")
        query: list[tuple[str, str]] = []
        if "service" in params:
            query.append(("service", params["service"]))
        if repository:
            query.append(("scope", f"repository:{repository}:pull,push"))
            query += [("scope", f"repository:{other}:pull") for other in extra_pull or []]
        elif "scope" in params:
            query.append(("scope", params["scope"]))
        headers = {}
        if self.username is not None:
            headers["Authorization"] = _basic_header(self.username, self._password or "")
        try:
            response = self._client.get(params["realm"], params=query, headers=headers)
        except httpx.TransportError as exc:
            raise Transient(f"token service {params['realm']}: {exc}") from None
        if response.status_code >= 500:
            raise Transient(f"token service HTTP {response.status_code}")
        if response.status_code != 200:
            self._fail(response, "log in")
        try:
            doc = response.json()
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise BundleError(f"registry {self.host}: its token service returned no token")
        self._tokens[key] = f"Bearer {token}"

    def _fail(self, response: httpx.Response, what: str) -> NoReturn:
        code = response.status_code
        message = refusal(self.host, code, self.username, what, _errors(response))
        if code == 401 and not self.username:
            raise LoginRequired(message)
        raise (Refused if code in (401, 403) else BundleError)(message)


def _jwt_claims(token: str) -> dict | None:
    """The claims of a JWT, unverified (the registry verifies it; we only read the grant),
    or None for an opaque token."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


def _scope_key(repository: str | None, extra_pull: list[str] | None) -> str:
    return " ".join([repository or "", *sorted(extra_pull or [])])


def _basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _errors(response: httpx.Response) -> str:
    """``: CODE message`` from an OCI error body, if there is one."""
    try:
        errors = response.json().get("errors") or []
        text = "; ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors)
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        return ""
    return f": {text}" if text else ""


def _is_tls_error(exc: BaseException) -> bool:
    """A TLS failure other than an untrusted certificate (WRONG_VERSION_NUMBER: the server
    answered in plain HTTP)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "[SSL" in str(seen):
            return not _is_tls_verification(exc)
        seen = seen.__cause__ or seen.__context__
    return False


def _is_tls_verification(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
