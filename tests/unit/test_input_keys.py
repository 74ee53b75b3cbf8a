"""The input key's parts (what a Dockerfile reads, what changes a key) and the registry
record of a key, against an in-process registry (httpx.MockTransport). tests/e2e/test_reuse.py
releases against the lab's real registry and engines."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import httpx
import pytest

from pipeline.oci.reference import tagged
from pipeline.oci.registry import RegistryClient
from pipeline.planning.dockerfile import Dockerfile
from pipeline.run import reuse
from pipeline.run.access import RegistryAccess
from pipeline.run.inputs import INPUTS_LABEL, _pattern, key_of
from tests.unit.test_orchestration import image

HOST = "registry.test:5000"
REF = tagged(f"{HOST}/p", "ai-infra-gateway", "v1")
KEY = "sha256:" + "ab" * 32
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def test_build_reads_names_context_paths_and_images_not_stages():
    text = (
        "ARG BASE=busybox:1.36\n"
        "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\n"
        "COPY src/backend/go.mod ./\n"
        "RUN --mount=type=bind,source=src/shared,target=/s --mount=type=cache,target=/c make\n"
        "FROM ${BASE}\n"
        "COPY --from=build /out /out\n"
        "COPY --from=registry.test:5000/tools:1 /bin/tool /bin/tool\n"
        "COPY --chmod=0644 src/gateway/www/ ./www/\n"
        "COPY <<EOF /etc/motd\nhello\nEOF\n"
    )
    reads = Dockerfile(text).build_reads({})
    assert reads.unknown is None
    assert reads.sources == ("src/backend/go.mod", "src/shared", "src/gateway/www/")
    assert reads.images == ("golang:1.22", "busybox:1.36", "registry.test:5000/tools:1")
    assert Dockerfile(text).build_reads({"BASE": "debian:12"}).images[1] == "debian:12"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("FROM a\nADD https://example.com/x.tgz /x\n", "ADD of https://example.com/x.tgz"),
        ("FROM a\nADD git@example.com:x.git /x\n", "ADD of git@example.com:x.git"),
        ("FROM a\nCOPY $DIR/x /x\n", "$DIR/x: a variable with no value"),
        ("FROM $IMAGE\n", "$IMAGE: a variable with no value"),
    ],
)
def test_what_cannot_be_known_before_the_build_is_said(text: str, why: str):
    assert why in str(Dockerfile(text).build_reads({}).unknown)


def test_every_part_of_a_key_changes_it():
    one = image("ai-infra-gateway", "FROM busybox\nCOPY src/gateway/ /g/\n")
    parts = {
        "platform": "linux/amd64",
        "args": {"VERSION": "v1"},
        "images": {"busybox": "sha256:" + "1" * 64},
        "sources": "sha256:" + "2" * 64,
    }
    base = key_of(one, **parts)
    assert key_of(one, **parts) == base  # the same inputs, the same key
    changes = [
        (
            dataclasses.replace(
                one, dockerfile=Dockerfile(one.dockerfile.text + "LABEL a=b\n", one.dockerfile.path)
            ),
            {},
        ),
        (dataclasses.replace(one, target="other"), {}),
        (one, {"platform": "linux/arm64"}),
        (one, {"args": {"VERSION": "v2"}}),
        (one, {"args": {"VERSION": "v1", "APPHUB_URL": "ai-infra-apphub sha256:9"}}),
        (one, {"images": {"busybox": "sha256:" + "3" * 64}}),
        (one, {"sources": "sha256:" + "4" * 64}),
    ]
    keys = {key_of(changed, **(parts | more)) for changed, more in changes}
    assert base not in keys and len(keys) == len(changes)


def test_a_copy_source_is_a_pattern_of_the_context():
    assert [_pattern(p) for p in (".", "./", "/", "./src/x/", "src/*.conf")] == [
        "**", "**", "**", "src/x", "src/*.conf"]  # fmt: skip


class Registry:
    """Manifests and blobs by repository; PUT of a manifest stores it under its reference."""

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.blobs: dict[tuple[str, str], bytes] = {}

    def add_image(self, repository: str, labels: dict, platform: str) -> str:
        os_name, arch = platform.split("/")
        config = json.dumps({"os": os_name, "architecture": arch, "config": {"Labels": labels}})
        config_digest = digest(config.encode())
        self.blobs[repository, config_digest] = config.encode()
        body = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                           "config": {"digest": config_digest, "size": len(config)},
                           "layers": []}).encode()  # fmt: skip
        self.manifests[repository, digest(body)] = body
        return digest(body)

    def handle(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.removeprefix("/v2/").split("/")
        repository, kind, name = "/".join(parts[:-2]), parts[-2], parts[-1]
        store = self.manifests if kind == "manifests" else self.blobs
        if request.method == "PUT":
            store[repository, name] = request.read()
            return httpx.Response(201, headers={"Docker-Content-Digest": digest(request.content)})
        if (repository, name) not in store:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        return httpx.Response(200, content=store[repository, name],
                              headers={"Content-Type": MANIFEST_TYPE})  # fmt: skip


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclasses.dataclass(frozen=True, kw_only=True)
class FakeAccess(RegistryAccess):
    registry: Registry = dataclasses.field(default_factory=Registry)

    def client(self, host: str, **options) -> RegistryClient:
        options.pop("tries", None)
        transport = httpx.MockTransport(self.registry.handle)
        return RegistryClient(host, plain_http=True, transport=transport, tries=1, **options)


def test_a_record_names_the_manifest_built_from_the_key_and_find_trusts_only_that():
    access = FakeAccess()
    made = access.registry.add_image("p/ai-infra-gateway", {INPUTS_LABEL: KEY}, "linux/amd64")
    assert reuse.find(REF, KEY, "linux/amd64", access) is None  # no record yet
    assert reuse.record(REF, [(made, KEY)], access) == 1
    found = reuse.find(REF, KEY, "linux/amd64", access)
    assert found == reuse.Found(made, f"{HOST}/p/ai-infra-gateway@{made}", reuse.record_tag(KEY))
    assert reuse.find(REF, KEY, "linux/arm64", access) is None  # another platform's key


def test_a_record_whose_manifest_says_another_key_is_no_match():
    access = FakeAccess()
    other = access.registry.add_image("p/ai-infra-gateway", {INPUTS_LABEL: "sha256:" + "cd" * 32},
                                      "linux/amd64")  # fmt: skip
    reuse.record(REF, [(other, KEY)], access)  # a tag moved by hand, say
    assert reuse.find(REF, KEY, "linux/amd64", access) is None
    unlabelled = access.registry.add_image("p/ai-infra-gateway", {}, "linux/amd64")
    reuse.record(REF, [(unlabelled, KEY)], access)
    assert reuse.find(REF, KEY, "linux/amd64", access) is None


def test_a_registry_that_does_not_answer_is_no_match_after_one_short_try():
    asked = []

    class Silent(Registry):
        def handle(self, request: httpx.Request) -> httpx.Response:
            asked.append(request.extensions.get("timeout"))
            raise httpx.ReadTimeout("no answer", request=request)

    access = FakeAccess(registry=Silent())
    assert reuse.find(REF, KEY, "linux/amd64", access) is None
    assert len(asked) == 1 and asked[0]["read"] == reuse.LOOKUP_SECONDS
