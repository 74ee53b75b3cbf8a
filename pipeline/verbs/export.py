"""The export step: every image built for every platform and written as multi-platform OCI
tarballs with the third-party images (`export_images`), or merged into one offline bundle
(`export_bundle`; pipeline.bundle writes and checks the layout). No registry is involved."""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import dagger
from dagger import dag

from pipeline.bundle.create import (
    BundleImage,
    CreateResult,
    check_bundle_request,
    create_bundle,
    image_graph,
    remove_stale,
)
from pipeline.bundle.sboms import one_sbom
from pipeline.bundle.source import copy_blob, open_source
from pipeline.errors import BadInput, BuildFailed, BundleError, writing
from pipeline.events import Events
from pipeline.oci import layout, sbom
from pipeline.oci.sign import SigningKey
from pipeline.planning.plan import Plan, check_builds_an_image
from pipeline.planning.run_config import RunConfig
from pipeline.run import engine, fleet
from pipeline.run.build import Built
from pipeline.run.orchestrate import build_in_waves, engine_steps
from pipeline.run.report import Report, finished, image_row, new_report


async def export_images(
    plan: Plan,
    run: RunConfig,
    checkout: engine.Checkout,
    deliver: engine.Deliver,
    events: Events,
    connect: engine.Connect = engine.session,
) -> Report:
    """`<image>.tar` for every fully built image and, when all built, `dependencies/*.tar`."""
    check_builds_an_image(plan, dependencies_count=True)
    refuse_needs(plan)
    async with connect() as log, fleet.fleet(plan, events) as engines:
        builds, report = await build_images(plan, run, checkout, events, engines)
        if plan.engines:
            with tempfile.TemporaryDirectory(prefix="export-") as scratch:
                await stitched_layouts(plan, builds, Path(scratch), for_bundle=False)
                await deliver(dag.host().directory(scratch))
        else:
            tarballs = image_tarballs(plan, builds)
            if report.ok:
                tarballs = tarballs.with_directory("dependencies", dependency_tarballs(plan))
            await deliver(tarballs)
    return finished(report, plan, fleet.joined_log(log, engines), run.secrets)


async def export_bundle(
    plan: Plan,
    run: RunConfig,
    checkout: engine.Checkout,
    output: Path,
    archive: str | None,
    events: Events,
    connect: engine.Connect = engine.session,
    since: Path | None = None,
    sign_key: SigningKey | None = None,
    sboms: bool = False,
) -> CreateResult:
    """The release as one OCI layout at `output` (and its archive); nothing there unless whole.
    With `since` (a previous bundle or its inventory.json), a delta of it; with `sign_key`,
    every image signed; with `sboms`, an SBOM of every image and platform (syft)."""
    check_builds_an_image(plan, dependencies_count=True)
    refuse_needs(plan)
    check_bundle_request(archive, since)  # before the builds: a wrong one is bad input
    if sboms:
        sbom.syft_path()  # no syft is bad input, before any build
    for stale in remove_stale(output):
        events.note(f"removed {stale}, left by an interrupted run")
    async with connect() as log, fleet.fleet(plan, events) as engines:
        builds, report = await build_images(plan, run, checkout, events, engines)
        if report.ok:
            with writing("the bundle", output, BundleError), scratch_beside(output) as scratch:
                with events.step("exporting images from the engine"), engine.exporting_to(output):
                    if plan.engines:
                        await stitched_layouts(plan, builds, scratch, for_bundle=True)
                    else:
                        await (
                            image_tarballs(plan, builds)
                            .with_directory("dependencies", dependency_tarballs(plan))
                            .export(str(scratch))
                        )
                with events.step(f"writing the bundle at {output}"):
                    images = bundle_images(plan, scratch)
                    return create_bundle(
                        output, images, plan.platforms, archive, since=since, sign_key=sign_key,
                        kit=plan.kit, registry=plan.registry,
                        sbom_maker=sbom.syft if sboms else None,
                    )  # fmt: skip
    report = finished(report, plan, fleet.joined_log(log, engines), run.secrets)
    raise BuildFailed("bundle not made: " + "; ".join(report.failures))


def refuse_needs(plan: Plan) -> None:
    """docker_build can take another release image only from a registry: say so before any
    build."""
    needing = [f"{i.image} reads {', '.join(i.needs)}" for i in plan.components if i.needs]
    if needing:
        raise BadInput(
            f"{'; '.join(needing)} at build time: release to a registry first, "
            "or leave them out with --components"
        )


async def build_images(
    plan: Plan,
    run: RunConfig,
    checkout: engine.Checkout,
    events: Events,
    engines: list[fleet.Engine],
) -> tuple[dict[str, list[Built]], Report]:
    started = time.monotonic()
    steps = await engine_steps(plan, run, checkout, events, engines)
    builds = await build_in_waves(plan, steps, events, published={})
    report = new_report(plan, steps.concurrency, time.monotonic() - started)
    for image in plan.components:
        report.images.append(image_row(image, builds[image.image], None, exported=True))
    return builds, report


def image_tarballs(plan: Plan, builds: dict[str, list[Built]]) -> dagger.Directory:
    """One multi-platform OCI tarball per fully built image: <image>.tar."""
    out = dag.directory()
    for image in plan.components:
        variants = [b.container for b in builds[image.image] if b.container is not None]
        if len(variants) == len(plan.platforms):
            tarball = dag.container().as_tarball(platform_variants=variants)
            out = out.with_file(f"{image.image}.tar", tarball)
    return out


async def stitched_layouts(
    plan: Plan, builds: dict[str, list[Built]], scratch: Path, for_bundle: bool
) -> None:
    """Several engines: each writes its platforms of every fully built image (all engines at
    once), and each image's layout is joined here under one index: the folder scratch/<image>
    for a bundle (it reads folders too), else the tarball scratch/<image>.tar, as
    `image_tarballs` makes it. Dependencies come from the session's engine."""
    parts = scratch / ".parts"
    done = [i for i in plan.components if all(b.ok for b in builds[i.image])]

    async def export_part(built: Built) -> None:
        assert built.container is not None
        slug = built.platform.replace("/", "-")
        await built.container.export(str(parts / built.image.image / f"{slug}.tar"))

    async with anyio.create_task_group() as group:
        for image in done:
            for built in builds[image.image]:
                group.start_soon(export_part, built)
        if len(done) == len(plan.components):  # every image out: its dependencies too
            group.start_soon(dependency_tarballs(plan).export, str(scratch / "dependencies"))
    for image in done:
        joined = scratch / image.image if for_bundle else parts / image.image / "layout"
        stitch(sorted((parts / image.image).glob("*.tar")), joined, f"image {image.image}")
        if not for_bundle:
            with tarfile.open(scratch / f"{image.image}.tar", "w") as tar:
                for path in sorted(joined.rglob("*")):
                    if path.is_file():
                        tar.add(path, arcname=str(path.relative_to(joined)))
    shutil.rmtree(parts)


def stitch(parts: list[Path], dest: Path, where: str) -> None:
    """One OCI layout at `dest` from single-platform ones (one per engine), with an image
    index of their manifests written here; no blob is re-encoded, so digests stay."""
    layout.blob_path(dest, layout.digest_bytes(b"")).parent.mkdir(parents=True)
    manifests = []
    for part in parts:
        with open_source(part) as src:
            entries = layout.loads(src.read(layout.INDEX_FILE), f"{part}: index.json")["manifests"]
            top = layout.Descriptor.parse(entries[0], f"{part}: index.json")
            read = lambda digest: src.read(layout.blob_relpath(digest))  # noqa: E731
            graph = layout.walk_image(top, read, f"{where} ({part.name})")
            for platform, manifest in graph.platforms.items():
                manifests.append(replace(manifest.descriptor, platform=platform))
                for blob in [manifest.descriptor, *manifest.blobs]:
                    target = layout.blob_path(dest, blob.digest)
                    if not target.exists():
                        copy_blob(src, blob, target)
    index = layout.image_index(manifests)
    top = {
        "mediaType": layout.OCI_INDEX,
        "digest": layout.write_blob(dest, index),
        "size": len(index),
    }
    (dest / layout.LAYOUT_FILE).write_bytes(
        layout.dumps({"imageLayoutVersion": layout.LAYOUT_VERSION})
    )
    index_file = {"schemaVersion": 2, "mediaType": layout.OCI_INDEX, "manifests": [top]}
    (dest / layout.INDEX_FILE).write_bytes(layout.dumps(index_file))


def dependency_tarballs(plan: Plan) -> dagger.Directory:
    """Third-party images (dependency.conf), pulled for every release platform."""
    out = dag.directory()
    for dep in plan.dependencies:
        variants = [
            dag.container(platform=dagger.Platform(p)).from_(dep.image) for p in plan.platforms
        ]
        out = out.with_file(
            f"{dep.name}.tar", dag.container().as_tarball(platform_variants=variants)
        )
    return out


@contextlib.contextmanager
def scratch_beside(output: Path) -> Iterator[Path]:
    """A folder for the tarballs on the bundle's file system (hard links, one rename); the pid
    in its name lets a later run tell a killed run's scratch from a live one's."""
    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(
        tempfile.mkdtemp(prefix=f".{output.name}.tarballs-{os.getpid()}-", dir=output.parent)
    )
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def layout_source(scratch: Path, name: str) -> Path:
    folder = scratch / name
    return folder if folder.is_dir() else scratch / f"{name}.tar"


def bundle_images(plan: Plan, scratch: Path) -> list[BundleImage]:
    # A folder where several engines' layouts were joined (stitched_layouts), else a tarball.
    images = [
        BundleImage(name=i.image, ref=i.ref, tag=plan.tag, source=layout_source(scratch, i.image))
        for i in plan.components
    ]
    return images + [
        BundleImage(
            name=d.name,
            ref=d.image,
            tag=d.image.rsplit(":", 1)[-1],
            source=scratch / "dependencies" / f"{d.name}.tar",
        )
        for d in plan.dependencies
    ]


def exported_sboms(plan: Plan, folder: Path) -> list[Path]:
    """An SBOM (SPDX JSON, syft) of each exported image's every platform, beside its tarball
    (`<image>.<os>-<arch>.spdx.json`), naming the manifest digest it describes. Written once
    all are made, each under a temporary name first: never a partial set that looks whole."""
    made: dict[Path, bytes] = {}
    with tempfile.TemporaryDirectory(prefix=".sbom-", dir=folder) as scratch:
        for image in bundle_images(plan, folder)[: len(plan.components)]:
            if not image.source.exists():
                continue  # not exported: it did not build everywhere
            for platform, pm in sorted(image_graph(image).platforms.items()):
                work = Path(scratch) / f"{image.name}-{platform.replace('/', '-')}"
                spdx = one_sbom(work / "none", image.source, pm, image.ref, platform,
                                sbom.syft, work)  # fmt: skip
                made[folder / f"{image.name}.{platform.replace('/', '-')}.spdx.json"] = spdx
    for path, spdx in made.items():
        partial = path.with_name(f".{path.name}.partial")
        with writing("an SBOM", path, BundleError):
            partial.write_bytes(spdx)
            partial.rename(path)
    return list(made)
