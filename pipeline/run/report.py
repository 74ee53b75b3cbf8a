"""The release report: every image x platform with digest, size and build time, as JSON for
machines and a Markdown table for people (and $GITHUB_STEP_SUMMARY); and its assembly from
what the builds and publishes returned."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from pipeline.planning.plan import ImagePlan, Plan
from pipeline.run import buildlog
from pipeline.run.build import LOG_TAIL_LINES, Built
from pipeline.run.engine import EngineLog
from pipeline.run.publish import Published

REDACTED = "***"


class Status(StrEnum):
    PUBLISHED = "published"
    REUSED = "reused"  # a platform in the new index that an earlier release built (reuse.py)
    EXPORTED = "exported"
    FAILED = "failed"  # an image: not (every platform) out
    BUILD_FAILED = "build-failed"  # a platform
    NOT_PUBLISHED = "not-published"  # a platform that built, of an image that did not get out


@dataclass
class PlatformRow:
    platform: str
    status: Status
    seconds: float
    digest: str | None = None
    size: int | None = None
    error: str | None = None
    engine: str | None = None  # the engine that built it: its address, or "default"
    inputs: str | None = None  # its input key (run/inputs.py)
    reused_from: str | None = None  # registry/repository@digest of the earlier build taken
    sbom: str | None = None  # its SBOM's digest (release --sbom)
    sbom_via: str | None = None  # how the registry got it: referrers | tag-schema


@dataclass
class ImageRow:
    image: str
    ref: str
    status: Status
    digest: str | None = None
    error: str | None = None
    platforms: list[PlatformRow] = field(default_factory=list)
    signature: str | None = None  # its signature manifest's digest (release --sign-key)


@dataclass
class Report:
    tag: str
    registry: str | None
    platforms: list[str]
    concurrency: int
    wall_seconds: float = 0.0
    images: list[ImageRow] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    # Why the index was read back through the engine, which gives no per-platform digest or
    # size (None: through the registry API).
    read_back_through_engine: str | None = None

    @property
    def ok(self) -> bool:
        return all(row.status != Status.FAILED for row in self.images)

    def incomplete(self, verb: str) -> str:
        """The one error line of a run that did not finish everything."""
        return f"{verb} incomplete: " + "; ".join(self.failures)

    @property
    def failures(self) -> list[str]:
        """One line per distinct failure, naming its images: a registry that is down fails
        every image the same way, and the error line should say so once."""
        by_what: dict[str, list[str]] = {}
        for image in self.images:
            bad = [p.platform for p in image.platforms if p.status == Status.BUILD_FAILED]
            if image.status == Status.FAILED:
                what = f"build failed for {', '.join(bad)}" if bad else str(image.error)
                by_what.setdefault(what, []).append(image.image)
        return [f"{', '.join(images)}: {what}" for what, images in by_what.items()]

    def to_json(self) -> dict:
        return {"ok": self.ok, **asdict(self)}

    def to_markdown(self) -> str:
        # Which engine built a row, once a run has several (PIPELINE_ENGINES).
        several = any(p.engine not in (None, "default") for i in self.images for p in i.platforms)
        engine_column = (" engine |", "---|") if several else ("", "")
        lines = [
            f"## Release {self.tag}" + (f" to {self.registry}" if self.registry else ""),
            "",
            f"{len(self.images)} images x {len(self.platforms)} platforms, "
            f"{self.wall_seconds:.0f}s wall time, up to {self.concurrency} builds at once.",
            "",
            "| image | platform | status | digest | size | seconds |" + engine_column[0],
            "|---|---|---|---|---|---|" + engine_column[1],
        ]
        for image in self.images:
            for p in image.platforms:
                digest = f"`{p.digest[:19]}`" if p.digest else ""
                lines.append(
                    f"| {image.image} | {p.platform} | {p.status} | {digest} | "
                    f"{_size(p.size)} | {p.seconds:.1f} |" + (f" {p.engine} |" if several else "")
                )
        reused = [(i.image, p) for i in self.images for p in i.platforms if p.reused_from]
        if reused:
            lines += ["", "Reused (the same inputs as an earlier release's build):", ""]
            lines += [f"- {image} {p.platform}: `{p.reused_from}`" for image, p in reused]
        if self.read_back_through_engine:
            lines += ["", f"Read back through the engine: {self.read_back_through_engine}; "
                      "so no digest or size per platform."]  # fmt: skip
        published = [i for i in self.images if i.status == Status.PUBLISHED and i.digest]
        if published:
            lines += ["", "Published indexes (pin these):", ""]
            lines += [f"- `{i.ref}@{i.digest}`" + (" (signed)" if i.signature else "")
                      + _sboms(i) for i in published]  # fmt: skip
        failed = [i for i in self.images if i.status == Status.FAILED]
        for image in failed:
            lines += ["", f"### {image.image} failed", ""]
            for p in image.platforms:
                if p.error:
                    lines += [f"{p.platform}:", "", "```", p.error, "```"]
            if image.error:
                lines += ["```", image.error, "```"]
        return "\n".join(lines) + "\n"


def _sboms(image: ImageRow) -> str:
    """How its SBOMs were attached, when they were: by the referrers API or the tag schema."""
    via = sorted({p.sbom_via for p in image.platforms if p.sbom_via})
    return f" (SBOMs: {', '.join(via)})" if via else ""


def _size(size: int | None) -> str:
    if size is None:
        return ""
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def redact(text: str | None, secrets: Iterable[str]) -> str | None:
    """Replace every secret value in a log tail or error (a build may echo its environment)."""
    if text is None:
        return None
    for value in sorted(secrets, key=len, reverse=True):
        if len(value) >= 4:  # shorter values would blank out ordinary words
            text = text.replace(value, REDACTED)
    return text


def new_report(plan: Plan, concurrency: int, seconds: float) -> Report:
    return Report(
        tag=plan.tag,
        registry=plan.registry,
        platforms=list(plan.platforms),
        concurrency=concurrency,
        wall_seconds=seconds,
        dependencies=[d.image for d in plan.dependencies],
        skipped=[{"name": s.name, "reason": s.reason} for s in plan.skipped],
    )


def image_row(
    image: ImagePlan, builds: list[Built], published: Published | None, exported: bool = False
) -> ImageRow:
    built_all = all(b.ok for b in builds)
    row = ImageRow(image=image.image, ref=image.ref, status=Status.FAILED)
    if published is not None:
        row.digest, row.error, row.signature = (
            published.digest,
            published.error,
            published.signature,
        )
    row.platforms = [platform_row(b, published, exported) for b in builds]
    if built_all and exported:
        row.status = Status.EXPORTED
    elif built_all and published is not None and not published.error:
        row.status = Status.PUBLISHED
    elif built_all and published is None:
        row.error = "not published"
    return row


def platform_row(built: Built, published: Published | None, exported: bool) -> PlatformRow:
    in_index = published is not None and built.platform in published.platforms
    manifest = published.platforms[built.platform] if in_index else None
    attached = published.sboms.get(built.platform) if in_index else None  # (digest, how)
    status = Status.BUILD_FAILED if not built.ok else Status.NOT_PUBLISHED
    if built.ok and exported:
        status = Status.EXPORTED
    elif in_index:
        status = Status.REUSED if built.reused else Status.PUBLISHED
    return PlatformRow(
        platform=built.platform,
        status=status,
        seconds=round(built.seconds, 1),
        digest=manifest.descriptor.digest if manifest else None,
        size=manifest.total_bytes if manifest else None,
        error=built.error,
        engine=built.engine,
        inputs=built.inputs,
        reused_from=built.reused.pinned if built.reused else None,
        sbom=attached[0] if attached else None,
        sbom_via=attached[1] if attached else None,
    )


def finished(report: Report, plan: Plan, log: EngineLog, secrets: Iterable[str]) -> Report:
    """The last touches once the session is over: what failed steps printed (from the
    engine's log, above BuildKit's one-line message), and no secret anywhere."""
    images = {image.image: image for image in plan.components}
    for row in report.images:
        for p in row.platforms:
            if p.status == Status.BUILD_FAILED and row.image in images:
                p.error = _with_tail(p.error, log.text, images[row.image], p.platform)
            p.error = redact(p.error, secrets)
        row.error = redact(row.error, secrets)
    return report


def _with_tail(error: str | None, log: str, image: ImagePlan, platform: str) -> str | None:
    tail = buildlog.failed_step_output(
        log, image.dockerfile.built_at, platform, image.target, LOG_TAIL_LINES
    )
    # Dagger 0.21's exec error carries the step's output itself; 0.18's did not.
    if not tail or tail[-1] in (error or "").splitlines():
        return error
    return "\n".join([*tail, error or ""]).strip()


def published_so_far(plan: Plan, published: Mapping[str, Published]) -> str:
    """For a run cut short: which images reached the registry and which did not."""
    done = [i.ref for i in plan.components if i.image in published and not published[i.image].error]
    rest = [i.image for i in plan.components if i.ref not in done]
    return f"published: {', '.join(done) or 'nothing'}; not published: {', '.join(rest) or 'none'}"
