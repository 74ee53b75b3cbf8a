"""Just enough Dockerfile reading for planning and for the run: one `Dockerfile` value per
file, split into its instructions once, answers every question asked of it (ARGs, stages,
the images it reads, its COPY sources, what it reads besides its text, what would fail the
build).

Follows the Dockerfile reference where it matters here: keywords are case-insensitive, a line
ending in the escape character (`\\`, or the one set by `# escape=`) continues, comment lines
are dropped even inside a continuation, and heredoc bodies (`RUN <<EOF`) are not instructions.
"""

import functools
import json
import re
import shlex
from dataclasses import dataclass, field

from pipeline.errors import BadInput
from pipeline.oci.reference import image_name

_DIRECTIVE = re.compile(r"#\s*escape\s*=\s*(\S)\s*$", re.IGNORECASE)
_HEREDOC = re.compile(r"<<-?\s*[\"']?([A-Za-z_][A-Za-z0-9_]*)[\"']?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BUILD_PLATFORM = re.compile(r"--platform=[\"']?\$(?:\{BUILDPLATFORM\}|BUILDPLATFORM\b)")
# The image a FROM reads (after its --options) and the source of a COPY --from=.
_FROM_IMAGE = re.compile(r"^(\s*FROM\s+(?:--\S+\s+)*)(\S+)", re.IGNORECASE)
_COPY_FROM = re.compile(r"(--from=)(\S+)")


def _escape_char(lines: list[str]) -> str:
    """The `# escape=` parser directive, valid only in the leading comment lines."""
    for line in lines:
        if not line.strip().startswith("#"):
            break
        match = _DIRECTIVE.fullmatch(line.strip())
        if match:
            return match.group(1)
    return "\\"


def _split(text: str) -> tuple[tuple[int, str, str], ...]:
    """`(line, KEYWORD, arguments)` of each instruction, continuations joined, comments
    dropped: `line` is where the instruction starts (1-based)."""
    lines = text.splitlines()
    escape = _escape_char(lines)
    result: list[tuple[int, str, str]] = []
    pending: list[str] = []
    start = 0
    heredocs: list[str] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if heredocs:
            if stripped == heredocs[0]:
                heredocs.pop(0)
            continue
        if not stripped or stripped.startswith("#"):
            continue
        start = start or number
        if stripped.endswith(escape):
            pending.append(stripped[: -len(escape)])
            continue
        keyword, _, args = " ".join([*pending, stripped]).partition(" ")
        result.append((start, keyword.upper(), args.strip()))
        pending, start = [], 0
        if keyword.upper() in ("RUN", "COPY", "ADD"):
            heredocs = _HEREDOC.findall(args)
    if pending:
        keyword, _, args = " ".join(pending).partition(" ")
        result.append((start, keyword.upper(), args.strip()))
    return tuple(result)


# What BuildKit's Dockerfile frontend accepts; anything else fails the build at that line.
KEYWORDS = frozenset(
    [
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "MAINTAINER",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
    ]
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class BuildReads:
    """What a build reads besides its Dockerfile text and arguments: context paths (COPY/ADD
    sources, RUN bind mounts) and images (FROM, COPY --from); `unknown` says why that cannot
    be known before the build (a URL, a source still holding a variable), else None."""

    sources: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    unknown: str | None = None


@dataclass(frozen=True)
class Dockerfile:
    """One Dockerfile: `path` (relative to the checkout, for messages) and `text` (what is
    built: a rendered template, or release images pinned by digest)."""

    text: str = field(repr=False)
    path: str = "Dockerfile"
    # Every question below reads this one split.
    steps: tuple[tuple[int, str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", _split(self.text))

    @property
    def built_at(self) -> str:
        """Where a build reads it in the context: a template's path without `.tpl`, so relative
        paths and its .dockerignore behave as in the repository."""
        return self.path.removesuffix(".tpl")

    @property
    def instructions(self) -> list[tuple[str, str]]:
        """`(KEYWORD, arguments)` of each instruction."""
        return [(keyword, args) for _, keyword, args in self.steps]

    def check(self) -> None:
        """What would fail the build at once, found by `plan` instead: one BadInput naming the
        path and the line. (Not the `dockerfile` PyPI package, which wraps BuildKit's parser:
        3.4.0 has no wheel for arm64, where `dagger call` runs on an arm64 engine.)"""
        path = self.path
        for number, line in enumerate(self.text.splitlines(), start=1):
            if _CONTROL.search(line):
                raise BadInput(f"{path}:{number}: not text (control characters): not a Dockerfile")
        if not any(keyword == "FROM" for _, keyword, _ in self.steps):
            raise BadInput(f"{path}: no FROM instruction")
        for number, keyword, args in self.steps:
            if keyword not in KEYWORDS:
                raise BadInput(f"{path}:{number}: unknown instruction {keyword!r}")
            if keyword == "FROM" and not [w for w in args.split() if not w.startswith("--")]:
                raise BadInput(f"{path}:{number}: FROM names no image")
        first = next(keyword for _, keyword, _ in self.steps if keyword != "ARG")
        if first != "FROM":
            number = next(n for n, keyword, _ in self.steps if keyword == first)
            raise BadInput(f"{path}:{number}: {first} before the first FROM (only ARG may be)")

    @functools.cached_property
    def declared_args(self) -> list[str]:
        """Names of every `ARG` (before FROM too), in order, each once: `ARG A=1 B` gives A, B."""
        names: dict[str, None] = {}
        for keyword, args in self.instructions:
            if keyword == "ARG":
                for word in _words(args):
                    name = word.split("=", 1)[0]
                    if _NAME.fullmatch(name):
                        names[name] = None
        return list(names)

    @functools.cached_property
    def arg_defaults(self) -> dict[str, str]:
        """`ARG NAME=default` values, the last one of a name winning."""
        defaults = {}
        for keyword, args in self.instructions:
            if keyword == "ARG":
                for word in _words(args):
                    name, sep, value = word.partition("=")
                    if sep and _NAME.fullmatch(name):
                        defaults[name] = value
        return defaults

    @functools.cached_property
    def uses_build_platform(self) -> bool:
        """Whether a stage is `FROM --platform=$BUILDPLATFORM` (or `${BUILDPLATFORM}`)."""
        return any(
            keyword == "FROM" and _BUILD_PLATFORM.search(args)
            for keyword, args in self.instructions
        )

    @functools.cached_property
    def stage_names(self) -> list[str]:
        """Names given by `FROM image AS name`, lowercased as Docker compares them."""
        names: list[str] = []
        for keyword, args in self.instructions:
            words = [w for w in args.split() if not w.startswith("--")]
            if keyword == "FROM" and len(words) == 3 and words[1].lower() == "as":
                names.append(words[2].lower())
        return names

    def has_target(self, target: str) -> bool:
        """Whether `docker build --target <target>` can find that stage."""
        return target.lower() in self.stage_names

    @functools.cached_property
    def image_references(self) -> list[str]:
        """Images it reads: each `FROM <image>` and `COPY --from=<image>` that is not a stage
        of its own (nor `scratch`), as written (ARGs unexpanded)."""
        stages: set[str] = set()
        refs: list[str] = []
        for keyword, args in self.instructions:
            if keyword == "FROM":
                words = [w for w in args.split() if not w.startswith("--")]
                if words and words[0].lower() not in stages | {"scratch"}:
                    refs.append(words[0])
                if len(words) == 3 and words[1].lower() == "as":
                    stages.add(words[2].lower())
            elif keyword == "COPY":
                for word in args.split():
                    source = word.removeprefix("--from=")
                    if word.startswith("--from=") and source.lower() not in stages | {"scratch"}:
                        refs.append(source)
        return [ref for ref in refs if not ref.isdigit()]  # --from=0 names a stage by index

    @functools.cached_property
    def read_images(self) -> set[str]:
        """The names of the images it reads (FROM, COPY --from)."""
        return {image_name(r) for r in self.image_references}

    def context_sources(self, args: dict[str, str]) -> list[tuple[int, str]]:
        """`(line, path)` of every COPY/ADD source read from the build context: not
        `--from=`, not a URL or heredoc; `$VAR` expanded from `args` over the ARG defaults,
        and a source still holding a variable left out (it cannot be checked before the
        build)."""
        values = {**self.arg_defaults, **args}
        found = []
        for number, keyword, rest in self.steps:
            words = _json_words(rest) if rest.startswith("[") else _words(rest)
            if keyword not in ("COPY", "ADD") or any(w.startswith("--from=") for w in words):
                continue
            for path in [w for w in words if not w.startswith("--")][:-1]:
                path = _expand(path, values)
                if "$" not in path and not path.startswith(("<<", "http://", "https://", "git@")):
                    found.append((number, path))
        return found

    def final_stage_lines(self, target: str | None) -> set[int]:
        """Lines of the stage an image is (`target`, else the last) and of the stages it is
        `FROM`: what ends up in the image, as opposed to build-only stages."""
        stages: list[tuple[str, str, list[int]]] = []  # (name, base, lines)
        for number, keyword, args in self.steps:
            if keyword == "FROM":
                words = [w for w in args.split() if not w.startswith("--")]
                name = words[2].lower() if len(words) == 3 and words[1].lower() == "as" else ""
                stages.append((name, words[0].lower() if words else "", []))
            if stages:
                stages[-1][2].append(number)
        names = [name for name, _, _ in stages]
        last = len(stages) - 1
        index = names.index(target.lower()) if target and target.lower() in names else last
        lines: set[int] = set()
        seen: set[int] = set()
        while index >= 0 and index not in seen:
            seen.add(index)
            _, base, stage_lines = stages[index]
            lines |= set(stage_lines)
            index = names.index(base) if base in names[:index] else -1
        return lines

    def build_reads(self, args: dict[str, str]) -> BuildReads:
        """Every input of a build that its text does not hold, `$VAR` expanded from `args`
        over the ARG defaults (as BuildKit expands them)."""
        values = {**self.arg_defaults, **args}
        sources: list[str] = []
        images: list[str] = []
        stages = {"scratch"}
        for number, keyword, rest in self.steps:
            words = _json_words(rest) if rest.startswith("[") else _words(rest)
            if keyword == "FROM":
                named = [w for w in words if not w.startswith("--")]
                if named and named[0].lower() not in stages:
                    images.append(_expand(named[0], values))
                if len(named) == 3 and named[1].lower() == "as":
                    stages.add(named[2].lower())
            elif keyword in ("COPY", "ADD"):
                origin = next(
                    (w.removeprefix("--from=") for w in words if w.startswith("--from=")), ""
                )
                if origin:
                    if origin.lower() not in stages and not origin.isdigit():
                        images.append(_expand(origin, values))
                    continue
                for path in [w for w in words if not w.startswith("--")][:-1]:
                    if path.startswith("<<"):
                        continue  # a heredoc: its body is in the text
                    if "://" in path or path.startswith("git@"):
                        return BuildReads(unknown=f"line {number}: {keyword} of {path}")
                    sources.append(_expand(path, values))
            elif keyword == "RUN":
                sources += _bind_sources(words, values)
        unknown = next(
            (f"{p}: a variable with no value" for p in sources + images if "$" in p), None
        )
        return BuildReads(tuple(sources), tuple(images), unknown)

    def with_image(self, name: str, new_ref: str) -> "Dockerfile":
        """Every FROM / COPY --from of image `name` (any registry, any tag) pointed at
        `new_ref`."""

        def swap(match: re.Match[str]) -> str:
            return match[1] + (new_ref if image_name(match[2]) == name else match[2])

        out = []
        for line in self.text.splitlines(keepends=True):
            keyword = line.split(None, 1)[0].upper() if line.strip() else ""
            if keyword == "FROM":
                line = _FROM_IMAGE.sub(swap, line, count=1)
            elif keyword == "COPY":
                line = _COPY_FROM.sub(swap, line)
            out.append(line)
        return Dockerfile("".join(out), self.path)


def _json_words(args: str) -> list[str]:
    try:
        words = json.loads(args)
    except ValueError:
        return _words(args)
    return [str(w) for w in words] if isinstance(words, list) else _words(args)


def _words(args: str) -> list[str]:
    try:
        return shlex.split(args, comments=False, posix=True)
    except ValueError:  # unbalanced quote: fall back to plain words
        return args.split()


def _bind_sources(words: list[str], values: dict[str, str]) -> list[str]:
    """Context paths a `RUN --mount=` binds (type bind, the default, with no `from=`)."""
    found = []
    for word in words:
        if not word.startswith("--mount="):
            continue
        parts = word.removeprefix("--mount=").split(",")
        options = dict(part.partition("=")[::2] for part in parts)
        if options.get("type", "bind") == "bind" and "from" not in options:
            found.append(_expand(options.get("source", options.get("src", ".")), values))
    return found


def _expand(word: str, values: dict[str, str]) -> str:
    return _VARIABLE.sub(lambda m: values.get(m[1] or m[2], m[0]), word)
