"""uv.lock is what `dagger call` installs the module from: it must match pyproject.toml.

Without a lock the engine's Python runtime installs its vendored SDK (version 0.0.0), which
cannot satisfy the dagger-io pin; with a stale one `uv sync` installs other versions than the
ones the tests ran with. Regenerate it with `uv lock`.
"""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def declared() -> set[tuple[str, str, str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = {as_key(Requirement(text)) for text in project["dependencies"]}
    for extra, items in project.get("optional-dependencies", {}).items():
        for text in items:
            name, spec, _ = as_key(Requirement(text))
            found.add((name, spec, f'extra == "{extra}"'))
    return found


def as_key(req: Requirement) -> tuple[str, str, str]:
    name = req.name.lower() + (f"[{','.join(sorted(req.extras))}]" if req.extras else "")
    return name, str(req.specifier), str(req.marker or "")


def locked() -> tuple[dict, set[tuple[str, str, str]]]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    ours = next(p for p in lock["package"] if p.get("source") == {"editable": "."})
    found = set()
    for item in ours["metadata"]["requires-dist"]:
        extras = f"[{','.join(sorted(item['extras']))}]" if item.get("extras") else ""
        marker = str(Requirement(f"x; {item['marker']}").marker) if "marker" in item else ""
        found.add((item["name"].lower() + extras, item.get("specifier", ""), marker))
    return lock, found


def test_uv_lock_records_exactly_the_dependencies_of_pyproject():
    _, found = locked()
    assert found == declared(), "uv.lock is stale: run `uv lock` and commit it"


def test_uv_lock_pins_dagger_io_at_the_engine_version():
    lock, _ = locked()
    pin = next(r for r in declared() if r[0] == "dagger-io")[1]
    versions = {p["name"]: p["version"] for p in lock["package"]}
    assert pin == f"=={versions['dagger-io']}"
    engine = (ROOT / "dagger.json").read_text()
    assert f'"engineVersion": "v{versions["dagger-io"]}"' in engine


def test_uv_lock_has_no_local_source_for_the_sdk():
    """A [tool.uv.sources] path for dagger-io would point at the runtime's vendored copy."""
    lock, _ = locked()
    sdk = next(p for p in lock["package"] if p["name"] == "dagger-io")
    assert "registry" in sdk["source"], sdk["source"]
