"""The build.sh-style baseline: Debian's docker.io (dockerd 20.10, its bundled BuildKit),
one `docker build --platform linux/<arch>` per image per arch, one after another, then one
`docker save` per image per arch. The Dockerfile text and build arguments are the pipeline's
own plan (rendered templates included), so both sides build exactly the same thing.

Why BuildKit (DOCKER_BUILDKIT=1): the classic builder of 20.10 does not set BUILDPLATFORM, so
`FROM --platform=$BUILDPLATFORM` fails at once with `failed to parse platform : "" is an
invalid component` (measure.py records that attempt). Why `--network host`: dockerd runs
with `--bridge=none --iptables=false` so it leaves the Dagger engine's CNI and the host's
firewall alone, and a RUN step on the default network then fails with "network bridge not
found"; the one RUN step that uses the network (slurm-master's) reaches AppHub on the host's.
"""

from __future__ import annotations

import os
import platform as host_platform
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.doors import host
from pipeline.planning.plan import ImagePlan, Plan
from pipeline.planning.prepare import SSH_KEY_STORE, kept_folders
from pipeline.run.build import NOTHING_REACHED, Reach
from pipeline.run.orchestrate import reaches
from pipeline.run.serve import Served

DOCKER = "/usr/bin/docker"  # Debian's client; /usr/local/bin/docker is a newer one
SERVICE_NAME = "bench-build-time-service"


@dataclass
class DockerRun:
    builds: list[dict] = field(default_factory=list)  # image, platform, seconds, cached steps
    saves: list[dict] = field(default_factory=list)  # image, platform, seconds, bytes
    build_seconds: float = 0.0
    save_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return self.build_seconds + self.save_seconds

    @property
    def bytes(self) -> int:
        return sum(s["bytes"] for s in self.saves)


def docker_env(host: str) -> dict[str, str]:
    return {**os.environ, "DOCKER_HOST": host, "DOCKER_BUILDKIT": "1"}


def arch(platform: str) -> str:
    return platform.split("/")[1]


def local_ref(image: str, tag: str, platform: str) -> str:
    # The classic image store of 20.10 holds one platform per tag: one tag per arch.
    return f"bench/{image}:{tag}-{arch(platform)}"


def build_command(
    image: ImagePlan, dockerfile: Path, tag: str, platform: str, reach: Reach = NOTHING_REACHED
) -> list[str]:
    cmd = [DOCKER, "build", "--progress=plain", "--network", "host", "--platform", platform]
    cmd += ["-f", str(dockerfile), "-t", local_ref(image.image, tag, platform)]
    args = image.build_args | dict(reach.args)
    # A build-time service's address (APPHUB_URL): the pipeline asks it when the build runs.
    args |= {arg: service.url for arg, service in reach.services.items()}
    for name, value in sorted(args.items()):
        cmd += ["--build-arg", f"{name}={value}"]
    if image.target:
        cmd += ["--target", image.target]
    return cmd + ["."]


def steps(log: str) -> list[tuple[str, bool]]:
    """Each step of a `--progress=plain` log as (title, answered from the cache); steps that
    depend on the base image alone (`FROM`, `WORKDIR`, `[internal]`) left out."""
    titles: dict[str, str] = {}
    cached: set[str] = set()
    for line in log.splitlines():
        number, _, rest = line.partition(" ")
        if number.startswith("#") and rest.startswith("["):
            titles.setdefault(number, rest)
        elif number.startswith("#") and rest == "CACHED":
            cached.add(number)
    return [
        (title, number in cached)
        for number, title in titles.items()
        if " FROM " not in title and " WORKDIR " not in title and not title.startswith("[internal]")
    ]


def prepare_like_build_sh(plan: Plan, source: Path) -> None:
    """What build.sh writes into the checkout before it builds: the rendered config files, the
    SSH key pair and TLS folder (the pipeline's own kept ones, so both sides build the same
    bytes) and what `build.sh download` fetches."""
    keys = host.DEFAULT_SSH_KEY_DIR.expanduser()
    for made in plan.generated:
        target = source / made.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if made.text is not None:
            target.write_text(made.text)
        elif made.download is not None:
            with urllib.request.urlopen(made.download.url, timeout=60) as response:
                target.write_bytes(response.read())
        else:
            kept = keys if made.kept == SSH_KEY_STORE else keys.parent / made.kept
            host.ensure_made(kept, made.kept)
            folder = kept_folders([made])[made.kept]
            inside = kept / made.path.removeprefix(f"{folder}/")
            target.unlink(missing_ok=True)
            if inside.is_symlink():
                target.symlink_to(inside.readlink())
            else:
                shutil.copyfile(inside, target)


def serve_like_build_sh(image: ImagePlan, tag: str, env: Mapping[str, str]) -> Served:
    """Run the built image on the host's network, as build.sh runs AppHub during builds."""
    native = f"linux/{'arm64' if host_platform.machine() in ('aarch64', 'arm64') else 'amd64'}"
    ref = local_ref(image.image, tag, native)
    subprocess.run([DOCKER, "rm", "-f", SERVICE_NAME], env=dict(env), capture_output=True)
    subprocess.run([DOCKER, "run", "-d", "--network", "host", "--name", SERVICE_NAME, ref],
                   env=dict(env), check=True, capture_output=True)  # fmt: skip
    url = f"http://127.0.0.1:{image.serves}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return Served(url, native)
        except urllib.error.HTTPError:  # an answer all the same (busybox httpd: 404 for /)
            return Served(url, native)
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{image.image} did not answer at {url}")


def build_and_save(
    plan: Plan, source: Path, work: Path, env: Mapping[str, str], log=print
) -> DockerRun:
    """Every image x platform of `plan`, built from `source`, then saved under work/save."""
    prepare_like_build_sh(plan, source)
    served: dict[str, dict[str, Served]] = {}  # image -> platform -> what its builds reach
    try:
        return _build_and_save(plan, source, work, env, log, served)
    finally:
        subprocess.run([DOCKER, "rm", "-f", SERVICE_NAME], env=dict(env), capture_output=True)


def _build_and_save(
    plan: Plan,
    source: Path,
    work: Path,
    env: Mapping[str, str],
    log,
    served: dict[str, dict[str, Served]],
) -> DockerRun:
    run = DockerRun()
    (work / "dockerfiles").mkdir(parents=True, exist_ok=True)
    (work / "save").mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    executed: set[str] = set()
    started = time.monotonic()
    for planned in plan.components:
        image, reached = planned, reaches(planned, served, plan.platforms)
        dockerfile = work / "dockerfiles" / f"{image.image}.Dockerfile"
        dockerfile.write_text(image.dockerfile.text)
        for platform in plan.platforms:
            t0 = time.monotonic()
            proc = subprocess.run(
                build_command(
                    image, dockerfile, plan.tag, platform, reached.get(platform, NOTHING_REACHED)
                ),
                cwd=source,
                env=dict(env),
                capture_output=True,
                text=True,
            )
            seconds = time.monotonic() - t0
            text = proc.stdout + proc.stderr
            (work / "logs" / f"build-{image.image}-{arch(platform)}.log").write_text(text)
            if proc.returncode != 0:
                raise RuntimeError(
                    f"docker build {image.image} {platform} failed:\n"
                    + "\n".join(text.splitlines()[-15:])
                )
            # A cached step built earlier in this run (the Go build stage is shared by both
            # targets and, up to the RUN that uses TARGETARCH, by both arches) is reuse; one
            # never built in this run came from before it: the input did not bust it.
            ran = steps(text)
            reused = [t for t, hit in ran if hit and t in executed]
            stale = [t for t, hit in ran if hit and t not in executed]
            executed.update(t for t, hit in ran if not hit)
            run.builds.append(
                {
                    "image": image.image,
                    "platform": platform,
                    "seconds": round(seconds, 2),
                    "steps": len(ran),
                    "reused_from_this_run": len(reused),
                    "stale_cache_hits": stale,
                }
            )
            log(
                f"docker build {image.image} {platform}: {seconds:.1f}s, {len(ran)} steps"
                + (f", {len(reused)} reused from this run" if reused else "")
                + (f", STALE cache hits: {'; '.join(stale)}" if stale else "")
            )
        if image.serves:  # plan order: what reaches it comes later
            # build.sh runs one AppHub, on the build host: every platform's builds reach it
            service = serve_like_build_sh(image, plan.tag, env)
            served[image.image] = dict.fromkeys(plan.platforms, service)
    run.build_seconds = time.monotonic() - started
    started = time.monotonic()
    for image in plan.components:
        for platform in plan.platforms:
            tarball = work / "save" / f"{image.image}-{arch(platform)}.tar"
            t0 = time.monotonic()
            subprocess.run(
                [DOCKER, "save", "-o", str(tarball), local_ref(image.image, plan.tag, platform)],
                env=dict(env),
                check=True,
            )
            run.saves.append(
                {
                    "image": image.image,
                    "platform": platform,
                    "seconds": round(time.monotonic() - t0, 2),
                    "bytes": tarball.stat().st_size,
                }
            )
    run.save_seconds = time.monotonic() - started
    return run


def save_dependencies(plan: Plan, work: Path, env: Mapping[str, str]) -> list[dict]:
    """The third-party images the bundle also ships, the build.sh way: pull per arch, save."""
    saved = []
    (work / "save-deps").mkdir(parents=True, exist_ok=True)
    for dep in plan.dependencies:
        for platform in plan.platforms:
            tarball = work / "save-deps" / f"{dep.name}-{arch(platform)}.tar"
            subprocess.run(
                [DOCKER, "pull", "-q", "--platform", platform, dep.image],
                env=dict(env),
                check=True,
                capture_output=True,
            )
            subprocess.run(
                [DOCKER, "save", "-o", str(tarball), dep.image], env=dict(env), check=True
            )
            saved.append(
                {"image": dep.image, "platform": platform, "bytes": tarball.stat().st_size}
            )
    return saved


def remove_images(plan: Plan, env: Mapping[str, str]) -> None:
    """This run's images (the build cache and base images stay for the next run)."""
    refs = [local_ref(i.image, plan.tag, p) for i in plan.components for p in plan.platforms]
    subprocess.run([DOCKER, "rmi", "-f", *refs], env=dict(env), capture_output=True)


def classic_builder_attempt(plan: Plan, source: Path, work: Path, env: Mapping[str, str]) -> str:
    """What the classic builder (DOCKER_BUILDKIT=0) says about the cross-compiling Dockerfile."""
    image = next((i for i in plan.components if i.uses_build_platform), None)
    if image is None:
        return "no Dockerfile uses $BUILDPLATFORM"
    dockerfile = work / "dockerfiles" / f"{image.image}.classic.Dockerfile"
    dockerfile.parent.mkdir(parents=True, exist_ok=True)
    dockerfile.write_text(image.dockerfile.text)
    cmd = build_command(image, dockerfile, plan.tag + "-classic", plan.platforms[-1])
    cmd.remove("--progress=plain")  # the classic builder has no --progress
    proc = subprocess.run(
        cmd, cwd=source, env={**env, "DOCKER_BUILDKIT": "0"}, capture_output=True, text=True
    )
    last = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
    return f"exit {proc.returncode}: {last[0]}"
