"""The lab itself: QEMU platforms in the engine, and both registries as a release needs them."""

from __future__ import annotations

import json
import os
import ssl
import uuid

import dagger
import httpx
import pytest
from conftest import MINI_MATRIX, PLATFORMS, Lab, marker_variants, run_cli, secure_auth
from dagger import dag

from pipeline.oci import layout
from pipeline.run.engine import foreign

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("platform", "machine"), [("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")]
)
async def test_each_platform_runs_its_own_architecture(engine, platform: str, machine: str):
    container = dag.container(platform=dagger.Platform(platform)).from_("debian:bookworm-slim")
    out = await container.with_exec(["uname", "-m"]).stdout()
    assert out.strip() == machine


def index_platforms(client, repository: str, tag: str) -> set[str]:
    body, media_type = client.get_manifest(repository, tag)
    assert media_type == layout.OCI_INDEX
    return {layout.platform_of(m["platform"]) for m in json.loads(body)["manifests"]}


async def test_plain_registry_holds_a_two_platform_index(engine, lab: Lab, unique: str):
    ref = f"{lab.registry}/lab-test/two-platform:{unique}"
    address = await dag.container().publish(ref, platform_variants=marker_variants(unique))
    assert address.startswith(f"{ref}@sha256:")
    with lab.plain_client() as client:
        assert index_platforms(client, "lab-test/two-platform", unique) == set(PLATFORMS)


async def test_secure_registry_holds_a_two_platform_index(engine, lab: Lab, unique: str):
    ref = f"{lab.secure_registry}/lab-test/two-platform:{unique}"
    await secure_auth(dag.container(), lab).publish(ref, platform_variants=marker_variants(unique))
    with lab.secure_client() as client:
        assert index_platforms(client, "lab-test/two-platform", unique) == set(PLATFORMS)


def test_secure_registry_refuses_a_push_without_credentials(lab: Lab, unique: str):
    response = httpx.get(
        f"https://{lab.secure_registry}/v2/",
        verify=ssl.create_default_context(cafile=str(lab.ca_cert)),
    )
    assert response.status_code == 401
    registry = f"{lab.secure_registry}/lab-test-{unique}"
    common = ("release", "--source", str(MINI_MATRIX), "--components", "gateway")
    anonymous = run_cli(*common, "--registry", registry, "--ca-cert", str(lab.ca_cert))
    # Said before any build: the release asks the registry first.
    assert anonymous.returncode == 2
    assert anonymous.stderr.strip().splitlines()[-1] == (
        f"error: registry {lab.secure_registry} requires a login (HTTP 401)"
    )
    assert "building" not in anonymous.stderr
    logged_in = run_cli(
        *common,
        "--registry",
        registry,
        "--ca-cert",
        str(lab.ca_cert),
        "--username",
        lab.user,
        "--password",
        "env:LAB_REGISTRY_PASSWORD",
    )
    assert logged_in.returncode == 0, logged_in.stderr[-2000:]
    assert lab.password not in anonymous.stderr + logged_in.stderr + logged_in.stdout


def network_registries(lab: Lab) -> list[str]:
    names = ("LAB_REGISTRY", "LAB_SECURE_REGISTRY", "LAB_TOKEN_REGISTRY")
    found = [os.environ.get(name, "") for name in names]
    assert all(found), f"{names}: run scripts/lab up"
    assert not any(a.startswith(("127.", "localhost")) for a in found), found
    return found


# Resolves and connects as a client in a container would (busybox-static's own wget and nc
# cannot resolve names: its static libc has no resolver to load).
PROBE = """
import socket, sys
for address in sys.argv[1:]:
    host, port = address.rsplit(":", 1)
    socket.create_connection((host, int(port)), 5).close()
    print(address)
"""


async def answers_by_name(client: dagger.Client, addresses: list[str]) -> str:
    """Resolve and connect to each address from a container on `client`'s engine network."""
    container = (
        client.container().from_("python:3.11-slim").with_env_variable("RUN", uuid.uuid4().hex)
    )
    return await container.with_exec(["python3", "-c", PROBE, *addresses]).stdout()


async def test_the_registries_answer_by_name_in_each_engine_s_containers(engine, lab: Lab):
    """Like a Harbor on a LAN: one name that the host, each engine and its containers reach."""
    addresses = network_registries(lab)
    assert (await answers_by_name(dag, addresses)).split() == addresses
    second = os.environ.get("LAB_ENGINE_2")
    assert second, "LAB_ENGINE_2 unset: start the lab with LAB_ENGINES=2"
    async with foreign(second) as other:
        assert (await answers_by_name(other.client, addresses)).split() == addresses
