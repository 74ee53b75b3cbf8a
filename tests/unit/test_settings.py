import time
from pathlib import Path

import pytest

from pipeline.errors import BadInput
from pipeline.planning.settings import (
    DEFAULT_PLATFORMS,
    is_build_key,
    is_secret,
    load_settings,
    parse_env,
)


def test_defaults_without_source():
    s = load_settings(None, {}, {})
    assert s.image_tag == "latest"
    assert s.private_registry is None
    assert s.target_platforms == DEFAULT_PLATFORMS
    assert (s.concurrency, s.per_arch_tags, s.components) == (None, False, None)
    assert s.build_values == {} and s.env_file is None


def test_precedence_defaults_file_env_overrides(tmp_path: Path):
    (tmp_path / ".env").write_text("IMAGE_TAG=from-file\nPIPELINE_CONCURRENCY=2\n")
    assert load_settings(tmp_path, {}, {}).image_tag == "from-file"
    env = {"IMAGE_TAG": "from-env"}
    assert load_settings(tmp_path, env, {}).image_tag == "from-env"
    s = load_settings(tmp_path, env, {"image_tag": "from-arg", "concurrency": None})
    assert s.image_tag == "from-arg"
    assert s.concurrency == 2  # None means "not given": the file value stands


def test_overrides_accept_env_names_and_typed_values():
    s = load_settings(
        None, {}, {"IMAGE_TAG": "v1", "target_platforms": ["linux/arm64"], "per_arch_tags": True}
    )
    assert (s.image_tag, s.target_platforms, s.per_arch_tags) == ("v1", ("linux/arm64",), True)


def test_unknown_override_is_bad_input():
    with pytest.raises(BadInput, match="unknown setting 'tagg'"):
        load_settings(None, {}, {"tagg": "v1"})


def test_env_example_used_when_env_absent(tmp_path: Path):
    (tmp_path / ".env.example").write_text("IMAGE_TAG=v0.3.8\n")
    s = load_settings(tmp_path, {}, {})
    assert s.image_tag == "v0.3.8"
    assert s.env_file == str(tmp_path / ".env.example")


def test_env_wins_over_env_example_which_fills_its_missing_keys(tmp_path: Path):
    (tmp_path / ".env.example").write_text(
        "IMAGE_TAG=v0.3.8\nGO_PROXY=example\nBASE_IMAGE_REGISTRY=mirror.example/\n"
    )
    (tmp_path / ".env").write_text(
        "IMAGE_TAG=v1.0.0\nGOLANG_IMAGE=${BASE_IMAGE_REGISTRY}golang:1.25\nJWT_SECRET=s3cret-jwt\n"
    )
    s = load_settings(tmp_path, {}, {})
    assert s.image_tag == "v1.0.0"
    assert s.build_values["GO_PROXY"] == "example"  # as build.sh fills .env from the example
    assert s.build_values["GOLANG_IMAGE"] == "mirror.example/golang:1.25"
    assert s.env_file == str(tmp_path / ".env")
    assert "JWT_SECRET" not in s.public_values and "s3cret-jwt" in s.secret_values


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"IMAGE_TAG": "bad tag"}, "IMAGE_TAG"),
        ({"IMAGE_TAG": "-leading-dash"}, "IMAGE_TAG"),
        ({"IMAGE_TAG": "x" * 129}, "IMAGE_TAG"),
        ({"IMAGE_TAG": ""}, "IMAGE_TAG"),
        ({"PRIVATE_REGISTRY": "https://harbor.example.com"}, "PRIVATE_REGISTRY"),
        ({"PRIVATE_REGISTRY": "harbor.example.com/AI-Infra"}, "PRIVATE_REGISTRY"),
        ({"PRIVATE_REGISTRY": "harbor example"}, "PRIVATE_REGISTRY"),
        ({"PRIVATE_REGISTRY": "harbor"}, "PRIVATE_REGISTRY"),
        ({"PRIVATE_REGISTRY": "harbor.example.com:65536/ai"}, "PRIVATE_REGISTRY"),
        ({"TARGET_PLATFORMS": "linux/ppc64le"}, "TARGET_PLATFORMS"),
        ({"TARGET_PLATFORMS": "windows/amd64"}, "TARGET_PLATFORMS"),
        ({"TARGET_PLATFORMS": "linux/amd64,linux/amd64"}, "TARGET_PLATFORMS"),
        ({"TARGET_PLATFORMS": " , "}, "TARGET_PLATFORMS"),
        ({"PIPELINE_CONCURRENCY": "0"}, "PIPELINE_CONCURRENCY"),
        ({"PIPELINE_CONCURRENCY": "two"}, "PIPELINE_CONCURRENCY"),
        ({"PIPELINE_CONCURRENCY": "1000000000"}, "PIPELINE_CONCURRENCY"),
        ({"PIPELINE_PER_ARCH_TAGS": "maybe"}, "PIPELINE_PER_ARCH_TAGS"),
        ({"PIPELINE_COMPONENTS": ""}, "PIPELINE_COMPONENTS"),
        ({"PIPELINE_COMPONENTS": " , "}, "PIPELINE_COMPONENTS"),
        ({"PIPELINE_ENGINES": "linux/arm64"}, "PIPELINE_ENGINES"),
        ({"PIPELINE_ENGINES": "linux/arm64=arm-builder:1234"}, "PIPELINE_ENGINES"),
        ({"PIPELINE_ENGINES": "linux/arm64=https://arm-builder"}, "PIPELINE_ENGINES"),
        ({"PIPELINE_ENGINES": "linux/arm/v7=tcp://arm:1234"}, "PIPELINE_ENGINES"),
    ],
)
def test_bad_value_names_setting_and_value_on_one_line(env, setting):
    with pytest.raises(BadInput) as info:
        load_settings(None, env, {})
    message = str(info.value)
    assert message.startswith(f"{setting}=")
    assert repr(env[setting]) in message
    assert "\n" not in message
    assert "from environment" in message


def test_bad_value_names_the_file_it_came_from(tmp_path: Path):
    (tmp_path / ".env").write_text("TARGET_PLATFORMS=linux/s390x\n")
    with pytest.raises(BadInput, match=r"TARGET_PLATFORMS=.*\(from .*\.env\): unknown platform"):
        load_settings(tmp_path, {}, {})


def test_a_password_in_the_registry_is_never_repeated(tmp_path: Path):
    (tmp_path / ".env").write_text("PRIVATE_REGISTRY=robot$ci:hunter2@harbor.example.com/ai\n")
    with pytest.raises(BadInput) as info:
        load_settings(tmp_path, {}, {})
    assert str(info.value).startswith("PRIVATE_REGISTRY='***@harbor.example.com/ai' (from ")
    assert "hunter2" not in str(info.value) and "robot" not in str(info.value)


def test_good_values_are_normalised():
    s = load_settings(
        None,
        {
            "PRIVATE_REGISTRY": "harbor.example.com:8443/ai-infra/",
            "TARGET_PLATFORMS": " linux/arm64 , linux/amd64 ",
            "PIPELINE_CONCURRENCY": "8",
            "PIPELINE_PER_ARCH_TAGS": "yes",
            "PIPELINE_COMPONENTS": "backend, gitea,backend",
        },
        {},
    )
    assert s.private_registry == "harbor.example.com:8443/ai-infra"
    assert s.target_platforms == ("linux/arm64", "linux/amd64")
    assert (s.concurrency, s.per_arch_tags) == (8, True)
    assert s.components == ("backend", "gitea")


def test_empty_registry_means_none():
    s = load_settings(None, {"PRIVATE_REGISTRY": ""}, {})
    assert s.private_registry is None and s.components is None
    # An empty argument clears a registry set in lower layers.
    env = {"PRIVATE_REGISTRY": "harbor.example.com"}
    assert load_settings(None, env, {"private_registry": ""}).private_registry is None


def test_settings_are_frozen():
    s = load_settings(None, {}, {})
    with pytest.raises(ValueError):
        s.image_tag = "other"


def test_build_values_allow_list_and_patterns_without_secrets(repo: Path, secrets):
    env = {"GPG_AUTH_VERSION": "1", "PATH": "/usr/bin", "DB_PASSWORD_IMAGE": "x"}
    s = load_settings(repo, env, {})
    assert s.build_values["GO_PROXY"] == "https://goproxy.cn,direct"
    assert s.build_values["GITEA_VERSION"] == "1.25.1"
    assert s.build_values["KEYCLOAK_VERSION"] == "26.0"  # 'KEY' inside a word is no secret
    assert s.build_values["N9E_FE_VERSION"] == ""  # kept: a template may use an empty value
    for key in [*secrets, "EXTERNAL_HOST", "PATH", "GPG_AUTH_VERSION", "DB_PASSWORD_IMAGE"]:
        assert key not in s.build_values
    assert not set(secrets.values()) & set(s.build_values.values())
    assert "JWT_SECRET" in s.withheld and "IMAGE_TAG" not in s.withheld
    assert not set(secrets.values()) & set(s.withheld)


@pytest.mark.parametrize(
    "key",
    ["POSTGRES_PASSWORD", "GITEA_DB_PASSWD", "JWT_SECRET", "OPENAI_API_KEY", "MINIO_ACCESS_KEY",
     "CONFIGPROXY_AUTH_TOKEN", "OAUTH_CLIENT_ID", "SLURM_MUNGE_KEY", "PASSWORD_SALT",
     "TLS_CERT", "SSH_PRIVATE_KEY_IMAGE", "SESSION_COOKIE_VERSION", "AWS_CREDENTIALS",
     "APIKEY_VERSION", "SSL_CERTIFICATE_IMAGE", "SIGNING_KEYS_VERSION"],
)  # fmt: skip
def test_secret_looking_keys(key):
    assert is_secret(key)
    assert not is_build_key(key)


@pytest.mark.parametrize(
    "key",
    ["KEYCLOAK_VERSION", "SALTSTACK_VERSION", "GOLANG_IMAGE", "APT_MIRROR", "NODE_JS_VERSION"],
)
def test_build_keys(key):
    assert not is_secret(key)
    assert is_build_key(key)


def test_parse_env_forms():
    text = "\n".join(
        [
            "# comment",
            "",
            "export GO_PROXY=https://goproxy.cn,direct",
            'QUOTED="AI Infrastructure"  # trailing comment',
            "SINGLE='a # not a comment'",
            "INLINE=value # comment",
            "CHANNEL=#alerts",
            "URL=${EXTERNAL_SCHEME}://host",
            "EXTERNAL_SCHEME=https",
            "BASE=${EXTERNAL_SCHEME}://${HOST:-localhost}:${PORT:-}/",
            "LITERAL='${EXTERNAL_SCHEME}'",
            'DOUBLE="${EXTERNAL_SCHEME}"',
            "EQUALS=a=b",
            "EMPTY=",
            "DUP=1",
            "DUP=2",
            '  SPACED = "x \\" y"',
        ]
    )
    assert parse_env(text, ".env") == {
        "GO_PROXY": "https://goproxy.cn,direct",
        "QUOTED": "AI Infrastructure",
        "SINGLE": "a # not a comment",
        "INLINE": "value",
        "CHANNEL": "#alerts",
        "URL": "://host",  # as `source .env`: not set yet on that line
        "EXTERNAL_SCHEME": "https",
        "BASE": "https://localhost:/",
        "LITERAL": "${EXTERNAL_SCHEME}",
        "DOUBLE": "https",
        "EQUALS": "a=b",
        "EMPTY": "",
        "DUP": "2",
        "SPACED": 'x " y',
    }


def test_parse_error_names_line_but_never_the_value():
    with pytest.raises(BadInput, match=r"^\.env:2: not a KEY=VALUE line$"):
        parse_env("A=1\nthis-is-s3cret\n", ".env")
    with pytest.raises(BadInput, match=r"^\.env:1: unterminated quote$"):
        parse_env('JWT_SECRET="jwt-s3cret-value\n', ".env")


def test_env_file_not_utf8_names_file(tmp_path: Path):
    (tmp_path / ".env").write_bytes(b"IMAGE_TAG=\xff\xfe\n")
    with pytest.raises(BadInput, match=r"\.env: cannot read \(not UTF-8\)"):
        load_settings(tmp_path, {}, {})


def test_env_file_unreadable_names_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / ".env").write_text("IMAGE_TAG=v1\n")

    def refuse(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(BadInput, match=r"\.env: cannot read \(Permission denied\)"):
        load_settings(tmp_path, {}, {})


def test_an_env_that_is_not_a_file_is_bad_input(tmp_path):
    (tmp_path / ".env").mkdir()
    with pytest.raises(BadInput, match=r"\.env: not a file"):
        load_settings(tmp_path, {}, {})


def test_the_process_environment_is_read_only_through_the_mapping(monkeypatch):
    """Settings must not read os.environ or a .env behind load_settings' back."""
    monkeypatch.setenv("IMAGE_TAG", "from-os-environ")
    monkeypatch.setenv("PIPELINE_CONCURRENCY", "99")
    settings = load_settings(None, {}, {})
    assert (settings.image_tag, settings.concurrency) == ("latest", None)
    assert load_settings(None, {"IMAGE_TAG": "v9"}, {}).image_tag == "v9"


def test_engines_name_the_engine_of_some_platforms():
    s = load_settings(
        None,
        {"PIPELINE_ENGINES": "linux/arm64=kube-pod://dagger-arm-0?namespace=dagger"},
        {"engines": "linux/amd64=unix:///run/dagger/engine.sock, linux/arm64=tcp://arm:1234"},
    )
    assert s.engines == {
        "linux/amd64": "unix:///run/dagger/engine.sock",
        "linux/arm64": "tcp://arm:1234",
    }
    assert load_settings(None, {}, {}).engines == {}  # unset: one engine, as before


def test_an_engine_for_a_platform_the_release_does_not_build_says_so():
    with pytest.raises(BadInput) as info:
        load_settings(
            None, {"TARGET_PLATFORMS": "linux/amd64"}, {"engines": "linux/arm64=tcp://a:1"}
        )
    assert str(info.value) == (
        "PIPELINE_ENGINES='linux/arm64=tcp://a:1' (from arguments): "
        "linux/arm64 is not a platform of this release"
    )


def test_env_files_as_ai_infra_matrix_writes_them(tmp_path: Path):
    """A BOM, CRLF, `export`, a double-quoted value over lines, the last of duplicate keys."""
    text = 'export A=1\r\nB="two\r\nlines"\r\nA=3\r\nC=${A}-${B:-x}\r\nIMAGE_TAG=v2\r\n'
    (tmp_path / ".env").write_bytes(b"\xef\xbb\xbf" + text.encode())
    s = load_settings(tmp_path, {}, {})
    assert s.image_tag == "v2"
    assert {k: s.public_values[k] for k in "ABC"} == {
        "A": "3",
        "B": "two\nlines",
        "C": "3-two\nlines",
    }


def test_parse_env_defaults_as_source_does_and_never_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("FROM_OS", "leaked")
    text = "EMPTY=\nA=${EMPTY:-fallback}\nB=${FROM_OS}\nC=${FROM_OS:-d}\nD=${EXAMPLE}\n"
    values = parse_env(text, ".env", above={"EXAMPLE": "from-example"})
    assert values == {"EMPTY": "", "A": "fallback", "B": "", "C": "d", "D": "from-example"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\n\n# note\n\nPOSTGRES_PASSWORD hunter2\n", ".env:5: not a KEY=VALUE line"),
        ("A=1\r\n\r\nthis-is-s3cret\r\n", ".env:3: not a KEY=VALUE line"),
        ("A-B=1\n", ".env:1: not a KEY=VALUE line"),
        ('A=1\nB="open\nC=2\n', ".env:2: unterminated quote"),
        ("A='open\n", ".env:1: unterminated quote"),
        ('A="closed" then-text\n', ".env:1: not a KEY=VALUE line"),
    ],
)
def test_a_malformed_line_is_named_never_skipped(text: str, expected: str):
    with pytest.raises(BadInput) as info:
        parse_env(text, ".env")
    assert str(info.value) == expected


def test_errors_name_the_file_in_the_source_tree_not_where_it_was_read(tmp_path: Path):
    """`dagger call` reads a temporary copy: its path must not reach the person."""
    (tmp_path / ".env.example").write_text("IMAGE_TAG=v1\n\nnot a line\n")
    with pytest.raises(BadInput) as info:
        load_settings(tmp_path, {}, {})
    assert str(info.value) == ".env.example:3: not a KEY=VALUE line"
    (tmp_path / ".env.example").write_text("IMAGE_TAG=v1\n")
    (tmp_path / ".env").write_text("TARGET_PLATFORMS=linux/s390x\n")
    with pytest.raises(BadInput) as info:
        load_settings(tmp_path, {}, {})
    assert str(info.value).startswith("TARGET_PLATFORMS='linux/s390x' (from .env): ")
    assert str(tmp_path) not in str(info.value)


def test_settings_alone_read_no_environment(monkeypatch):
    """Outside load_settings the model has only its defaults and arguments as sources."""
    from pipeline.planning.settings import Settings

    monkeypatch.setenv("IMAGE_TAG", "from-os-environ")
    assert Settings().image_tag == "latest"
    assert Settings(IMAGE_TAG="v2").image_tag == "v2"


def test_an_env_file_of_10_mb_loads(tmp_path: Path):
    """Each value resolves against the keys so far, never a copy of them: a 10 MB `.env` once
    took minutes. The limit is far above what it takes (seconds) so it never flakes."""
    block = (
        "# component {i}\n"
        "export MIRROR_{i}=https://mirror.example/{i}\n"
        'QUOTED_{i}="a value {i}"  # comment\n'
        "LITERAL_{i}='${{MIRROR_{i}}}'\n"
        "URL_{i}=${{MIRROR_{i}}}/path:${{PORT_{i}:-8080}}\n"
        "\n"
        "COMPONENT_{i}_VERSION=v1.{i}.0\n"
    )
    blocks, size = [], 0
    while size < 10_000_000:
        blocks.append(block.format(i=len(blocks)))
        size += len(blocks[-1])
    (tmp_path / ".env").write_text("".join(blocks) + "IMAGE_TAG=v-last\n")
    count = len(blocks)
    started = time.monotonic()
    s = load_settings(tmp_path, {}, {})
    assert time.monotonic() - started < 60
    last = count - 1
    assert s.image_tag == "v-last"
    assert s.public_values[f"URL_{last}"] == f"https://mirror.example/{last}/path:8080"
    assert s.public_values[f"LITERAL_{last}"] == f"${{MIRROR_{last}}}"
    assert s.public_values[f"QUOTED_{last}"] == f"a value {last}"
    assert s.build_values[f"COMPONENT_{last}_VERSION"] == f"v1.{last}.0"
    assert len(s.public_values) == 5 * count + 1
