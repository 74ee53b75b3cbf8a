"""The build plan: what to build, from which Dockerfile text, with which arguments, under which
reference. Pure data computed without an engine, so both doors (CLI, Dagger) print or run the
same thing and tests check it directly.
"""

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline import dockerfile
from pipeline.deployment import Found, dependency_name, deployment_images
from pipeline.errors import BadInput
from pipeline.layout import Component, Dependency, Layout, discover, read_text
from pipeline.oci.reference import canonical, image_name, is_reference
from pipeline.render import render, unset
from pipeline.settings import PUBLISH_TIMEOUT, Settings, load_settings


@dataclass(frozen=True)
class ImagePlan:
    name: str  # the component (src/<name>)
    image: str
    ref: str
    dockerfile: str  # relative to the root; the template when there is one
    dockerfile_text: str  # what to build: the rendered template, else the Dockerfile
    target: str | None
    phase: str
    build_args: dict[str, str]  # only ARGs the Dockerfile declares; never secrets
    uses_build_platform: bool
    # Release images this Dockerfile reads (FROM / COPY --from): built and published first.
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class DependencyPlan:
    name: str  # the bundle's dependencies/<name>.tar: unique in the plan
    image: str  # a complete, validated reference
    # Where the image is named, first found first: src/<name>/dependency.conf[.tpl],
    # docker-compose.yml.tpl:<line>, helm/<chart>/values.yaml:<line>.
    origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclass(frozen=True)
class Plan:
    tag: str
    platforms: tuple[str, ...]
    registry: str | None
    components: tuple[ImagePlan, ...]  # foundation first, then dependent; each sorted
    dependencies: tuple[DependencyPlan, ...]
    skipped: tuple[Skipped, ...]
    # How to run it, resolved once with the rest (see Settings); None: the engine's CPUs.
    concurrency: int | None = None
    per_arch_tags: bool = False
    publish_timeout: float = PUBLISH_TIMEOUT
    # Values no report may show; never printed (repr) nor in to_json.
    secrets: frozenset[str] = field(default=frozenset(), repr=False)

    def to_json(self) -> dict[str, object]:
        """The machine view: build argument names only, never their values."""
        return {
            "tag": self.tag,
            "platforms": list(self.platforms),
            "registry": self.registry,
            "components": [
                {
                    "name": c.name,
                    "image": c.image,
                    "ref": c.ref,
                    "dockerfile": c.dockerfile,
                    "target": c.target,
                    "phase": c.phase,
                    "needs": list(c.needs),
                    "build_args": sorted(c.build_args),
                }
                for c in self.components
            ],
            "dependencies": [
                {"name": d.name, "image": d.image, "origins": list(d.origins)}
                for d in self.dependencies
            ],
            "skipped": [{"name": s.name, "reason": s.reason} for s in self.skipped],
        }


def template_values(settings: Settings) -> dict[str, str]:
    """What `{{VAR}}` may use: build values plus IMAGE_TAG; secrets are never among them."""
    return {**settings.build_values, "IMAGE_TAG": settings.image_tag}


def make_plan(layout: Layout, settings: Settings, root: Path) -> Plan:
    """Turn the layout and settings into the plan; every inconsistency is BadInput."""
    wanted = _selection(layout, settings.components)
    values = template_values(settings)
    components = [c for c in layout.components if c.name in wanted]
    components.sort(key=lambda c: (c.phase != "foundation", c.name))
    images = _with_needs(
        [plan for c in components for plan in _component_plans(c, settings, values, root)]
    )
    dependencies, skipped = _dependencies(layout, wanted, settings, values, root)
    return Plan(
        tag=settings.image_tag,
        platforms=settings.target_platforms,
        registry=settings.private_registry,
        components=images,
        dependencies=dependencies,
        skipped=skipped,
        concurrency=settings.concurrency,
        per_arch_tags=settings.per_arch_tags,
        publish_timeout=settings.publish_timeout,
        secrets=settings.secret_values,
    )


def _with_needs(images: list[ImagePlan]) -> tuple[ImagePlan, ...]:
    """Record which release images each Dockerfile reads; a cycle can never build."""
    names = {i.image for i in images}
    needs = {
        i.image: tuple(
            sorted(
                {image_name(r) for r in dockerfile.image_references(i.dockerfile_text)}
                & names - {i.image}
            )
        )
        for i in images
    }
    for image in needs:
        if image in _reachable(image, needs):
            raise BadInput(f"release images depend on each other in a cycle through {image}")
    return tuple(replace(i, needs=needs[i.image]) for i in images)


def _reachable(start: str, needs: Mapping[str, tuple[str, ...]]) -> set[str]:
    seen: set[str] = set()
    todo = list(needs[start])
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(needs[name])
    return seen


def waves(images: Sequence[ImagePlan]) -> list[list[ImagePlan]]:
    """Build order: each wave only reads images of earlier waves (most plans: one wave)."""
    done: set[str] = set()
    left = list(images)
    order: list[list[ImagePlan]] = []
    while left:
        wave = [i for i in left if set(i.needs) <= done]
        assert wave, "make_plan refuses cycles"
        order.append(wave)
        done |= {i.image for i in wave}
        left = [i for i in left if i not in wave]
    return order


def resolve_plan(source: Path, env: Mapping[str, str], overrides: Mapping[str, object]) -> Plan:
    """The one entry both doors call: settings, then layout, then plan."""
    if not source.is_dir():
        raise BadInput(f"{source}: source directory does not exist")
    settings = load_settings(source, env, overrides)
    return make_plan(discover(source), settings, source)


def _selection(layout: Layout, names: tuple[str, ...] | None) -> set[str]:
    """The names to keep; unknown ones fail with the known list (and a close match)."""
    known = layout.names()
    if names is None:
        return set(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BadInput(
            f"PIPELINE_COMPONENTS: unknown {', '.join(map(repr, unknown))}{hint}; "
            f"known: {', '.join(known)}"
        )
    return set(names)


def _component_plans(
    component: Component, settings: Settings, values: Mapping[str, str], root: Path
) -> list[ImagePlan]:
    # The template wins: the committed Dockerfile has build.sh's mirror settings baked in.
    path = component.template or component.dockerfile
    assert path is not None  # layout only makes components that have one of the two
    text = read_text(root / path, path)
    if component.template:
        text = render(text, values, path, allow_empty=True, withheld=settings.withheld)
    args = _build_args(text, settings)
    platform = dockerfile.uses_build_platform(text)
    registry = f"{settings.private_registry}/" if settings.private_registry else ""
    plans = []
    for spec in component.images:
        if spec.target and not dockerfile.has_target(text, spec.target):
            raise BadInput(f"{path}: no stage named {spec.target!r} (build-targets.conf)")
        plans.append(
            ImagePlan(
                name=component.name,
                image=spec.image,
                ref=f"{registry}{spec.image}:{settings.image_tag}",
                dockerfile=path,
                dockerfile_text=text,
                target=spec.target,
                phase=component.phase,
                build_args=dict(args),
                uses_build_platform=platform,
            )
        )
    return plans


def _build_args(text: str, settings: Settings) -> dict[str, str]:
    """Only what the Dockerfile declares; an empty value is left out so its default stands."""
    args = {}
    for name in dockerfile.declared_args(text):
        if name == "VERSION":
            args[name] = settings.image_tag
        elif settings.build_values.get(name):
            args[name] = settings.build_values[name]
    return args


def _dependencies(
    layout: Layout, wanted: set[str], settings: Settings, values: Mapping[str, str], root: Path
) -> tuple[tuple[DependencyPlan, ...], tuple[Skipped, ...]]:
    """dependency.conf's images, then the deployment's (pipeline/deployment.py), merged."""
    named, skipped = _dependency_conf_images(
        [d for d in layout.dependencies if d.name in wanted], values, settings.withheld, root
    )
    found: list[Found] = []
    # The images the deployment runs belong to no component: a --components run is a partial
    # release, so it carries only the dependency.conf images of the names it was given.
    if settings.components is None:
        found, left = deployment_images(root, {**settings.deploy_values, **values})
        skipped += [Skipped(s.image, s.reason) for s in left]
    # Names a bundle already uses: every dependency.conf's (selected or not, so a name does not
    # change with the selection) and the release images'.
    reserved = [d.name for d in layout.dependencies]
    reserved += [spec.image for c in layout.components for spec in c.images]
    return _merged(named, found, reserved), tuple(skipped)


def _dependency_conf_images(
    dependencies: list[Dependency], values: Mapping[str, str], withheld: tuple[str, ...], root: Path
) -> tuple[list[DependencyPlan], list[Skipped]]:
    """One entry per dependency.conf, its name the directory's, its origin the file read."""
    plans: list[DependencyPlan] = []
    skipped: list[Skipped] = []
    for dep in dependencies:
        # As for Dockerfiles the template wins: build.sh's rendered copy has `8\.0`-style escapes.
        path = dep.template or dep.conf
        assert path is not None
        text = _image_line(read_text(root / path, path), path)
        if dep.template:
            missing = unset(text, values)
            if missing:
                # build.sh treats these as optional (src/safeline): skip, visibly.
                skipped.append(Skipped(dep.name, f"{path}: {_why_unset(missing, withheld)}"))
                continue
            text = render(text, values, path)
        if not is_reference(text):
            raise BadInput(f"{path}: {text!r} is not a valid image reference")
        plans.append(DependencyPlan(dep.name, text, (path,)))
    return plans, skipped


def _merged(
    named: list[DependencyPlan], found: list[Found], reserved: list[str]
) -> tuple[DependencyPlan, ...]:
    """Each image once (however it is spelled), with every origin; dependency.conf entries
    keep their directory's name, the others get one from the image that no other name has."""
    plans: dict[str, DependencyPlan] = {}
    taken = set(reserved)
    entries = [*named, *(DependencyPlan("", f.image, (f.origin,)) for f in found)]
    for entry in entries:
        key = canonical(entry.image)
        if key in plans:
            known = plans[key]
            origins = tuple(dict.fromkeys(known.origins + entry.origins))
            plans[key] = replace(known, origins=origins)
            continue
        name = entry.name or dependency_name(entry.image, taken)
        taken.add(name)
        plans[key] = replace(entry, name=name)
    return tuple(plans.values())


def _why_unset(names: list[str], withheld: tuple[str, ...]) -> str:
    """Say which variables have no value and which are set but are not build values."""
    kept_out = [n for n in names if n in withheld]
    empty = [n for n in names if n not in withheld]
    parts = [f"no value for {', '.join(empty)} (set them to include it)"] if empty else []
    if kept_out:
        parts.append(f"{', '.join(kept_out)} not build values (*_VERSION, *_IMAGE or allow-listed)")
    return "; ".join(parts)


def _image_line(text: str, path: str) -> str:
    """The one image a dependency file names; `#` comment lines and blank lines ignored."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) != 1:
        raise BadInput(f"{path}: expected one image reference, found {len(lines)} lines")
    return lines[0]
