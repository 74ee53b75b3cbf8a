"""Settings: resolved once, validated once, into one frozen object.

Precedence, lowest first: defaults < `.env` in the source tree (or `.env.example` when there is
no `.env`, since AI-Infra-Matrix makes one from the other) < the process environment (passed in
as a Mapping: nothing else reads os.environ) < overrides (CLI or Dagger arguments; None means
"not given"). Every bad value fails here with one line naming the setting.

A plain pydantic model does the typing and validation; the layering is ours (load_settings),
so nothing reads os.environ or a dotenv path behind the caller's back. envfile.py parses `.env`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from pipeline.envfile import parse_env
from pipeline.errors import BadInput
from pipeline.oci.reference import TAG_RE, check_registry, hide_credentials

KNOWN_PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")
MAX_CONCURRENCY = 64  # more solves at once than any engine host has cores for
# Seconds one publish try may take for a whole image: generous, since a slow link is not a
# dead one (the tests lower it against a registry that never answers).
PUBLISH_TIMEOUT = 1800.0
DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")
# The engine addresses Dagger's CLI takes (_EXPERIMENTAL_DAGGER_RUNNER_HOST) at 0.18.10.
ENGINE_SCHEMES = ("unix", "tcp", "ssh", "kube-pod", "docker-container", "podman-container")

# Python field name -> the env name AI-Infra-Matrix (or this pipeline) uses.
ENV_NAMES = {
    "image_tag": "IMAGE_TAG",
    "private_registry": "PRIVATE_REGISTRY",
    "target_platforms": "TARGET_PLATFORMS",
    "concurrency": "PIPELINE_CONCURRENCY",
    "per_arch_tags": "PIPELINE_PER_ARCH_TAGS",
    "components": "PIPELINE_COMPONENTS",
    "publish_timeout": "PIPELINE_PUBLISH_TIMEOUT",
    "ssh_key_dir": "PIPELINE_SSH_KEY_DIR",
    "engines": "PIPELINE_ENGINES",
}

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


def is_secret(key: str) -> bool:
    """Whether a key looks like it holds a secret; such a key never reaches a build."""
    upper = key.upper()
    if any(word in upper for word in SECRET_WORDS):
        return True
    parts = upper.split("_")
    return any(p.endswith(s) or p == s + "S" for p in parts for s in SECRET_PARTS)


def is_build_key(key: str) -> bool:
    """Allow-listed or `*_VERSION` / `*_IMAGE`, and never secret-looking."""
    if is_secret(key):
        return False
    return key in BUILD_KEYS or key.upper().endswith(BUILD_SUFFIXES)


def read_env_files(source: Path | None) -> list[tuple[str, dict[str, str]]]:
    """`.env.example`, then `.env` over it (each with its path): as build.sh fills `.env`'s
    missing keys from the example. A key of `.env` may refer to the example's."""
    layers: list[tuple[str, dict[str, str]]] = []
    if source is None:
        return layers
    for name in (".env.example", ".env"):
        path = source / name
        if path.exists() and not path.is_file():
            raise BadInput(f"{path}: not a file")
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else exc.strerror
                raise BadInput(f"{path}: cannot read ({reason})") from None
            above = layers[-1][1] if layers else {}
            layers.append((str(path), parse_env(text, str(path), above)))
    return layers


def door_overrides(
    tag: str | None,
    registry: str | None,
    platforms: str | None,
    components: str | None,
    engines: str | None = None,
) -> dict[str, object]:
    """The options the doors take, as load_settings overrides (None: not given)."""
    return {
        "image_tag": tag,
        "private_registry": registry,
        "target_platforms": platforms,
        "components": components,
        "engines": engines,
    }


def _split(value: object) -> object:
    """Comma lists arrive as a string (env) or a sequence (arguments)."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


class Settings(BaseModel):
    """Everything a run needs to know, resolved from defaults, `.env`, env and arguments."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    image_tag: str = Field("latest", alias="IMAGE_TAG")
    private_registry: str | None = Field(None, alias="PRIVATE_REGISTRY")
    target_platforms: tuple[str, ...] = Field(DEFAULT_PLATFORMS, alias="TARGET_PLATFORMS")
    # None: as many as the engine has CPUs (engine.default_concurrency), found at run time.
    concurrency: int | None = Field(None, ge=1, le=MAX_CONCURRENCY, alias="PIPELINE_CONCURRENCY")
    per_arch_tags: bool = Field(False, alias="PIPELINE_PER_ARCH_TAGS")
    components: tuple[str, ...] | None = Field(None, alias="PIPELINE_COMPONENTS")
    publish_timeout: float = Field(
        PUBLISH_TIMEOUT, gt=0, allow_inf_nan=False, alias="PIPELINE_PUBLISH_TIMEOUT"
    )
    # Where the CLI keeps the SSH key pair it makes for a checkout that has none; None: its
    # default (host.py). `dagger call` keeps it on the engine.
    ssh_key_dir: str | None = Field(None, alias="PIPELINE_SSH_KEY_DIR")
    # platform -> the engine that builds it; a platform not named builds on the default one.
    engines: dict[str, str] = Field(default_factory=dict, alias="PIPELINE_ENGINES")
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


@dataclass
class _Layers:
    """The layers merged: settings input with each key's origin, and every raw value."""

    merged: dict[str, object] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)
    env_file: str | None = None


def _layers(
    source: Path | None, env: Mapping[str, str], overrides: Mapping[str, object]
) -> _Layers:
    files = read_env_files(source)
    layers = _Layers(env_file=files[-1][0] if files else None)
    for origin, layer in [*files, ("environment", env)]:
        layers.raw.update(layer)
        # A file value the environment shadows is still redacted: a build log may show it.
        layers.secrets |= {v for k, v in layer.items() if is_secret(k) and v}
        for key in ENV_NAMES.values():
            if key in layer:
                layers.merged[key], layers.origins[key] = layer[key], origin
    for key, value in overrides.items():
        name = ENV_NAMES.get(key, key)
        if name not in ENV_NAMES.values():
            raise BadInput(f"unknown setting {key!r}; known: {', '.join(ENV_NAMES)}")
        if value is not None:
            layers.merged[name], layers.origins[name] = value, "arguments"
    return layers


def load_settings(
    source: Path | None, env: Mapping[str, str], overrides: Mapping[str, object]
) -> Settings:
    """Resolve and validate every setting; bad input raises BadInput with one line."""
    layers = _layers(source, env, overrides)
    build = {k: v for k, v in layers.raw.items() if is_build_key(k)}
    settings_keys = set(ENV_NAMES.values())
    withheld = tuple(sorted(k for k in layers.raw if k not in build and k not in settings_keys))
    try:
        return Settings(
            **layers.merged,
            build_values=build,
            public_values={k: v for k, v in layers.raw.items() if not is_secret(k)},
            withheld=withheld,
            env_file=layers.env_file,
            secret_values=frozenset(layers.secrets),
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0])
        message = error["msg"].removeprefix("Value error, ")
        origin = layers.origins.get(name, "defaults")
        shown = layers.merged.get(name)
        if name == ENV_NAMES["private_registry"] and isinstance(shown, str):
            shown = hide_credentials(shown)  # user:password@host: never echo a password
        raise BadInput(f"{name}={shown!r} (from {origin}): {message}") from None
