"""Templates (`{{VAR}}`) and the image-reference grammar their output must satisfy.

AI-Infra-Matrix renders `Dockerfile.tpl` and `dependency.conf.tpl` from `.env` values. We render
in memory (the tree is never written) and check any rendered image reference, so a missing value
can never turn into a broken name such as `/safeline-tengine:`.
"""

import re
from collections.abc import Collection, Mapping

from pipeline.errors import BadInput

VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

# Grammar of github.com/distribution/reference, without IPv6 hosts (not used by this project).
_HOST_PART = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
HOST = rf"{_HOST_PART}(?:\.{_HOST_PART})*(?::[0-9]{{1,5}})?"
PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

IMAGE_NAME_RE = re.compile(rf"{PATH_PART}(?:/{PATH_PART})*")
TAG_RE = re.compile(TAG)
# A registry prefix: a host, then optional project path (Harbor: host/project).
REGISTRY_RE = re.compile(rf"{HOST}(?:/{PATH_PART})*")
# A host is only taken as a registry when it looks like one (has '.', ':' or is localhost),
# exactly as docker does: `confluentinc/cp-kafka` is a Docker Hub path, not a host.
_PORT = r"(?::[0-9]{1,5})"
_DOMAIN = rf"(?:{_HOST_PART}(?:\.{_HOST_PART})+{_PORT}?|{_HOST_PART}{_PORT}|localhost)"
REFERENCE_RE = re.compile(rf"(?:{_DOMAIN}/)?{PATH_PART}(?:/{PATH_PART})*(?::{TAG})?(?:@{DIGEST})?")


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
    return VARIABLE.sub(lambda m: values[m.group(1)], text)


def is_reference(ref: str) -> bool:
    """True for a complete image reference such as `redis:7-alpine` or `host:5000/a/b:t`."""
    return REFERENCE_RE.fullmatch(ref) is not None


def is_image_name(name: str) -> bool:
    """True for a repository path without host or tag, such as `ai-infra-backend`."""
    return IMAGE_NAME_RE.fullmatch(name) is not None
