"""pipeline.oci.reference: the one image-reference parser, its grammar and the registry
target."""

import re

import pytest

from pipeline.errors import BadInput
from pipeline.oci.reference import (
    RegistryTarget,
    image_name,
    is_image_name,
    is_reference,
    parse,
    parse_tagged,
)


@pytest.mark.parametrize(
    "ref",
    [
        "mysql:8.0",
        "postgres:15-alpine",
        "redis:7-alpine",
        "confluentinc/cp-kafka:7.5.0",
        "provectuslabs/kafka-ui:latest",
        "oceanbase/oceanbase-ce:4.3.5-lts",
        "osixia/openldap:stable",
        "redis/redisinsight:2.68",
        "gitea/gitea:1.25.1",
        "quay.io/keycloak/keycloak:26.0",
        "localhost:5000/a/b:c",
        "harbor.example.com/ai-infra/ai-infra-backend:v0.3.8",
        "alpine",
        "alpine@sha256:" + "a" * 64,
    ],
)
def test_valid_references(ref):
    assert is_reference(ref)


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "mysql:8\\.0",  # build.sh's sed-escaped rendering
        "/safeline-tengine:",  # unset prefix and tag
        "gitea/gitea:",
        "Upper/case:1",
        "a b:1",
        "redis:7 alpine",
        "chaitin//safeline:1",
        "https://docker.io/redis:7",
    ],
)
def test_invalid_references(ref):
    assert not is_reference(ref)


def test_image_names():
    assert is_image_name("ai-infra-backend-init")
    assert is_image_name("ai-infra/backend")
    assert not is_image_name("ai-infra-Backend")
    assert not is_image_name("ai-infra-backend:v1")
    assert not is_image_name("-x")


def test_image_name_drops_registry_tag_and_digest():
    assert image_name("h:5000/p/ai-infra-x:${VERSION}") == "ai-infra-x"
    assert image_name("ai-infra-x@sha256:" + "a" * 64) == "ai-infra-x"


@pytest.mark.parametrize(
    ("ref", "host"),
    [
        ("harbor.example.com/ai-infra/backend:v1", "harbor.example.com"),
        ("127.0.0.1:5000/p/x:v1", "127.0.0.1:5000"),
        ("localhost/x:1", "localhost"),
        ("confluentinc/cp-kafka:7.5.0", "docker.io"),  # a Docker Hub path, not a host
        ("redis:7", "docker.io"),
        ("localhost:5000", "docker.io"),  # no slash: an image `localhost`, tag 5000
    ],
)
def test_registry_host(ref, host):
    assert parse(ref).registry == host


def test_parse_splits_every_part():
    ref = parse("h:5000/p/ai-infra-x:v1@sha256:" + "b" * 64)
    assert (ref.host, ref.path, ref.tag, ref.digest) == (
        "h:5000",
        "p/ai-infra-x",
        "v1",
        "sha256:" + "b" * 64,
    )
    assert (ref.registry, ref.name) == ("h:5000", "ai-infra-x")
    assert parse("redis").tag is None and parse("redis").host is None


def test_parse_tagged():
    ref = parse_tagged("harbor.example.com/ai-infra/ai-infra-backend:v0.3.8")
    assert (ref.path, ref.tag, ref.name) == (
        "ai-infra/ai-infra-backend",
        "v0.3.8",
        "ai-infra-backend",
    )
    assert parse_tagged("ai-infra-backend:v1").path == "ai-infra-backend"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("x@sha256:" + "a" * 64, "not a digest"),
        ("h:5000/p/x", "no tag"),
        ("x:", "no tag"),
        (":v1", "no repository"),
        ("p/:v1", "no repository"),
    ],
)
def test_parse_tagged_says_what_is_missing(ref, message):
    with pytest.raises(ValueError, match=message):
        parse_tagged(ref)


@pytest.mark.parametrize(
    ("text", "host", "project"),
    [
        ("harbor.example.com/ai-infra", "harbor.example.com", "ai-infra"),
        ("https://h:5000/a/b/", "h:5000", "a/b"),
        (" harbor.local/p ", "harbor.local", "p"),
        ("localhost/p", "localhost", "p"),
        ("h:65535/p", "h:65535", "p"),
    ],
)
def test_registry_target(text, host, project):
    target = RegistryTarget.parse(text)
    assert (target.host, target.project) == (host, project)
    assert target.repository("x") == f"{project}/x"
    assert str(target) == f"{host}/{project}"


@pytest.mark.parametrize("text", ["registry.test", "h//p", "h/p q", "h/Upper", "", "harbor/p"])
def test_registry_target_needs_host_and_project(text):
    with pytest.raises(BadInput, match=r"host\[:port\]/project"):
        RegistryTarget.parse(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("h:0/p", "port 0 is not in 1-65535"),
        ("h:99999/p", "port 99999 is not in 1-65535"),
        ("robot:hunter2@h.example/p", "'***@h.example/p': a registry holds no user or password"),
        ("https://u:p@ss@h.example/p", "'***@h.example/p'"),
    ],
)
def test_registry_target_checks_port_and_never_shows_credentials(text, message):
    with pytest.raises(BadInput, match=re.escape(message)) as info:
        RegistryTarget.parse(text)
    assert "hunter2" not in str(info.value) and "p@ss" not in str(info.value)
