"""The release report: every image x platform with digest, size and build time, as JSON for
machines and a Markdown table for people (and $GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

REDACTED = "***"


@dataclass
class PlatformRow:
    platform: str
    status: str  # published | build-failed | not-published | exported
    seconds: float
    digest: str | None = None
    size: int | None = None
    error: str | None = None


@dataclass
class ImageRow:
    image: str
    ref: str
    status: str  # published | failed | exported
    digest: str | None = None
    error: str | None = None
    platforms: list[PlatformRow] = field(default_factory=list)


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

    @property
    def ok(self) -> bool:
        return all(row.status != "failed" for row in self.images)

    @property
    def failures(self) -> list[str]:
        """One line per distinct failure, naming its images: a registry that is down fails
        every image the same way, and the error line should say so once."""
        by_what: dict[str, list[str]] = {}
        for image in self.images:
            bad = [p.platform for p in image.platforms if p.status == "build-failed"]
            if image.status == "failed":
                what = f"build failed for {', '.join(bad)}" if bad else str(image.error)
                by_what.setdefault(what, []).append(image.image)
        return [f"{', '.join(images)}: {what}" for what, images in by_what.items()]

    def to_json(self) -> dict:
        return {"ok": self.ok, **asdict(self)}

    def to_markdown(self) -> str:
        lines = [
            f"## Release {self.tag}" + (f" to {self.registry}" if self.registry else ""),
            "",
            f"{len(self.images)} images x {len(self.platforms)} platforms, "
            f"{self.wall_seconds:.0f}s wall time, up to {self.concurrency} builds at once.",
            "",
            "| image | platform | status | digest | size | seconds |",
            "|---|---|---|---|---|---|",
        ]
        for image in self.images:
            for p in image.platforms:
                digest = f"`{p.digest[:19]}`" if p.digest else ""
                lines.append(
                    f"| {image.image} | {p.platform} | {p.status} | {digest} | "
                    f"{_size(p.size)} | {p.seconds:.1f} |"
                )
        published = [i for i in self.images if i.status == "published" and i.digest]
        if published:
            lines += ["", "Published indexes (pin these):", ""]
            lines += [f"- `{i.ref}@{i.digest}`" for i in published]
        failed = [i for i in self.images if i.status == "failed"]
        for image in failed:
            lines += ["", f"### {image.image} failed", ""]
            for p in image.platforms:
                if p.error:
                    lines += [f"{p.platform}:", "", "```", p.error, "```"]
            if image.error:
                lines += ["```", image.error, "```"]
        return "\n".join(lines) + "\n"


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
