"""Plain-text output for people: aligned tables, no colour, so logs and tests read the same."""

from collections.abc import Sequence

from pipeline.plan import Plan


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def plan_table(plan: Plan) -> str:
    """The plan as people read it: images, then dependencies, then what was skipped and why."""
    header = (
        f"tag {plan.tag}   platforms {', '.join(plan.platforms)}   "
        f"registry {plan.registry or '(none)'}"
    )
    images = table(
        ("COMPONENT", "IMAGE", "REF", "TARGET", "PHASE", "BUILD ARGS"),
        [
            (c.name, c.image, c.ref, c.target or "-", c.phase, ", ".join(sorted(c.build_args)))
            for c in plan.components
        ],
    )
    parts = [header, "", images]
    if plan.dependencies:
        deps = [(d.name, d.image, found_in(d.origins)) for d in plan.dependencies]
        parts += ["", table(("DEPENDENCY", "IMAGE", "FOUND IN"), deps)]
    if plan.generated:
        made = [(g.path, g.origin, "yes" if g.private else "") for g in plan.generated]
        parts += ["", table(("GENERATED", "FROM", "PRIVATE KEY"), made)]
    holders = [c.image for c in plan.components if c.private_key]
    if holders:
        parts += ["", f"images holding a generated private key: {', '.join(holders)}"]
    for c in plan.components:
        if c.serves:
            users = [i.image for i in plan.components if c.image in i.reaches.values()]
            parts += [f"{c.image} serves on port {c.serves} while {', '.join(users) or 'no image'}"
                      " build (built first)"]  # fmt: skip
    if plan.skipped:
        skipped = [(s.name, s.reason) for s in plan.skipped]
        parts += ["", table(("SKIPPED", "REASON"), skipped)]
    return "\n".join(parts)


def found_in(origins: Sequence[str]) -> str:
    """The first place an image is named, and how many more (`plan --json` lists them all)."""
    if not origins:
        return "-"
    return origins[0] + (f" +{len(origins) - 1}" if len(origins) > 1 else "")
