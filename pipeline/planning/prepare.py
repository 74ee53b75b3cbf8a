"""The prepare step: what build.sh makes before it builds and Dockerfiles COPY, made in the
build context and never in the checkout.

- Config files rendered from templates, as build.sh's render_all_templates does: nginx-style
  `src/<c>/templates/{conf.d,stream.d}/**.tpl` to `src/<c>/{conf.d,stream.d}/**`, and salt's
  `src/<c>/salt-{pillar,states}/**.tpl` beside their template.
- The cluster's SSH key pair `ssh-key/id_rsa{,.pub}` when a Dockerfile COPYs from `ssh-key/`
  and the checkout has none: made once, then kept (the doors say where), so cluster keys stay
  the same across releases.
- nginx's TLS folder `src/<c>/ssl/` as `build.sh ssl-setup` makes it (planning/tls.py), when a
  Dockerfile COPYs it and the checkout has none: kept the same way, one per domain.
- The GitHub release files `build.sh download` fetches into `third_party/`, when a COPY
  selects them and the checkout has none (pipeline/planning/downloads.py): fetched by the engine.

Then every COPY/ADD source of every planned Dockerfile must be in the context.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.planning import tls
from pipeline.planning.dockerfile import Dockerfile
from pipeline.planning.downloads import Download
from pipeline.planning.layout import read_text
from pipeline.planning.render import render

SSH_KEY_DIR = "ssh-key"
SSH_KEY_FILES = ("ssh-key/id_rsa", "ssh-key/id_rsa.pub")
SSH_KEY_STORE = "ssh-key"  # the kept pair's store
TLS_STORE = "tls"  # and each domain's TLS folder's: tls/<domain>
RENDERED_SUBDIRS = ("conf.d", "stream.d")
SALT_DIRS = ("salt-pillar", "salt-states")
# Never in a build context (build.build_context): not there for a COPY either.
CONTEXT_EXCLUDED = (".env", ".git", "node_modules")


@dataclass(frozen=True)
class Generated:
    path: str  # where builds see it, from the root
    origin: str  # its template, or what makes it
    text: str | None = field(default=None, repr=False)  # a rendered file's text
    private: bool = False
    kept: str | None = None  # made once and kept: the store (ssh-key, tls/<domain>)
    download: Download | None = None  # fetched by the engine

    def to_json(self) -> dict[str, object]:
        shown: dict[str, object] = {"path": self.path, "origin": self.origin}
        if self.download:
            shown |= {"url": self.download.url, "sha256": self.download.sha256}
        return shown | {"private": self.private}


def kept_folders(generated: Iterable[Generated]) -> dict[str, str]:
    """store -> the folder its files land in, of the kept files in `generated`."""
    folders: dict[str, str] = {}
    for made in generated:
        if made.kept and made.kept not in folders:
            folders[made.kept] = SSH_KEY_DIR if made.kept == SSH_KEY_STORE else _tls_folder(made)
    return folders


def _tls_folder(made: Generated) -> str:
    return made.path[: made.path.index("/ssl/") + len("/ssl")]


def kept_files(store: str) -> dict[str, bytes | tls.Link]:
    """A new set of the store's files, by path in its folder."""
    if store == SSH_KEY_STORE:
        private, public = new_key_pair()
        return {"id_rsa": private, "id_rsa.pub": public}
    return tls.tls_files(store.removeprefix(f"{TLS_STORE}/"))


def is_private_name(name: str) -> bool:
    return name == "id_rsa" or tls.is_private(name)


def write_files(folder: Path, files: Mapping[str, bytes | tls.Link]) -> None:
    """A store's files into a new folder: keys readable by their owner only, links as links.
    Callers make `folder` aside and put it in place whole."""
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)  # as mkdir -p in build.sh
        if isinstance(data, tls.Link):
            path.symlink_to(data)
            continue
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if is_private_name(name) else 0o644
        )
        with os.fdopen(fd, "wb") as file:
            file.write(data)


def kept_names(store: str) -> tuple[str, ...]:
    if store == SSH_KEY_STORE:
        return ("id_rsa", "id_rsa.pub")
    return tls.file_names(store.removeprefix(f"{TLS_STORE}/"))


def rendered_files(
    root: Path, names: Collection[str], values: Mapping[str, str], secret_keys: Collection[str]
) -> list[Generated]:
    """The templates build.sh renders before building, of components `names`, rendered with
    non-secret values."""
    made = []
    for template in _templates(root, names):
        shown = template.relative_to(root).as_posix()
        text = render(read_text(template, shown), values, shown, withheld=secret_keys)
        made.append(Generated(_rendered_path(shown), shown, text))
    return made


def _templates(root: Path, names: Collection[str]) -> Iterable[Path]:
    for component in [root / "src" / name for name in sorted(names)]:
        for sub in RENDERED_SUBDIRS:
            yield from sorted((component / "templates" / sub).rglob("*.tpl"))
        for sub in SALT_DIRS:
            yield from sorted((component / sub).rglob("*.tpl"))


def _rendered_path(template: str) -> str:
    parts = template.removesuffix(".tpl").split("/")
    if parts[2] == "templates":  # src/<c>/templates/conf.d/x.conf -> src/<c>/conf.d/x.conf
        del parts[2]
    return "/".join(parts)


def ssh_key_files(present: Collection[str], sources: Iterable[str]) -> list[Generated]:
    """The key pair, when a Dockerfile reads `ssh-key/` and the checkout has no key there."""
    wanted = any(s == SSH_KEY_DIR or s.startswith(f"{SSH_KEY_DIR}/") for s in sources)
    if not wanted or SSH_KEY_FILES[0] in present:
        return []
    origin = "the SSH key store (made once, then kept)"
    return [
        Generated(path, origin, private=not path.endswith(".pub"), kept=SSH_KEY_STORE)
        for path in SSH_KEY_FILES
    ]


def tls_folder_files(
    present: Collection[str], sources: Iterable[str], values: Mapping[str, str]
) -> list[Generated]:
    """nginx's TLS folder, for each `src/<c>/ssl` a Dockerfile COPYs that the checkout lacks."""
    name = tls.domain(values)
    store = f"{TLS_STORE}/{name}"
    origin = f"the TLS store {store} (as build.sh ssl-setup; made once, then kept)"
    made = []
    for folder in sorted({f for f in map(_ssl_folder, sources) if f and f not in present}):
        for file in tls.file_names(name):
            made.append(Generated(f"{folder}/{file}", origin, private=tls.is_private(file),
                                  kept=store))  # fmt: skip
    return made


def _ssl_folder(source: str) -> str | None:
    parts = os.path.normpath(source.lstrip("/")).split("/")
    if len(parts) >= 3 and parts[0] == "src" and parts[2] == "ssl":
        return "/".join(parts[:3])
    return None


def downloaded_files(downloads: Iterable[Download]) -> list[Generated]:
    return [
        Generated(d.path, f"{d.url} ({'pinned' if d.sha256 else 'not pinned yet'})", download=d)
        for d in downloads
    ]  # fmt: skip


def listing(root: Path) -> set[str]:
    """Every file and folder of the checkout a build context holds, `/`-separated."""
    found: set[str] = set()

    def unreadable(err: OSError) -> None:
        raise err  # the engine could not upload it either: layout.unreadable_is_bad_input

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        dirs[:] = [d for d in dirs if d not in CONTEXT_EXCLUDED]
        base = Path(folder).relative_to(root).as_posix()
        for name in [*dirs, *files]:
            if name not in CONTEXT_EXCLUDED:
                found.add(name if base == "." else f"{base}/{name}")
    return found


def with_parents(paths: Iterable[str]) -> set[str]:
    """The paths and every folder above them (a COPY of a folder finds its generated files)."""
    found = set()
    for path in paths:
        parts = path.split("/")
        found |= {"/".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return found


def missing_sources(parsed: Dockerfile, args: dict[str, str], present: set[str]) -> list[str]:
    """`line N: path` of each COPY/ADD source of this Dockerfile that the context lacks."""
    missing = []
    for number, source in parsed.context_sources(args):
        path = os.path.normpath(source.lstrip("/")).rstrip("/")
        if path in (".", "") or path in present:
            continue
        if any(ch in path for ch in "*?[") and fnmatch.filter(present, path):
            continue
        missing.append(f"line {number}: {source}")
    return missing


def holds_private_key(
    parsed: Dockerfile, target: str | None, args: dict[str, str], private: Collection[str]
) -> bool:
    """Whether a COPY of the image's own stages puts a generated private key (or a folder
    holding one) in it."""
    own = parsed.final_stage_lines(target)
    for number, source in parsed.context_sources(args):
        if number not in own:
            continue
        path = os.path.normpath(source.lstrip("/")).rstrip("/")
        if any(p == path or p.startswith(f"{path}/") or path == "." for p in private):
            return True
    return False


def new_key_pair(comment: str = "ai-infra-system@shared") -> tuple[bytes, bytes]:
    """(private, public) in OpenSSH form, as `ssh-keygen -t rsa -b 4096 -N ""` makes them."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public + f" {comment}\n".encode()
