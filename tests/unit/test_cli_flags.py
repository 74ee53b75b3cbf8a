"""The CLI's flags as a person meets them: one name per thing on every verb, help and version
everywhere, and every setting documented where it acts."""

from __future__ import annotations

import io

import pytest

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
