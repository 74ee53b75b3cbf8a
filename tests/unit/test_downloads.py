"""The prepare step's downloads: what build.sh download would fetch, for COPYs the checkout
lacks, pinned by downloads.lock."""

from __future__ import annotations

import pytest

from pipeline.errors import BadInput
from pipeline.planning.downloads import Download, read_lock, write_lock
from pipeline.planning.plan import resolve_plan

ENV = "IMAGE_TAG=v1\nGITHUB_MIRROR=https://ghfast.top/\nCODE_SERVER_VERSION=v4.107.0\n"
SINGLEUSER = (
    "FROM debian:12\nCOPY third_party/code_server/*.deb /tmp/code-server/\n"
    "RUN dpkg -i /tmp/code-server/code-server_*_$(dpkg --print-architecture).deb\n"
)
BASE = "https://ghfast.top/https://github.com/coder/code-server/releases/download/v4.107.0"


def downloads(root, env=None):
    return [g.download for g in resolve_plan(root, env or {}, {}).generated if g.download]


def test_a_copy_the_checkout_lacks_gets_build_sh_s_files_through_the_mirror(tree):
    root = tree({".env.example": ENV, "src/singleuser/Dockerfile": SINGLEUSER})
    assert downloads(root) == [
        Download(
            f"third_party/code_server/code-server_4.107.0_{arch}.deb",
            f"{BASE}/code-server_4.107.0_{arch}.deb",
            None,
        )
        for arch in ("amd64", "arm64")
    ]  # fmt: skip (the COPY selects the .debs, not build.sh's .rpms)
    mirrorless = downloads(root, {"GITHUB_MIRROR": "", "CODE_SERVER_VERSION": "4.1.0"})
    assert mirrorless[0].url == (
        "https://github.com/coder/code-server/releases/download/v4.1.0/code-server_4.1.0_amd64.deb"
    )


def test_files_in_the_checkout_and_unknown_folders_are_not_downloaded(tree):
    there = {"third_party/code_server/code-server_4.107.0_amd64.deb": "deb"}
    root = tree({".env.example": ENV, "src/singleuser/Dockerfile": SINGLEUSER, **there})
    assert downloads(root) == []
    other = tree({".env.example": ENV, "src/x/Dockerfile": "FROM a\nCOPY third_party/zz/ /z/\n"})
    with pytest.raises(BadInput, match="line 2: third_party/zz/"):
        downloads(other)  # no download is known for it: the COPY check still speaks


def test_the_lock_pins_what_a_first_fetch_gave(tree):
    root = tree({".env.example": ENV, "src/singleuser/Dockerfile": SINGLEUSER})
    first = downloads(root)
    write_lock(root, [(first[0], "a" * 64)])
    write_lock(root, [(first[1], "b" * 64)])  # later fetches keep the earlier lines
    assert read_lock(root) == {first[0].path: "a" * 64, first[1].path: "b" * 64}
    assert [d.sha256 for d in downloads(root)] == ["a" * 64, "b" * 64]
    assert (root / "downloads.lock").read_text().splitlines()[1] == (
        f"{'a' * 64}  {first[0].path}  {first[0].url}"
    )
    assert not [p.name for p in root.iterdir() if "partial" in p.name]


def test_a_broken_lock_line_is_one_line_naming_it(tree):
    root = tree({".env.example": ENV, "downloads.lock": "# pins\nnot a pin\n"})
    with pytest.raises(
        BadInput, match=r"downloads.lock line 2: expected '<sha256>  <path>  <url>'"
    ):
        read_lock(root)
