"""pipeline.oci.errors.refusal: one wording of a registry's refusal for the registry client and
for a push by the engine; names the registry and user, never a password, URL or CLI flag."""

import pytest

from pipeline.oci.errors import refusal


@pytest.mark.parametrize(
    ("status", "user", "what", "line"),
    [
        (401, "lab", "connect", "registry h:1 refused the credentials of user 'lab' (HTTP 401)"),
        (401, None, "connect", "registry h:1 requires a login (HTTP 401)"),
        (403, "ci", None, "registry h:1 denies user 'ci' the right to push (HTTP 403)"),
        (403, None, "put manifest v1 to p/x",
         "registry h:1 denies anonymous access the right to put manifest v1 to p/x (HTTP 403)"),
        (400, "ci", "put manifest v1 to p/x",
         "registry h:1: put manifest v1 to p/x → HTTP 400: MANIFEST_INVALID"),
        (503, None, None, "registry h:1: HTTP 503: MANIFEST_INVALID"),
    ],
)  # fmt: skip
def test_refusal_wording(status, user, what, line):
    assert refusal("h:1", status, user, what, ": MANIFEST_INVALID") == line
    assert "--" not in line and "://" not in line
