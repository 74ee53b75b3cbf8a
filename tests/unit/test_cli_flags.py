"""The CLI's flags as a person meets them: one name per thing on every verb, help and version
everywhere, and every setting documented where it acts."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from pipeline.planning.settings import ENV_NAMES, settings_table

REGISTRY_VERBS = {
    "release": ["release", "--source", "{source}", "--registry", "127.0.0.1:5000/x"],
    "bundle push": ["bundle", "push", "{source}", "--registry", "127.0.0.1:5000/x"],
}
REGISTRY_FLAGS = ["--username", "--password", "--password-stdin", "--ca-cert", "--plain-http"]


@pytest.mark.parametrize("verb", sorted(REGISTRY_VERBS))
def test_every_registry_verb_takes_the_same_flags(verb: str, cli):
    code, out, _ = cli(*verb.split(), "--help")
    assert code == 0
    for flag in REGISTRY_FLAGS:
        assert f"  {flag} " in out, (verb, flag)
    assert "--insecure-http" not in out


@pytest.mark.parametrize("verb", sorted(REGISTRY_VERBS))
def test_every_registry_verb_reads_stdin_the_same_way(verb: str, repo, cli, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    args = [a.replace("{source}", str(repo)) for a in REGISTRY_VERBS[verb]]
    code, out, err = cli(*args, "--username", "u", "--password-stdin")
    assert (code, out, err) == (2, "", "error: --password-stdin read an empty password\n")


@pytest.mark.parametrize("verb", sorted(REGISTRY_VERBS))
def test_every_registry_verb_wants_a_user_with_a_password(verb: str, repo, cli, monkeypatch):
    monkeypatch.setenv("X", "hunter2")
    args = [a.replace("{source}", str(repo)) for a in REGISTRY_VERBS[verb]]
    code, out, err = cli(*args, "--password", "env:X")
    assert (code, out, err) == (2, "", "error: --password needs --username\n")


def command_paths() -> list[list[str]]:
    """Every command and group of the CLI, as the words that name it."""
    import typer

    from pipeline.doors.cli import app

    def walk(command: object, path: list[str]) -> list[list[str]]:
        found = [path]
        for name, sub in getattr(command, "commands", {}).items():
            found += walk(sub, [*path, name])
        return found

    return walk(typer.main.get_command(app), [])


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "(root)")
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_everywhere(path: list[str], flag: str, cli):
    code, out, err = cli(*path, flag)
    assert (code, err) == (0, "")
    assert out.startswith(f"Usage: ai-infra-pipeline {' '.join(path)}".rstrip())
    assert "-h, --help" in out


def test_version(cli):
    from importlib.metadata import version

    assert cli("--version") == (0, f"ai-infra-pipeline {version('ai-infra-matrix-pipeline')}\n", "")


@pytest.mark.parametrize("where", ["first", "after the subcommand", "last"])
def test_debug_anywhere_on_the_line(where: str, repo, cli):
    args = ["plan", "--source", str(repo), "--tag", "bad tag"]
    at = {"first": 0, "after the subcommand": 1, "last": len(args)}[where]
    code, _, err = cli(*args[:at], "--debug", *args[at:])
    assert code == 2
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: IMAGE_TAG")


# The settings table moved from README.md to its own page.
README = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def readme_settings() -> dict[str, tuple[str, str]]:
    """The settings page's table: setting -> (argument, default), backticks dropped."""
    table = README.read_text().split("| setting | argument | default | meaning |\n")[1]
    rows = {}
    for line in table.split("\n\n")[0].splitlines()[1:]:  # [0] is the |---| line
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        rows[cells[0]] = (cells[1], cells[2])
    return rows


def every_help(cli) -> str:
    """Every command's --help, its whitespace made single spaces (help text wraps)."""
    return " ".join(" ".join(cli(*path, "--help")[1].split()) for path in command_paths())


def test_readme_settings_table_and_help_agree(cli):
    rows = readme_settings()
    helps = every_help(cli)
    assert set(rows) == set(ENV_NAMES.values())
    for name, (argument, default) in rows.items():
        if argument:  # the option's help names the variable it sets
            assert re.search(rf" {argument} \S+ (?:(?! --).)*\(env {name}\b", helps), name
        else:  # said in the epilog of the commands it acts on, with the page's default
            assert re.search(rf" {name}: [^:]*\(default: {re.escape(default)}\)", helps), name


def test_readme_settings_table_is_the_models():
    """The settings page's table is made from the model, as --help is; when a setting changes,
    print the new one with `python -c 'from pipeline.planning.settings import settings_table
    as t; print(t())'`."""
    table = settings_table()
    assert table in README.read_text(), (
        f"docs/settings.md's settings table is out of date:\n{table}"
    )
