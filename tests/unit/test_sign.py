"""Signatures in cosign's format: keys, payload, the signature image, and checking one.

The golden case is a signature cosign v2.6.5 made (`cosign sign --key --tlog-upload=false`) of
sha256:aab3… in 127.0.0.1:5000/sigexp/tiny, with the key whose public half is
fixtures/cosign/pub.pem: our payload and config are its bytes, and our check accepts it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pipeline.errors import BadInput
from pipeline.oci import layout, sign

FIXTURES = Path(__file__).parent / "fixtures" / "cosign"
COSIGN_DIGEST = "sha256:aab318fd9c39f129c9c64f80c408bebffec8dbeb921dad491bf907290880e95d"
COSIGN_REFERENCE = "127.0.0.1:5000/sigexp/tiny"
DIGEST = "sha256:" + "ab" * 32
REFERENCE = "harbor.example.com/ai-infra/ai-infra-backend"


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(key, fmt=serialization.PrivateFormat.TraditionalOpenSSL, encryption=None) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, fmt, encryption or serialization.NoEncryption()
    )


def cosign_manifest() -> bytes:
    return (FIXTURES / "signature-manifest.json").read_bytes()


def test_payload_and_config_are_the_bytes_cosign_writes() -> None:
    made = json.loads(cosign_manifest())
    ours = sign.payload(COSIGN_REFERENCE, COSIGN_DIGEST)
    assert layout.digest_bytes(ours) == made["layers"][0]["digest"]
    assert ours.startswith(b'{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/')
    assert ours.endswith(b'"type":"cosign container image signature"},"optional":null}')
    image = sign.signature_image(
        ec.generate_private_key(ec.SECP256R1()), COSIGN_REFERENCE, COSIGN_DIGEST
    )
    doc = json.loads(image.manifest)
    assert doc["config"] == made["config"]  # same config bytes: same digest and size
    assert {k: v for k, v in doc["layers"][0].items() if k != "annotations"} == {
        k: v for k, v in made["layers"][0].items() if k != "annotations"
    }
    assert list(doc) == list(made)  # field order too: the manifest is written as Go writes it
    assert set(image.blobs) == {made["config"]["digest"], made["layers"][0]["digest"]}


def test_a_signature_cosign_made_passes_our_check() -> None:
    public = sign.load_public_key(FIXTURES / "pub.pem")
    blobs = {layout.digest_bytes(p): p for p in [sign.payload(COSIGN_REFERENCE, COSIGN_DIGEST)]}
    check = sign.problem(cosign_manifest(), blobs.__getitem__, public, COSIGN_REFERENCE, DIGEST)
    assert check == f"signs {COSIGN_DIGEST}, not the image {DIGEST}"
    assert (
        sign.problem(cosign_manifest(), blobs.__getitem__, public, COSIGN_REFERENCE, COSIGN_DIGEST)
        is None
    )


def test_ours_passes_and_each_kind_of_damage_is_named(key) -> None:
    image = sign.signature_image(key, REFERENCE, DIGEST)
    public = key.public_key()
    read = image.blobs.__getitem__
    assert sign.problem(image.manifest, read, public, REFERENCE, DIGEST) is None
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert sign.problem(image.manifest, read, other, REFERENCE, DIGEST) == (
        f"not signed by the key {sign.fingerprint(other)}"
    )
    assert "not the image" in sign.problem(
        image.manifest, read, public, REFERENCE, "sha256:" + "cd" * 32
    )
    assert sign.problem(image.manifest, read, public, "other.example/x", DIGEST) == (
        f"signs the repository {REFERENCE}, not other.example/x"
    )
    doc = json.loads(image.manifest)
    layer = doc["layers"][0]
    layer["annotations"][layout.ANNOTATION_COSIGN_SIGNATURE] = base64.b64encode(b"junk").decode()
    forged = json.dumps(doc).encode()
    assert "not signed by the key" in sign.problem(forged, read, public, REFERENCE, DIGEST)
    doc["layers"] = []
    assert "no simple-signing layer" in sign.problem(
        json.dumps(doc).encode(), read, public, REFERENCE, DIGEST
    )


def test_a_payload_that_differs_from_its_digest_is_refused(key) -> None:
    image = sign.signature_image(key, REFERENCE, DIGEST)
    tampered = {d: b.replace(b"ab", b"cd") for d, b in image.blobs.items()}
    found = sign.problem(image.manifest, tampered.__getitem__, key.public_key(), REFERENCE, DIGEST)
    assert "does not hash to its digest" in found


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("harbor.example.com/ai-infra/backend:v1", "harbor.example.com/ai-infra/backend"),
        ("127.0.0.1:5000/p/x:v1", "127.0.0.1:5000/p/x"),
        ("redis:7", "index.docker.io/library/redis"),
        ("confluentinc/cp-kafka:7.5.0", "index.docker.io/confluentinc/cp-kafka"),
    ],
)
def test_docker_reference_is_the_repository_as_cosign_names_it(ref: str, expected: str) -> None:
    assert sign.docker_reference(ref) == expected


def test_signature_tag() -> None:
    assert sign.signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"


def test_fingerprint_is_the_sha256_of_the_der_public_key() -> None:
    public = sign.load_public_key(FIXTURES / "pub.pem")
    der = base64.b64decode(
        "".join(x for x in (FIXTURES / "pub.pem").read_text().splitlines() if "-" not in x)
    )
    assert sign.fingerprint(public) == layout.digest_bytes(der)


@pytest.mark.parametrize("fmt", ["sec1", "pkcs8"])
def test_a_p256_key_from_a_file_or_a_variable(key, fmt: str, tmp_path: Path) -> None:
    form = {
        "sec1": serialization.PrivateFormat.TraditionalOpenSSL,
        "pkcs8": serialization.PrivateFormat.PKCS8,
    }[fmt]
    path = tmp_path / "key.pem"
    path.write_bytes(pem(key, form))
    for loaded in (
        sign.read_sign_key(f"file:{path}", {}),
        sign.read_sign_key("env:KEY", {"KEY": path.read_text()}),
    ):
        assert sign.fingerprint(loaded.public_key()) == sign.fingerprint(key.public_key())


def _bad_keys() -> dict[str, tuple[bytes, str]]:
    p384 = ec.generate_private_key(ec.SECP384R1())
    encrypted = pem(
        ec.generate_private_key(ec.SECP256R1()),
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    armor = "ENCRYPTED SIGSTORE PRIVATE KEY"
    cosign_key = f"-----BEGIN {armor}-----\neyJr\n-----END {armor}-----\n".encode()
    return {
        "wrong curve": (pem(p384), "an EC key on secp384r1, not P-256 (prime256v1)"),
        "rsa": (pem(rsa.generate_private_key(65537, 2048)), "not an EC key"),
        "not a key": (b"hello\n", "not a PEM private key"),
        "encrypted": (encrypted, "an encrypted key; give it unencrypted"),
        "cosign key": (cosign_key, "an encrypted cosign key"),
    }


@pytest.mark.parametrize("case", ["wrong curve", "rsa", "not a key", "encrypted", "cosign key"])
def test_a_wrong_key_is_one_line_of_bad_input(case: str, tmp_path: Path) -> None:
    data, expected = _bad_keys()[case]
    path = tmp_path / "key.pem"
    path.write_bytes(data)
    with pytest.raises(BadInput) as info:
        sign.read_sign_key(f"file:{path}", {})
    message = str(info.value)
    assert message.startswith(f"--sign-key file:{path}: ")
    assert expected in message
    assert "\n" not in message and "PRIVATE KEY" not in message


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        (
            "-----BEGIN EC PRIVATE KEY-----",
            {},
            "--sign-key takes env:VAR or file:PATH, never the key itself",
        ),
        ("env:NOPE", {}, "--sign-key env:NOPE: the variable is not set"),
        (
            "file:/no/such/key.pem",
            {},
            "--sign-key file:/no/such/key.pem: No such file or directory",
        ),
    ],
)
def test_where_the_key_is_is_checked_like_a_password(text: str, env: dict, expected: str) -> None:
    with pytest.raises(BadInput, match="^" + expected.replace("(", r"\(") + "$"):
        sign.read_sign_key(text, env)


def test_a_public_key_must_be_p256(tmp_path: Path) -> None:
    path = tmp_path / "pub.pem"
    path.write_bytes(b"junk")
    with pytest.raises(BadInput, match="not a PEM public key"):
        sign.load_public_key(path)
    path.write_bytes(
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(BadInput, match="secp384r1"):
        sign.load_public_key(path)
