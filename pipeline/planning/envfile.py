"""The `.env` grammar AI-Infra-Matrix uses (its build.sh sources the file), parsed by
python-dotenv: `#` comments, `export KEY=`, quotes (a double-quoted value may span lines),
CRLF, a BOM; the last of duplicate keys wins.

On top of python-dotenv, as `source .env` would and python-dotenv does not: `${VAR:-default}`
takes the default when VAR is empty too, nothing expands inside single quotes, and `${VAR}`
resolves from the keys set above it (or `above`), never from os.environ. A line python-dotenv
cannot read is an error naming the line, never a warning and a skipped line.
"""

import re
from collections import ChainMap
from collections.abc import Mapping
from io import StringIO

from dotenv.parser import Binding, parse_stream
from dotenv.variables import Variable, parse_variables

from pipeline.errors import BadInput

_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NEWLINE = re.compile(r"\r\n|\n|\r")


def parse_env(text: str, path: str, above: Mapping[str, str] | None = None) -> dict[str, str]:
    """KEY=VALUE lines, each `${VAR}` expanded; errors name `path` and the line, never a value.

    Linear in the text: each value resolves against the keys so far, never a copy of them.
    """
    values: dict[str, str] = {}
    known = ChainMap(values, dict(above or {}))
    for binding in parse_stream(StringIO(text)):
        if binding.key is None and not binding.error:  # blank lines and comments
            continue
        where = f"{path}:{_line(binding)}"
        if binding.error or binding.value is None or not _KEY_RE.fullmatch(binding.key or ""):
            raise BadInput(f"{where}: {_problem(binding)}")
        value = binding.value
        values[binding.key] = value if _single_quoted(binding) else interpolate(value, known)
    return values


def interpolate(value: str, known: Mapping[str, str]) -> str:
    """`${VAR}`: its value, or empty; `${VAR:-default}`: the default when unset or empty."""
    return "".join(
        (known.get(atom.name) or atom.default or "") if isinstance(atom, Variable) else atom.value
        for atom in parse_variables(value)
    )


def _line(binding: Binding) -> int:
    """The statement's own line: python-dotenv counts from the blank lines before it."""
    text = binding.original.string
    blank = text[: len(text) - len(text.lstrip())]
    return binding.original.line + len(_NEWLINE.findall(blank))


def _assigned(binding: Binding) -> str:
    """What follows the `=` of the statement (its key has no `=`)."""
    return binding.original.string.partition("=")[2].lstrip(" \t")


def _single_quoted(binding: Binding) -> bool:
    return _assigned(binding).startswith("'")


def _problem(binding: Binding) -> str:
    """Why a statement is refused: a quote left open on its line, or no KEY=VALUE at all."""
    rest = _assigned(binding) if binding.error else ""
    first_line = _NEWLINE.split(rest, maxsplit=1)[0]
    if rest[:1] in ("'", '"') and rest[0] not in first_line[1:]:
        return "unterminated quote"
    return "not a KEY=VALUE line"
