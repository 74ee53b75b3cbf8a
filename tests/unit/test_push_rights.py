"""What a registry says about push rights before any build: a token service's grant (as
Harbor's, read from its JWT), nothing under Basic auth, a refused login at once. The lab's
token registry checks the same for real (tests/e2e/test_token_registry.py)."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from pipeline.oci.errors import Refused
from pipeline.oci.registry import RegistryClient

REALM = "https://auth.test/service/token"


def jwt(claims: dict) -> str:
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"e30.{part}.c2ln"  # header and signature are not read


def registry(actions: list[str] | None, auth: str = "bearer") -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            if "Basic" not in request.headers.get("Authorization", ""):
                return httpx.Response(401)
            scopes = request.url.params.get_list("scope")  # none for the ping
            grant = [{"type": "repository", "name": s.split(":")[1], "actions": actions or []}
                     for s in scopes]  # fmt: skip
            return httpx.Response(200, json={"token": jwt({"access": grant})})
        if not request.headers.get("Authorization"):
            challenge = (f'Bearer realm="{REALM}",service="harbor-registry"'
                         if auth == "bearer" else 'Basic realm="x"')  # fmt: skip
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if auth == "refuse":
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="x"'})
        return httpx.Response(200 if request.url.path == "/v2/" else 404)

    return httpx.MockTransport(handle)


def may_push(transport: httpx.MockTransport) -> bool | None:
    with RegistryClient("h.test", username="robot$ci", password="pw", transport=transport,
                        tries=1) as client:  # fmt: skip
        return client.may_push("ai-infra/ai-infra-gateway")


def test_a_token_grant_says_whether_the_login_may_push():
    assert may_push(registry(["pull", "push"])) is True
    assert may_push(registry(["pull"])) is False
    assert may_push(registry([])) is False


def test_basic_auth_cannot_say_and_a_refused_login_is_said_at_once():
    assert may_push(registry(None, auth="basic")) is None
    with pytest.raises(Refused, match=r"refused the credentials of user 'robot\$ci'"):
        may_push(registry(None, auth="refuse"))
