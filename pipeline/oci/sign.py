"""sign: image signatures in cosign's key-based format, made and checked without cosign.

A signature signs the simple-signing payload (the repository and an image's digest) with
ECDSA P-256 over SHA-256. It is stored as cosign stores it: an OCI image manifest under the
tag ``sha256-<hex>.sig`` of the image's repository, whose one layer is the payload and carries
the base64 DER signature in an annotation. No transparency log: the site is offline, so
``cosign verify --key pub.pem --insecure-ignore-tlog=true`` checks ours, and we check cosign's.

The manifest, config and payload are the bytes cosign (go-containerregistry) writes for the
same input; only the signature differs, ECDSA being randomised. An index is signed with each of
its platform manifests, as ``cosign sign --recursive`` does, so that ``cosign verify`` of a
child digest (what a runtime pulls, what Harbor shows) passes too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.errors import BadInput, BundleError
from pipeline.oci import layout
from pipeline.oci.access import PasswordSpec
from pipeline.oci.reference import parse
from pipeline.oci.registry import RegistryClient

SIGNATURE_TYPE = "cosign container image signature"
SUFFIX = ".sig"
ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
# go-containerregistry's zero time: the config of cosign's signature image carries it.
ZERO_TIME = "0001-01-01T00:00:00Z"
SigningKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey


# --- names ---------------------------------------------------------------------------------
def signature_tag(digest: str) -> str:
    """``sha256:<hex>`` → ``sha256-<hex>.sig``: where cosign looks for an image's signatures."""
    algorithm, hex_ = layout.split_digest(digest)
    return f"{algorithm}-{hex_}{SUFFIX}"


def docker_reference(ref: str) -> str:
    """The repository a payload names, as cosign spells it (go-containerregistry's
    ``Repository.Name()``): ``redis:7`` → ``index.docker.io/library/redis``."""
    return parse(ref).repository


def fingerprint(key: PublicKey) -> str:
    """sha256 of the public key's DER SubjectPublicKeyInfo, as ``sha256:<hex>``."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"sha256:{hashlib.sha256(der).hexdigest()}"


# --- keys ----------------------------------------------------------------------------------
def read_sign_key(text: str, env: Mapping[str, str], flag: str = "--sign-key") -> SigningKey:
    """The private key that ``--sign-key env:VAR|file:PATH`` names; BadInput (one line, never
    the key) for anything but a PEM EC P-256 private key."""
    pem = PasswordSpec.parse(text, flag, "key").read(env)
    return load_private_key(pem.encode(), f"{flag} {text}")


def load_private_key(pem: bytes, what: str) -> SigningKey:
    """A PEM EC P-256 private key (SEC 1, as ``openssl ecparam -genkey`` writes, or PKCS8)."""
    if b"ENCRYPTED SIGSTORE PRIVATE KEY" in pem or b"ENCRYPTED COSIGN PRIVATE KEY" in pem:
        raise BadInput(
            f"{what}: an encrypted cosign key; give the PEM key it was imported from "
            "(openssl ecparam -name prime256v1 -genkey -noout)"
        )
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:  # a password-protected PEM
        raise BadInput(f"{what}: an encrypted key; give it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise BadInput(f"{what}: not a PEM private key") from None
    return _p256(key, what)


def load_public_key(path: Path) -> PublicKey:
    """A PEM EC P-256 public key (``openssl ec -pubout``, or cosign's ``cosign.pub``)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as err:
        raise BadInput(f"--key {path}: {err.strerror}") from None
    except (ValueError, UnsupportedAlgorithm):
        raise BadInput(f"--key {path}: not a PEM public key") from None
    return _p256(key, f"--key {path}")


def _p256(key: Any, what: str) -> Any:
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        raise BadInput(f"{what}: not an EC key; cosign's format needs EC P-256 (prime256v1)")
    if not isinstance(key.curve, ec.SECP256R1):
        raise BadInput(f"{what}: an EC key on {key.curve.name}, not P-256 (prime256v1)")
    return key


# --- payload and signature -------------------------------------------------------------------
def payload(reference: str, digest: str) -> bytes:
    """The simple-signing payload cosign signs for ``reference@digest``."""
    critical = {
        "identity": {"docker-reference": reference},
        "image": {"docker-manifest-digest": digest},
        "type": SIGNATURE_TYPE,
    }
    return layout.compact({"critical": critical, "optional": None})


def sign(key: SigningKey, data: bytes) -> str:
    """Base64 of the DER ECDSA signature, as in cosign's annotation."""
    return base64.b64encode(key.sign(data, ECDSA_SHA256)).decode()


def is_valid(key: PublicKey, data: bytes, signature: str) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), data, ECDSA_SHA256)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


# --- the signature image -------------------------------------------------------------------
def _descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "size": len(data),
        "digest": layout.digest_bytes(data),
        **extra,
    }


@dataclass(frozen=True)
class SignatureImage:
    """cosign's signature image as bytes: its manifest and the blobs it names."""

    manifest: bytes
    blobs: dict[str, bytes]  # digest → bytes: the config and the payload

    @property
    def digest(self) -> str:
        return layout.digest_bytes(self.manifest)


def signature_image(key: SigningKey, reference: str, digest: str) -> SignatureImage:
    """A signature of the image ``digest`` (an index or a manifest) in ``reference``."""
    signed = payload(reference, digest)
    annotations = {layout.ANNOTATION_COSIGN_SIGNATURE: sign(key, signed)}
    layer = _descriptor(layout.COSIGN_SIMPLE_SIGNING, signed, annotations=annotations)
    config = layout.compact(
        {
            "architecture": "",
            "created": ZERO_TIME,
            "history": [{"created": ZERO_TIME}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
            "config": {},
        }
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": layout.OCI_MANIFEST,
        "config": _descriptor(layout.OCI_CONFIG, config),
        "layers": [layer],
    }
    blobs = {layout.digest_bytes(config): config, layer["digest"]: signed}
    return SignatureImage(layout.compact(manifest), blobs)


def problem(
    manifest: bytes,
    read_blob: Callable[[str], bytes],
    key: PublicKey,
    reference: str,
    digest: str,
) -> str | None:
    """What keeps a signature image from signing ``reference@digest`` under ``key``, or None
    if one of its signatures does (cosign accepts any one). ``read_blob`` reads a payload."""
    doc = layout.loads(manifest, "signature manifest")
    layers = doc.get("layers") if isinstance(doc, dict) else None
    signatures = [
        layout.Descriptor.parse(d, "signature manifest")
        for d in layers or []
        if isinstance(d, dict) and d.get("mediaType") == layout.COSIGN_SIMPLE_SIGNING
    ]
    if not signatures:
        return "the signature manifest holds no simple-signing layer"
    found = [_layer_problem(d, read_blob, key, reference, digest) for d in signatures]
    return None if None in found else "; ".join(dict.fromkeys(p for p in found if p))


def _layer_problem(
    desc: layout.Descriptor,
    read_blob: Callable[[str], bytes],
    key: PublicKey,
    reference: str,
    digest: str,
) -> str | None:
    data = read_blob(desc.digest)
    if layout.digest_bytes(data) != desc.digest:
        return f"payload {desc.digest} does not hash to its digest"
    if not is_valid(key, data, desc.annotations.get(layout.ANNOTATION_COSIGN_SIGNATURE, "")):
        return f"not signed by the key {fingerprint(key)}"
    critical = (layout.loads(data, "signature payload") or {}).get("critical") or {}
    signed = (critical.get("image") or {}).get("docker-manifest-digest")
    if signed != digest:
        return f"signs {signed}, not the image {digest}"
    named = (critical.get("identity") or {}).get("docker-reference")
    if named != reference:
        return f"signs the repository {named}, not {reference}"
    return None


# --- in a registry ---------------------------------------------------------------------------
def put_signature(
    client: RegistryClient,
    repository: str,
    digest: str,
    manifest: bytes,
    read_blob: Callable[[str], bytes],
) -> str:
    """Push a signature image of the image ``digest`` into ``repository`` (blobs the registry
    lacks, then the manifest under ``sha256-<hex>.sig``, replacing one there); its digest."""
    client.push_blobs_of(repository, manifest, read_blob, "signature manifest")
    return client.put_manifest(repository, signature_tag(digest), layout.OCI_MANIFEST, manifest)


def children(index: bytes) -> list[str]:
    """The platform manifests an index names, which a recursive signature signs too
    (attestation manifests are not images: nobody pulls them by digest); none for a manifest."""
    doc = layout.loads(index, "index")
    found = [layout.Descriptor.parse(d, "index") for d in (doc or {}).get("manifests") or []]
    return [d.digest for d in found if d.is_manifest and not d.is_attestation]


def push_signatures(
    client: RegistryClient, repository: str, reference: str, digest: str, key: SigningKey
) -> dict[str, str]:
    """Sign the image ``digest`` and, for an index, each of its platform manifests (as
    ``cosign sign --recursive``): signed digest → its signature manifest's digest, the
    image's own first."""
    manifest, _ = client.get_manifest(repository, digest)
    signed = [digest, *children(manifest)]
    return {d: push_signature(client, repository, reference, d, key) for d in signed}


def push_signature(
    client: RegistryClient, repository: str, reference: str, digest: str, key: SigningKey
) -> str:
    """Sign the image ``digest`` that ``repository`` (a path in ``client``'s registry, e.g.
    ``ai-infra/backend``) holds, naming ``reference`` (see docker_reference) in the payload;
    returns the signature manifest's digest."""
    image = signature_image(key, reference, digest)
    return put_signature(client, repository, digest, image.manifest, image.blobs.__getitem__)


def check_pushed(
    client: RegistryClient, repository: str, reference: str, digest: str, key: PublicKey
) -> str | None:
    """What is wrong with the signature of ``digest`` in ``repository`` (None: it is good)."""
    try:
        manifest, _ = client.get_manifest(repository, signature_tag(digest))
    except BundleError as err:
        return f"no signature under {signature_tag(digest)}: {err}"
    return problem(manifest, lambda d: client.get_blob(repository, d), key, reference, digest)
