"""Resource URIs: `kbs[+<plugin>]://[<host>[:<port>]]/<seg>[/<seg>...][?<query>]`.

Host and port are ignored (the KBS URL comes from config), hence the usual
`kbs:///repo/type/tag`. `kbs://` means the `resource` plugin
(guest-components.md 4.6).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from trustee_common.errors import MalformedRequestError

_SCHEME = re.compile(r"^kbs(\+(?P<plugin>[a-z0-9_\-]+))?$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_\-.]+$")


@dataclass(frozen=True)
class ResourceUri:
    plugin: str
    path: str
    query: str = ""

    @classmethod
    def parse(cls, uri: str) -> ResourceUri:
        parts = urlsplit(uri)
        match = _SCHEME.fullmatch(parts.scheme)
        if match is None:
            raise MalformedRequestError(f"resource URI {uri!r}: scheme must be kbs or kbs+<plugin>")
        segments = parts.path.strip("/").split("/")
        if not parts.path.startswith("/") or not all(_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments):
            raise MalformedRequestError(f"resource URI {uri!r}: path must be /<segment>[/<segment>...]")
        return cls(match.group("plugin") or "resource", "/".join(segments), parts.query)

    def kbs_path(self) -> str:
        """`<plugin>/<path>[?query]` below `/kbs/v0/`."""
        return f"{self.plugin}/{self.path}" + (f"?{self.query}" if self.query else "")
