"""The deployment kit: what the offline site runs, pinned by digest to what the bundle holds.

In the bundle's `kit/`:
- `docker-compose.yml`: the root compose file rendered as build.sh renders it (`{{VAR}}` from
  the non-secret values; a secret's `{{VAR}}` becomes `${VAR}`, for the site's .env), each
  service image the bundle holds replaced by `<registry>/<name>@<index digest>`;
- `helm-values.yaml`: for each chart (its subcharts under their names), the image mappings the
  bundle holds set to the same (`tag: <tag>@<digest>`, which `repo:tag` templates accept);
- `site.env`: the keys the site must set (secrets the compose file reads), never a value;
- `kit.json`: every pinned reference (where, image, digest) and what is not pinned, and why.

The kit is planned with the release (planning reads the checkout), pinned when the bundle is
written, and written again for the site's registry by `bundle push` (same digests).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import BundleError
from pipeline.oci.reference import image_name, parse_tagged
from pipeline.planning.deployment import (
    _MARKED,
    COMPOSE_FILES,
    OWN_PREFIX,
    _get,
    _image_mappings,
    _line,
    _load,
    _text,
    helm_values_files,
    interpolate,
)
from pipeline.planning.layout import read_text
from pipeline.planning.render import VARIABLE, fill

KIT_DIR = "kit"
COMPOSE = "docker-compose.yml"
HELM = "helm-values.yaml"
SITE_ENV = "site.env"
KIT_JSON = "kit.json"
_MARK = ("\u2983", "\u2984")  # as pipeline.deployment marks `{{VAR}}` while reading structure


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    image: str  # the bundle's image name
    where: str  # file:line in the checkout


@dataclass(frozen=True)
class HelmImage:
    chart: str  # helm/<chart>
    path: tuple[str, ...]  # keys from the chart's values root to the image mapping
    image: str
    tag: str
    where: str


@dataclass(frozen=True)
class KitPlan:
    """The kit before the digests are known."""

    compose: str | None = None  # rendered text; `spans` mark the pinned image values
    spans: tuple[Span, ...] = ()
    helm: tuple[HelmImage, ...] = ()
    site_keys: tuple[str, ...] = ()
    left: tuple[str, ...] = ()  # "file:line: image: why it is not pinned"


def plan_kit(
    root: Path,
    values: Mapping[str, str],
    secret_keys: Sequence[str],
    own: Sequence[str],
    origins: Mapping[str, str],
    reasons: Mapping[str, str] | None = None,
) -> KitPlan:
    """`own`: the release's image names; `origins`: file:line -> the dependency that came
    from there (the plan's origins), so each image line maps to what the bundle holds;
    `reasons`: file:line -> why the plan left that image out."""
    why = dict(reasons or {})
    compose, spans, keys, left = _compose(root, values, secret_keys, set(own), origins, why)
    helm, helm_left = _helm(root, set(own), origins, why)
    return KitPlan(compose, spans, helm, keys, (*left, *helm_left))


def _compose(root, values, secret_keys, own, origins, why):
    shown = next((name for name in COMPOSE_FILES if (root / name).is_file()), None)
    if shown is None:
        return None, (), (), ()
    marked = VARIABLE.sub(
        lambda m: f"{_MARK[0]}{m.group(1)}{_MARK[1]}", read_text(root / shown, shown)
    )
    shown_values = {**values, **{k: f"${{{k}}}" for k in secret_keys}}
    doc = _load(marked, shown)
    services = _get(doc, "services")
    pinned = []
    left = []
    for name, service in services.value if isinstance(services, yaml.MappingNode) else ():
        node = _get(service, "image")
        if node is None:
            continue
        where = f"{shown}:{_line(node)}"
        image = _compose_image(_MARKED.sub(r"{{\1}}", node.value), values, own, origins, where)
        if image:  # ours even where compose could build it (the site has no sources)
            pinned.append((node.start_mark.index, node.end_mark.index, image, where))
            continue
        built = "built by compose at the site" if _get(service, "build") else None
        left.append(f"{where}: {name.value}: {why.get(where, built or 'not in the release')}")
    text, spans, at = "", [], 0
    for start, end, image, where in pinned:
        text += _rendered(marked[at:start], shown_values)
        spans.append(Span(len(text), len(text) + len(image), image, where))
        text += image
        at = end
    text += _rendered(marked[at:], shown_values)
    images = {start for start, *_ in pinned}
    keys = _site_keys(doc, values, secret_keys, images)
    return text, tuple(spans), keys, tuple(left)


def _rendered(marked: str, values: Mapping[str, str]) -> str:
    return fill(_MARKED.sub(r"{{\1}}", marked), values)


def _compose_image(text, values, own, origins, where) -> str | None:
    if where in origins:
        return origins[where]
    local = {**values, "PRIVATE_REGISTRY": ""}  # the bundle names our images without it
    ref, _ = interpolate(fill(text, local), local)
    name = image_name(ref) if ref else ""
    return name if name.startswith(OWN_PREFIX) and name in own else None


def _site_keys(
    doc: yaml.Node | None, values: Mapping[str, str], secret_keys: Sequence[str], pinned: set[int]
) -> tuple[str, ...]:
    """The compose variables the site's .env must give (secrets, and those with no value and
    no default), from each value compose interpolates (rendered one by one: comments and a
    value that renders empty cannot change what is read), but the pinned images."""
    shown = {**values, **{k: f"${{{k}}}" for k in secret_keys}}
    known = {k: v for k, v in values.items() if k not in secret_keys}
    todo, keys = [doc], []
    while todo:
        node = todo.pop()
        if isinstance(node, yaml.ScalarNode) and node.start_mark.index not in pinned:
            keys += interpolate(_rendered(node.value, shown), known)[1]
        elif isinstance(node, yaml.SequenceNode):
            todo += node.value
        elif isinstance(node, yaml.MappingNode):
            todo += [n for pair in node.value for n in pair]
    return tuple(sorted(set(keys)))


def _helm(root, own, origins, why):
    images, left = [], []
    for shown in helm_values_files(root):
        parts = Path(shown).parts  # helm/<chart>/values.yaml or helm/<chart>/charts/<sub>/...
        chart, prefix = "/".join(parts[:2]), (parts[3],) if len(parts) > 3 else ()
        doc = _load(read_text(root / shown, shown), shown)
        for key, value in _image_mappings(doc):
            where = f"{shown}:{_line(key)}"
            repository = _text(_get(value, "repository"), where)
            tag = _text(_get(value, "tag"), where)
            image = origins.get(where) or (
                image_name(repository) if image_name(repository) in own else None
            )
            if image is None:
                left.append(f"{where}: {repository}: {why.get(where, 'not in the release')}")
                continue
            path = _key_path(doc, key)
            if path is None:
                left.append(f"{where}: {repository}: in a list (a values file cannot pin it)")
                continue
            images.append(HelmImage(chart, (*prefix, *path), image, tag, where))
    return tuple(images), tuple(left)


def _key_path(doc: yaml.Node | None, target: yaml.Node) -> tuple[str, ...] | None:
    """The keys from the document's root to `target` (an `image` key node); None when a list
    is on the way (a values file cannot override one element of a list)."""
    todo: list[tuple[yaml.Node, tuple[str, ...] | None]] = [(doc, ())]
    while todo:
        node, path = todo.pop()
        if isinstance(node, yaml.SequenceNode):
            todo += [(item, None) for item in node.value]
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                here = (*path, str(key.value)) if path is not None else None
                if key is target:
                    return here
                todo.append((value, here))
    return None


# --- pinning: the kit's files, for the images' digests and a registry ------------------------


@dataclass(frozen=True)
class Pin:
    reference: str  # <registry>/<name>@<digest>, or <name>@<digest> without a registry
    digest: str


def pins(inventory: Mapping[str, Any], registry: str | None) -> dict[str, Pin]:
    """bundle image name -> where the site pulls it from, by index digest."""
    found = {}
    for entry in inventory["images"]:
        name = parse_tagged(entry["ref"]).name
        prefix = f"{registry.rstrip('/')}/" if registry else ""
        found[entry["name"]] = Pin(f"{prefix}{name}@{entry['digest']}", entry["digest"])
    return found


def kit_files(kit: KitPlan, pinned: Mapping[str, Pin], registry: str | None) -> dict[str, bytes]:
    """The kit's files, by name in kit/."""
    files: dict[str, bytes] = {}
    refs = []
    if kit.compose is not None:
        text = kit.compose
        for span in sorted(kit.spans, key=lambda s: s.start, reverse=True):
            text = text[: span.start] + pinned[span.image].reference + text[span.end :]
        files[COMPOSE] = text.encode()
        refs += [_ref(COMPOSE, s.where, s.image, pinned) for s in kit.spans]
    if kit.helm:
        files[HELM] = _helm_values(kit.helm, pinned).encode()
        refs += [_ref(HELM, h.where, h.image, pinned) for h in kit.helm]
    lines = [f"{key}=\n" for key in kit.site_keys]
    files[SITE_ENV] = (
        "# Set these in the site's .env before `docker compose up`.\n" + "".join(lines)
    ).encode()
    manifest = {"registry": registry, "references": refs, "not_pinned": list(kit.left)}
    files[KIT_JSON] = (json.dumps(manifest, indent=2) + "\n").encode()
    return files


def _ref(file: str, where: str, image: str, pinned: Mapping[str, Pin]) -> dict[str, str]:
    pin = pinned[image]
    return {"file": file, "from": where, "image": image, "reference": pin.reference,
            "digest": pin.digest}  # fmt: skip


def _helm_values(images: Sequence[HelmImage], pinned: Mapping[str, Pin]) -> str:
    charts: dict[str, dict[str, Any]] = {}
    for h in images:
        reference = pinned[h.image].reference
        repository, digest = reference.split("@", 1)
        node = charts.setdefault(h.chart.split("/", 1)[1], {})
        for key in h.path:
            node = node.setdefault(key, {})
        tag = f"{h.tag}@{digest}" if h.tag else digest
        node.update({"registry": "", "repository": repository, "tag": tag})
    return "".join(
        f"# {chart}: helm install ... -f {HELM}\n" + yaml.safe_dump(values, sort_keys=False)
        if len(charts) == 1 else yaml.safe_dump({chart: values}, sort_keys=False)
        for chart, values in charts.items()
    )  # fmt: skip


def rewritten(kit_dir: Path, inventory: Mapping[str, Any], registry: str) -> dict[str, bytes]:
    """The kit of `kit_dir`, its references moved to `registry` (digests unchanged)."""
    manifest = json.loads((kit_dir / KIT_JSON).read_text())
    new = pins(inventory, registry)
    files = {}
    for name in (COMPOSE, HELM):
        if (kit_dir / name).is_file():
            text = (kit_dir / name).read_text()
            for ref in manifest["references"]:
                text = text.replace(ref["reference"], new[ref["image"]].reference)
            files[name] = text.encode()
    for ref in manifest["references"]:
        ref["reference"] = new[ref["image"]].reference
    manifest["registry"] = registry
    files[SITE_ENV] = (kit_dir / SITE_ENV).read_bytes()
    files[KIT_JSON] = (json.dumps(manifest, indent=2) + "\n").encode()
    return files


def missing_from_bundle(kit_dir: Path, inventory: Mapping[str, Any]) -> list[str]:
    """Each reference of the kit whose digest the bundle does not hold, named; and each image
    line of its compose file that is neither pinned nor said to be left out."""
    held = {entry["digest"] for entry in inventory["images"]}
    try:
        manifest = json.loads((kit_dir / KIT_JSON).read_text())
    except (OSError, ValueError) as err:
        raise BundleError(f"{kit_dir / KIT_JSON}: unreadable ({err})") from None
    missing = [f"{r['from']}: {r['reference']}" for r in manifest["references"]
               if r["digest"] not in held]  # fmt: skip
    pinned = {r["reference"] for r in manifest["references"]}
    compose = kit_dir / COMPOSE
    if compose.is_file():
        services = _get(_load(compose.read_text(), COMPOSE), "services")
        lefts = {line.split(": ")[1] for line in manifest["not_pinned"] if ": " in line}
        for name, service in services.value if isinstance(services, yaml.MappingNode) else ():
            image = _get(service, "image")
            if image is not None and image.value not in pinned and name.value not in lefts:
                missing.append(f"{COMPOSE}:{_line(image)}: {image.value}")
    return missing
