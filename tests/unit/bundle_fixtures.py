"""Small, real OCI layouts built in pure Python for the bundle tests.

Layers are genuine gzip'd tarballs of random bytes (so a runtime could unpack them); configs
carry os/architecture and diff_ids; each image is written like Dagger's
``Container.export(path, platform_variants=[...])``: a tarball with ``oci-layout``,
``index.json`` (one entry: the image index) and ``blobs/sha256/...``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.bundle import BundleImage
from pipeline.bundle.create import inventory_entry
from pipeline.oci import layout
from pipeline.oci.layout import OCI_INDEX, OCI_MANIFEST

PLATFORMS = ["linux/amd64", "linux/arm64"]
REGISTRY_PREFIX = "harbor.example.com/ai-infra"
TAG = "v0.3.8"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_bytes(rng: random.Random, size: int = 1500) -> tuple[bytes, str]:
    """A gzip'd tar holding one random file; returns (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = rng.randbytes(size)
        info = tarfile.TarInfo(f"data-{rng.randrange(1 << 30)}.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    plain = raw.getvalue()
    return gzip.compress(plain, mtime=0), digest(plain)


@dataclass
class Layout:
    """Blobs and top descriptors of one OCI layout under construction."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    tops: list[dict[str, Any]] = field(default_factory=list)

    def add(self, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        d = digest(data)
        self.blobs[d] = data
        return {"mediaType": media_type, "digest": d, "size": len(data), **extra}

    def manifest(
        self, platform: str, layers: list[tuple[bytes, str]], with_platform: bool = True
    ) -> dict[str, Any]:
        os_, arch, *variant = platform.split("/")
        config: dict[str, Any] = {
            "architecture": arch,
            "os": os_,
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
        }
        plat: dict[str, Any] = {"architecture": arch, "os": os_}
        if variant:
            config["variant"] = plat["variant"] = variant[0]
        config_desc = self.add(
            json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"
        )
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc,
            "layers": [
                self.add(blob, "application/vnd.oci.image.layer.v1.tar+gzip") for blob, _ in layers
            ],
        }
        extra = {"platform": plat} if with_platform else {}
        return self.add(json.dumps(doc).encode(), OCI_MANIFEST, **extra)

    def attestation(self, subject: dict[str, Any]) -> dict[str, Any]:
        """A BuildKit-style attestation manifest (platform unknown/unknown)."""
        config = self.add(b"{}", "application/vnd.oci.image.config.v1+json")
        statement = self.add(
            b'{"_type":"https://in-toto.io/Statement/v0.1"}', "application/vnd.in-toto+json"
        )
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": [statement],
        }
        return self.add(
            json.dumps(doc).encode(),
            OCI_MANIFEST,
            platform={"architecture": "unknown", "os": "unknown"},
            annotations={
                "vnd.docker.reference.type": "attestation-manifest",
                "vnd.docker.reference.digest": subject["digest"],
            },
        )

    def index(self, children: list[dict[str, Any]]) -> dict[str, Any]:
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
        return self.add(json.dumps(doc).encode(), OCI_INDEX)

    def index_json(self) -> bytes:
        return json.dumps({"schemaVersion": 2, "manifests": self.tops}).encode()

    def write_dir(self, root: Path) -> Path:
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        (root / "index.json").write_bytes(self.index_json())
        for d, data in self.blobs.items():
            (root / "blobs" / "sha256" / d.split(":")[1]).write_bytes(data)
        return root

    def write_tar(self, path: Path) -> Path:
        with tarfile.open(path, "w") as tar:
            for name in ("blobs", "blobs/sha256"):
                info = tarfile.TarInfo(name)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            entries = {
                "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
                "index.json": self.index_json(),
            }
            entries |= {f"blobs/sha256/{d.split(':')[1]}": b for d, b in self.blobs.items()}
            for name, data in entries.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path


@dataclass
class Source:
    """One image's source layout plus what the tests check against."""

    image: BundleImage
    top: str  # digest of the top descriptor
    blobs: dict[str, bytes]
    platform_manifests: dict[str, str]


def base_layers(seed: int = 7) -> dict[str, tuple[bytes, str]]:
    """One base layer per platform, shared by every image built from the same base."""
    rng = random.Random(seed)
    return {p: layer_bytes(rng, 4000) for p in ["linux/amd64", "linux/arm64", "linux/arm/v7"]}


def make_source(
    out_dir: Path,
    name: str,
    seed: int,
    *,
    platforms: list[str] = PLATFORMS,
    base: dict[str, tuple[bytes, str]] | None = None,
    shape: str = "index",  # index | manifest (one platform) | nested (index → index)
    form: str = "tar",  # tar | dir
    attestations: bool = False,
    ref: str | None = None,
) -> Source:
    rng = random.Random(seed)
    base = base if base is not None else base_layers()
    layout = Layout()
    manifests: list[dict[str, Any]] = []
    for platform in platforms:
        own = layer_bytes(rng, 1000 + rng.randrange(500))
        manifests.append(layout.manifest(platform, [base[platform], own], shape != "manifest"))
    children = list(manifests)
    if attestations:
        children += [layout.attestation(m) for m in manifests]
    if shape == "manifest":
        assert len(manifests) == 1, "a single-manifest layout has one platform"
        top = manifests[0]
    elif shape == "nested":
        top = layout.index([layout.index(children)])
    else:
        top = layout.index(children)
    layout.tops = [top]
    ref = ref or f"{REGISTRY_PREFIX}/{name}:{TAG}"
    if form == "dir":
        path = layout.write_dir(out_dir / f"{name}-layout")
    else:
        path = layout.write_tar(out_dir / f"{name}.tar")
    tag = ref.rsplit(":", 1)[1]
    return Source(
        image=BundleImage(name=name, ref=ref, tag=tag, source=path),
        top=top["digest"],
        blobs=dict(layout.blobs),
        platform_manifests={p: m["digest"] for p, m in zip(platforms, manifests, strict=True)},
    )


def two_sources(out_dir: Path, **kw: Any) -> list[Source]:
    """Two images built on one base (its layers shared), two platforms each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = base_layers()
    return [
        make_source(out_dir, "ai-infra-backend", 1, base=base, **kw),
        make_source(out_dir, "ai-infra-frontend", 2, base=base, **kw),
    ]


def build_tar(path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    """A tarball of raw entries: (name, data) for files, TarInfo for anything else."""
    with tarfile.open(path, "w") as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def tamper_index(bundle: Path, top: str) -> str:
    """Tamper with an image of a bundle as a careful attacker would: its index changed and
    stored under its new digest, with index.json, inventory.json and SHA256SUMS all made to
    agree (only a signature can tell). Returns the new digest."""
    index = json.loads(layout.blob_path(bundle, top).read_bytes())
    index["annotations"] = {"evil": "yes"}
    data = json.dumps(index).encode()
    new = layout.write_blob(bundle, data)
    layout.blob_path(bundle, top).unlink()
    doc = json.loads((bundle / layout.INDEX_FILE).read_bytes())
    entry = next(m for m in doc["manifests"] if m["digest"] == top)
    entry |= {"digest": new, "size": len(data)}
    (bundle / layout.INDEX_FILE).write_bytes(layout.dumps(doc))
    inventory = json.loads((bundle / layout.INVENTORY_FILE).read_bytes())
    image = next(e for e in inventory["images"] if e["digest"] == top)
    graph = layout.walk_image(
        layout.Descriptor.parse(entry, layout.INDEX_FILE),
        lambda d: layout.blob_path(bundle, d).read_bytes(),
        "tampered",
    )
    image |= inventory_entry(image["name"], image["ref"], image["tag"], graph)
    (bundle / layout.INVENTORY_FILE).write_bytes(layout.dumps(inventory))
    files = [f for f in layout.iter_files(bundle) if f != layout.CHECKSUMS_FILE]
    sums = [f"{layout.split_digest(layout.hash_file(bundle / f)[0])[1]}  {f}\n" for f in files]
    (bundle / layout.CHECKSUMS_FILE).write_text("".join(sums))
    return new


def two_image_bundle(root: Path) -> Path:
    """A bundle of two_sources' images, made under `root`."""
    from pipeline.bundle import create_bundle

    sources = two_sources(root / "src")
    create_bundle(root / "bundle", [s.image for s in sources], PLATFORMS)
    return root / "bundle"
