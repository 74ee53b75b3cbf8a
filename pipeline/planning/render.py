"""Templates (`{{VAR}}`).

AI-Infra-Matrix renders `Dockerfile.tpl` and `dependency.conf.tpl` from `.env` values. We render
in memory (the tree is never written); the plan checks any rendered image reference
(pipeline.oci.reference), so a missing value can never turn into a broken name such as
`/safeline-tengine:`.
"""

import re
from collections.abc import Collection, Mapping

from pipeline.errors import BadInput

VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def variables(text: str) -> list[str]:
    """Names used in a template, in order of first use."""
    return list(dict.fromkeys(VARIABLE.findall(text)))


def unset(text: str, values: Mapping[str, str], *, allow_empty: bool = False) -> list[str]:
    """Variables of `text` that have no value (absent, or empty unless allowed)."""
    return [
        name
        for name in variables(text)
        if name not in values or (not allow_empty and values[name] == "")
    ]


def render(
    text: str,
    values: Mapping[str, str],
    path: str,
    *,
    allow_empty: bool = False,
    withheld: Collection[str] = (),
) -> str:
    """Fill every `{{VAR}}`; a variable with no value is an error naming `path` and VAR.

    `allow_empty` accepts a value set to "" (an `ARG X={{X}}` default of "" is meaningful:
    nightingale's `N9E_FE_VERSION=` means "latest"). `withheld` names keys that exist but are
    kept out of builds (secret-looking or not build values), to say so instead of "set it".
    """
    missing = unset(text, values, allow_empty=allow_empty)
    if missing:
        name = missing[0]
        if name in withheld:
            raise BadInput(
                f"{path}: template variable {name} is withheld from builds "
                "(it looks secret or is not a build value)"
            )
        raise BadInput(
            f"{path}: template variable {name} has no value (set it in .env or the environment)"
        )
    return fill(text, values)


def fill(text: str, values: Mapping[str, str]) -> str:
    """Every `{{VAR}}` replaced by its value, "" when it has none (what build.sh's render does);
    callers that must not guess check `unset` first, as `render` does."""
    return VARIABLE.sub(lambda m: values.get(m.group(1), ""), text)
