"""Every measurement of the benchmark, against the running lab; writes bench/results.json.

Called by bench/run (which installs docker.io, starts a private dockerd and exports the lab's
environment). Each figure is a ratio of two things measured in this same run:

1. cold `release` of examples/mini-matrix (a cache-busted copy, see cold_input.py) against
   the build.sh-style docker baseline (docker_baseline.py) on the same Dockerfiles;
2. warm `release` (nothing changed) against the cold one;
3. the Go image for linux/arm64 cross-compiled against fully emulated (go_cross_vs_qemu.py);
4. `bundle create` bytes against the docker save tarballs of the same images;
5. `bundle push` into an empty project against pushing again into the same project;
6. a release after one component changed against the docker baseline doing the same (every
   `docker build` again, cached but one, and every `docker save`);
7. the cold release against a lower bound from the same run: the engine's busy CPU seconds
   during it divided by the CPUs, plus the time its bytes take to push (figure 5's rate);
8. a cold release with linux/arm64 on the lab's second engine (PIPELINE_ENGINES) against the
   cold release on one engine: both engines share this machine's CPUs;
9. `bundle create --since` the previous bundle, after one component changed, against the
   full bundle of the same release.

Repetitions: BENCH_REPS (default 3, the median is the figure) for everything but the
emulated Go build (over four minutes here), which runs once. A cold pair takes about a minute.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cold_input import make_cold_copy  # noqa: E402
from docker_baseline import (  # noqa: E402
    build_and_save,
    classic_builder_attempt,
    docker_env,
    remove_images,
    save_dependencies,
)

from pipeline.planning.plan import resolve_plan  # noqa: E402

EXAMPLE = ROOT / "examples" / "mini-matrix"
OUT = ROOT / "bench" / "out"
RESULTS = ROOT / "bench" / "results.json"
PY = sys.executable
REPS = int(os.environ.get("BENCH_REPS", "3"))


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(cmd: list[str], name: str, **kwargs) -> tuple[float, str]:
    """Run a command to completion (it must succeed); wall seconds and its stdout."""
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kwargs)
    seconds = time.monotonic() - t0
    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    (OUT / "logs" / f"{name}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SystemExit(
            f"bench: {name} failed (exit {proc.returncode}); see bench/out/logs:\n{tail}"
        )
    log(f"{name}: {seconds:.1f}s")
    return seconds, proc.stdout


def release(source: Path, tag: str, registry: str, name: str, *extra: str) -> float:
    seconds, _ = timed(
        [
            PY,
            "-m",
            "pipeline",
            "release",
            "--source",
            str(source),
            "--tag",
            tag,
            "--registry",
            registry,
            "--plain-http",
            "--report-json",
            str(OUT / f"{name}.json"),
            *extra,
        ],
        name,
    )
    return seconds


def engine_cpu_seconds() -> float:
    """User + system CPU of the lab's engine and its reaped children (runc, every build step)."""
    pid = (Path(os.environ["LAB_HOME"]) / "engine.pid").read_text().strip()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def change_one_component(source: Path, n: int) -> None:
    """A new line in one file gateway COPYs: only that image rebuilds."""
    with (source / "src" / "gateway" / "www" / "index.html").open("a") as page:
        page.write(f"<!-- change {n} -->\n")


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def gzip_bytes(path: Path) -> int:
    """Size of `gzip -6` of a file (what `docker save | gzip` would write), streamed."""
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    total = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            total += len(z.compress(chunk))
    return total + len(z.flush())


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "kernel": platform.release(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def figure(
    fid: str, title: str, a: tuple[str, float], b: tuple[str, float], unit: str, note: str
) -> dict:
    return {
        "id": fid,
        "title": title,
        "unit": unit,
        "a": {"what": a[0], "value": a[1]},
        "b": {"what": b[0], "value": b[1]},
        "ratio": round(a[1] / b[1], 3) if b[1] else None,
        "note": note,
    }


def med(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def cold_pair(n: int, run_id: str, registry: str, denv: dict, first: str) -> dict:
    """One cold docker baseline and one cold release, each on its own fresh copy and tag."""
    out: dict = {"order": first}
    for side in (first, "pipeline" if first == "docker" else "docker"):
        rid = f"{run_id}-{n}{side[0]}"
        tag = f"cold-{rid}"
        src = OUT / f"src-cold-{n}{side[0]}"
        stamped = make_cold_copy(EXAMPLE, src, rid)
        load1 = Path("/proc/loadavg").read_text().split()[0]
        log(f"1.{n} cold {side}: {len(stamped)} COPYed files stamped in {src.name}, tag {tag}")
        if side == "docker":
            plan = resolve_plan(src, os.environ, {"image_tag": tag})
            shutil.rmtree(OUT / "docker" / "save", ignore_errors=True)  # keep the last run's
            run = build_and_save(plan, src, OUT / "docker", denv, log=log)
            remove_images(plan, denv)  # saved already; the build cache stays
            log(f"docker cold: {run.build_seconds:.1f}s builds + {run.save_seconds:.1f}s saves")
            out["docker_tag"] = tag
            out["docker"] = {
                "seconds": round(run.seconds, 2),
                "build_seconds": round(run.build_seconds, 2),
                "save_seconds": round(run.save_seconds, 2),
                "save_bytes": run.bytes,
                "loadavg_1min_before": load1,
                "builds": run.builds,
            }
        else:
            # Its own new project: an earlier release's record there would be reused (apphub
            # COPYs no file the stamp changes and declares no VERSION).
            project = f"{registry}-cold-{rid}"
            cpu0 = engine_cpu_seconds()
            seconds = release(src, tag, project, f"release-cold-{n}")
            cpu = engine_cpu_seconds() - cpu0
            report = json.loads((OUT / f"release-cold-{n}.json").read_text())
            out["pipeline"] = {
                "seconds": round(seconds, 2),
                "engine_cpu_seconds": round(cpu, 2),
                "bytes": sum(p["size"] or 0 for i in report["images"] for p in i["platforms"]),
                "report_wall_seconds": round(report["wall_seconds"], 2),
                "build_seconds": {
                    f"{i['image']} {p['platform']}": p["seconds"]
                    for i in report["images"]
                    for p in i["platforms"]
                },
                "loadavg_1min_before": load1,
                "source": str(src),
                "tag": tag,
                "project": project,
            }
    return out


def main() -> None:
    t_start = float(os.environ.get("BENCH_T0", time.time()))
    registry_host = os.environ["LAB_REGISTRY"]
    denv = docker_env(os.environ["BENCH_DOCKER_HOST"])
    run_id = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
    registry = f"{registry_host}/bench"
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "run_id": run_id,
        "machine": machine(),
        "versions": {
            "dagger": os.environ.get("BENCH_DAGGER_VERSION", "?"),
            "docker": os.environ.get("BENCH_DOCKER_VERSION", "?"),
        },
        "settings": {
            "repetitions_short": REPS,
            "release_target": f"{registry} (plain HTTP, the lab's registry)",
        },
        "measurements": {},
        "problems": [],
    }
    m = results["measurements"]
    warm_plan = resolve_plan(EXAMPLE, os.environ, {"image_tag": "bench-warmup"})

    # Not timed: both builders get the base images (and warm caches of their own machinery).
    log("warm-up (not timed): docker builds of the unmodified example, one pipeline release")
    build_and_save(warm_plan, EXAMPLE, OUT / "docker-warmup", denv, log=lambda _m: None)
    shutil.rmtree(OUT / "docker-warmup" / "save", ignore_errors=True)
    release(EXAMPLE, "bench-warmup", registry, "release-warmup")
    classic = classic_builder_attempt(warm_plan, EXAMPLE, OUT / "docker-classic", denv)
    results["docker_classic_builder"] = classic
    log(f"classic builder (DOCKER_BUILDKIT=0) on the backend Dockerfile: {classic}")

    # 1. cold: REPS pairs (a cold run of either side is about half a minute here), the order
    # alternating so that neither side always runs first.
    pairs = [
        cold_pair(n + 1, run_id, registry, denv, "docker" if n % 2 == 0 else "pipeline")
        for n in range(REPS)
    ]
    m["cold_pairs"] = pairs
    docker_s = [p["docker"]["seconds"] for p in pairs]
    docker_build_s = [p["docker"]["build_seconds"] for p in pairs]
    cold_runs = [p["pipeline"]["seconds"] for p in pairs]
    cold_s = med(cold_runs)
    stale = [
        f"{b['image']} {b['platform']}: {t}"
        for p in pairs
        for b in p["docker"]["builds"]
        for t in b["stale_cache_hits"]
    ]
    if stale:
        results["problems"].append(
            "docker cold builds hit a cache from before: " + "; ".join(stale)
        )
    last = pairs[-1]["pipeline"]
    cold, tag = Path(last["source"]), last["tag"]
    registry = last["project"]  # warm and one-changed releases go where the cold one went
    plan = resolve_plan(cold, os.environ, {"image_tag": tag, "private_registry": registry})
    run_id = f"{run_id}-go"

    # 2. warm: the same release again, nothing changed: every row is reused (docs/reuse.md).
    warm = [release(cold, tag, registry, f"release-warm-{i + 1}") for i in range(REPS)]
    m["release_warm"] = {"runs": [round(s, 2) for s in warm], "median": med(warm)}

    # 6. one component changed: the docker baseline on its last cold copy, the pipeline on its.
    docker_src = OUT / f"src-cold-{REPS}d"
    docker_plan = resolve_plan(docker_src, os.environ, {"image_tag": pairs[-1]["docker_tag"]})
    one_docker, one_release = [], []
    for i in range(REPS):
        change_one_component(docker_src, i)
        shutil.rmtree(OUT / "docker-one" / "save", ignore_errors=True)
        run = build_and_save(docker_plan, docker_src, OUT / "docker-one", denv, log=lambda _m: None)
        one_docker.append(run.seconds)
        log(f"6. docker, one component changed: {run.seconds:.1f}s")
        change_one_component(cold, i)
        one_release.append(release(cold, tag, registry, f"release-one-changed-{i + 1}"))
    m["one_changed"] = {
        "docker_runs": [round(s, 2) for s in one_docker],
        "release_runs": [round(s, 2) for s in one_release],
    }
    shutil.rmtree(OUT / "docker-one" / "save", ignore_errors=True)

    # 3. Go image for arm64: cross-compiled vs emulated.
    log("3. Go image linux/arm64: cross-compiled (BUILDPLATFORM native) vs emulated (QEMU)")
    _, out = timed(
        [PY, "bench/go_cross_vs_qemu.py", str(cold), run_id, str(REPS), "1"], "go-cross-vs-qemu"
    )
    go = json.loads(out)
    m["go_arm64"] = go
    cross = [r["seconds"] for r in go["cross"]]
    qemu = [r["seconds"] for r in go["qemu"]]
    if {r["build_machine"] for r in go["cross"]} != {"x86_64"} or {
        r["build_machine"] for r in go["qemu"]
    } != {"aarch64"}:
        results["problems"].append(f"go build stage ran on an unexpected machine: {go}")

    # 4. bundle bytes vs docker save bytes.
    log("4. bundle create (the last cold release's source and tag: the builds are cached)")
    bundle = OUT / "bundle"
    create = ["bundle", "create", "--source", str(cold), "--tag", tag, "--output", str(bundle)]
    bundle_s, _ = timed([PY, "-m", "pipeline", *create], "bundle-create")
    deps = save_dependencies(plan, OUT / "docker", denv)
    images_bytes = pairs[-1]["docker"]["save_bytes"]  # bench/out/docker/save: the last run
    deps_bytes = sum(d["bytes"] for d in deps)
    gz = sum(gzip_bytes(p) for p in (OUT / "docker").glob("save*/*.tar"))
    m["bundle"] = {"bytes": tree_bytes(bundle), "create_seconds_warm": round(bundle_s, 2)}
    m["docker_save"] = {
        "images_bytes": images_bytes,
        "dependencies_bytes": deps_bytes,
        "bytes": images_bytes + deps_bytes,
        "gzip6_bytes": gz,
        "dependencies": deps,
    }

    # 5. bundle push into an empty project, then again into the same one.
    log("5. bundle push: empty project, then the same project again")
    push = [PY, "-m", "pipeline", "bundle", "push", str(bundle), "--plain-http", "--registry"]
    empty, again, summaries = [], [], {}
    for i in range(REPS):
        project = f"{registry_host}/bench-{uuid.uuid4().hex[:12]}"
        seconds, out = timed([*push, project], f"push-empty-{i + 1}")
        empty.append(seconds)
        summaries["empty"] = out.strip().splitlines()[-1]
    for i in range(REPS):
        seconds, out = timed([*push, project], f"push-again-{i + 1}")
        again.append(seconds)
        summaries["again"] = out.strip().splitlines()[-1]
    m["push"] = {
        "empty_runs": [round(s, 2) for s in empty],
        "empty_median": med(empty),
        "again_runs": [round(s, 2) for s in again],
        "again_median": med(again),
        "summaries": summaries,
    }

    # 9. delta bundle: the next release (gateway changed) against the bundle of the last one.
    log("9. bundle of the next release (gateway changed): full, and --since the last bundle")
    change_one_component(cold, REPS)
    next_tag = f"{tag}-next"
    full_next, delta_next = OUT / "bundle-next", OUT / "bundle-delta"
    nxt = ["bundle", "create", "--source", str(cold), "--tag", next_tag]
    timed([PY, "-m", "pipeline", *nxt, "--output", str(full_next)], "bundle-next-full")
    timed([PY, "-m", "pipeline", *nxt, "--output", str(delta_next), "--since", str(bundle)],
          "bundle-next-delta")  # fmt: skip
    m["delta_bundle"] = {"full_bytes": tree_bytes(full_next), "delta_bytes": tree_bytes(delta_next)}

    # 8. two engines: arm64 on the lab's engine-2, against the cold release on one engine.
    engines = ["--engines", f"linux/arm64={os.environ['LAB_ENGINE_2']}"]
    log("8. two engines (arm64 on engine-2): warm-up (not timed), then cold releases")
    release(EXAMPLE, "bench-warmup-2", f"{registry_host}/bench", "release-warmup-engines", *engines)
    two = []
    for n in range(REPS):
        rid = f"{run_id}-e{n + 1}"
        src = OUT / f"src-cold-e{n + 1}"
        make_cold_copy(EXAMPLE, src, rid)
        project = f"{registry_host}/bench-cold-{rid}"  # nothing to reuse there
        two.append(release(src, f"cold-{rid}", project, f"release-engines-{n + 1}", *engines))
    m["two_engines"] = {"runs": [round(x, 2) for x in two], "median": med(two)}

    push_rate = m["bundle"]["bytes"] / med(empty)  # bytes per second into an empty project
    builds = len(plan.components) * len(plan.platforms)
    counts = f"{len(plan.components)} images + {len(plan.dependencies)} dependencies"
    bounds = [
        p["pipeline"]["engine_cpu_seconds"] / os.cpu_count() + p["pipeline"]["bytes"] / push_rate
        for p in pairs
    ]
    results["figures"] = [
        figure(
            "cold_release_vs_docker",
            "Cold release vs build.sh-style docker",
            (f"pipeline release, cold: build + push + read back (median of {REPS})", cold_s),
            (
                f"docker build x{builds} one by one + docker save x{builds} (median of {REPS})",
                med(docker_s),
            ),  # fmt: skip
            "s",
            f"runs: pipeline {cold_runs} s, docker {docker_s} s; docker builds alone "
            f"{med(docker_build_s)} s (median); docker cache hits from before the run: "
            f"{len(stale)}",
        ),
        figure(
            "warm_vs_cold_release",
            "Warm release (nothing changed) vs cold release",
            (f"release, warm (median of {len(warm)})", med(warm)),
            (f"release, cold (median of {REPS})", cold_s),
            "s",
            "",
        ),
        figure(
            "go_cross_vs_qemu",
            "Go image linux/arm64: cross-compiled vs emulated",
            (f"cross-compiled build stage (median of {len(cross)})", med(cross)),
            (f"build stage under QEMU ({len(qemu)} run)", med(qemu)),
            "s",
            "backend target, one engine session, base images cached",
        ),
        figure(
            "bundle_vs_docker_save",
            "Offline bundle vs docker save tarballs",
            (
                f"bundle create (OCI layout, {counts}, both arches)",
                m["bundle"]["bytes"],
            ),
            (
                f"docker save per image per arch ({counts})",
                images_bytes + deps_bytes,
            ),
            "bytes",
            f"{len(plan.components)} images only: {images_bytes / 1e6:.1f} MB; all saves gzip -6: "
            f"{gz / 1e6:.1f} MB",
        ),
        figure(
            "push_empty_vs_again",
            "bundle push: empty project vs again",
            (f"push into an empty project (median of {len(empty)})", med(empty)),
            (f"push again, same project (median of {len(again)})", med(again)),
            "s",
            f"empty: {summaries['empty']}; again: {summaries['again']}",
        ),
        figure(
            "one_changed_vs_docker",
            "Release after one component changed vs build.sh-style docker",
            (f"release, gateway changed (median of {REPS})", med(one_release)),
            (
                f"docker build x{builds} (cache) + docker save x{builds} (median of {REPS})",
                med(one_docker),
            ),  # fmt: skip
            "s",
            f"runs: pipeline {m['one_changed']['release_runs']} s, "
            f"docker {m['one_changed']['docker_runs']} s",
        ),
        figure(
            "cold_vs_lower_bound",
            "Cold release vs its lower bound",
            (f"release, cold (median of {REPS})", cold_s),
            ("engine CPU s / CPUs + push of its bytes at figure 5's rate", med(bounds)),
            "s",
            f"engine CPU seconds {[p['pipeline']['engine_cpu_seconds'] for p in pairs]} on "
            f"{os.cpu_count()} CPUs; push rate {push_rate / 1e6:.1f} MB/s",
        ),
        figure(
            "two_engines_vs_one",
            "Cold release: arm64 on a second engine vs one engine",
            (f"release, cold, two engines on this machine (median of {REPS})", med(two)),
            (f"release, cold, one engine (median of {REPS})", cold_s),
            "s",
            f"runs: {m['two_engines']['runs']} s; both engines share {os.cpu_count()} CPUs and "
            "arm64 is emulated on either, so no gain is expected here: the gain is a native "
            "arm64 engine's (figure 3's ratio)",
        ),
        figure(
            "delta_vs_full_bundle",
            "Bundle of the next release: delta vs full",
            (
                "bundle create --since the previous bundle (gateway changed)",
                m["delta_bundle"]["delta_bytes"],
            ),
            ("bundle create, full, same release", m["delta_bundle"]["full_bytes"]),
            "bytes",
            f"{counts}; both releases on the same cold source",
        ),
    ]
    results["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    results["total_wall_seconds"] = round(time.time() - t_start, 1)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {RESULTS.relative_to(ROOT)}")
    for path in (
        OUT / "docker" / "save",
        OUT / "docker" / "save-deps",
        bundle,
        full_next,
        delta_next,
    ):
        shutil.rmtree(path, ignore_errors=True)  # hundreds of MB; measured already


if __name__ == "__main__":
    main()
