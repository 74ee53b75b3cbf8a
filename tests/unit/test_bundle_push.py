"""push_bundle against an in-process fake registry (httpx.MockTransport): blobs once, HEAD
skips on rerun and after an interruption, digests unchanged, auth, retries, clear errors."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import uuid
from pathlib import Path

import httpx
import pytest

from pipeline.bundle import create_bundle, push_bundle
from pipeline.errors import BadInput, BundleError
from pipeline.oci import layout
from pipeline.oci.registry import RegistryLogin

try:
    from tests.unit import bundle_fixtures as bf
except ImportError:  # tests/unit is not a package
    import bundle_fixtures as bf

HOST = "registry.test:5000"
REALM = "http://auth.test/token"
PATH = re.compile(r"^/v2/(?P<repo>.+)/(?P<kind>blobs|manifests)/(?P<rest>.+)$")


class FakeRegistry:
    """Just enough of the distribution API; ``auth`` is None, "basic" or "bearer"."""

    def __init__(self, auth: str | None = None, user: str = "admin", password: str = "s3cret"):
        self.auth = auth
        self.good = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.uploads: dict[str, str] = {}
        self.log: list[tuple[str, str]] = []
        self.fail_with: list[int | type[Exception]] = []  # failures to inject, in order
        self.fail_on: str = ""  # only for requests whose "METHOD path" contains this
        self.die_after_puts: int | None = None  # connection dies for good after N blob PUTs
        self.mounts = True  # False: a registry that answers a mount with an upload session
        self.blob_puts = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.log.append((request.method, path))
        if self.fail_with and self.fail_on in f"{request.method} {path}":
            failure = self.fail_with.pop(0)
            if isinstance(failure, int):
                return httpx.Response(failure, json={"errors": [{"code": "UNAVAILABLE"}]})
            raise failure("injected", request=request)
        if request.url.host == "auth.test":
            return self.token(request)
        denied = self.check_auth(request)
        if denied is not None:
            return denied
        if path == "/v2/":
            return httpx.Response(200, json={})
        match = PATH.match(path)
        if match is None:
            return httpx.Response(404)
        repo, kind, rest = match["repo"], match["kind"], match["rest"]
        if kind == "manifests":
            return self.manifest(request, repo, rest)
        return self.blob(request, repo, rest)

    def token(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != self.good:
            return httpx.Response(401, json={"errors": [{"code": "UNAUTHORIZED"}]})
        scopes = request.url.params.get_list("scope")
        return httpx.Response(200, json={"token": "tok:" + ",".join(scopes)})

    def check_auth(self, request: httpx.Request) -> httpx.Response | None:
        given = request.headers.get("Authorization", "")
        if self.auth == "basic" and given != self.good:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="fake"'})
        if self.auth == "bearer":
            match = PATH.match(request.url.path)
            need = f"repository:{match['repo']}:pull,push" if match else ""
            if not given.startswith("Bearer tok:") or need not in given:
                challenge = f'Bearer realm="{REALM}",service="fake"'
                if need:
                    challenge += f',scope="{need}"'
                return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return None

    def blob(self, request: httpx.Request, repo: str, rest: str) -> httpx.Response:
        if request.method == "GET" and (repo, rest) in self.blobs:
            return httpx.Response(200, content=self.blobs[(repo, rest)])
        if request.method == "HEAD":
            found = (repo, rest) in self.blobs
            return httpx.Response(200 if found else 404)
        if request.method == "POST" and rest == "uploads/":
            mount, source = request.url.params.get("mount"), request.url.params.get("from")
            if mount and self.mounts and (source, mount) in self.blobs:
                self.blobs[(repo, mount)] = self.blobs[(source, mount)]
                return httpx.Response(201, headers={"Docker-Content-Digest": mount})
            upload = uuid.uuid4().hex
            self.uploads[upload] = repo
            location = f"/v2/{repo}/blobs/uploads/{upload}?_state=abc"
            return httpx.Response(202, headers={"Location": location})
        if request.method == "DELETE" and rest.startswith("uploads/"):
            self.uploads.pop(rest.removeprefix("uploads/"))
            return httpx.Response(204)
        if request.method == "PUT" and rest.startswith("uploads/"):
            if self.die_after_puts is not None and self.blob_puts >= self.die_after_puts:
                raise httpx.ConnectError("connection reset", request=request)
            self.blob_puts += 1
            upload = rest.removeprefix("uploads/")
            assert self.uploads.pop(upload) == repo
            assert request.url.params["_state"] == "abc"
            data = request.read()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            if digest != request.url.params["digest"]:
                return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
            assert request.headers["Content-Length"] == str(len(data))
            self.blobs[(repo, digest)] = data
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        return httpx.Response(405)

    def manifest(self, request: httpx.Request, repo: str, reference: str) -> httpx.Response:
        if request.method == "GET" and (repo, reference) in self.manifests:
            media_type, data = self.manifests[(repo, reference)]
            return httpx.Response(200, content=data, headers={"Content-Type": media_type})
        if request.method != "PUT":
            return httpx.Response(405)
        data = request.read()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        doc = layout.loads(data, "manifest")
        children = [doc["config"], *doc["layers"]] if "config" in doc else doc["manifests"]
        for child in children:
            known = self.blobs if "config" in doc else self.manifests
            if (repo, child["digest"]) not in known:
                return httpx.Response(400, json={"errors": [{"code": "MANIFEST_BLOB_UNKNOWN"}]})
        media_type = request.headers["Content-Type"]
        self.manifests[(repo, reference)] = self.manifests[(repo, digest)] = (media_type, data)
        return httpx.Response(201, headers={"Docker-Content-Digest": digest})

    def blob_puts_log(self) -> int:
        return sum(1 for m, p in self.log if m == "PUT" and "/blobs/uploads/" in p)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("push")
    sources = bf.two_sources(root / "src", attestations=True)
    create_bundle(root / "bundle", [s.image for s in sources], bf.PLATFORMS, archive="tar.zst")
    return root / "bundle", sources


def login(**kw) -> RegistryLogin:
    """The fake registry speaks plain HTTP."""
    return RegistryLogin(**{"plain_http": True, **kw})


def push(path: Path, registry: FakeRegistry, **kw):
    kw.setdefault("login", login())
    kw.setdefault("sleep", lambda s: None)
    return push_bundle(path, f"{HOST}/ai-infra", transport=registry.transport(), **kw)


def is_manifest(data: bytes) -> bool:
    return data.startswith(b'{"schemaVersion"')


def blob_count(sources) -> int:
    """Blobs (not manifests or indexes) per repository."""
    return sum(1 for s in sources for b in s.blobs.values() if not is_manifest(b))


def test_push_uploads_everything_with_digests_unchanged(bundle) -> None:
    path, sources = bundle
    registry = FakeRegistry()

    report = push(path, registry)

    unique = {d: b for s in sources for d, b in s.blobs.items() if not is_manifest(b)}
    shared = len(set(sources[0].blobs) & set(sources[1].blobs) & set(unique))
    assert report.blobs_skipped == 0
    assert report.blobs_mounted == shared  # second image mounts the shared base layers
    assert report.blobs_uploaded == len(unique) == blob_count(sources) - shared
    assert report.bytes_uploaded == sum(len(b) for b in unique.values())
    for source in sources:
        repo = f"ai-infra/{source.image.name}"
        media_type, data = registry.manifests[(repo, bf.TAG)]
        assert media_type == layout.OCI_INDEX
        assert data == source.blobs[source.top]  # exact bytes: the digest is unchanged
        for manifest in source.platform_manifests.values():
            assert registry.manifests[(repo, manifest)][1] == source.blobs[manifest]
    assert [i.target for i in report.images] == [
        f"{HOST}/ai-infra/ai-infra-backend:{bf.TAG}",
        f"{HOST}/ai-infra/ai-infra-frontend:{bf.TAG}",
    ]
    assert report.images[0].digest == sources[0].top
    assert report.images[0].platforms == bf.PLATFORMS


def test_rerun_uploads_nothing(bundle) -> None:
    path, sources = bundle
    registry = FakeRegistry()
    push(path, registry)
    puts = registry.blob_puts_log()

    again = push(path, registry)

    assert again.blobs_uploaded == again.bytes_uploaded == again.blobs_mounted == 0
    assert again.blobs_skipped == blob_count(sources)
    assert registry.blob_puts_log() == puts


def test_rerun_after_interruption_uploads_only_what_is_missing(bundle) -> None:
    path, _sources = bundle
    full = push(path, FakeRegistry())
    registry = FakeRegistry()
    registry.die_after_puts = 4

    with pytest.raises(BundleError, match=f"registry {HOST}: upload blob .* failed after 4 tries"):
        push(path, registry)
    registry.die_after_puts = None
    resumed = push(path, registry)

    assert resumed.blobs_skipped == 4
    assert resumed.blobs_uploaded == full.blobs_uploaded - 4
    assert resumed.blobs_uploaded + resumed.blobs_skipped + resumed.blobs_mounted == (
        full.blobs_uploaded + full.blobs_mounted
    )


def test_push_reads_an_archive(bundle) -> None:
    path, _ = bundle
    report = push(path.with_name("bundle.tar.zst"), FakeRegistry())
    assert report.manifests_pushed > 0
    assert not [p for p in path.parent.iterdir() if ".extract-" in p.name]


def test_transient_failures_are_retried_with_backoff(bundle) -> None:
    path, _ = bundle
    registry = FakeRegistry()
    registry.fail_with = [503, httpx.ConnectError, 502]
    registry.fail_on = "HEAD"
    sleeps: list[float] = []

    report = push(path, registry, sleep=sleeps.append)

    assert sleeps == [0.5, 1.0, 2.0]
    assert report.blobs_uploaded > 0


def test_persistent_failure_names_the_registry(bundle) -> None:
    path, _ = bundle
    registry = FakeRegistry()
    registry.fail_with = [503] * 10
    sleeps: list[float] = []

    with pytest.raises(
        BundleError, match=rf"registry {HOST}: connect failed after 4 tries: HTTP 503"
    ):
        push(path, registry, sleep=sleeps.append)
    assert len(sleeps) == 3


@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_login(bundle, auth: str) -> None:
    path, sources = bundle
    registry = FakeRegistry(auth=auth)

    report = push(path, registry, login=login(username="admin", password="s3cret"))

    assert report.blobs_uploaded + report.blobs_mounted == blob_count(sources)


@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_wrong_password_names_registry_and_user_never_password(bundle, auth: str) -> None:
    path, _ = bundle
    registry = FakeRegistry(auth=auth)

    with pytest.raises(BundleError) as caught:
        push(path, registry, login=login(username="admin", password="wrong-Pa55"))

    message = str(caught.value)
    assert HOST in message and "'admin'" in message and "401" in message
    assert "wrong-Pa55" not in message
    assert not registry.blobs


def test_anonymous_push_to_a_registry_that_needs_login(bundle) -> None:
    path, _ = bundle
    with pytest.raises(BundleError, match=rf"^registry {HOST} requires a login \(HTTP 401\)$"):
        push(path, FakeRegistry(auth="basic"))


def test_corrupt_bundle_is_refused_before_any_request(bundle, tmp_path: Path) -> None:
    path, sources = bundle
    copy = tmp_path / "bundle"
    shutil.copytree(path, copy)
    layer = sorted(set(sources[0].blobs) & set(sources[1].blobs))[0]
    blob = copy / layout.blob_relpath(layer)
    blob.write_bytes(blob.read_bytes()[::-1])
    registry = FakeRegistry()

    with pytest.raises(BundleError, match=f"is corrupt.*digest-mismatch: blob {layer}"):
        push(copy, registry)
    assert registry.log == []


def test_progress_counts_every_byte(bundle) -> None:
    path, _ = bundle

    class Recorder:
        def start(self, total: int, label: str) -> None:
            self.total, self.done, self.finished = total, 0, False

        def advance(self, n: int) -> None:
            self.done += n

        def finish(self) -> None:
            self.finished = True

    recorder = Recorder()
    registry = FakeRegistry()
    registry.fail_with = [httpx.ReadError]  # a blob upload retried: its bytes count once
    registry.fail_on = "PUT /v2/ai-infra/ai-infra-backend/blobs/uploads"
    push(path, registry, progress=recorder)
    assert recorder.finished and recorder.done == recorder.total > 0


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"registry": "registry.test"}, "host\\[:port\\]/project"),
        ({"username": "admin"}, "both a username and a password"),
        ({"password": "x"}, "both a username and a password"),
        ({"ca_cert": Path("/nonexistent/ca.pem"), "plain_http": False}, "does not exist"),
    ],
)
def test_bad_input(bundle, kw: dict, message: str) -> None:
    path, _ = bundle
    registry = kw.pop("registry", f"{HOST}/ai-infra")
    with pytest.raises(BadInput, match=message):
        push_bundle(path, registry, login(**kw), transport=FakeRegistry().transport())
