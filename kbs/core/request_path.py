"""The KBS request path, decoded once: what the handlers use and what admin ACLs match.

Each segment after `/kbs/v0/` is percent-decoded on its own (strict
UTF-8). Encodings that would let a string checked by an ACL regex differ
from the one a handler acts on are refused with `MalformedRequestError`:
an encoded `/` inside a segment, `.` and `..` segments (raw or encoded),
`?` and `#` inside a segment (they would read as a query or fragment in
the ACL target) and control characters.

`admin_target` rebuilds the path from the decoded segments, without the
query string. Upstream matches `request.uri()`, path plus query; we do
not, because no admin handler reads the query, so including it only lets
input the handler ignores change the decision: an ACL that excludes an
endpoint with a lookahead (`^/kbs/v0/(?!resource-policy$).*$`) would be
bypassed by `resource-policy?x`. Dropping the query is either harmless
(the handler ignores it) or fails closed (an ACL that requires a query
never matches). An admin endpoint that ever reads the query must add it
to the target.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from trustee_common.errors import MalformedRequestError

KBS_PREFIX = "/kbs/v0/"
_FORBIDDEN = re.compile(r"[/?#\x00-\x1f\x7f]")


def decode_segments(raw_path: str) -> list[str]:
    """The decoded segments after `/kbs/v0/` of a raw (still percent-encoded) path."""
    if not raw_path.startswith(KBS_PREFIX):
        raise MalformedRequestError(f"request path must start with {KBS_PREFIX}")
    try:
        segments = [unquote(segment, errors="strict") for segment in raw_path[len(KBS_PREFIX) :].split("/")]
    except UnicodeDecodeError:
        raise MalformedRequestError("request path is not percent-encoded UTF-8") from None
    for segment in segments:
        if segment in (".", ".."):
            raise MalformedRequestError("request path has a '.' or '..' segment")
        found = _FORBIDDEN.search(segment)
        if found is not None:
            what = "encoded '/', '?', '#' or a control character"
            raise MalformedRequestError(f"request path segment holds a forbidden character {found.group()!r} ({what})")
    return segments


def admin_target(segments: list[str]) -> str:
    """The string admin ACLs match: `/kbs/v0/<decoded segments>`, no query string."""
    return KBS_PREFIX + "/".join(segments)
