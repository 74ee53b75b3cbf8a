"""pipeline.oci.layout.walk_image: the one walker of an image's content graph, strict for
create, push and the read-back, and with ``accept`` for verify to check each blob and go on
past damage."""

from __future__ import annotations

import random

import pytest

from pipeline.errors import BundleError
from pipeline.oci import layout

try:
    from tests.unit import bundle_fixtures as bf
except ImportError:  # tests/unit is not a package
    import bundle_fixtures as bf


def built(with_platform: bool = True) -> tuple[bf.Layout, dict, dict[str, dict]]:
    """An index of two platform manifests and one attestation."""
    rng = random.Random(5)
    store = bf.Layout()
    manifests = {p: store.manifest(p, [bf.layer_bytes(rng)], with_platform) for p in bf.PLATFORMS}
    top = store.index([*manifests.values(), store.attestation(manifests["linux/amd64"])])
    return store, top, manifests


def walk(store: bf.Layout, top: dict, **kw) -> layout.ImageGraph:
    desc = layout.Descriptor.parse(top, "top")
    return layout.walk_image(desc, store.blobs.__getitem__, "img", **kw)


@pytest.mark.parametrize("with_platform", [True, False])  # else read from each config
def test_platforms_and_children_before_parents(with_platform: bool):
    store, top, manifests = built(with_platform)
    graph = walk(store, top)
    assert {p: m.descriptor.digest for p, m in graph.platforms.items()} == {
        p: m["digest"] for p, m in manifests.items()
    }
    order = [d.digest for d in graph.ordered]
    assert order[-1] == top["digest"]
    assert sorted(order) == sorted(store.blobs)  # every blob once, attestation's too
    for platform in graph.platforms.values():
        for blob in platform.blobs:
            assert order.index(blob.digest) < order.index(platform.descriptor.digest)


def test_accept_sees_every_descriptor_parents_first_with_its_kind_and_platform():
    store, top, manifests = built()
    seen: list[tuple[str, str | None, str | None]] = []

    def accept(desc: layout.Descriptor, kind: str | None, platform: str | None) -> bool:
        seen.append((desc.digest, kind, platform))
        return True

    walk(store, top, accept=accept)
    assert seen[0] == (top["digest"], "index", None)
    assert seen[1] == (manifests["linux/amd64"]["digest"], "manifest", "linux/amd64")
    assert [kind for _, kind, _ in seen[2:4]] == ["config", "layer"]
    assert {platform for _, _, platform in seen[2:4]} == {"linux/amd64"}
    assert len(seen) == len(store.blobs)


def test_a_refused_descriptor_is_not_read_and_leaves_its_subtree_out():
    store, top, manifests = built()
    damaged = manifests["linux/arm64"]["digest"]
    del store.blobs[damaged]  # reading it would fail: accept must stop the walk first

    graph = walk(store, top, accept=lambda desc, kind, platform: desc.digest != damaged)

    assert sorted(graph.platforms) == ["linux/amd64"]
    assert damaged not in {d.digest for d in graph.ordered}


def test_unsupported_media_type_raises_unless_refused():
    store = bf.Layout()
    odd = store.add(b"{}", "application/vnd.example+json")
    top = store.index([odd])
    with pytest.raises(BundleError, match="img: unsupported media type application/vnd.example"):
        walk(store, top)
    graph = walk(store, top, accept=lambda desc, kind, platform: kind is not None)
    assert [d.digest for d in graph.ordered] == [top["digest"]]
