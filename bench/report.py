"""From bench/results.json: the table (stdout), bench/results.png and bench/RESULTS.md."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS, PNG, MD = BENCH / "results.json", BENCH / "results.png", BENCH / "RESULTS.md"
REUSE = BENCH / "results-reuse.json"  # bench/run --reuse (bench/reuse.py)


def human(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 1e6:.1f} MB"
    return f"{value:.1f} s"


def table(results: dict) -> str:
    rows = ["| # | figure | A | B | A / B |", "|---|---|---|---|---|"]
    for n, f in enumerate(results["figures"], 1):
        rows.append(
            f"| {n} | {f['title']} | {f['a']['what']}: **{human(f['a']['value'], f['unit'])}** "
            f"| {f['b']['what']}: **{human(f['b']['value'], f['unit'])}** | **{f['ratio']:.2f}** |"
        )
    return "\n".join(rows)


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = results["figures"]
    fig, ax = plt.subplots(figsize=(10, 0.9 * len(figs) + 1.6), dpi=110)
    labels = [f"{n}. {f['title']}" for n, f in enumerate(figs, 1)]
    ratios = [f["ratio"] for f in figs]
    y = range(len(figs))[::-1]
    ax.barh(list(y), ratios, color="#2a7ab9", height=0.6)
    ax.set_xscale("log")
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_yticks(list(y), labels, fontsize=9)
    ax.set_xlabel("ratio A / B (log scale; 1 = equal)")
    lo, hi = min(ratios + [1]), max(ratios + [1])
    ax.set_xlim(lo / 3, hi * 6)
    for yi, f in zip(y, figs, strict=True):
        text = (
            f"{f['ratio']:.2f}  ({human(f['a']['value'], f['unit'])} / "
            f"{human(f['b']['value'], f['unit'])})"
        )
        ax.text(f["ratio"] * 1.08, yi, text, va="center", fontsize=8.5)
    m = results["machine"]
    ax.set_title(
        f"AI-Infra-Matrix pipeline benchmarks, {results['date']}\n"
        f"{m['nproc']} CPUs, {m['memory_gib']} GiB, {m['cpu_model']}; Dagger "
        f"{results['versions']['dagger']} vs docker.io {results['versions']['docker']}",
        fontsize=9.5,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def native_arm64_estimate(s: dict) -> list[str]:
    """On paper: AI-Infra-Matrix's Go images with a native arm64 engine, from figure 3."""
    go = s["go_arm64"]
    native = statistics.median(r["seconds"] for r in go["cross"])
    qemu = statistics.median(r["seconds"] for r in go["qemu"])
    return [
        "## On paper: a native arm64 engine for AI-Infra-Matrix's Go images",
        "",
        f"Here the backend's Go build stage took {native:.1f} s native and {qemu:.1f} s under "
        f"QEMU ({qemu / native:.1f}x). No AI-Infra-Matrix Dockerfile uses "
        "`--platform=$BUILDPLATFORM`, so on one amd64 engine every arm64 Go build runs emulated "
        "and the arm64 side sets the release time. With `PIPELINE_ENGINES` naming a native "
        "arm64 engine (figure 8 runs both engines on this one machine, so it cannot show it), "
        "each Go image's arm64 build takes about its native time, in parallel with amd64 on "
        f"the other engine: the Go images' part of a release shrinks by about {qemu / native:.0f}x "
        "(its emulated arm64 builds), bounded below by the amd64 builds and the pushes.",
        "",
    ]


def markdown(results: dict) -> str:
    m = results["machine"]
    s = results["measurements"]
    last = s["cold_pairs"][-1]
    docker_builds = ", ".join(
        f"{b['image'].removeprefix('ai-infra-')} {b['platform'].split('/')[1]} {b['seconds']:.1f}"
        for b in last["docker"]["builds"]
    )
    pipeline_builds = ", ".join(
        f"{k.removeprefix('ai-infra-').replace('linux/', '')} {v:.1f}"
        for k, v in last["pipeline"]["build_seconds"].items()
    )
    notes = [f"- {f['title']}: {f['note']}" for f in results["figures"] if f["note"]]
    problems = [f"- {p}" for p in results["problems"]] or ["- none"]
    reps = results["settings"]["repetitions_short"]
    return "\n".join(
        [
            "# Benchmark results (last run of `bench/run`)",
            "",
            f"- date: {results['date']} (run `{results['run_id']}`), "
            f"total wall time of `bench/run`: {results['total_wall_seconds'] / 60:.1f} min",
            f"- machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB memory, "
            f"kernel {m['kernel']}; load average {' '.join(m['loadavg_at_start'])} at the start, "
            f"{' '.join(m['loadavg_at_end'])} at the end (other work shared the machine and the "
            "engine)",
            f"- Dagger engine {results['versions']['dagger']} (the lab's); Debian docker.io "
            f"{results['versions']['docker']} with its bundled BuildKit (`DOCKER_BUILDKIT=1`)",
            f"- repetitions: median of {reps} (figures 1, 2, 5-8 and the cross-compiled build); "
            "the emulated Go build once",
            "",
            table(results),
            "",
            "![ratios](results.png)",
            "",
            *native_arm64_estimate(s),
            "## Method",
            "",
            "- Cold (figure 1): each run gets its own copy of examples/mini-matrix in which every "
            "file a Dockerfile COPYs has a comment line naming the run, and its own tag (every "
            "Dockerfile passes `ARG VERSION` to its RUN steps), so no step of ours comes from a "
            "cache; base images are in both builders' caches beforehand (an untimed warm-up "
            "build on each side). The engine's cache is not pruned: it is shared with other work.",
            f"- The pipeline's side is `release` to {results['settings']['release_target']}: "
            "build, push, read back. The docker side is one `docker build --platform` per image "
            "per arch, one after another, then one `docker save` per image per arch, with the "
            "pipeline's own Dockerfile text and build arguments, on a private dockerd "
            "(`--bridge=none --iptables=false`, builds with `--network host`, the lab's registry "
            "as docker.io mirror). Pairs alternate which side runs first.",
            "- Figure 3 builds the backend target for linux/arm64 in one engine session with "
            "`pipeline.run.build.build_one`: BUILDPLATFORM native (the pipeline's way) or "
            "linux/arm64 (go build under QEMU); each with its own VERSION.",
            "- Figure 4 counts every file of the bundle directory; the docker side is the last "
            "cold run's `docker save` tarballs plus `docker pull --platform` + `docker save` of "
            "the two third-party images, per arch.",
            "- Figure 5: `bundle push` of that bundle into a new project of the plain registry "
            "(a new uuid each time), then again into the last one.",
            "- Figure 6: one more line in a file gateway COPYs, in the last cold copy of each "
            "side, then the same command again with the same tag: the pipeline rebuilds gateway "
            "and publishes every image (the others unchanged); docker runs every build (all "
            "cached but gateway's) and every save.",
            "- Figure 7: the lower bound of each cold release is the CPU seconds the engine and "
            "its reaped children (runc, every build step) used during it, divided by the CPUs, "
            "plus its bytes (manifests, configs, layers of every platform) at the rate of "
            "figure 5's push into an empty project; the figure is the median over the cold runs.",
            "",
            "## Notes",
            "",
            *notes,
            f"- last docker cold run, seconds per build: {docker_builds}; saves "
            f"{last['docker']['save_seconds']:.1f} s",
            f"- last pipeline cold release, seconds per build (in parallel, up to 4 at once): "
            f"{pipeline_builds}",
            f"- classic docker builder (`DOCKER_BUILDKIT=0`) on the backend Dockerfile: "
            f"`{results['docker_classic_builder']}`",
            "",
            "## Problems",
            "",
            *problems,
            "",
        ]
    )


def reuse_table(reuse: dict) -> str:
    names = list(reuse["workloads"])
    rows = [
        "| # | figure | goal | " + " | ".join(f"{n}: A / B" for n in names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    by_id: dict[str, dict[str, dict]] = {}
    for f in reuse["figures"]:
        by_id.setdefault(f["id"], {})[f["workload"]] = f
    for n, (fid, per) in enumerate(by_id.items(), 1):
        first = next(iter(per.values()))
        cells = []
        for name in names:
            f = per.get(name)
            if f is None:
                cells.append("-")
                continue
            met = "" if f["goal"] is None else (" (met)" if f["met"] else " (**not met**)")
            if fid == "new_tag":
                nt = reuse["workloads"][name]["new_tag"]["counts"]
                cells.append(
                    f"{nt.get('published', 0)} published, {nt.get('reused', 0)} reused; "
                    f"{f['a']:.1f} s / {f['b']:.1f} s cold{met}"
                )
            else:
                cells.append(f"{f['a']:.1f} s / {f['b']:.1f} s = **{f['ratio']:.2f}**{met}")
        rows.append(f"| R{n} | {first['title']} | {first['goal'] or '-'} | {' | '.join(cells)} |")
    return "\n".join(rows)


def layers(state: dict) -> str:
    return f"{((state['snapshots_bytes'] or 0) + (state['content_bytes'] or 0)) / 1e6:.1f} MB"


def reuse_markdown(reuse: dict) -> list[str]:
    m = reuse["machine"]
    lines = [
        "## Reuse of unchanged images (last run of `bench/run --reuse`)",
        "",
        f"- date: {reuse['date']} (run `{reuse['run_id']}`, commit `{reuse['commit']}`), total "
        f"wall time {reuse['total_wall_seconds'] / 60:.1f} min; load average "
        f"{' '.join(m['loadavg_at_start'])} at the start, {' '.join(m['loadavg_at_end'])} at "
        "the end (other test runs shared the machine and the engines)",
        *(
            [
                f"- resumed at {reuse['resumed']['at']} (commit `{reuse['resumed']['commit']}`, "
                "`BENCH_RESUME=1`) after the bench itself failed (the docker baseline's AppHub "
                "address, fixed in between): the phases measured before were kept. The docker "
                "cold build after the resume hit the cache of the failed attempt's docker builds "
                "of the same copy (mini-matrix's did: its R1 is not a cold figure; R3 is not "
                "affected, docker's cache being warm there anyway)"
            ]
            if "resumed" in reuse
            else []
        ),
        f"- Dagger engine {reuse['versions']['dagger']}; Debian docker.io "
        f"{reuse['versions']['docker']}; {m['nproc']} CPUs",
        "",
        reuse_table(reuse),
        "",
        *(
            [
                "The run stopped before every phase was measured (`reuse.py --figures` made the "
                "figures of what it holds): `-` is a figure not measured.",
                "",
            ]
            if reuse.get("stopped")
            else []
        ),  # fmt: skip
        f"The floor of any release from this CLI (`python -m pipeline --version`: Python, the "
        f"pipeline and the SDK imported, no engine): runs {reuse['cli_floor']['runs']} s"
        + (
            f" at the start, {[round(x, 2) for x in reuse['resumed']['cli_floor']]} s at the resume"
            if "resumed" in reuse
            else ""
        )
        + ".",
        "",
        "Method (bench/reuse.py): per workload, a cache-busted copy (cold_input.py) and its own "
        "tag, every release into one new project of the lab's plain registry. Cold: the first "
        "release there, on the lab's engine (base images in its cache). No change: the same "
        "release again. Fresh engine: one more line in the changed file, then the lab's second "
        "engine, its cache pruned and checked empty before each run, builds every platform "
        "(`--engines linux/amd64=$LAB_ENGINE_2,linux/arm64=$LAB_ENGINE_2`), into the same "
        "project. New tag: the same source, a new tag. Last, one changed (warm): docker builds "
        "its own cold copy the build.sh way, then after one more line in the changed file "
        "every `docker build` again (cached but the changed image's) and every `docker save`; "
        "the pipeline: one more line in its copy, the same release (first tag) on the lab's "
        "engine. The docker cold run pulls its base images from the lab's registry (docker.io "
        "mirror) when it does not hold them.",
        "",
    ]
    for name, w in reuse["workloads"].items():
        cold_builds = ", ".join(
            f"{k.removeprefix('ai-infra-').replace('linux/', '')} {v:.0f}"
            for k, v in w["cold"]["build_seconds"].items()
        )
        prunes = "; ".join(
            f"snapshots + content store {layers(p['before'])} -> {layers(p['after'])} "
            f"(entry-count {p['before']['entry-count']} -> {p['after']['entry-count']}, "
            f"{p['prune_seconds']:.0f} s)"
            for p in w["one_changed_fresh"]["prunes"]
        )
        lines += [
            f"### {name} ({w['source']}: {w['images']} images x {len(w['platforms'])} platforms)",
            "",
            f"- cold: {w['cold']['seconds']:.1f} s, rows {w['cold']['counts']}; seconds per "
            f"build: {cold_builds}",
            (
                f"- docker cold: {w['docker_cold']['seconds']:.1f} s "
                f"({w['docker_cold']['build_seconds']:.1f} s builds + "
                f"{w['docker_cold']['save_seconds']:.1f} s saves, "
                f"{w['docker_cold']['save_bytes'] / 1e6:.0f} MB saved)"
                if "build_seconds" in w["docker_cold"]
                else "- docker cold, docker one changed, pipeline one changed (warm): not measured"
            ),
            f"- no change: runs {w['nochange']['runs']} s, rows {w['nochange']['counts']}",
            *(
                [
                    f"- {w['changed']} changed, warm: runs {w['one_changed_warm']['runs']} s, "
                    f"rows {w['one_changed_warm']['counts']} (built: "
                    f"{', '.join(w['one_changed_rebuilt'])}); docker: runs "
                    f"{w['one_changed_docker']['runs']} s"
                ]
                if w["one_changed_warm"]["runs"]
                else []
            ),
            f"- {w['changed']} changed, fresh engine: runs {w['one_changed_fresh']['runs']} s, "
            f"rows {w['one_changed_fresh']['counts']}, engines "
            f"{', '.join(w['one_changed_fresh']['engines'])}; prune: {prunes}",
            f"- new tag: {w['new_tag']['seconds']:.1f} s, rebuilt "
            f"{', '.join(w['new_tag']['rebuilt'])}; declaring VERSION: "
            f"{', '.join(w['declares_version'])}",
            *(f"- problem: {p}" for p in w["problems"]),
            "",
        ]
    return lines


def main() -> None:
    results = json.loads(RESULTS.read_text())
    print(table(results))
    chart(results, PNG)
    text = markdown(results)
    if REUSE.exists():
        reuse = json.loads(REUSE.read_text())
        if "total_wall_seconds" in reuse:  # a finished run
            print("\n" + reuse_table(reuse))
            text += "\n" + "\n".join(reuse_markdown(reuse))
    MD.write_text(text)
    print(
        f"\nwrote {RESULTS.name}, {PNG.name}, {MD.name} in bench/; "
        f"total wall time {results['total_wall_seconds'] / 60:.1f} min",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
