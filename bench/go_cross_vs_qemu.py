"""The Go image (mini-matrix backend, target `backend`) for linux/arm64, built two ways in one
engine session with the pipeline's own helpers (pipeline.run.build.build_one):

- cross: BUILDPLATFORM = the engine's native platform (what the pipeline passes,
  pipeline.run.engine.build_platform_args), so the `FROM --platform=$BUILDPLATFORM` stage runs
  natively and `go build` cross-compiles;
- qemu: BUILDPLATFORM = linux/arm64, so the build stage (go build included) runs emulated.

Each build gets a VERSION of its own (the build stage declares ARG VERSION before its RUN
steps), so nothing of ours comes from the cache; the base images are pulled for both
platforms before any timing. Each build's /etc/build-machine (`uname -m` of the build stage)
proves where the stage ran. Usage: go_cross_vs_qemu.py SOURCE RUN_ID CROSS_REPS QEMU_REPS;
prints one JSON object.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import anyio
import dagger
from dagger import dag

from pipeline.doors.host import checkout
from pipeline.planning.plan import resolve_plan
from pipeline.run.build import build_args, build_context, build_one
from pipeline.run.engine import native_platform, session

TARGET = "linux/arm64"


async def main(source: Path, run_id: str, cross_reps: int, qemu_reps: int) -> dict:
    plan = resolve_plan(source, {}, {"image_tag": f"go-{run_id}"})
    image = next(i for i in plan.components if i.image == "ai-infra-backend")
    golang = image.build_args.get("GOLANG_IMAGE", "golang:1.19-bookworm")
    busybox = f"busybox:{image.build_args.get('BUSYBOX_VERSION', '1.36')}"
    result: dict = {"image": image.image, "platform": TARGET, "cross": [], "qemu": []}
    async with session():
        native = await native_platform()
        result["native"] = native
        for platform in {native, TARGET}:  # base images in the cache: not what we time
            await dag.container(platform=dagger.Platform(platform)).from_(golang).sync()
        await dag.container(platform=dagger.Platform(TARGET)).from_(busybox).sync()
        context = build_context(checkout(source).directory(dag))
        for kind, build_platform, reps in (
            ("cross", native, cross_reps),
            ("qemu", TARGET, qemu_reps),
        ):
            for rep in range(reps):
                args = dict(image.build_args, VERSION=f"{run_id}-{kind}-{rep}")
                variant = dataclasses.replace(image, build_args=args)
                args = build_args(variant, build_platform, TARGET)
                built = await build_one(context, variant, TARGET, args, None)
                if not built.ok:
                    raise SystemExit(f"{kind} build failed:\n{built.error}")
                machine = (await built.container.file("/etc/build-machine").contents()).strip()
                print(
                    f"{kind} #{rep + 1}: {built.seconds:.1f}s (build stage ran on {machine})",
                    file=sys.stderr,
                    flush=True,
                )
                result[kind].append({"seconds": round(built.seconds, 2), "build_machine": machine})
    return result


if __name__ == "__main__":
    src, rid, cross, qemu = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(anyio.run(main, src, rid, cross, qemu)))
