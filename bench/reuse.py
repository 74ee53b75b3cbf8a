"""The reuse figures of issue 27 (docs/reuse.md), on examples/mini-matrix and bench/heavy-matrix;
writes bench/results-reuse.json. Called by `bench/run --reuse` (its dockerd, the lab's env).

For each workload, on a cache-busted copy (cold_input.py) and its own tag, all releases into
one new project of the lab's plain registry (so the later ones find the earlier records):

- cold: the first release there (nothing to reuse), on the lab's engine;
- no change: the same release again (every row should be `reused`);
- one component changed, warm engine: one more line in a file one component COPYs, then the
  same release; against the build.sh way (docker_baseline.py: every `docker build` again,
  cached but the changed image's, and every `docker save`) on its own cold copy;
- one component changed, fresh engine: the lab's second engine, its cache pruned (checked
  empty) before each run, builds every platform (`--engines`): another machine or an
  ephemeral runner that has only the registry;
- new tag: the same source under a new tag; the images that declare `ARG VERSION` should be
  `published`, the others `reused`.

BENCH_REPS (default 3) repetitions for mini-matrix's no-change, warm and fresh runs (the
median is the figure); heavy-matrix's (BENCH_HEAVY_REPS, default 1) take minutes each.
BENCH_WORKLOADS (default `mini-matrix,heavy-matrix`) picks the workloads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cold_input import make_cold_copy  # noqa: E402
from docker_baseline import build_and_save, docker_env, remove_images  # noqa: E402
from measure import log, machine, med, timed  # noqa: E402

from pipeline.planning.plan import resolve_plan  # noqa: E402

OUT = ROOT / "bench" / "out" / "reuse"  # bench/out/ is ignored by git
RESULTS = ROOT / "bench" / "results-reuse.json"
PY = sys.executable
REPS = int(os.environ.get("BENCH_REPS", "3"))
HEAVY_REPS = int(os.environ.get("BENCH_HEAVY_REPS", "1"))

# name -> (source, the component changed, the file of it that changes, its comment style)
WORKLOADS = {
    "mini-matrix": (ROOT / "examples" / "mini-matrix", "gateway", "www/index.html", "<!-- {} -->"),
    "heavy-matrix": (ROOT / "bench" / "heavy-matrix", "frontend", "src/App.jsx", "// {}"),
}


def change(source: Path, component: str, path: str, style: str, n: int) -> None:
    with (source / "src" / component / path).open("a") as f:
        f.write(style.format(f"change {n}") + "\n")


def release(source: Path, tag: str, project: str, name: str, *extra: str) -> tuple[float, dict]:
    """One `release` (it must succeed): wall seconds and its report JSON."""
    report = OUT / f"{name}.json"
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
            project,
            "--plain-http",
            "--report-json",
            str(report),
            *extra,
        ],
        name,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return seconds, json.loads(report.read_text())


def statuses(report: dict) -> dict[str, dict[str, str]]:
    """image -> platform -> status of a report."""
    return {
        i["image"]: {p["platform"]: p["status"] for p in i["platforms"]} for i in report["images"]
    }


def counts(report: dict) -> dict[str, int]:
    return dict(Counter(p["status"] for i in report["images"] for p in i["platforms"]))


def rebuilt(report: dict) -> list[str]:
    """The images with a platform that was built (not reused)."""
    return sorted(
        i["image"] for i in report["images"] if any(p["status"] != "reused" for p in i["platforms"])
    )


def dagger(*args: str, engine: str) -> str:
    env = {**os.environ, "_EXPERIMENTAL_DAGGER_RUNNER_HOST": engine, "DAGGER_NO_NAG": "1"}
    proc = subprocess.run(
        [os.environ["_EXPERIMENTAL_DAGGER_CLI_BIN"], "-s", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench: dagger {' '.join(args)} failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def du(folder: Path) -> int | None:
    if not folder.is_dir():
        return None
    out = subprocess.run(["du", "-sb", str(folder)], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out else None


# The lab's second engine keeps its state here (scripts/lab: --root /var/lib/dagger-2).
ENGINE_2_WORKER = Path("/var/lib/dagger-2/worker")


def cache_state(engine: str) -> dict:
    """What an engine's cache holds: the engine's own count of entries (`entry-count`, which
    counts its call cache too: pruning does not empty it) and bytes (`disk-space-bytes`), and
    the bytes of its snapshots and content store on this machine (the layers a build reuses).
    Listing the entries themselves can take minutes on a full cache: not done."""
    state: dict = {}
    for field in ("entry-count", "disk-space-bytes"):
        try:
            text = dagger("core", "engine", "local-cache", "entry-set", field, engine=engine)
            state[field] = int(re.findall(r"\d+", text)[-1])
        except (SystemExit, IndexError, subprocess.TimeoutExpired) as err:
            state[field] = f"not known: {str(err)[:200]}"
    state["snapshots_bytes"] = du(ENGINE_2_WORKER / "snapshots")
    state["content_bytes"] = du(ENGINE_2_WORKER / "content")
    return state


def prune_fresh(engine: str) -> dict:
    """Prune the engine's cache and say what is left (no layers: nothing to build from)."""
    before = cache_state(engine)
    t0 = time.monotonic()
    dagger("core", "engine", "local-cache", "prune", engine=engine)
    seconds = round(time.monotonic() - t0, 1)
    after = cache_state(engine)
    log(f"pruned {engine} in {seconds}s: {before} -> {after}")
    return {"before": before, "after": after, "prune_seconds": seconds}


def left_after_prune(state: dict) -> int:
    """Bytes of layers the pruned engine still holds (snapshots and content store)."""
    return (state["snapshots_bytes"] or 0) + (state["content_bytes"] or 0)


def workload(name: str, run_id: str, registry_host: str, denv: dict, reps: int, out: dict,
             save) -> None:  # fmt: skip
    """Every phase of one workload into `out`, `save()` after each (a long run keeps what it
    measured so far if it is stopped): the docker side, the longest, last."""
    example, component, path, style = WORKLOADS[name]
    rid = f"{run_id}-{name.split('-')[0]}"
    tag = f"reuse-{rid}"
    project = f"{registry_host}/reuse-{rid}"
    src, dsrc = OUT / f"{name}-src", OUT / f"{name}-docker-src"
    if "cold" not in out:  # BENCH_RESUME: done already
        make_cold_copy(example, src, rid)
        make_cold_copy(example, dsrc, rid + "d")
    plan = resolve_plan(src, os.environ, {"image_tag": tag, "private_registry": project})
    declares_version = sorted(i.image for i in plan.components if "VERSION" in i.build_args)
    out |= {
        "source": str(example.relative_to(ROOT)),
        "images": len(plan.components),
        "platforms": list(plan.platforms),
        "project": project,
        "tag": tag,
        "changed": f"src/{component}/{path}",
        "declares_version": declares_version,
        "problems": out.get("problems", []),
    }
    problems = out["problems"]
    dplan = resolve_plan(dsrc, os.environ, {"image_tag": tag})

    if "cold" not in out:  # BENCH_RESUME: done already
        log(f"{name}: cold release into {project}")
        load = Path("/proc/loadavg").read_text().split()[:3]
        cold_s, report = release(src, tag, project, f"{name}-cold")
        out["cold"] = {
            "seconds": round(cold_s, 2),
            "counts": counts(report),
            "loadavg_before": load,
            "build_seconds": {
                f"{i['image']} {p['platform']}": p["seconds"]
                for i in report["images"]
                for p in i["platforms"]
            },
        }
        if rebuilt(report) != sorted(i.image for i in plan.components):
            problems.append(f"cold release reused something: {statuses(report)}")
        save()

    if "nochange" not in out:  # BENCH_RESUME: done already
        runs = []
        for n in range(reps):
            seconds, report = release(src, tag, project, f"{name}-nochange-{n + 1}")
            runs.append(seconds)
            if rebuilt(report):
                problems.append(f"no-change release {n + 1} built {rebuilt(report)}")
        out["nochange"] = {
            "runs": [round(s, 2) for s in runs],
            "median": med(runs),
            "counts": counts(report),
        }
        save()

    if "one_changed_fresh" not in out:  # BENCH_RESUME: done already
        engine2 = os.environ["LAB_ENGINE_2"]
        engines = ["--engines", ",".join(f"{p}={engine2}" for p in plan.platforms)]
        fresh_runs, prunes = [], []
        for n in range(reps):
            prunes.append(prune_fresh(engine2))
            if left_after_prune(prunes[-1]["after"]) > 10_000_000:
                problems.append(f"{engine2} kept layers after prune: {prunes[-1]['after']}")
            change(src, component, path, style, 100 + n)
            seconds, report = release(src, tag, project, f"{name}-fresh-{n + 1}", *engines)
            fresh_runs.append(seconds)
            fresh_engines = sorted({p["engine"] for i in report["images"] for p in i["platforms"]})
            if rebuilt(report) != [f"ai-infra-{component}"]:
                problems.append(f"fresh-engine release {n + 1} built {rebuilt(report)}")
        out["one_changed_fresh"] = {
            "runs": [round(s, 2) for s in fresh_runs],
            "median": med(fresh_runs),
            "counts": counts(report),
            "engines": fresh_engines,
            "prunes": prunes,
        }
        save()

    if "new_tag" not in out:  # BENCH_RESUME: done already
        log(f"{name}: a new tag, nothing else changed")
        seconds, report = release(src, f"{tag}-next", project, f"{name}-new-tag")
        out["new_tag"] = {
            "seconds": round(seconds, 2),
            "counts": counts(report),
            "rebuilt": rebuilt(report),
            "statuses": statuses(report),
        }
        if rebuilt(report) != declares_version:
            problems.append(
                f"new tag rebuilt {rebuilt(report)}; expected the images declaring VERSION "
                f"{declares_version}"
            )
        save()

    if "one_changed_docker" not in out:  # BENCH_RESUME: done already
        log(f"{name}: docker, cold (the state before the change)")
        shutil.rmtree(OUT / "docker" / "save", ignore_errors=True)
        run = build_and_save(dplan, dsrc, OUT / "docker", denv, log=log)
        out["docker_cold"] = {
            "seconds": round(run.seconds, 2),
            "build_seconds": round(run.build_seconds, 2),
            "save_seconds": round(run.save_seconds, 2),
            "save_bytes": run.bytes,
        }
        docker_runs, warm_runs, warm_counts = [], [], []
        for n in range(reps):
            change(dsrc, component, path, style, n)
            shutil.rmtree(OUT / "docker" / "save", ignore_errors=True)
            run = build_and_save(dplan, dsrc, OUT / "docker", denv, log=lambda _m: None)
            docker_runs.append(run.seconds)
            log(
                f"{name}: docker, {component} changed: {run.seconds:.1f}s "
                f"({run.build_seconds:.1f}s builds + {run.save_seconds:.1f}s saves)"
            )
            change(src, component, path, style, n)
            seconds, report = release(src, tag, project, f"{name}-one-changed-{n + 1}")
            warm_runs.append(seconds)
            warm_counts.append(counts(report))
            out["one_changed_rebuilt"] = rebuilt(report)
            if rebuilt(report) != [f"ai-infra-{component}"]:
                problems.append(f"{component} changed, warm run {n + 1}: built {rebuilt(report)}")
        shutil.rmtree(OUT / "docker" / "save", ignore_errors=True)
        remove_images(dplan, denv)
        out["one_changed_warm"] = {
            "runs": [round(s, 2) for s in warm_runs],
            "median": med(warm_runs),
            "counts": warm_counts[-1],
        }
        out["one_changed_docker"] = {
            "runs": [round(s, 2) for s in docker_runs],
            "median": med(docker_runs),
        }
        save()


def figures(name: str, w: dict) -> list[dict]:
    cold = w["cold"]["seconds"]
    nochange, warm = w["nochange"]["median"], w["one_changed_warm"]["median"]
    docker, fresh = w["one_changed_docker"]["median"], w["one_changed_fresh"]["median"]
    images = w["images"] * len(w["platforms"])
    n_warm, n_fresh = len(w["one_changed_warm"]["runs"]), len(w["one_changed_fresh"]["runs"])
    nt = w["new_tag"]["counts"]
    return [
        {
            "id": "cold_vs_docker",
            "workload": name,
            "title": "Cold release vs build.sh-style docker",
            "a": cold,
            "b": w["docker_cold"]["seconds"],
            "goal": None,
            "a_what": "release, cold (new project)",
            "b_what": f"docker build x{images} + docker save x{images}, cold",
        },
        {
            "id": "nochange_vs_cold",
            "workload": name,
            "title": "No-change release vs cold release",
            "a": nochange,
            "b": cold,
            "goal": "at most 2 s and 0.10",
            "met": nochange <= 2 and nochange / cold <= 0.10,
            "a_what": f"release again, nothing changed (median of {len(w['nochange']['runs'])})",
            "b_what": "release, cold",
        },
        {
            "id": "one_changed_vs_docker",
            "workload": name,
            "title": "One component changed, warm engine, vs build.sh-style docker",
            "a": warm,
            "b": docker,
            "goal": "at most 0.5",
            "met": warm / docker <= 0.5,
            "a_what": f"release, {w['changed']} changed (median of {n_warm})",
            "b_what": f"docker build x{images} (cache) + docker save x{images}",
        },
        {
            "id": "fresh_vs_cold",
            "workload": name,
            "title": "One component changed, fresh engine (cache pruned), vs cold release",
            "a": fresh,
            "b": cold,
            "goal": "at most 0.25",
            "met": fresh / cold <= 0.25,
            "a_what": f"release on engine-2 after prune (median of {n_fresh})",
            "b_what": "release, cold",
        },
        {
            "id": "new_tag",
            "workload": name,
            "title": "New tag, nothing else changed",
            "a": w["new_tag"]["seconds"],
            "b": cold,
            "goal": "only the images declaring VERSION rebuilt",
            "met": w["new_tag"]["rebuilt"] == w["declares_version"],
            "a_what": f"release, new tag: {nt.get('published', 0)} rows published, "
            f"{nt.get('reused', 0)} reused",
            "b_what": "release, cold",
        },
    ]


def main() -> None:
    t_start = float(os.environ.get("BENCH_T0", time.time()))
    registry_host = os.environ["LAB_REGISTRY"]
    denv = docker_env(os.environ["BENCH_DOCKER_HOST"])
    run_id = time.strftime("%m%d%H%M") + "-" + uuid.uuid4().hex[:4]
    # BENCH_RESUME=1: go on with the last run (its run id, copies and projects), skipping the
    # phases its results-reuse.json holds (a run stopped by a failure of the bench itself).
    resumed = json.loads(RESULTS.read_text()) if os.environ.get("BENCH_RESUME") else None
    if resumed is None:
        shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    import measure

    measure.OUT = OUT  # its timed() writes logs there
    names = os.environ.get("BENCH_WORKLOADS", "mini-matrix,heavy-matrix").split(",")
    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "run_id": run_id,
        "machine": machine(),
        "versions": {
            "dagger": os.environ.get("BENCH_DAGGER_VERSION", "?"),
            "docker": os.environ.get("BENCH_DOCKER_VERSION", "?"),
        },
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "workloads": {},
        "figures": [],
    }
    # The floor of any release from this CLI: starting Python and importing the pipeline and
    # the SDK, with no engine (`--version` imports what `release` does).
    floor = [
        timed([PY, "-m", "pipeline", "--version"], f"cli-floor-{n + 1}",
              env={**os.environ, "PYTHONPATH": str(ROOT)})[0]
        for n in range(REPS)
    ]  # fmt: skip
    results["cli_floor"] = {"runs": [round(s, 2) for s in floor], "median": med(floor)}
    if resumed is not None:
        results |= {k: resumed[k] for k in ("date", "run_id", "workloads", "machine")}
        at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        results["resumed"] = {"at": at, "commit": results["commit"], "cli_floor": floor}
        results["cli_floor"] = resumed["cli_floor"]
        run_id = resumed["run_id"]
    for name in names:
        t0 = time.monotonic()
        w = results["workloads"].setdefault(name, {})
        reps = REPS if name == "mini-matrix" else HEAVY_REPS
        workload(name, run_id, registry_host, denv, reps, w, save=lambda: RESULTS.write_text(
            json.dumps(results, indent=2) + "\n"))  # fmt: skip
        w["wall_seconds"] = round(time.monotonic() - t0, 1)
        results["figures"] += figures(name, w)
    for f in results["figures"]:
        f["ratio"] = round(f["a"] / f["b"], 3)
    results["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    results["total_wall_seconds"] = round(time.time() - t_start, 1)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {RESULTS.relative_to(ROOT)}")
    shutil.rmtree(OUT / "docker", ignore_errors=True)


def figures_of_partial() -> None:
    """`reuse.py --figures`: the figures of what a stopped run measured (each figure whose
    phases it holds), written into results-reuse.json as a finished run's are."""
    results = json.loads(RESULTS.read_text())
    results["figures"] = []
    for name, w in results["workloads"].items():
        for key in ("one_changed_warm", "one_changed_docker", "docker_cold"):
            w.setdefault(key, {"runs": [], "median": float("nan"), "seconds": float("nan")})
        w.setdefault("one_changed_rebuilt", [])
        results["figures"] += [f for f in figures(name, w) if f["a"] == f["a"] and f["b"] == f["b"]]
    for f in results["figures"]:
        f["ratio"] = round(f["a"] / f["b"], 3)
    results.setdefault("total_wall_seconds", round(time.time() - time.mktime(
        time.strptime(results["date"], "%Y-%m-%d %H:%M:%S %Z")), 1))  # fmt: skip
    results["machine"].setdefault("loadavg_at_end", Path("/proc/loadavg").read_text().split()[:3])
    results["stopped"] = True
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    figures_of_partial() if sys.argv[1:] == ["--figures"] else main()
