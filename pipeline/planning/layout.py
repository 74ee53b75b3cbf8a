"""Read the AI-Infra-Matrix source tree as it is laid out today (no change asked of it).

Every directory `src/<name>/` is looked at:
- a component if it has `Dockerfile` or `Dockerfile.tpl`; its phase comes from `build.conf`
  (`BUILD_PHASE=foundation|dependent`, default dependent) and its images from
  `build-targets.conf` (`<target> <image>` lines), else one image `ai-infra-<name>`;
- a third-party dependency if it has `dependency.conf` or `dependency.conf.tpl`;
- both is fine (src/gitea); neither (src/shared) is skipped.
A component serves while later images build when its `build.conf` says on which port
(`BUILD_SERVICE_PORT=80`); `src/apphub` does by default, on 80, as build.sh runs it.
Only paths and small config files are read here; templates are rendered by the plan.
"""

import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import BadInput
from pipeline.oci.reference import is_image_name
from pipeline.planning.envfile import parse_env

PHASES = ("foundation", "dependent")
# The files of a component folder the plan reads.
MARKERS = ("Dockerfile", "Dockerfile.tpl", "build.conf", "build-targets.conf", "dependency.conf",
           "dependency.conf.tpl")  # fmt: skip
# Serves packages to later builds (slurm-master installs Slurm from it), as build.sh runs it.
DEFAULT_SERVICES = {"apphub": "80"}
_TARGET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ImageSpec:
    """One image a component's Dockerfile produces; `target` None builds the last stage."""

    image: str
    target: str | None = None


@dataclass(frozen=True)
class Component:
    name: str
    phase: str
    images: tuple[ImageSpec, ...]
    dockerfile: str | None  # paths relative to the root, e.g. src/backend/Dockerfile
    template: str | None
    serves: int | None = None  # the port it serves on during later builds


@dataclass(frozen=True)
class Dependency:
    name: str
    conf: str | None
    template: str | None


@dataclass(frozen=True)
class Layout:
    root: Path
    components: tuple[Component, ...]
    dependencies: tuple[Dependency, ...]

    def names(self) -> list[str]:
        """Every component and dependency name, sorted (for filters and error hints)."""
        return sorted({c.name for c in self.components} | {d.name for d in self.dependencies})


def read_text(path: Path, shown: str) -> str:
    """Read a file of the tree; unreadable or non-UTF-8 is bad input naming the file."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else exc.strerror
        raise BadInput(f"{shown}: cannot read ({reason})") from None


def discover(root: Path) -> Layout:
    """Components and dependencies under `root/src`, each sorted by name."""
    src = root / "src"
    if not src.is_dir():
        raise BadInput(f"{root}: no src/ directory (is this an AI-Infra-Matrix checkout?)")
    components: list[Component] = []
    dependencies: list[Dependency] = []
    with unreadable_is_bad_input(root):
        folders = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
        for folder in folders:
            os.listdir(folder)  # a folder we may not list would look like neither
            _inside(root, folder)
            component = _component(folder)
            if component:
                components.append(component)
            dependency = _dependency(folder)
            if dependency:
                dependencies.append(dependency)
    if not components and not dependencies:
        raise BadInput(f"{src}: no component (src/<name>/Dockerfile) and no dependency.conf")
    _check_unique_images(components)
    return Layout(root, tuple(components), tuple(dependencies))


def _inside(root: Path, folder: Path) -> None:
    """A component folder, and every file of it the plan reads, must be in the checkout: a
    symbolic link out of it would build from (or read) what the release does not hold."""
    real_root = root.resolve()
    for path in [folder, *(folder / name for name in MARKERS)]:
        leaves = path.exists() and not path.resolve().is_relative_to(real_root)
        if leaves and (path.is_symlink() or path == folder):
            raise BadInput(
                f"{path.relative_to(root)}: a symbolic link out of the checkout (to "
                f"{path.resolve()}); the release builds only what it holds"
            )


@contextmanager
def unreadable_is_bad_input(root: Path) -> Iterator[None]:
    """A file or folder of the checkout this user may not read: one line naming it."""
    try:
        yield
    except OSError as err:
        path = Path(err.filename) if err.filename else root
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        raise BadInput(f"{shown}: cannot read ({err.strerror})") from None


def _existing(folder: Path, name: str) -> str | None:
    # os.stat, not is_file: that says no for a file it may not look at (Python 3.13+).
    try:
        mode = os.stat(folder / name).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    return f"src/{folder.name}/{name}" if stat.S_ISREG(mode) else None


def _component(folder: Path) -> Component | None:
    dockerfile = _existing(folder, "Dockerfile")
    template = _existing(folder, "Dockerfile.tpl")
    targets = _existing(folder, "build-targets.conf")
    if not (dockerfile or template):
        if targets:
            raise BadInput(f"{targets} names images but src/{folder.name} has no Dockerfile")
        return None
    images = _targets(folder, targets) if targets else (_default_image(folder.name),)
    conf = _build_conf(folder)
    phase = conf.get("BUILD_PHASE", "dependent").strip().lower()
    if phase not in PHASES:
        raise BadInput(f"src/{folder.name}/build.conf: BUILD_PHASE={phase!r} is not one of "
                       f"{', '.join(PHASES)}")  # fmt: skip
    serves = _port(conf.get("BUILD_SERVICE_PORT", DEFAULT_SERVICES.get(folder.name, "")), folder)
    return Component(folder.name, phase, images, dockerfile, template, serves)


def _default_image(name: str) -> ImageSpec:
    image = f"ai-infra-{name}"
    if not is_image_name(image):
        raise BadInput(f"src/{name}: {image!r} is not a valid image name (use lowercase)")
    return ImageSpec(image)


def _build_conf(folder: Path) -> dict[str, str]:
    shown = _existing(folder, "build.conf")
    return parse_env(read_text(folder / "build.conf", shown), shown) if shown else {}


def _port(text: str, folder: Path) -> int | None:
    if not text.strip():
        return None
    if not text.strip().isdigit() or not 0 < int(text) < 65536:
        raise BadInput(f"src/{folder.name}/build.conf: BUILD_SERVICE_PORT={text!r} is not a port")
    return int(text)


def _targets(folder: Path, shown: str) -> tuple[ImageSpec, ...]:
    """`<dockerfile-target> <image-name>` lines; `#` starts a comment."""
    specs: list[ImageSpec] = []
    text = read_text(folder / "build-targets.conf", shown)
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2:
            raise BadInput(f"{shown}:{number}: expected '<target> <image-name>'")
        target, image = fields
        if not _TARGET_RE.fullmatch(target) or not is_image_name(image):
            raise BadInput(f"{shown}:{number}: invalid target or image name in {raw.strip()!r}")
        specs.append(ImageSpec(image, target))
    if not specs:
        raise BadInput(f"{shown}: names no images")
    return tuple(specs)


def _dependency(folder: Path) -> Dependency | None:
    conf = _existing(folder, "dependency.conf")
    template = _existing(folder, "dependency.conf.tpl")
    return Dependency(folder.name, conf, template) if conf or template else None


def _check_unique_images(components: list[Component]) -> None:
    owner: dict[str, str] = {}
    for component in components:
        for spec in component.images:
            if spec.image in owner:
                raise BadInput(
                    f"image {spec.image} is named twice (src/{owner[spec.image]}, "
                    f"src/{component.name})"
                )
            owner[spec.image] = component.name
