"""Reuse what did not change: an image x platform whose input key (run/inputs.py) an earlier
release of the same repository published is not built again, on any engine, from any
machine. The record is in the registry itself: the tag `inputs-<key hex>` points at the
platform manifest built from those inputs, beside the release tags (as cosign keeps its
`sha256-<digest>.sig` tags), and that manifest's config carries the key as a label.

A record is trusted only if the manifest it names still says so: its config's label is the
key and its platform is the one asked for; anything else (no tag, a tag moved, a registry
error) is no match, and the image is built. Wrong reuse is worse than none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from pipeline.errors import PipelineError
from pipeline.oci import layout
from pipeline.oci.reference import Reference
from pipeline.run.inputs import INPUTS_LABEL

if TYPE_CHECKING:
    from pipeline.run.access import RegistryAccess

RECORD_PREFIX = "inputs-"
# A look-up may not hold a release up: a registry that does not answer now means build (the
# push says the rest, with its own tries and timeout).
LOOKUP_SECONDS = 10.0


@dataclass(frozen=True)
class Found:
    """A published platform manifest built from the same inputs."""

    digest: str
    pinned: str  # <registry>/<repository>@<digest>: where it came from
    record: str  # the tag that named it


def record_tag(key: str) -> str:
    return RECORD_PREFIX + key.removeprefix("sha256:")


def find(reference: Reference, key: str, platform: str, access: RegistryAccess) -> Found | None:
    """The manifest the record of `key` names in `reference`'s repository, if it holds."""
    tag = record_tag(key)
    with access.client(
        reference.registry, tries=1, timeout=httpx.Timeout(LOOKUP_SECONDS)
    ) as client:
        try:
            body, _ = client.get_manifest(reference.path, tag)
            manifest = json.loads(body)
            config = json.loads(client.get_blob(reference.path, manifest["config"]["digest"]))
        except (PipelineError, ValueError, KeyError, TypeError):
            return None
    if not _made_from(config, key, platform):
        return None
    digest = layout.digest_bytes(body)
    return Found(digest, f"{reference.registry}/{reference.path}@{digest}", tag)


def _made_from(config: dict, key: str, platform: str) -> bool:
    labels = (config.get("config") or {}).get("Labels") or {}
    parts = [config.get("os"), config.get("architecture"), config.get("variant")]
    return labels.get(INPUTS_LABEL) == key and "/".join(p for p in parts if p) == platform


def record(reference: Reference, keyed: Iterable[tuple[str, str]], access: RegistryAccess) -> int:
    """Tag each published platform manifest (digest, key) with its key's record; how many."""
    done = 0
    with access.client(reference.registry) as client:
        for digest, key in keyed:
            body, media_type = client.get_manifest(reference.path, digest)
            client.put_manifest(reference.path, record_tag(key), media_type, body)
            done += 1
    return done
