"""Showing storage URLs without their secrets (no driver imports, so cheap to import anywhere)."""

from __future__ import annotations

import re

_PASSWORD_PARAM = re.compile(r"(password=)[^&\s]*")


def redact_url(url: str) -> str:
    """The URL with its password (userinfo or `password=` parameter) replaced by `***`."""
    scheme, sep, rest = url.partition("://")
    at = rest.rfind("@")
    colon = rest.find(":")
    if sep and at >= 0 and 0 <= colon < at and "/" not in rest[:colon]:
        rest = f"{rest[:colon]}:***{rest[at:]}"
    return _PASSWORD_PARAM.sub(r"\1***", f"{scheme}{sep}{rest}")
