"""What SBOMs and signatures cost, per image: syft's seconds per platform, signing's seconds
(made in the bundle, and pushed to a registry as `release --sign-key` does), and the bundle
bytes each adds. Writes bench/supply-chain.json and prints a Markdown table.

Against the running lab (scripts/lab up): one `bundle create` of examples/mini-matrix through
the CLI (its builds come from the engine's cache after a release), then each image alone,
from that bundle (an OCI layout, so no engine), into a bundle of its own: plain, with
--sign-key, with --sbom. Not a test: CI never runs it. A few minutes on 2 CPUs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from pipeline.bundle import create_bundle, push_bundle  # noqa: E402
from pipeline.bundle.create import BundleImage  # noqa: E402
from pipeline.oci import sbom, sign  # noqa: E402
from pipeline.oci.registry import RegistryClient, RegistryLogin  # noqa: E402

OUT = ROOT / "bench" / "out" / "supply-chain"
RESULTS = ROOT / "bench" / "supply-chain.json"
PLATFORMS = ["linux/amd64", "linux/arm64"]


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def one_image(full: Path, entry: dict, key: ec.EllipticCurvePrivateKey) -> dict:
    image = BundleImage(entry["name"], entry["ref"], entry["tag"], full)
    made = {}
    for kind, options in [("plain", {}), ("signed", {"sign_key": key}),
                          ("sbom", {"sbom_maker": sbom.syft})]:  # fmt: skip
        out = OUT / f"{entry['name']}-{kind}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.monotonic()
        result = create_bundle(out, [image], PLATFORMS, **options)
        made[kind] = {"seconds": time.monotonic() - t0, "bytes": tree_bytes(out),
                      "sbom_seconds": result.sboms.seconds if result.sboms else None}  # fmt: skip
    return {
        "image": entry["name"],
        "ref": entry["ref"],
        "image_bytes": made["plain"]["bytes"],
        "sbom_seconds_per_platform": made["sbom"]["sbom_seconds"] / len(PLATFORMS),
        "sbom_bytes": made["sbom"]["bytes"] - made["plain"]["bytes"],
        "sign_seconds": signing_seconds(entry, key),
        "signature_bytes": made["signed"]["bytes"] - made["plain"]["bytes"],
    }


def signing_seconds(entry: dict, key: ec.EllipticCurvePrivateKey) -> float:
    """Making the signature images of one image (its index and each platform manifest), as
    bundle create does: the difference of two whole creates is below their noise."""
    digests = [entry["digest"], *(p["digest"] for p in entry["platforms"].values())]
    reference = sign.docker_reference(entry["ref"])
    t0 = time.monotonic()
    for digest in digests:
        sign.signature_image(key, reference, digest)
    return time.monotonic() - t0


def pushed_signing(full: Path, key: ec.EllipticCurvePrivateKey) -> dict[str, float]:
    """Seconds of sign.push_signatures (index + each platform) per image ref, as a release
    does once an index is read back, against the lab's plain registry."""
    registry, project = os.environ["LAB_REGISTRY"], f"bench-sign-{uuid.uuid4().hex[:6]}"
    report = push_bundle(full, f"{registry}/{project}", RegistryLogin(plain_http=True))
    seconds = {}
    with RegistryClient(registry, plain_http=True) as client:
        for image in report.images:
            repository = image.target.split("/", 1)[1].rsplit(":", 1)[0]
            t0 = time.monotonic()
            sign.push_signatures(client, repository, f"{registry}/{repository}", image.digest, key)
            seconds[image.ref] = time.monotonic() - t0
    return seconds


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    full = OUT / "full"
    shutil.rmtree(full, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pipeline", "bundle", "create", "--source",
         str(ROOT / "examples" / "mini-matrix"), "--output", str(full)],
        check=True, cwd=ROOT, capture_output=True,
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    inventory = json.loads((full / "inventory.json").read_text())
    rows = [one_image(full, entry, key) for entry in inventory["images"]]
    pushed = pushed_signing(full, key)
    for row in rows:
        row["sign_pushed_seconds"] = pushed.get(row["ref"])
    RESULTS.write_text(json.dumps({"syft": "1.18.1", "images": rows}, indent=2) + "\n")
    print(
        "| image | image MB | SBOM s / platform | SBOM kB | sign ms (bundle) "
        "| sign s (pushed) | signatures kB |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        pushed_s = f"{r['sign_pushed_seconds']:.2f}" if r["sign_pushed_seconds"] else ""
        sig_kb = r["signature_bytes"] / 1e3
        print(f"| {r['image']} | {r['image_bytes'] / 1e6:.1f} | "
              f"{r['sbom_seconds_per_platform']:.1f} | {r['sbom_bytes'] / 1e3:.0f} | "
              f"{r['sign_seconds'] * 1e3:.1f} | {pushed_s} | {sig_kb:.1f} |")  # fmt: skip
    total_image = sum(r["image_bytes"] for r in rows)
    total_added = sum(r["sbom_bytes"] + r["signature_bytes"] for r in rows)
    print(f"\nall images: {total_image / 1e6:.1f} MB; SBOMs and signatures add "
          f"{total_added / 1e6:.2f} MB ({100 * total_added / total_image:.2f}%)")  # fmt: skip


if __name__ == "__main__":
    main()
