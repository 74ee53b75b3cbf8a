"""A cache-busted copy of examples/mini-matrix (or bench/heavy-matrix): every file a Dockerfile
COPYs gets a comment line naming the run, so every COPY (and every step after it) misses the
build cache. Files with no comment syntax (package.json, go.sum, Packages) are left as they are:
heavy-matrix COPYs a stamped install script before each heavy step.

The run's unique tag busts the rest: every Dockerfile declares `ARG VERSION` (the pipeline
passes the tag; the docker baseline passes `--build-arg VERSION=<tag>`) before its RUN steps,
and an ARG in scope is part of a RUN step's cache key. Base images are *not* busted: both
builders hold them before the timed runs (see measure.py), so "cold" means: new sources, new
tag, no layer of ours in any cache.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

# The pipeline's own files (parsed, never COPYed): left as they are.
MARKERS = {"Dockerfile", "Dockerfile.tpl", "build.conf", "build-targets.conf"}
COMMENT = {  # extension -> how a comment line looks in that file
    ".sh": "# {}",
    ".conf": "# {}",
    ".go": "// {}",
    ".mod": "// {}",
    ".html": "<!-- {} -->",
    ".txt": "{}",
    ".js": "// {}",
    ".jsx": "// {}",
    ".py": "# {}",
}
NAMES = {"requirements.txt": "# {}"}  # a file name whose comment is not its extension's


def make_cold_copy(example: Path, dest: Path, run_id: str) -> list[str]:
    """Copy `example` to `dest` and stamp every COPYable file; returns the stamped paths."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(example, dest, ignore=shutil.ignore_patterns(".env", ".git"))
    stamped = []
    for path in sorted(dest.rglob("*")):
        rel = path.relative_to(dest)
        if not path.is_file() or rel.parts[0] not in ("src", "third_party"):
            continue
        if path.name in MARKERS or path.name.startswith("dependency.conf"):
            continue
        style = NAMES.get(path.name, COMMENT.get(path.suffix))
        if style is None:
            continue
        text = path.read_text()
        path.write_text(
            text + ("" if text.endswith("\n") else "\n") + style.format(f"bench {run_id}") + "\n"
        )
        stamped.append(str(rel))
    return stamped


if __name__ == "__main__":
    for line in make_cold_copy(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]):
        print(line)
