#!/usr/bin/env python3
"""Make a multi-platform OCI image layout from root filesystem tarballs, one image per platform.

The lab cannot pull base images, so it makes them from Debian packages (mmdebstrap, the
busybox-static package) and turns each rootfs tarball into a one-layer image with this
script; skopeo then copies the layout into the lab registry. A platform named several times
gets one layer per tarball, in order (lab/sdk-content stacks a Go toolchain on a Debian
rootfs that way). Standard library only.

    oci_image.py OUT_DIR --tag NAME:TAG --rootfs linux/amd64=a.tar --rootfs linux/arm64=b.tar \
        [--env K=V ...] [--cmd JSON] [--label K=V ...] [--manifest-digest]

It prints the index digest, or with --manifest-digest (one platform only) the image
manifest's digest: the Dagger engine finds its builtin SDK content by manifest digest.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
from pathlib import Path

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CHUNK = 1 << 20


def write_blob(blobs: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def gzip_layer(blobs: Path, rootfs: Path) -> tuple[dict, str]:
    """Compress the tarball (mtime 0, so a rerun gives the same digest); return desc, diff_id."""
    tmp = blobs / "layer.tmp"
    raw = hashlib.sha256()
    with rootfs.open("rb") as src, gzip.GzipFile(tmp, "wb", compresslevel=6, mtime=0) as dst:
        while chunk := src.read(CHUNK):
            raw.update(chunk)
            dst.write(chunk)
    packed = hashlib.sha256()
    with tmp.open("rb") as f:
        while chunk := f.read(CHUNK):
            packed.update(chunk)
    digest = packed.hexdigest()
    tmp.rename(blobs / digest)
    desc = {"mediaType": LAYER, "digest": f"sha256:{digest}", "size": (blobs / digest).stat().st_size}
    return desc, f"sha256:{raw.hexdigest()}"


def image_manifest(blobs: Path, platform: str, tarballs: list[Path], args) -> dict:
    os_name, arch, *variant = platform.split("/")
    layers, diff_ids = zip(*(gzip_layer(blobs, tarball) for tarball in tarballs))
    config = {
        "architecture": arch,
        "os": os_name,
        "config": {"Env": args.env, "Cmd": json.loads(args.cmd), "Labels": dict(args.label)},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        # One entry per layer: image tools pair non-empty history entries with layers.
        "history": [{"created_by": f"ai-infra-matrix lab: {args.tag}, layer {t.name}"} for t in tarballs],
    }
    if variant:
        config["variant"] = variant[0]
    config_desc = {"mediaType": CONFIG, **write_blob(blobs, canonical(config))}
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": config_desc, "layers": list(layers)}
    desc = {"mediaType": MANIFEST, **write_blob(blobs, canonical(manifest))}
    desc["platform"] = {"os": os_name, "architecture": arch, **({"variant": variant[0]} if variant else {})}
    return desc


def canonical(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--rootfs", action="append", required=True, help="PLATFORM=TARBALL")
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--cmd", default='["sh"]')
    parser.add_argument("--label", action="append", default=[], type=lambda s: s.split("=", 1))
    parser.add_argument("--manifest-digest", action="store_true", help="print the manifest digest")
    args = parser.parse_args()
    args.env = args.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]

    shutil.rmtree(args.out, ignore_errors=True)
    blobs = args.out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layers: dict[str, list[Path]] = {}  # platform -> tarballs, bottom layer first
    for item in args.rootfs:
        platform, tarball = item.split("=", 1)
        layers.setdefault(platform, []).append(Path(tarball))
    if args.manifest_digest and len(layers) != 1:
        parser.error("--manifest-digest needs exactly one platform")
    manifests = [image_manifest(blobs, platform, tarballs, args) for platform, tarballs in layers.items()]
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}
    index_desc = {"mediaType": INDEX, **write_blob(blobs, canonical(index))}
    index_desc["annotations"] = {"org.opencontainers.image.ref.name": args.tag}
    top = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [index_desc]}
    (args.out / "index.json").write_text(json.dumps(top, indent=2))
    (args.out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    print(manifests[0]["digest"] if args.manifest_digest else f"{args.tag}: {index_desc['digest']}")


if __name__ == "__main__":
    main()
