#!/usr/bin/env python3
"""Make a multi-platform OCI image layout from one root filesystem tarball per platform.

The lab cannot pull base images, so it makes them from Debian packages (mmdebstrap, the
busybox-static package) and turns each rootfs tarball into a one-layer image with this
script; skopeo then copies the layout into the lab registry. Standard library only.

    oci_image.py OUT_DIR --tag NAME:TAG --rootfs linux/amd64=a.tar --rootfs linux/arm64=b.tar \
        [--env K=V ...] [--cmd JSON] [--label K=V ...]
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


def image_manifest(blobs: Path, platform: str, rootfs: Path, args) -> dict:
    os_name, arch, *variant = platform.split("/")
    layer, diff_id = gzip_layer(blobs, rootfs)
    config = {
        "architecture": arch,
        "os": os_name,
        "config": {"Env": args.env, "Cmd": json.loads(args.cmd), "Labels": dict(args.label)},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": f"ai-infra-matrix lab: {args.tag} from Debian packages"}],
    }
    if variant:
        config["variant"] = variant[0]
    config_desc = {"mediaType": CONFIG, **write_blob(blobs, canonical(config))}
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": config_desc, "layers": [layer]}
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
    args = parser.parse_args()
    args.env = args.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]

    shutil.rmtree(args.out, ignore_errors=True)
    blobs = args.out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    manifests = []
    for item in args.rootfs:
        platform, tarball = item.split("=", 1)
        manifests.append(image_manifest(blobs, platform, Path(tarball), args))
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}
    index_desc = {"mediaType": INDEX, **write_blob(blobs, canonical(index))}
    index_desc["annotations"] = {"org.opencontainers.image.ref.name": args.tag}
    top = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [index_desc]}
    (args.out / "index.json").write_text(json.dumps(top, indent=2))
    (args.out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    print(f"{args.tag}: {index_desc['digest']}")


if __name__ == "__main__":
    main()
