#!/usr/bin/env python3
"""Engine-free checks of the mini-matrix layout (run from anywhere).

- every src/<dir> is a build component, a dependency or neither (src/shared);
- templates render from .env.example with no {{VAR}} left, and the committed
  src/gitea/Dockerfile equals its rendered template;
- every COPY source exists relative to the repository root;
- every build-targets.conf target is an `AS <target>` stage;
- every FROM names a lab base image or an earlier stage;
- no RUN step installs or downloads anything;
- no other file contains a fake secret of .env.example (they all contain Secr3t);
- the Go module says `go 1.19` and builds for amd64 and arm64 (if `go` exists).
"""
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAB_IMAGES = {"debian:bookworm-slim", "busybox:1.36", "golang:1.19-bookworm"}
MARKERS = ("Dockerfile", "Dockerfile.tpl", "build.conf", "build-targets.conf",
           "dependency.conf", "dependency.conf.tpl")
errors = []


def env_example():
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip('"')
    return values


ENV = env_example()


def render(text):
    def sub(m):
        key = m.group(1)
        if not key.endswith("_VERSION") or not ENV.get(key):
            errors.append(f"template variable {key} is not a set *_VERSION")
            return m.group(0)
        return ENV[key]
    return re.sub(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}", sub, text)


def instructions(text):
    """Dockerfile instructions with continuation lines joined."""
    out, cur = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        out.append(cur + s)
        cur = ""
    return out


def check_dockerfile(comp, text):
    args, stages = {}, []
    for ins in instructions(text):
        word, _, rest = ins.partition(" ")
        word = word.upper()
        if word == "ARG":
            name, _, default = rest.partition("=")
            args.setdefault(name.strip(), default.strip())
        elif word == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), parts[0])
            if image not in LAB_IMAGES and image not in stages:
                errors.append(f"{comp}: FROM {parts[0]} -> {image!r} is not a lab image")
            if len(parts) >= 3 and parts[1].upper() == "AS":
                stages.append(parts[2])
        elif word == "COPY":
            parts = rest.split()
            if any(p.startswith("--from") for p in parts):
                continue
            for src in [p for p in parts if not p.startswith("--")][:-1]:
                if not (ROOT / src).exists():
                    errors.append(f"{comp}: COPY source {src} does not exist")
        elif word == "RUN":
            if re.search(r"\b(apt-get|apt|apk|pip3?|npm|curl|wget|go (get|mod download))\b", rest):
                errors.append(f"{comp}: RUN downloads or installs: {rest}")
    return stages


def main():
    images, deps = [], []
    for d in sorted(p for p in (ROOT / "src").iterdir() if p.is_dir()):
        comp = d.name
        present = [m for m in MARKERS if (d / m).exists()]
        if comp == "shared":
            if present:
                errors.append(f"src/shared must have no marker file, has {present}")
            continue
        if not present:
            errors.append(f"src/{comp} has no marker file")
            continue
        dockerfile = None
        if (d / "Dockerfile").exists():
            dockerfile = (d / "Dockerfile").read_text()
        if (d / "Dockerfile.tpl").exists():
            rendered = render((d / "Dockerfile.tpl").read_text())
            if dockerfile is not None and rendered != dockerfile:
                errors.append(f"src/{comp}/Dockerfile differs from its rendered template")
            dockerfile = dockerfile or rendered
        if dockerfile is not None:
            phase = (d / "build.conf").read_text().strip() if (d / "build.conf").exists() else ""
            if phase not in ("BUILD_PHASE=foundation", "BUILD_PHASE=dependent"):
                errors.append(f"src/{comp}/build.conf: bad {phase!r}")
            stages = check_dockerfile(comp, dockerfile)
            targets = d / "build-targets.conf"
            if targets.exists():
                for line in targets.read_text().splitlines():
                    line = line.split("#", 1)[0].split()
                    if not line:
                        continue
                    if line[0] not in stages:
                        errors.append(f"src/{comp}: target {line[0]} is not a stage {stages}")
                    images.append((phase, line[1], line[0]))
            else:
                images.append((phase, f"ai-infra-{comp}", None))
        for name in ("dependency.conf", "dependency.conf.tpl"):
            if (d / name).exists():
                text = (d / name).read_text()
                ref = (render(text) if name.endswith(".tpl") else text).strip()
                if ref not in LAB_IMAGES:
                    errors.append(f"src/{comp}/{name}: {ref!r} is not a lab image")
                deps.append((comp, ref))

    secrets = [v for v in ENV.values() if "Secr3t" in v]
    for path in ROOT.rglob("*"):
        if path.is_file() and path.name not in (".env.example", ".env"):
            text = path.read_text(errors="replace")
            for s in secrets:
                if s in text:
                    errors.append(f"{path.relative_to(ROOT)} contains the secret {s}")

    go_mod = (ROOT / "src/backend/go.mod").read_text()
    if not re.search(r"^go 1\.19$", go_mod, re.M) or "require" in go_mod:
        errors.append("src/backend/go.mod must say `go 1.19` and require nothing")
    if shutil.which("go"):
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(ROOT / "src/backend", tmp, dirs_exist_ok=True)
            for arch in ("amd64", "arm64"):
                env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=mod", GOPROXY="off",
                           CGO_ENABLED="0", GOOS="linux", GOARCH=arch)
                for cmd in (["go", "vet", "./..."], ["go", "build", "./..."]):
                    r = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
                    if r.returncode:
                        errors.append(f"{' '.join(cmd)} GOARCH={arch}: {r.stderr.strip()}")
    else:
        print("note: no go on PATH, Go build not checked")

    for phase, image, target in images:
        print(f"image  {phase.split('=')[-1]:10} {image}" + (f" (target {target})" if target else ""))
    for comp, ref in deps:
        print(f"dep    {comp:10} {ref}")
    for e in errors:
        print("ERROR:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
