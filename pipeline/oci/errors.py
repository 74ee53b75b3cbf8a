"""How a registry's refusal reads: one line naming the registry and the user, never the
password, a URL or a CLI flag (a door adds its own hint, see LoginRequired)."""

from __future__ import annotations

from pipeline.errors import BundleError


class Refused(BundleError):
    """The registry said no (HTTP 401 or 403): trying again will not help."""


class LoginRequired(Refused):
    """The registry wants credentials and none were given."""


class UntrustedCertificate(BundleError):
    """The registry's TLS certificate is signed by a CA this host does not trust."""


class WrongProtocol(BundleError):
    """The registry answers the other protocol: plain HTTP where HTTPS was asked, or the
    reverse. No retry can help (access.wrong_protocol names the flag)."""

    def __init__(self, host: str, plain: bool) -> None:
        self.plain = plain  # it speaks plain HTTP
        said = "plain HTTP, not HTTPS" if plain else "HTTPS, not plain HTTP"
        super().__init__(f"registry {host} speaks {said}")


def refusal(
    host: str, status: int, username: str | None, what: str | None = None, detail: str = ""
) -> str:
    """Word an HTTP error status of registry ``host``. ``what`` names the refused operation;
    None stands for a whole image push (BuildKit does not say which request failed).
    ``detail`` (the registry's own words) follows any status but 401 and 403."""
    if status == 401 and username:
        return f"registry {host} refused the credentials of user {username!r} (HTTP 401)"
    if status == 401:
        return f"registry {host} requires a login (HTTP 401)"
    if status == 403:
        who = f"user {username!r}" if username else "anonymous access"
        return f"registry {host} denies {who} the right to {what or 'push'} (HTTP 403)"
    during = f"{what} → " if what else ""
    return f"registry {host}: {during}HTTP {status}{detail}"
