"""Plain-text output for people: aligned tables, no colour, so logs and tests read the same."""

import textwrap
from collections.abc import Sequence

from pipeline.planning.plan import Plan

# Plan lines stay within this (a terminal, a CI log); the last column wraps to fit.
WIDTH = 120
_GAP = "  "


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], width: int = WIDTH) -> str:
    """Columns padded to their widest cell; the last column is not padded, and wraps (at its
    spaces) onto lines of its own, indented to it, when a line would pass `width`."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers) - 1)]
    indent = sum(widths) + len(_GAP) * len(widths)
    lines = []
    for row in [headers, *rows]:
        cells = [str(cell).ljust(w) for cell, w in zip(row[:-1], widths, strict=True)]
        last = textwrap.wrap(
            str(row[-1]), max(width - indent, 20), break_long_words=False, break_on_hyphens=False
        )
        lines.append((_GAP.join([*cells, *last[:1]])).rstrip())
        lines += [" " * indent + piece for piece in last[1:]]
    return "\n".join(lines)


def plan_table(plan: Plan) -> str:
    """The plan as people read it: images (from which Dockerfile, after which images), their
    build arguments by name, dependencies, then what was skipped and why, and the plan's notes."""
    refs = (
        f"{plan.registry}/IMAGE:{plan.tag}" if plan.registry else f"IMAGE:{plan.tag} (no registry)"
    )
    header = f"tag {plan.tag}   platforms {', '.join(plan.platforms)}\nrefs {refs}"
    if plan.engines:  # PIPELINE_ENGINES: which engine builds which platform
        on = [f"{p} on {plan.engines.get(p, 'the default engine')}" for p in plan.platforms]
        header += f"\nengines {'; '.join(on)}"
    images = table(
        ("COMPONENT", "IMAGE", "DOCKERFILE", "TARGET", "PHASE", "NEEDS"),
        [
            (
                c.name,
                c.image,
                c.dockerfile.path,
                c.target or "-",
                c.phase,
                ", ".join(c.after) or "-",
            )
            for c in plan.components
        ],
    )
    # One Dockerfile per component, so one list of arguments: values stay in .env.
    args = {c.name: ", ".join(sorted(c.build_args)) or "-" for c in plan.components}
    parts = [header, "", images, "", table(("COMPONENT", "BUILD ARGS"), list(args.items()))]
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
    parts += [f"\nnote: {note}" for note in plan.notes]
    return "\n".join(parts)


def found_in(origins: Sequence[str]) -> str:
    """The first place an image is named, and how many more (`plan --json` lists them all)."""
    if not origins:
        return "-"
    return origins[0] + (f" +{len(origins) - 1}" if len(origins) > 1 else "")
