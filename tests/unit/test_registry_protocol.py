"""Plain HTTP against TLS, and the reverse: every registry is asked once, shortly, which
protocol it speaks before any build or upload. A mismatch is bad input naming the flag;
a registry that does not answer is not (the push and its retries say the rest).

Real servers on 127.0.0.1 (a plain one, and a TLS one with a certificate made here) and a
fake one (httpx.MockTransport) for what only Go's TLS server does: answer plain HTTP with 400."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pipeline.oci.errors import WrongProtocol
from pipeline.oci.registry import RegistryClient

try:
    from tests.unit import bundle_fixtures as bf
except ImportError:  # tests/unit is not a package
    import bundle_fixtures as bf

MINI_MATRIX = Path(__file__).resolve().parents[2] / "examples" / "mini-matrix"
NO_ENGINE = "unix:///nonexistent"
LOOPBACK = ipaddress.ip_address("127.0.0.1")


class Registry(http.server.ThreadingHTTPServer):
    """Answers /v2/ as a registry does (200), anything else 404; counts requests."""

    requests = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.server.requests += 1  # type: ignore[attr-defined]
        body = json.dumps({}).encode() if self.path == "/v2/" else b"404"
        self.send_response(200 if self.path == "/v2/" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(LOOPBACK)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def serve(tls_folder: Path | None) -> Iterator[Registry]:
    server = Registry(("127.0.0.1", 0), Handler)
    if tls_folder is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self_signed(tls_folder))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def plain() -> Iterator[Registry]:
    yield from serve(None)


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[Registry]:
    yield from serve(tmp_path)


def host(server: Registry) -> str:
    return f"127.0.0.1:{server.server_address[1]}"


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_EXPERIMENTAL_DAGGER_RUNNER_HOST", NO_ENGINE)


def test_release_to_a_plain_http_registry_without_the_flag(plain, cli, no_engine):
    code, out, err = cli("release", "--source", str(MINI_MATRIX), "--registry", f"{host(plain)}/p")
    assert (code, out) == (2, "")
    assert one_error_line(err) == (
        f"error: registry {host(plain)} speaks plain HTTP, not HTTPS: pass --plain-http"
    )


def test_release_with_plain_http_to_a_tls_registry(tls, cli, no_engine):
    code, out, err = cli(
        "release", "--source", str(MINI_MATRIX), "--registry", f"{host(tls)}/p", "--plain-http"
    )
    assert (code, out) == (2, "")
    assert one_error_line(err) == (
        f"error: registry {host(tls)} speaks HTTPS, not plain HTTP: leave out --plain-http"
    )


def test_release_with_the_right_protocol_goes_on_to_the_engine(plain, cli, no_engine):
    code, _, err = cli(
        "release", "--source", str(MINI_MATRIX), "--registry", f"{host(plain)}/p", "--plain-http"
    )
    assert code == 1
    assert one_error_line(err).startswith("error: cannot reach the Dagger engine")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return bf.two_image_bundle(tmp_path_factory.mktemp("protocol"))


@pytest.mark.parametrize(
    ("server", "flag", "said"),
    [
        ("plain", [], "speaks plain HTTP, not HTTPS: pass --plain-http"),
        ("tls", ["--plain-http"], "speaks HTTPS, not plain HTTP: leave out --plain-http"),
    ],
)
def test_bundle_push_finds_the_mismatch_at_its_first_contact(
    server: str, flag: list[str], said: str, bundle: Path, cli, request
):
    registry = request.getfixturevalue(server)
    code, out, err = cli("bundle", "push", str(bundle), "--registry", f"{host(registry)}/p", *flag)
    assert (code, out) == (2, "")
    assert one_error_line(err) == f"error: registry {host(registry)} {said}"
    assert registry.requests <= 1  # one probe (the TLS server sees no HTTP request), no retries


def mock(answers: dict[str, object]) -> httpx.MockTransport:
    """scheme -> a status, or an exception to raise."""

    def handle(request: httpx.Request) -> httpx.Response:
        answer = answers[request.url.scheme]
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)  # type: ignore[arg-type]

    return httpx.MockTransport(handle)


WRONG_VERSION = httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1000)")


@pytest.mark.parametrize(
    ("plain_http", "answers", "speaks_plain"),
    [
        (False, {"https": WRONG_VERSION, "http": 200}, True),
        (False, {"https": WRONG_VERSION, "http": 401}, True),
        (True, {"http": 400, "https": 401}, False),  # Go's TLS server: 400 to plain HTTP
        (True, {"http": httpx.RemoteProtocolError("disconnected"), "https": 200}, False),
    ],
)
def test_the_other_protocol_is_asked_once(plain_http, answers, speaks_plain):
    client = RegistryClient("h.test", plain_http=plain_http, transport=mock(answers))
    with client, pytest.raises(WrongProtocol) as caught:
        client.ping()
    assert caught.value.plain is speaks_plain


@pytest.mark.parametrize(
    ("plain_http", "answers"),
    [
        (False, {"https": httpx.ConnectError("[Errno 111] Connection refused")}),
        (False, {"https": httpx.ConnectTimeout("timed out")}),
        (True, {"http": httpx.ConnectError("[Errno 111] Connection refused")}),
        (False, {"https": WRONG_VERSION, "http": httpx.ReadError("reset")}),  # neither: not ours
        (True, {"http": 400, "https": WRONG_VERSION}),  # a real 400 on plain HTTP
    ],
)
def test_no_answer_is_no_verdict(plain_http, answers):
    with RegistryClient("h.test", plain_http=plain_http, transport=mock(answers)) as client:
        client.check_protocol()  # does not raise: the retried requests say the rest


def test_the_dagger_door_finds_it_too(plain):
    """`dagger call release` asks first whether its container reaches the registry."""
    from pipeline.errors import BadInput
    from pipeline.planning.plan import resolve_plan
    from pipeline.run.access import RegistryAccess
    from pipeline.run.publish import reachable_from_here

    plan = resolve_plan(MINI_MATRIX, {}, {"private_registry": f"{host(plain)}/p"})
    with pytest.raises(BadInput, match=r"speaks plain HTTP, not HTTPS: pass --plain-http$"):
        reachable_from_here(plan, RegistryAccess())
    assert reachable_from_here(plan, RegistryAccess(plain_http=True)).through_engine is None
