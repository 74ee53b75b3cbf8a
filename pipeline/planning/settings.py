"""Settings: resolved once, validated once, into one frozen object.

Precedence, lowest first: defaults < `.env` of the source tree, its missing keys filled from
`.env.example` (as build.sh's sync_env_with_example does) < the process environment < arguments
of either door (None means "not given"). pydantic-settings layers them, in the order
Settings.settings_customise_sources gives; load_settings feeds those sources the Mapping and the
tree its caller passes, so nothing reads os.environ or a dotenv path behind the caller's back.
Every bad value fails here with one line naming the setting and where its value came from.

Each setting's env name, door option and meaning are on its field: the doors' help and
the settings table of docs/settings.md are made from them (SETTING_DOCS, settings_table).
"""

import re
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from pipeline.errors import BadInput
from pipeline.oci.reference import TAG_RE, check_registry, hide_credentials
from pipeline.planning.envfile import parse_env
from pipeline.planning.layout import read_text

KNOWN_PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")
MAX_CONCURRENCY = 64  # more solves at once than any engine host has cores for
# Seconds one publish try may take for a whole image: generous, since a slow link is not a
# dead one (the tests lower it against a registry that never answers).
PUBLISH_TIMEOUT = 1800.0
DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")
# Where the CLI keeps the SSH key pair it makes for a checkout that has none (host.py);
# `dagger call` keeps it on the engine.
DEFAULT_SSH_KEY_DIR = "~/.local/share/ai-infra-matrix/ssh-key"
# The addresses of a running engine Dagger's CLI takes (_EXPERIMENTAL_DAGGER_RUNNER_HOST) at
# 0.21.8 (engine/client/drivers); `image://` would start a new engine instead.
ENGINE_SCHEMES = (
    "unix",
    "tcp",
    "tls",
    "ssh",
    "kube-pod",
    "docker-container",
    "container",
    "container+docker",
    "container+podman",
    "container+nerdctl",
    "container+finch",
)

# Keys that may reach a build (as a template value or a declared ARG). Everything else in
# .env is runtime configuration; build.sh passed all of it, passwords included.
BUILD_KEYS = frozenset(
    {
        "BASE_IMAGE_REGISTRY", "GITHUB_MIRROR", "GITHUB_PROXY", "GO_PROXY", "PYPI_INDEX_URL",
        "NPM_REGISTRY", "APT_MIRROR", "YUM_MIRROR", "ALPINE_MIRROR", "GOLANG_IMAGE",
        "UBUNTU_VERSION", "NODE_IMAGE", "NODE_JS_VERSION",
        # nightingale's Dockerfile.tpl downloads from it on intranets.
        "INTERNAL_FILE_SERVER",
    }
)  # fmt: skip
BUILD_SUFFIXES = ("_VERSION", "_IMAGE")
# Matched anywhere in a key: long enough to mean only one thing.
SECRET_WORDS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL", "PRIVATE", "COOKIE")
SECRET_WORDS += ("CERTIFICATE",)
# Matched as a `_`-separated word (or its end: APIKEY, OAUTH), because as substrings they hit
# real build values: KEYCLOAK_VERSION, SALTSTACK_VERSION.
SECRET_PARTS = ("KEY", "AUTH", "SALT", "CERT")


# One search per key: a 10 MB .env has hundreds of thousands of them.
_SECRET_RE = re.compile(
    "|".join(SECRET_WORDS)
    + rf"|(?:{'|'.join(SECRET_PARTS)})(?:_|$)|(?:^|_)(?:{'|'.join(SECRET_PARTS)})S(?:_|$)"
)


def is_secret(key: str) -> bool:
    """Whether a key looks like it holds a secret; such a key never reaches a build."""
    return _SECRET_RE.search(key.upper()) is not None


def is_build_key(key: str) -> bool:
    """Allow-listed or `*_VERSION` / `*_IMAGE`, and never secret-looking."""
    if is_secret(key):
        return False
    return key in BUILD_KEYS or key.upper().endswith(BUILD_SUFFIXES)


def _split(value: object) -> object:
    """Comma lists arrive as a string (env) or a sequence (arguments)."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


@dataclass(frozen=True)
class Shown:
    """How a setting meets people, beside its field's description (said in --help and docs)."""

    option: str | None = None  # the doors' argument; None: set in the environment or .env only
    unset: str | None = None  # what the default means, where it is no plain value
    more: str = ""  # docs only: what is too long for --help (Markdown)
    metavar: str | None = None
    publishing: bool = False  # acts on publishing alone: said in the help of `release` only


# The docs' words beyond --help's.
_REGISTRY = (
    "A Harbor project, say: the host has a dot or a port or is `localhost`, the port is 1 to "
    "65535, no user or password in it"
)
_CONCURRENCY = (
    "Counted as image x platform, in the one engine session. Unset: `nproc` run once in "
    "`busybox:1.36` on the engine (the engine may be another machine), at least 2; 4 if that fails"
)
_SEVERAL = "See [several engines](engines.md)"
_REBUILD = (
    "Else an image x platform whose inputs (Dockerfile, files it copies, arguments, base "
    "digests) match a published one of the registry's repository is reused, not built: "
    "`release --rebuild` sets it for one run. See [reuse](reuse.md)"
)


class Settings(BaseSettings):
    """Everything a run needs to know, resolved from defaults, `.env`, env and arguments."""

    # Env names are exact (AI-Infra-Matrix's), and comma lists are not JSON.
    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", case_sensitive=True, enable_decoding=False
    )

    image_tag: Annotated[str, Shown("--tag")] = Field(
        "latest", alias="IMAGE_TAG", description="tag of every image"
    )
    private_registry: Annotated[str | None, Shown("--registry", unset="none", more=_REGISTRY)] = (
        Field(
            None,
            alias="PRIVATE_REGISTRY",
            description="registry to publish to, host[:port]/project; '' for none",
        )
    )
    target_platforms: Annotated[tuple[str, ...], Shown("--platforms")] = Field(
        DEFAULT_PLATFORMS,
        alias="TARGET_PLATFORMS",
        description=f"platforms to build, a comma list of {', '.join(KNOWN_PLATFORMS)}",
    )
    # None: as many as the engine has CPUs (engine.default_concurrency), found at run time.
    concurrency: Annotated[int | None, Shown(unset="the engine's CPUs", more=_CONCURRENCY)] = Field(
        None,
        ge=1,
        le=MAX_CONCURRENCY,
        alias="PIPELINE_CONCURRENCY",
        description=f"builds at once, 1 to {MAX_CONCURRENCY}",
    )
    per_arch_tags: Annotated[bool, Shown(publishing=True)] = Field(
        False, alias="PIPELINE_PER_ARCH_TAGS", description="also push <tag>-amd64 etc. when true"
    )
    rebuild: Annotated[bool, Shown(publishing=True, more=_REBUILD)] = Field(
        False,
        alias="PIPELINE_REBUILD",
        description="build every image, even one an earlier release built from the same inputs",
    )
    components: Annotated[
        tuple[str, ...] | None,
        Shown("--components", unset="all", more='Set but empty is an error, not "all"'),
    ] = Field(None, alias="PIPELINE_COMPONENTS", description="components to keep, a comma list")
    publish_timeout: Annotated[float, Shown(publishing=True)] = Field(
        PUBLISH_TIMEOUT,
        gt=0,
        allow_inf_nan=False,
        alias="PIPELINE_PUBLISH_TIMEOUT",
        description="seconds one publish try may take",
    )
    ssh_key_dir: Annotated[str, Shown(more="`dagger call` takes `--ssh-key` instead")] = Field(
        DEFAULT_SSH_KEY_DIR,
        alias="PIPELINE_SSH_KEY_DIR",
        description="where the CLI keeps the SSH key pair it makes for a checkout with no ssh-key/",
    )
    # platform -> the engine that builds it; a platform not named builds on the default one.
    engines: Annotated[dict[str, str], Shown("--engines", "", _SEVERAL, "PLATFORM=ADDRESS,...")] = (
        Field(
            default_factory=dict,
            alias="PIPELINE_ENGINES",
            description="the Dagger engine that builds each platform, e.g. "
            "linux/arm64=tcp://arm-builder:1234; others use the default engine",
        )
    )
    # Not settings but what load_settings derives from every value (no alias: no env name).
    # Build-relevant values only (see is_build_key); "" kept: a template may use it.
    build_values: dict[str, str] = Field(default_factory=dict)
    # Every value that does not look secret: for ARGs a Dockerfile declares (build.sh passed
    # every key; we pass only declared, non-secret ones), generated config files and the
    # deployment files read for third-party images.
    public_values: dict[str, str] = Field(default_factory=dict)
    # Names (never values) of keys found but kept out of builds, for clearer errors.
    withheld: tuple[str, ...] = ()
    env_file: str | None = None
    # Values of secret-looking keys (.env and environment): redacted from every report.
    secret_values: frozenset[str] = Field(frozenset(), repr=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then `.env`. The built-in env and dotenv sources
        read os.environ and a path of their own: load_settings hands in its own instead (a
        classmethod takes no argument of ours); without it only arguments and defaults."""
        return (init_settings, *_SOURCES.get())

    @field_validator("image_tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        if not TAG_RE.fullmatch(value):
            raise ValueError("not a valid tag ([A-Za-z0-9_][A-Za-z0-9_.-], at most 128)")
        return value

    @field_validator("private_registry")
    @classmethod
    def _registry(cls, value: str | None) -> str | None:
        value = (value or "").strip().rstrip("/")
        if value:
            check_registry(value, project_required=False)
        return value or None

    @field_validator("target_platforms", mode="before")
    @classmethod
    def _platforms(cls, value: object) -> object:
        value = _split(value)
        if isinstance(value, Sequence) and not isinstance(value, str):
            if not value:
                raise ValueError("no platform given")
            for item in value:
                if item not in KNOWN_PLATFORMS:
                    known = ", ".join(KNOWN_PLATFORMS)
                    raise ValueError(f"unknown platform {item!r}; known: {known}")
            twice = sorted({item for item in value if list(value).count(item) > 1})
            if twice:
                raise ValueError(f"{twice[0]} is listed twice")
        return value

    @field_validator("engines", mode="before")
    @classmethod
    def _engines(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            value = dict(_engine_entry(item) for item in _split(value))  # type: ignore[union-attr]
        if isinstance(value, Mapping):
            platforms = info.data.get("target_platforms", ())
            for platform, address in value.items():
                if platform not in platforms:
                    raise ValueError(f"{platform} is not a platform of this release")
                _check_engine_address(str(address))
        return value

    @field_validator("components", mode="before")
    @classmethod
    def _components(cls, value: object) -> object:
        value = _split(value)
        if not isinstance(value, tuple | list):
            return value
        # Given but empty is a mistake (a CI variable that expanded to nothing), not "all".
        if not value:
            raise ValueError("an empty list selects nothing; unset it to build every component")
        return tuple(dict.fromkeys(value))


def _engine_entry(item: str) -> tuple[str, str]:
    platform, sep, address = item.partition("=")
    if not sep or not platform.strip() or not address.strip():
        raise ValueError(f"{item!r} is not PLATFORM=ADDRESS")
    return platform.strip(), address.strip()


def _check_engine_address(address: str) -> None:
    scheme, sep, rest = address.partition("://")
    if not sep or scheme not in ENGINE_SCHEMES or not rest:
        raise ValueError(f"{address!r} is not an engine address ({'|'.join(ENGINE_SCHEMES)}://...)")


@dataclass(frozen=True)
class SettingDoc:
    """A setting as the doors' help and the docs' table show it, read off its field."""

    field: str
    env: str
    option: str | None
    description: str
    default: str  # as a person writes it
    literal: bool  # whether `default` is a value (code in Markdown) rather than words
    more: str  # docs only
    metavar: str | None
    publishing: bool

    @property
    def help(self) -> str:
        return self.description[:1].upper() + self.description[1:]


def _doc(name: str, info: FieldInfo) -> SettingDoc:
    shown = next((m for m in info.metadata if isinstance(m, Shown)), Shown())
    literal = shown.unset is None
    default = _written(info.get_default(call_default_factory=True)) if literal else shown.unset
    description = info.description or ""
    return SettingDoc(
        name, str(info.alias), shown.option, description, default or "", literal, shown.more,
        shown.metavar, shown.publishing,
    )  # fmt: skip


def _written(value: object) -> str:
    """A default as it would be written in `.env`."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return ",".join(value) if isinstance(value, tuple) else str(value)


# Only settings have an alias: the env name AI-Infra-Matrix (or this pipeline) uses.
SETTING_DOCS = tuple(_doc(n, i) for n, i in Settings.model_fields.items() if i.alias)
ENV_NAMES = {doc.field: doc.env for doc in SETTING_DOCS}  # field name -> env name


def setting_doc(field: str) -> SettingDoc:
    return next(doc for doc in SETTING_DOCS if doc.field == field)


def settings_table() -> str:
    """The settings table of docs/settings.md, in the order of the model."""
    rows = ["| setting | argument | default | meaning |", "|---|---|---|---|"]
    for doc in SETTING_DOCS:
        default = f"`{doc.default}`" if doc.literal and doc.default else doc.default
        meaning = doc.description.replace("<", "\\<") + (f". {doc.more}" if doc.more else "")
        option = f"`{doc.option}`" if doc.option else ""
        cells = [f"`{doc.env}`", option, default, meaning]
        rows.append("|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|")
    return "\n".join(rows) + "\n"


def door_overrides(**given: object) -> dict[str, object]:
    """A door's options by name (`tag=` for `--tag`), as load_settings overrides."""
    fields = {doc.option.removeprefix("--"): doc.field for doc in SETTING_DOCS if doc.option}
    return {fields[name]: value for name, value in given.items()}


@dataclass(frozen=True)
class EnvFile:
    path: Path
    shown: str  # as messages name it: relative to the source tree, not where it was copied
    values: dict[str, str]


def read_env_files(source: Path | None) -> list[EnvFile]:
    """`.env.example`, then `.env` over it: as build.sh fills `.env`'s missing keys from the
    example. A key of `.env` may refer to the example's."""
    files: list[EnvFile] = []
    for name in (".env.example", ".env") if source is not None else ():
        path = source / name
        if path.exists() and not path.is_file():
            raise BadInput(f"{name}: not a file")
        if path.is_file():
            above = files[-1].values if files else {}
            files.append(EnvFile(path, name, parse_env(read_text(path, name), name, above)))
    return files


def _merged(files: Sequence[EnvFile]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for file in files:
        merged.update(file.values)
    return merged


def _settings_only(values: Mapping[str, str]) -> dict[str, str]:
    """The settings' own keys: every other one is a value for builds (_derived), and the
    derived fields have no env name to be set through."""
    return {key: value for key, value in values.items() if key in _ENV_KEYS}


class EnvironmentSource(EnvSettingsSource):
    """The process environment as the caller passes it, never os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self.environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return _settings_only(self.environ)


class EnvFilesSource(DotEnvSettingsSource):
    """The tree's `.env` (filled from `.env.example`), as read_env_files parsed it."""

    def __init__(self, settings_cls: type[BaseSettings], files: Sequence[EnvFile]) -> None:
        self.files = files
        super().__init__(settings_cls, env_file=None)

    def _read_env_files(self) -> Mapping[str, str | None]:
        return _settings_only(_merged(self.files))


# The sources load_settings hands Settings.settings_customise_sources, for one construction.
_SOURCES: ContextVar[tuple[PydanticBaseSettingsSource, ...]] = ContextVar(
    "settings_sources", default=()
)
_ENV_KEYS = frozenset(ENV_NAMES.values())


def load_settings(
    source: Path | None, env: Mapping[str, str], overrides: Mapping[str, object]
) -> Settings:
    """Resolve and validate every setting; bad input raises BadInput with one line."""
    files = read_env_files(source)
    arguments = _arguments(overrides)
    token = _SOURCES.set((EnvironmentSource(Settings, env), EnvFilesSource(Settings, files)))
    try:
        return Settings(**arguments, **_derived(files, env))
    except ValidationError as exc:
        layers = [("arguments", arguments), ("environment", env)]
        raise _bad_value(exc, layers + [(f.shown, f.values) for f in reversed(files)]) from None
    finally:
        _SOURCES.reset(token)


def _arguments(overrides: Mapping[str, object]) -> dict[str, object]:
    """The given overrides (by field or env name) by env name; None means not given."""
    names = {**{env: env for env in _ENV_KEYS}, **ENV_NAMES}
    for key in overrides:
        if key not in names:
            raise BadInput(f"unknown setting {key!r}; known: {', '.join(ENV_NAMES)}")
    return {names[key]: value for key, value in overrides.items() if value is not None}


def _derived(files: Sequence[EnvFile], env: Mapping[str, str]) -> dict[str, object]:
    """What every value of `.env` and the environment gives besides settings."""
    raw = {**_merged(files), **env}
    build = {k: v for k, v in raw.items() if is_build_key(k)}
    # A file value the environment shadows is still redacted: a build log may show it.
    layers = [*(f.values for f in files), env]
    secrets = {v for layer in layers for k, v in layer.items() if v and is_secret(k)}
    return {
        "build_values": build,
        "public_values": {k: v for k, v in raw.items() if not is_secret(k)},
        "withheld": tuple(sorted(k for k in raw if k not in build and k not in _ENV_KEYS)),
        "env_file": str(files[-1].path) if files else None,
        "secret_values": frozenset(secrets),
    }


def _bad_value(exc: ValidationError, layers: list[tuple[str, Mapping[str, object]]]) -> BadInput:
    """One line: the setting, its value (never a password) and the layer it came from."""
    error = exc.errors()[0]
    name = str(error["loc"][0])
    message = error["msg"].removeprefix("Value error, ")
    origin, shown = next(
        ((o, layer[name]) for o, layer in layers if name in layer), ("defaults", None)
    )
    if name == ENV_NAMES["private_registry"] and isinstance(shown, str):
        shown = hide_credentials(shown)  # user:password@host: never echo a password
    return BadInput(f"{name}={shown!r} (from {origin}): {message}")
