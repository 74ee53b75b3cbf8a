"""Images the deployment runs: third-party images that the root compose file and the helm
chart name, which an offline site needs as much as the ones dependency.conf names.

- Compose: `docker-compose.yml.tpl` (else `docker-compose.yml`): each service's `image:`
  rendered as build.sh renders the file (`{{VAR}}` from the settings' values, never a secret),
  then compose's own `${VAR:-default}` resolved from the same values. A service compose builds
  (`build:`) and our own images (`ai-infra-*`, `${PRIVATE_REGISTRY}…`) are not dependencies. A
  `safeline` service counts only with SAFELINE_ENABLED=true, since build.sh starts that profile
  only then; other profiles (argocd, gitops) count: a site may turn them on offline.
- Helm: `helm/*/values.yaml` and `helm/*/charts/*/values.yaml` (packed `.tgz` subcharts are not
  read): every `image: {registry?, repository, tag?}` mapping, anywhere in the values; without a
  tag the chart's appVersion, which is what chart templates fall back to.

Each image comes with where it was found (`file:line`); one that cannot be part of the release
is `Left` with the reason. YAML is read as nodes (never constructed), so `tag: 3.80` stays
"3.80" and every complaint names a line.
"""

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.errors import BadInput
from pipeline.oci.reference import image_name, is_reference, parse
from pipeline.planning.layout import read_text
from pipeline.planning.render import VARIABLE, fill, unset
from pipeline.planning.settings import is_secret

COMPOSE_FILES = ("docker-compose.yml.tpl", "docker-compose.yml")
OWN_PREFIX = "ai-infra-"
_NULL = "tag:yaml.org,2002:null"
# What `{{VAR}}` becomes while the compose file's structure is read: a plain YAML scalar.
_MARK = ("\u2983", "\u2984")
_MARKED = re.compile(f"{_MARK[0]}([A-Za-z_][A-Za-z0-9_]*){_MARK[1]}")
# `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `$VAR` and `$$` (a `$`).
_COMPOSE_VAR = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_]\w*)|(?P<dollar>\$))"
)


@dataclass(frozen=True)
class Found:
    image: str  # a complete reference, tagged
    origin: str  # file:line


@dataclass(frozen=True)
class Left:
    image: str  # as far as it could be rendered
    reason: str  # starts with file:line


def deployment_images(root: Path, values: Mapping[str, str]) -> tuple[list[Found], list[Left]]:
    """Third-party images of the compose file, then of the helm charts, in file order; an image
    left out in several places (seaweedfs's three services) is told once, at its first."""
    found, left = compose_images(root, values)
    for shown in helm_values_files(root):
        more, skipped = helm_images(root, shown)
        found += more
        left += skipped
    first: dict[str, Left] = {}
    for item in left:
        first.setdefault(item.image, item)
    return found, list(first.values())


def dependency_name(image: str, taken: Collection[str]) -> str:
    """A file name for an image found here (dependencies/<name>.tar): its last path component
    (seaweedfs, argocd), else with its tag (seaweedfs-latest), else its whole path and tag, else
    numbered. Given the same files the plan takes the same names."""
    ref = parse(image)
    tag = ref.tag or "latest"
    candidates = [ref.name, f"{ref.name}-{tag}", f"{ref.path.replace('/', '-')}-{tag}"]
    for candidate in candidates:
        if candidate not in taken:
            return candidate
    number = 2
    while f"{candidates[-1]}-{number}" in taken:
        number += 1
    return f"{candidates[-1]}-{number}"


# --- compose ---------------------------------------------------------------------------------


def compose_images(root: Path, values: Mapping[str, str]) -> tuple[list[Found], list[Left]]:
    shown = next((name for name in COMPOSE_FILES if (root / name).is_file()), None)
    if shown is None:
        return [], []
    template = read_text(root / shown, shown)
    # The structure is read with each `{{VAR}}` kept as a mark, so no value (an empty one ending
    # a line in `x:`) can change it; each image is then rendered on its own.
    marked = VARIABLE.sub(lambda m: f"{_MARK[0]}{m.group(1)}{_MARK[1]}", template)
    services = _get(_load(marked, shown), "services")
    if services is None:
        return [], []
    if not isinstance(services, yaml.MappingNode):
        raise BadInput(f"{shown}:{_line(services)}: `services` is not a mapping")
    found: list[Found] = []
    left: list[Left] = []
    for _, service in services.value:
        image = _get(service, "image")
        if image is None or _get(service, "build") is not None:
            continue  # compose builds that one: nothing to pull
        origin = f"{shown}:{_line(image)}"
        text = _MARKED.sub(r"{{\1}}", _text(image, origin))
        ref, reason = _compose_image(text, _profiles(service, shown), values, origin)
        if reason:
            left.append(Left(ref if is_reference(ref) else text, f"{origin}: {reason}"))
        elif ref:
            found.append(Found(ref, origin))
    return found, left


def _compose_image(
    text: str, profiles: list[str], values: Mapping[str, str], origin: str
) -> tuple[str, str | None]:
    """The image line `text` rendered, and why it is left out (None: include it). Our own
    images render to ""."""
    if text.startswith(("${PRIVATE_REGISTRY}", "$PRIVATE_REGISTRY")):
        return "", None
    ref, unresolved = interpolate(fill(text, values), values)
    if image_name(ref).startswith(OWN_PREFIX):
        return "", None
    if "safeline" in profiles and values.get("SAFELINE_ENABLED", "").lower() != "true":
        return ref, "SAFELINE_ENABLED is not true"
    missing = unset(text, values, allow_empty=True) + unresolved
    if missing:
        return ref, _why_unset(missing)
    if not is_reference(ref):
        # An empty value ("SAFELINE_IMAGE_PREFIX=") broke it: build.sh only warns; skip it.
        empty = unset(text, values)
        if empty:
            return ref, _why_unset(empty)
        raise _not_a_reference(ref, origin)
    return _tagged(ref), None


def interpolate(text: str, values: Mapping[str, str]) -> tuple[str, list[str]]:
    """Compose's `${VAR:-default}` family, from `values`; also the names left with no value."""
    unresolved: list[str] = []

    def one(match: re.Match[str]) -> str:
        if match["dollar"]:
            return "$"
        name = match["braced"] or match["plain"]
        value, op = values.get(name), match["op"] or ""
        if value is None or (op.startswith(":") and value == ""):
            if op.endswith("-"):
                return match["arg"]
            if value is None or op:
                unresolved.append(name)
                return ""
        return value

    return _COMPOSE_VAR.sub(one, text), unresolved


def _profiles(service: yaml.Node, shown: str) -> list[str]:
    node = _get(service, "profiles")
    if node is None:
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise BadInput(f"{shown}:{_line(node)}: `profiles` is not a list")
    return [_text(item, f"{shown}:{_line(item)}") for item in node.value]


def _why_unset(names: list[str]) -> str:
    secret = [n for n in names if is_secret(n)]
    empty = [n for n in names if n not in secret]
    parts = [f"no value for {', '.join(empty)} (set them to include it)"] if empty else []
    if secret:
        parts.append(f"{', '.join(secret)} look secret and are never used to render")
    return "; ".join(parts)


# --- helm ------------------------------------------------------------------------------------


def helm_values_files(root: Path) -> list[str]:
    """Each chart's values.yaml, then its unpacked subcharts' (sorted), relative to root."""
    files: list[str] = []
    for chart in sorted(p.parent for p in root.glob("helm/*/values.yaml")):
        files.append(chart.joinpath("values.yaml").relative_to(root).as_posix())
        subcharts = sorted(chart.glob("charts/*/values.yaml"))
        files += [p.relative_to(root).as_posix() for p in subcharts if p.is_file()]
    return files


def helm_images(root: Path, shown: str) -> tuple[list[Found], list[Left]]:
    chart_yaml = Path(shown).with_name("Chart.yaml").as_posix()
    app_version = _app_version(root, chart_yaml)
    found: list[Found] = []
    left: list[Left] = []
    for key, image in _image_mappings(_load(read_text(root / shown, shown), shown)):
        origin = f"{shown}:{_line(key)}"
        repository = _text(_get(image, "repository"), origin)
        registry = _text(_get(image, "registry"), origin)
        tag = _text(_get(image, "tag"), origin) or app_version
        name = f"{registry}/{repository}" if registry else repository
        if image_name(name).startswith(OWN_PREFIX):
            continue
        if not tag:
            left.append(Left(name, f"{origin}: no tag, and {chart_yaml} has no appVersion"))
            continue
        if not is_reference(f"{name}:{tag}"):
            raise _not_a_reference(f"{name}:{tag}", origin)
        found.append(Found(f"{name}:{tag}", origin))
    return found, left


def _image_mappings(node: yaml.Node | None) -> list[tuple[yaml.Node, yaml.Node]]:
    """(key, value) of every `image:` whose value is a mapping with a `repository`, in file
    order."""
    todo, seen, images = [node], set(), []
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue  # an alias names a node already walked
        seen.add(id(current))
        if isinstance(current, yaml.SequenceNode):
            todo += current.value
        elif isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                if _is_key(key, "image") and _get(value, "repository") is not None:
                    images.append((key, value))
                todo.append(value)
    return sorted(images, key=lambda pair: pair[0].start_mark.index)


def _app_version(root: Path, chart_yaml: str) -> str | None:
    if not (root / chart_yaml).is_file():
        return None
    doc = _load(read_text(root / chart_yaml, chart_yaml), chart_yaml)
    node = _get(doc, "appVersion")
    return _text(node, f"{chart_yaml}:{_line(node)}") if node is not None else None


# --- YAML nodes ------------------------------------------------------------------------------


def _load(text: str, shown: str) -> yaml.Node | None:
    """The document as nodes (with lines); bad YAML names the file and line."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{shown}:{mark.line + 1}" if mark is not None else shown
        problem = getattr(exc, "problem", None) or "not one YAML document"
        raise BadInput(f"{where}: not valid YAML ({problem})") from None


def _is_key(node: yaml.Node, name: str) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.value == name


def _get(node: yaml.Node | None, name: str) -> yaml.Node | None:
    """The value of `name` in a mapping node; None if absent or not a mapping."""
    if isinstance(node, yaml.MappingNode):
        return next((value for key, value in node.value if _is_key(key, name)), None)
    return None


def _text(node: yaml.Node | None, where: str) -> str:
    """A scalar as written ("" for null or absent); a list or mapping is bad input."""
    if node is None or node.tag == _NULL:
        return ""
    if not isinstance(node, yaml.ScalarNode):
        raise BadInput(f"{where}: expected a single value, found a list or mapping")
    return str(node.value).strip()


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _tagged(ref: str) -> str:
    """A pull without a tag takes `latest`; the bundle names every image by its tag."""
    parsed = parse(ref)
    return ref if parsed.tag or parsed.digest else f"{ref}:latest"


def _not_a_reference(ref: str, origin: str) -> BadInput:
    return BadInput(f"{origin}: {ref!r} is not a valid image reference")
