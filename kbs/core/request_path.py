"""The KBS request path, decoded once: what the handlers use and what admin ACLs match.

Each segment after `/kbs/v0/` is percent-decoded on its own (strict
UTF-8). Encodings that would let a string checked by an ACL regex differ
from the one a handler acts on are refused with `MalformedRequestError`:
an encoded `/` inside a segment, `.` and `..` segments (raw or encoded),
`?` and `#` inside a segment (they would blur the path/query boundary of
the ACL target) and control characters.

`admin_target` rebuilds the path from the decoded segments and appends
`?` plus the raw query string when there is one, as upstream matches the
path with its query (`request.uri()`).
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


def admin_target(segments: list[str], raw_query: str) -> str:
    """The string admin ACLs match: `/kbs/v0/<decoded segments>[?<raw query>]`."""
    path = KBS_PREFIX + "/".join(segments)
    return f"{path}?{raw_query}" if raw_query else path
