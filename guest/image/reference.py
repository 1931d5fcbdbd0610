"""Container image references, parsed the way containerd and the docker CLI do.

A reference is `[host[:port]/]path/name[:tag][@sha256:<64 hex>]`:

- the first `/`-separated component is the registry host when it contains a
  `.` or a `:`, or is `localhost` (otherwise the whole string is a Docker Hub
  path, so `nginx` is `docker.io/library/nginx:latest`);
- path components are lower-case alphanumerics joined by `.`, `_`, `__` or
  runs of `-`; the whole repository name is at most 255 characters;
- a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` and defaults to `latest` when
  there is no digest;
- a digest pins the manifest; when both are given the digest is what is
  fetched and the tag is kept only for display (containerd's rule).

Docker Hub's canonical name is `docker.io`, but its API answers at
`registry-1.docker.io`: `ImageReference.api_host` gives the host to connect
to, `registry` the name used for credentials and registry rules. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trustee_common.errors import MalformedRequestError, clip_repr

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DEFAULT_TAG = "latest"
#: The whole reference string; a bound well above any real name.
MAX_REFERENCE_CHARS = 512
#: The repository path (distribution's limit).
MAX_REPOSITORY_CHARS = 255

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST = re.compile(rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


@dataclass(frozen=True)
class ImageReference:
    """A parsed reference. `reference` is what the manifest is fetched by: the digest if any, else the tag."""

    registry: str
    repository: str
    tag: str | None = DEFAULT_TAG
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """`host[:port]` to send distribution API requests to."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def reference(self) -> str:
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def with_location(self, registry: str, repository: str) -> ImageReference:
        """The same tag and digest at another registry or path (registry remapping)."""
        return ImageReference(registry, repository, self.tag, self.digest)


def parse_reference(text: str) -> ImageReference:
    """Parse `text`; MalformedRequestError names what is wrong."""
    if not text or len(text) > MAX_REFERENCE_CHARS:
        raise MalformedRequestError(f"image reference must be 1 to {MAX_REFERENCE_CHARS} characters")
    if text != text.strip() or any(ord(c) < 0x21 or ord(c) > 0x7E for c in text):
        raise MalformedRequestError(f"image reference {clip_repr(text)} has a space or a non-ASCII character")
    rest, digest = _split_digest(text)
    registry, path = _split_registry(rest)
    path, tag = _split_tag(path)
    repository = _repository(registry, path, text)
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return ImageReference(registry, repository, tag, digest)


def _split_digest(text: str) -> tuple[str, str | None]:
    rest, at, digest = text.partition("@")
    if not at:
        return text, None
    if not _DIGEST.fullmatch(digest):
        raise MalformedRequestError(f"image reference {clip_repr(text)}: the digest must be sha256:<64 lower-case hex>")
    return rest, digest


def _split_registry(text: str) -> tuple[str, str]:
    first, slash, rest = text.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        if not _HOST.fullmatch(first):
            raise MalformedRequestError(f"image reference {clip_repr(text)}: {clip_repr(first)} is not a valid registry host")
        host = first.lower()
        return (DOCKER_HUB if host in DOCKER_HUB_ALIASES else first), rest
    return DOCKER_HUB, text


def _split_tag(path: str) -> tuple[str, str | None]:
    head, colon, tag = path.rpartition(":")
    if not colon or "/" in tag:
        return path, None
    if not _TAG.fullmatch(tag):
        raise MalformedRequestError(f"image reference: tag {clip_repr(tag)} is not valid")
    return head, tag


def _repository(registry: str, path: str, text: str) -> str:
    if not path:
        raise MalformedRequestError(f"image reference {clip_repr(text)} names no repository")
    if len(path) > MAX_REPOSITORY_CHARS:
        raise MalformedRequestError(f"image reference: the repository name is over {MAX_REPOSITORY_CHARS} characters")
    for component in path.split("/"):
        if not _COMPONENT.fullmatch(component):
            raise MalformedRequestError(
                f"image reference {clip_repr(text)}: path component {clip_repr(component)} must be lower-case "
                "letters and digits separated by '.', '_', '__' or '-'")
    return path
