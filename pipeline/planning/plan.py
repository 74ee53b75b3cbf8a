"""The build plan: what to build, from which Dockerfile text, with which arguments, under which
reference, on which engine. Pure data computed without an engine, so both doors (CLI, Dagger)
print or run the same thing and tests check it directly. How to run it (concurrency, reuse,
timeouts, what to redact) is its RunConfig, resolved with it (`resolve`).
"""

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.errors import BadInput
from pipeline.oci.reference import TAG_LIMIT, Reference, canonical, is_reference, tagged
from pipeline.planning.deployment import Found, dependency_name, deployment_images
from pipeline.planning.dockerfile import Dockerfile
from pipeline.planning.downloads import read_lock, wanted
from pipeline.planning.kit import KitPlan, plan_kit
from pipeline.planning.layout import (
    Component,
    Dependency,
    Layout,
    discover,
    read_text,
    unreadable_is_bad_input,
)
from pipeline.planning.prepare import (
    Generated,
    downloaded_files,
    holds_private_key,
    listing,
    missing_sources,
    rendered_files,
    ssh_key_files,
    tls_folder_files,
    with_parents,
)
from pipeline.planning.render import render, unset
from pipeline.planning.run_config import RunConfig, run_config
from pipeline.planning.settings import Settings, load_settings


@dataclass(frozen=True)
class ImagePlan:
    name: str  # the component (src/<name>)
    image: str
    reference: Reference  # <registry>/<image>:<tag>, made from those parts
    # Its path is the template's when there is one; its text is what to build (the rendered
    # template, else the Dockerfile).
    dockerfile: Dockerfile
    target: str | None
    phase: str
    build_args: dict[str, str]  # only ARGs the Dockerfile declares; never secrets
    # Release images this Dockerfile reads (FROM / COPY --from): built and published first.
    needs: tuple[str, ...] = ()
    # The port this image serves on while later images build (AppHub), and the images this
    # one reaches then: build arg (APPHUB_URL) -> served image, built first.
    serves: int | None = None
    reaches: dict[str, str] = field(default_factory=dict)
    private_key: bool = False  # a COPY puts a generated private key in the image

    @property
    def ref(self) -> str:
        return str(self.reference)

    @property
    def uses_build_platform(self) -> bool:
        return self.dockerfile.uses_build_platform

    @property
    def after(self) -> tuple[str, ...]:
        """Images that must be done before this one builds."""
        return tuple(sorted({*self.needs, *self.reaches.values()}))


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
    per_arch_tags: bool = False  # also push build.sh's <tag>-amd64 / <tag>-arm64
    generated: tuple[Generated, ...] = ()  # the prepare step's files
    engines: Mapping[str, str] = field(default_factory=dict)  # platform -> its engine's address
    selection: tuple[str, ...] | None = None  # PIPELINE_COMPONENTS; None: everything
    # For people: what the plan did that nobody asked for (a component added to the selection).
    notes: tuple[str, ...] = ()
    kit: KitPlan = KitPlan()  # the offline site's deployment kit, before digests

    def to_json(self) -> dict[str, object]:
        """The machine view: build argument names only, never their values."""
        return {
            "tag": self.tag,
            "platforms": list(self.platforms),
            "registry": self.registry,
            "engines": dict(self.engines),
            "components": [
                {
                    "name": c.name,
                    "image": c.image,
                    "ref": c.ref,
                    "dockerfile": c.dockerfile.path,
                    "target": c.target,
                    "phase": c.phase,
                    "needs": list(c.needs),
                    "serves": c.serves,
                    "reaches": sorted(c.reaches.values()),
                    "private_key": c.private_key,
                    "build_args": sorted(c.build_args),
                }
                for c in self.components
            ],
            "generated": [g.to_json() for g in self.generated],
            "dependencies": [
                {"name": d.name, "image": d.image, "origins": list(d.origins)}
                for d in self.dependencies
            ],
            "skipped": [{"name": s.name, "reason": s.reason} for s in self.skipped],
            "notes": list(self.notes),
        }


def template_values(settings: Settings) -> dict[str, str]:
    """What `{{VAR}}` may use: build values plus IMAGE_TAG; secrets are never among them."""
    return {**settings.build_values, "IMAGE_TAG": settings.image_tag}


# Parts build.sh leaves out unless their switch in .env is true.
SWITCHED = {"safeline": "SAFELINE_ENABLED"}


def make_plan(
    layout: Layout, settings: Settings, root: Path, present: set[str] | None = None
) -> Plan:
    """Turn the layout and settings into the plan; every inconsistency is BadInput.

    `present`: what the build context holds (default: read from `root`, which for the Dagger
    door is only a copy of the layout files).
    """
    _check_tags(settings)
    wanted = _selection(layout, settings.components)
    switched_off = _switched_off(wanted, settings)
    wanted -= {s.name for s in switched_off}
    values = template_values(settings)
    plans, added = _planned(layout, wanted, settings, values, root)
    components = [c for c in layout.components if c.name in plans]
    components.sort(key=lambda c: (c.phase != "foundation", c.name))
    images = _with_needs([plan for c in components for plan in plans[c.name]])
    images = _with_services(images, {c.name: c.serves for c in components})
    if present is None:
        with unreadable_is_bad_input(root):
            present = listing(root)
    generated = _generated(images, settings, root, present)
    images = _checked(images, generated, present)
    dependencies, skipped = _dependencies(layout, wanted, settings, values, root)
    kit = _kit(root, settings, images, dependencies, skipped)
    return Plan(
        tag=settings.image_tag,
        platforms=settings.target_platforms,
        registry=settings.private_registry,
        components=images,
        dependencies=dependencies,
        skipped=(*switched_off, *skipped),
        per_arch_tags=settings.per_arch_tags,
        generated=tuple(generated),
        engines=dict(settings.engines),
        selection=settings.components,
        notes=_added_note(added),
        kit=kit,
    )


def _planned(
    layout: Layout, wanted: set[str], settings: Settings, values: Mapping[str, str], root: Path
) -> tuple[dict[str, list[ImagePlan]], dict[str, str]]:
    """The image plans of the wanted components and of every component they read or reach
    while they build (a selection that leaves one out fails in the build); and each component
    added so, with why."""
    by_name = {c.name: c for c in layout.components}
    owners = {spec.image: c.name for c in layout.components for spec in c.images}
    servers = {_service_arg(c.name): c.name for c in layout.components if c.serves}
    plans: dict[str, list[ImagePlan]] = {}
    added: dict[str, str] = {}
    todo = sorted(wanted & by_name.keys())
    while todo:
        name = todo.pop(0)
        plans[name] = _component_plans(by_name[name], settings, values, root)
        for image in plans[name]:
            reads = image.dockerfile.read_images & owners.keys()
            uses = {owners[i]: f"{image.image} reads {i}" for i in sorted(reads)}
            for arg in image.dockerfile.declared_args:
                if arg in servers:
                    uses[servers[arg]] = f"{image.image} reaches it as {arg} while it builds"
            for other, why in uses.items():
                if other not in plans and other not in todo:
                    added[other] = why
                    todo.append(other)
    return plans, added


def _added_note(added: Mapping[str, str]) -> tuple[str, ...]:
    said = "; ".join(f"{name} ({why})" for name, why in sorted(added.items()))
    lead = "PIPELINE_COMPONENTS leaves out what its images need while they build; also built"
    return (f"{lead}: {said}",) if added else ()


def check_builds_an_image(plan: Plan, dependencies_count: bool) -> None:
    """A run that would build no image ends here, not with "0 images" and exit 0;
    `dependencies_count`: the run delivers the dependencies too (export, bundle)."""
    if plan.components or (dependencies_count and plan.dependencies):
        return
    asked = f"PIPELINE_COMPONENTS={','.join(plan.selection)}" if plan.selection else "the checkout"
    deps = ", ".join(d.name for d in plan.dependencies)
    kind = "third-party images, which release does not push"
    holds = [f"it selects only dependencies: {deps} ({kind})"] if deps else []
    holds += [f"{s.name} is skipped ({s.reason})" for s in plan.skipped]
    raise BadInput(
        f"{asked} builds no image: {'; '.join(holds) or 'nothing'}; "
        f"{'name' if plan.selection else 'add'} a component (src/<name>/Dockerfile) too"
    )


def check_releasable(plan: Plan) -> None:
    """A release needs a registry and an image to build: said before any engine or registry
    is asked (and before a door reads a password)."""
    if not plan.registry:
        raise BadInput("release needs a registry: set PRIVATE_REGISTRY or pass --registry")
    check_builds_an_image(plan, dependencies_count=False)


def arch_tagged(tag: str, platform: str) -> str:
    """build.sh's per-arch tag: `v0.3.8` -> `v0.3.8-arm64`."""
    return f"{tag}-{platform.split('/', 1)[1].replace('/', '')}"


def _check_tags(settings: Settings) -> None:
    """Every tag the release writes must be a valid tag, the per-arch ones too (the longest
    suffix counts): else the push of `<tag>-amd64` fails after every build."""
    if not settings.per_arch_tags:
        return
    tag = settings.image_tag
    longest = max((arch_tagged(tag, p) for p in settings.target_platforms), key=len)
    if len(longest) > TAG_LIMIT:
        raise BadInput(
            f"IMAGE_TAG is {len(tag)} characters, and with PIPELINE_PER_ARCH_TAGS=true the "
            f"release also pushes <IMAGE_TAG>{longest[len(tag) :]} ({len(longest)} characters) "
            f"while a tag has at most {TAG_LIMIT}: shorten IMAGE_TAG to "
            f"{TAG_LIMIT - len(longest) + len(tag)} characters or set PIPELINE_PER_ARCH_TAGS=false"
        )


def _kit(
    root: Path,
    settings: Settings,
    images: Sequence[ImagePlan],
    dependencies: Sequence[DependencyPlan],
    skipped: Sequence[Skipped],
) -> KitPlan:
    values = {**settings.public_values, "IMAGE_TAG": settings.image_tag}
    secret_keys = sorted(set(settings.withheld) - set(values))
    origins = {origin: d.name for d in dependencies for origin in d.origins}
    reasons = dict(s.reason.split(": ", 1) for s in skipped if ": " in s.reason)
    return plan_kit(root, values, secret_keys, [i.image for i in images], origins, reasons)


def _generated(
    images: Sequence[ImagePlan], settings: Settings, root: Path, present: set[str]
) -> list[Generated]:
    values = {**settings.public_values, "IMAGE_TAG": settings.image_tag}
    secret_keys = set(settings.withheld) - set(values)
    sources = [s for i in images for _, s in i.dockerfile.context_sources(i.build_args)]
    names = {i.name for i in images}
    downloads = wanted(sources, present, values, read_lock(root))
    return [
        *rendered_files(root, names, values, secret_keys),
        *ssh_key_files(present, sources),
        *tls_folder_files(present, sources, values),
        *downloaded_files(downloads),
    ]


def _checked(
    images: Sequence[ImagePlan], generated: Sequence[Generated], present: set[str]
) -> tuple[ImagePlan, ...]:
    """Every COPY/ADD source must be in the context once prepared; mark images that get a
    generated private key."""
    present = present | with_parents(g.path for g in generated)
    private = [g.path for g in generated if g.private]
    problems = []
    checked = []
    for image in images:
        missing = missing_sources(image.dockerfile, image.build_args, present)
        if missing:
            problems.append(f"{image.image} ({image.dockerfile.path} {', '.join(missing)})")
        holds = holds_private_key(image.dockerfile, image.target, image.build_args, private)
        checked.append(replace(image, private_key=holds))
    if problems:
        raise BadInput(f"COPY/ADD sources not in the build context: {'; '.join(problems)}")
    return tuple(checked)


def _with_services(
    images: Sequence[ImagePlan], serving: Mapping[str, int | None]
) -> tuple[ImagePlan, ...]:
    """Mark the images that serve during builds, and the images that reach them: a Dockerfile
    that declares `ARG <COMPONENT>_URL` of a serving component (APPHUB_URL: apphub)."""
    servers = {i.name: i for i in images if serving.get(i.name)}
    arg_names = {_service_arg(name): s for name, s in servers.items()}
    marked = []
    for image in images:
        declared = set(image.dockerfile.declared_args)
        reaches = {
            arg: s.image for arg, s in arg_names.items() if arg in declared and s is not image
        }
        serves = serving.get(image.name) if image.name in servers else None
        marked.append(replace(image, serves=serves, reaches=reaches))
    return tuple(marked)


def _service_arg(component: str) -> str:
    """The build arg through which a build reaches a serving component: apphub -> APPHUB_URL."""
    return f"{component.upper().replace('-', '_')}_URL"


def _switched_off(wanted: set[str], settings: Settings) -> list[Skipped]:
    return [
        Skipped(name, f"{switch} is not true (set it to include {name}, as build.sh does)")
        for name, switch in sorted(SWITCHED.items())
        if name in wanted and settings.public_values.get(switch, "").lower() != "true"
    ]


def _with_needs(images: list[ImagePlan]) -> tuple[ImagePlan, ...]:
    """Record which release images each Dockerfile reads; a cycle can never build."""
    names = {i.image for i in images}
    needs = {i.image: tuple(sorted(i.dockerfile.read_images & names - {i.image}))
             for i in images}  # fmt: skip
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
    """Build order: each wave only reads or reaches images of earlier waves (most plans: one
    wave; a plan with AppHub: two)."""
    done: set[str] = set()
    left = list(images)
    order: list[list[ImagePlan]] = []
    names = {i.image for i in images}
    while left:
        wave = [i for i in left if set(i.after) & names <= done]
        assert wave, "make_plan refuses cycles"
        order.append(wave)
        done |= {i.image for i in wave}
        left = [i for i in left if i not in wave]
    return order


def resolve(
    source: Path,
    env: Mapping[str, str],
    overrides: Mapping[str, object],
    present: set[str] | None = None,
) -> tuple[Plan, RunConfig]:
    """The one entry both doors call: settings, then layout, then the plan and how to run it."""
    if not source.is_dir():
        raise BadInput(f"{source}: source directory does not exist")
    settings = load_settings(source, env, overrides)
    return make_plan(discover(source), settings, source, present), run_config(settings)


def resolve_plan(
    source: Path,
    env: Mapping[str, str],
    overrides: Mapping[str, object],
    present: set[str] | None = None,
) -> Plan:
    """The plan alone, for what only prints or checks it."""
    return resolve(source, env, overrides, present)[0]


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
    parsed = Dockerfile(text, path)
    parsed.check()
    args = _build_args(parsed, settings)
    plans = []
    for spec in component.images:
        if spec.target and not parsed.has_target(spec.target):
            raise BadInput(f"{path}: no stage named {spec.target!r} (build-targets.conf)")
        plans.append(
            ImagePlan(
                name=component.name,
                image=spec.image,
                reference=tagged(settings.private_registry, spec.image, settings.image_tag),
                dockerfile=parsed,
                target=spec.target,
                phase=component.phase,
                build_args=dict(args),
            )
        )
    return plans


def _build_args(parsed: Dockerfile, settings: Settings) -> dict[str, str]:
    """Only what the Dockerfile declares and is not secret; an empty value is left out so
    its default stands."""
    args = {}
    for name in parsed.declared_args:
        if name == "VERSION":
            args[name] = settings.image_tag
        elif settings.public_values.get(name):
            args[name] = settings.public_values[name]
    return args


def _dependencies(
    layout: Layout, wanted: set[str], settings: Settings, values: Mapping[str, str], root: Path
) -> tuple[tuple[DependencyPlan, ...], tuple[Skipped, ...]]:
    """dependency.conf's images, then the deployment's (pipeline/planning/deployment.py), merged."""
    named, skipped = _dependency_conf_images(
        [d for d in layout.dependencies if d.name in wanted], values, settings.withheld, root
    )
    found: list[Found] = []
    # The images the deployment runs belong to no component: a --components run is a partial
    # release, so it carries only the dependency.conf images of the names it was given.
    if settings.components is None:
        found, left = deployment_images(root, {**settings.public_values, **values})
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
