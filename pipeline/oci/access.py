"""Registry access as a person gives it, the same for every door (no typer here: the CLI's
flags are made in doors/flags.py): where a secret is, never the secret (`env:VAR` or
`file:PATH`, as Dagger's own CLI takes secrets), and the flag a registry's protocol asks for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import BadInput
from pipeline.oci.errors import WrongProtocol


@dataclass(frozen=True)
class PasswordSpec:
    """`env:VAR` or `file:PATH`: where a secret is (a password, a signing key), never the value
    itself. ``flag`` and ``what`` name it in errors."""

    kind: str
    where: str
    flag: str = "--password"

    @classmethod
    def parse(cls, text: str, flag: str = "--password", what: str = "password") -> PasswordSpec:
        kind, _, where = text.partition(":")
        if kind not in ("env", "file") or not where:
            raise BadInput(f"{flag} takes env:VAR or file:PATH, never the {what} itself")
        return cls(kind, where, flag)

    def read(self, env: Mapping[str, str]) -> str:
        if self.kind == "env":
            if not env.get(self.where):
                raise BadInput(f"{self.flag} env:{self.where}: the variable is not set")
            return env[self.where]
        try:
            return Path(self.where).read_text().strip()
        except OSError as err:
            raise BadInput(f"{self.flag} file:{self.where}: {err.strerror}") from None
        except UnicodeDecodeError:
            raise BadInput(f"{self.flag} file:{self.where}: not a text file") from None


def wrong_protocol(err: WrongProtocol) -> BadInput:
    """The flag to use, said by every door (`dagger call release` takes --plain-http too)."""
    return BadInput(f"{err}: {'pass' if err.plain else 'leave out'} --plain-http")
