"""The input key of an image x platform: a digest of everything its build reads, so that
equal keys mean the same build (run/reuse.py finds an earlier one by it).

It covers the Dockerfile text as built (release images it reads pinned by digest), the
target and platform, the build arguments it gets (a served image's address replaced by
that image's key: an address differs in every session), the digests its FROM / COPY
--from images resolve to, and the content of the context paths it reads (after prepare)
with the .dockerignore files. Content is hashed by the engine as BuildKit hashes a COPY's
sources: names, bytes, modes and links, not file times (a fresh clone keeps its key), with
the owner set to root as every COPY without --chown does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import dagger

from pipeline.planning.plan import ImagePlan

INPUTS_LABEL = "org.ai-infra-matrix.inputs"  # the key, on every image config we publish
KEY_FORMAT = 1  # bumped when what goes into a key changes: older records stop matching


class BaseDigests:
    """What each base image resolves to on one engine, asked once per release."""

    def __init__(self, client: dagger.Client) -> None:
        self._client = client
        self._found: dict[tuple[str, str], str] = {}

    async def digest(self, ref: str, platform: str) -> str:
        """What `ref` resolves to for `platform` (per platform: a base whose arm64 variant
        alone changed must change only arm64's key)."""
        if "@sha256:" in ref:
            return ref.rsplit("@", 1)[1]
        if (ref, platform) not in self._found:
            pulled = self._client.container(platform=dagger.Platform(platform)).from_(ref)
            self._found[ref, platform] = (await pulled.image_ref()).rsplit("@", 1)[1]
        return self._found[ref, platform]


async def input_key(
    image: ImagePlan,
    platform: str,
    args: Sequence[dagger.BuildArg],
    served: Mapping[str, str],
    context: dagger.Directory,
    bases: BaseDigests,
    client: dagger.Client,
) -> str | None:
    """The key, or None when a build reads what cannot be known before it runs (a URL);
    `served`: each build-time service it reaches as the key sees it (its image and key)."""
    values = {a.name: a.value for a in args}
    reads = image.dockerfile.build_reads(values)
    if reads.unknown:
        return None
    values |= served
    sources = ""
    if reads.sources:
        patterns = [_pattern(p) for p in reads.sources]
        dockerignores = [".dockerignore", f"{image.dockerfile.built_at}.dockerignore"]
        selected = client.directory().with_directory(
            "/", context, include=[*patterns, *dockerignores], owner="0:0"
        )
        sources = await selected.digest()
    images = {ref: await bases.digest(ref, platform) for ref in reads.images}
    return key_of(image, platform, values, images, sources)


def key_of(
    image: ImagePlan,
    platform: str,
    args: Mapping[str, str],
    images: Mapping[str, str],
    sources: str,
) -> str:
    inputs = {
        "format": KEY_FORMAT,
        "platform": platform,
        "target": image.target or "",
        "dockerfile": image.dockerfile.text,
        "args": dict(args),
        "images": dict(images),
        "sources": sources,
    }
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _pattern(source: str) -> str:
    """A COPY source as an include pattern of the context: a folder brings its contents."""
    path = source.strip("/").removeprefix("./")
    return "**" if path in ("", ".") else path
