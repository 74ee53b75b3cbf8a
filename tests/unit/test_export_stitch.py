"""export.stitch: single-platform layouts, one per engine, joined under one index that
names each platform's manifest unchanged; the bundle takes the result like any image."""

from __future__ import annotations

import json
from pathlib import Path

import bundle_fixtures as bf

from pipeline.bundle.create import create_bundle
from pipeline.oci import layout
from pipeline.verbs.export import stitch


def test_stitched_layout_names_each_engines_manifest_unchanged(tmp_path: Path):
    base = bf.base_layers()
    parts = [
        bf.make_source(tmp_path, f"part-{i}", 1, platforms=[platform], base=base, shape=shape)
        for i, (platform, shape) in enumerate(
            [("linux/amd64", "index"), ("linux/arm64", "manifest")]
        )
    ]
    joined = tmp_path / "joined"
    stitch([p.image.source for p in parts], joined, "image ai-infra-backend")
    top = json.loads((joined / "index.json").read_text())["manifests"]
    assert [m["mediaType"] for m in top] == [layout.OCI_INDEX]
    index = json.loads(layout.blob_path(joined, top[0]["digest"]).read_bytes())
    assert {layout.platform_of(m["platform"]): m["digest"] for m in index["manifests"]} == {
        **parts[0].platform_manifests,
        **parts[1].platform_manifests,
    }
    ref = f"{bf.REGISTRY_PREFIX}/ai-infra-backend:{bf.TAG}"
    image = bf.BundleImage(name="ai-infra-backend", ref=ref, tag=bf.TAG, source=joined)
    made = create_bundle(tmp_path / "bundle", [image], ["linux/amd64", "linux/arm64"])
    assert made.images == 1
