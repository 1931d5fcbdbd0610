"""The OCI runtime configuration (`<bundle>/config.json`) of a pulled image, converted from its image config.

`runtime_config(image_config)` turns the image config blob (as a parsed
JSON object) into an OCI runtime spec, the way upstream image-rs does
(`create_runtime_config`): the OCI image-spec "conversion" rules applied on
top of a fixed default spec. The defaults are the values image-rs inherits
from oci-spec-rs's `Spec::default()`; they are written out here as data.

Conversion:

* `process.args` = `Config.Entrypoint` + `Config.Cmd`; when both are absent
  or empty the default `["sh"]` stays.
* `process.env` = `Config.Env` verbatim when present (even empty), else the
  default `PATH=…` and `TERM=xterm`.
* `process.cwd` = `Config.WorkingDir`, `/` when absent or empty.
* `process.user` stays uid 0, gid 0: like image-rs, `Config.User` is not
  resolved against the rootfs' passwd file.
* `annotations` = `Config.Labels`, plus `org.opencontainers.image.os`,
  `.os.version`, `.os.features` (the JSON list), `.architecture`,
  `.variant`, `.author`, `.created`, `.stopSignal` and `.exposedPorts`
  (the port keys joined by commas) from the config; a label with the same
  key wins (conversion.md's precedence rule; image-rs lets the exposed
  ports override a label, the only place this module differs).
* `Config.Volumes` become tmpfs mounts (`nosuid,noexec,nodev,relatime,rw`,
  no source) placed before the default mounts, in sorted order so a
  volume's parent is mounted before it.
* `hostname` is `image-rs`; `root` is `{"path": "rootfs", "readonly": true}`.

The image config is untrusted registry content: anything ill-typed, a
non-`linux` OS (image-rs refuses those too), a string over
`MAX_STRING_CHARS`, a list or map over `MAX_ITEMS` entries, a NUL in a
process field, or a volume that is not an absolute path without `..` is an
UnsafeImageError naming the field. `parse_image_config` reads the blob
itself (bounded nesting) and `config_json` serialises the result (compact
UTF-8 JSON, as image-rs writes it). The module does no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from trustee_common.errors import UnsafeImageError, clip_repr

__all__ = ["BUNDLE_CONFIG", "HOSTNAME", "MAX_ITEMS", "MAX_STRING_CHARS", "OCI_VERSION", "config_json",
           "parse_image_config", "runtime_config"]

BUNDLE_CONFIG = "config.json"
HOSTNAME = "image-rs"
#: `Spec::default().version` in oci-spec-rs.
OCI_VERSION = "1.0.2-dev"
MAX_STRING_CHARS = 65536
#: Entries of one list or map of the image config (args, env, labels, ports, volumes).
MAX_ITEMS = 4096

ANNOTATION_PREFIX = "org.opencontainers.image."
VOLUME_OPTIONS = ("nosuid", "noexec", "nodev", "relatime", "rw")
DEFAULT_ARGS = ("sh",)
DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm")
DEFAULT_CAPABILITIES = ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")
CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
#: (destination, type, source, options) of oci-spec-rs's default mounts, in its order.
DEFAULT_MOUNTS: tuple[tuple[str, str, str, tuple[str, ...] | None], ...] = (
    ("/proc", "proc", "proc", None),
    ("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
    ("/dev/pts", "devpts", "devpts", ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")),
    ("/dev/shm", "tmpfs", "shm", ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")),  # noqa: S108 - a mount in the container
    ("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
    ("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", "ro")),
    ("/sys/fs/cgroup", "cgroup", "cgroup", ("nosuid", "noexec", "nodev", "relatime", "ro")),
)
NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup")
MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def parse_image_config(blob: bytes) -> dict[str, Any]:
    """The image config blob as a JSON object; UnsafeImageError for anything else (or nesting too deep to parse)."""
    try:
        document = json.loads(blob)
    except (ValueError, RecursionError) as exc:
        raise UnsafeImageError("image config is not valid JSON") from exc
    if not isinstance(document, dict):
        raise UnsafeImageError("image config is not a JSON object")
    return document


def runtime_config(image_config: dict[str, Any]) -> dict[str, Any]:
    """The OCI runtime spec for an image config (see the module docstring); UnsafeImageError when ill-typed."""
    if not isinstance(image_config, dict):
        raise UnsafeImageError("image config is not a JSON object")
    os_name = _text(image_config.get("os"), "os")
    architecture = _text(image_config.get("architecture"), "architecture")
    if os_name != "linux":
        raise UnsafeImageError(f"image config os {clip_repr(os_name)} is not supported (only linux)")
    section = image_config.get("config")
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise UnsafeImageError("image config 'config' is not a JSON object")
    labels = _string_map(section.get("Labels"), "config.Labels")
    implicit = {
        "stopSignal": _optional_text(section.get("StopSignal"), "config.StopSignal"),
        "exposedPorts": _joined_keys(section.get("ExposedPorts"), "config.ExposedPorts"),
        "os": os_name,
        "os.version": _optional_text(image_config.get("os.version"), "os.version"),
        "os.features": _features(image_config.get("os.features")),
        "architecture": architecture,
        "variant": _optional_text(image_config.get("variant"), "variant"),
        "author": _optional_text(image_config.get("author"), "author"),
        "created": _optional_text(image_config.get("created"), "created"),
    }
    annotations = dict(labels)
    for name, value in implicit.items():
        if value is not None and ANNOTATION_PREFIX + name not in labels:
            annotations[ANNOTATION_PREFIX + name] = value
    return {
        "ociVersion": OCI_VERSION,
        "root": {"path": "rootfs", "readonly": True},
        "mounts": _volume_mounts(section.get("Volumes")) + _default_mounts(),
        "process": _process(section),
        "hostname": HOSTNAME,
        "annotations": annotations,
        "linux": _linux(),
    }


def config_json(spec: dict[str, Any]) -> bytes:
    """`spec` as the bytes of `config.json`: compact UTF-8 JSON."""
    return json.dumps(spec, ensure_ascii=False, separators=(",", ":")).encode()


def _process(section: dict[str, Any]) -> dict[str, Any]:
    args = (_string_list(section.get("Entrypoint"), "config.Entrypoint", process=True) or []) + \
        (_string_list(section.get("Cmd"), "config.Cmd", process=True) or [])
    if len(args) > MAX_ITEMS:
        raise UnsafeImageError(f"image config Entrypoint and Cmd hold more than {MAX_ITEMS} arguments")
    env = _string_list(section.get("Env"), "config.Env", process=True)
    cwd = _optional_text(section.get("WorkingDir"), "config.WorkingDir", process=True)
    return {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": args or list(DEFAULT_ARGS),
        "env": list(DEFAULT_ENV) if env is None else env,
        "cwd": cwd or "/",
        "capabilities": {kind: list(DEFAULT_CAPABILITIES) for kind in CAPABILITY_SETS},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    }


def _volume_mounts(value: object) -> list[dict[str, Any]]:
    mounts = []
    for volume in sorted(_keys(value, "config.Volumes")):
        if not volume.startswith("/") or ".." in volume.split("/") or "\x00" in volume:
            raise UnsafeImageError(f"image config volume {clip_repr(volume)} is not an absolute path without '..'")
        mounts.append({"destination": volume, "type": "tmpfs", "options": list(VOLUME_OPTIONS)})
    return mounts


def _default_mounts() -> list[dict[str, Any]]:
    mounts = []
    for destination, kind, source, options in DEFAULT_MOUNTS:
        mount: dict[str, Any] = {"destination": destination, "type": kind, "source": source}
        if options is not None:
            mount["options"] = list(options)
        mounts.append(mount)
    return mounts


def _linux() -> dict[str, Any]:
    return {
        "resources": {"devices": []},
        "namespaces": [{"type": namespace} for namespace in NAMESPACES],
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }


def _text(value: object, what: str, *, process: bool = False) -> str:
    """A bounded, encodable string (no NUL in process fields)."""
    if not isinstance(value, str):
        raise UnsafeImageError(f"image config {what} is not a string")
    if len(value) > MAX_STRING_CHARS:
        raise UnsafeImageError(f"image config {what} is longer than {MAX_STRING_CHARS} characters")
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise UnsafeImageError(f"image config {what} holds an unpaired surrogate") from exc
    if process and "\x00" in value:
        raise UnsafeImageError(f"image config {what} holds a NUL character")
    return value


def _optional_text(value: object, what: str, *, process: bool = False) -> str | None:
    return None if value is None else _text(value, what, process=process)


def _string_list(value: object, what: str, *, process: bool = False) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise UnsafeImageError(f"image config {what} is not a list of strings")
    if len(value) > MAX_ITEMS:
        raise UnsafeImageError(f"image config {what} has more than {MAX_ITEMS} entries")
    return [_text(item, f"{what}[{number}]", process=process) for number, item in enumerate(value)]


def _string_map(value: object, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UnsafeImageError(f"image config {what} is not an object of strings")
    if len(value) > MAX_ITEMS:
        raise UnsafeImageError(f"image config {what} has more than {MAX_ITEMS} entries")
    return {_text(key, f"{what} key"): _text(item, f"{what}[{clip_repr(key, 60)}]") for key, item in value.items()}


def _keys(value: object, what: str) -> list[str]:
    """The keys of a Go-style set (`{"key": {}}`)."""
    if value is None:
        return []
    if not isinstance(value, dict) or not all(isinstance(item, dict) for item in value.values()):
        raise UnsafeImageError(f"image config {what} is not an object of objects")
    if len(value) > MAX_ITEMS:
        raise UnsafeImageError(f"image config {what} has more than {MAX_ITEMS} entries")
    return [_text(key, f"{what} key") for key in value]


def _joined_keys(value: object, what: str) -> str | None:
    return None if value is None else ",".join(sorted(_keys(value, what)))


def _features(value: object) -> str | None:
    features = _string_list(value, "os.features")
    return None if features is None else json.dumps(features, ensure_ascii=False, separators=(",", ":"))
