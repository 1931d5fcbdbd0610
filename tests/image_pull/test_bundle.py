"""`runtime_config`: the image config → OCI runtime spec conversion image-rs writes to `<bundle>/config.json`.

The expected defaults are oci-spec-rs's `Spec::default()` values (what
image-rs starts from), spelled out here independently of the module.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from guest.image.bundle import MAX_ITEMS, MAX_STRING_CHARS, config_json, parse_image_config, runtime_config
from trustee_common.errors import UnsafeImageError

A = "org.opencontainers.image."
DEFAULT_MOUNT_DESTINATIONS = ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
TMPFS_OPTIONS = ["nosuid", "noexec", "nodev", "relatime", "rw"]


def image(config: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"architecture": "amd64", "os": "linux",
                                "rootfs": {"type": "layers", "diff_ids": []}, **top}
    if config is not None:
        document["config"] = config
    return document


def test_missing_config_section_gives_the_defaults() -> None:
    spec = runtime_config(image())
    assert spec["ociVersion"] == "1.0.2-dev"
    assert spec["hostname"] == "image-rs"
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    assert spec["process"] == {
        "terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"], "cwd": "/",
        "capabilities": {"bounding": caps, "effective": caps, "inheritable": caps, "permitted": caps, "ambient": caps},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}], "noNewPrivileges": True}
    assert [m["destination"] for m in spec["mounts"]] == DEFAULT_MOUNT_DESTINATIONS
    assert spec["mounts"][0] == {"destination": "/proc", "type": "proc", "source": "proc"}
    assert spec["mounts"][2]["options"] == ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
    assert [n["type"] for n in spec["linux"]["namespaces"]] == ["pid", "network", "ipc", "uts", "mount", "cgroup"]
    assert spec["linux"]["resources"] == {"devices": []}
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]
    assert spec["linux"]["readonlyPaths"] == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
    assert spec["annotations"] == {A + "os": "linux", A + "architecture": "amd64"}
    assert runtime_config(image({})) == spec
    assert runtime_config({**image(), "config": None}) == spec


def test_entrypoint_cmd_env_workdir() -> None:
    process = runtime_config(image({"Entrypoint": ["/bin/app", "--serve"], "Cmd": ["--port", "80"],
                                    "Env": ["A=1", "PATH=/x"], "WorkingDir": "/srv"}))["process"]
    assert process["args"] == ["/bin/app", "--serve", "--port", "80"]
    assert process["env"] == ["A=1", "PATH=/x"]
    assert process["cwd"] == "/srv"
    assert runtime_config(image({"Cmd": ["/bin/true"]}))["process"]["args"] == ["/bin/true"]
    assert runtime_config(image({"Entrypoint": ["/init"], "Cmd": None}))["process"]["args"] == ["/init"]
    assert runtime_config(image({"Entrypoint": [], "Cmd": []}))["process"]["args"] == ["sh"]
    assert runtime_config(image({"Env": []}))["process"]["env"] == []
    assert runtime_config(image({"WorkingDir": ""}))["process"]["cwd"] == "/"


def test_annotations_and_label_precedence() -> None:
    top = {"os.version": "6.1", "os.features": ["f1", "f2"], "variant": "v3", "author": "me",
           "created": "2026-01-01T00:00:00Z"}
    config = {"StopSignal": "SIGTERM", "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
              "Labels": {"team": "x", A + "author": "label-author", A + "exposedPorts": "label-ports"}}
    assert runtime_config(image(config, **top))["annotations"] == {
        "team": "x", A + "author": "label-author", A + "exposedPorts": "label-ports",
        A + "stopSignal": "SIGTERM", A + "os": "linux", A + "os.version": "6.1", A + "os.features": '["f1","f2"]',
        A + "architecture": "amd64", A + "variant": "v3", A + "created": "2026-01-01T00:00:00Z"}
    annotations = runtime_config(image({"ExposedPorts": {"80/tcp": {}, "443/tcp": {}}, "Labels": {A + "os": "other"}}))
    assert annotations["annotations"][A + "exposedPorts"] == "443/tcp,80/tcp"
    assert annotations["annotations"][A + "os"] == "other"


def test_volumes_become_tmpfs_mounts_before_the_defaults() -> None:
    mounts = runtime_config(image({"Volumes": {"/data/sub": {}, "/data": {}, "/cache": {}}}))["mounts"]
    assert mounts[:3] == [{"destination": d, "type": "tmpfs", "options": TMPFS_OPTIONS}
                          for d in ("/cache", "/data", "/data/sub")]
    assert [m["destination"] for m in mounts[3:]] == DEFAULT_MOUNT_DESTINATIONS


def test_config_json_round_trips() -> None:
    spec = runtime_config(image({"Cmd": ["echo", "héllo"], "Labels": {"k": "ü"}}))
    blob = config_json(spec)
    assert "héllo".encode() in blob
    assert json.loads(blob) == spec
    assert parse_image_config(json.dumps(image()).encode()) == image()


@pytest.mark.parametrize(("document", "message"), [
    ([], "not a JSON object"),
    (image(os="windows"), "'windows' is not supported"),
    ({"os": "linux"}, "architecture is not a string"),
    (image(architecture=7), "architecture is not a string"),
    ({**image(), "config": "x"}, "'config' is not a JSON object"),
    (image({"Cmd": "/bin/sh -c true"}), "config.Cmd is not a list"),
    (image({"Entrypoint": [1]}), r"config.Entrypoint\[0\] is not a string"),
    (image({"Env": ["A=\x00"]}), r"config.Env\[0\] holds a NUL"),
    (image({"WorkingDir": ["/"]}), "WorkingDir is not a string"),
    (image({"Labels": ["a"]}), "Labels is not an object"),
    (image({"Labels": {"a": 1}}), "Labels\\['a'\\] is not a string"),
    (image({"Volumes": ["/data"]}), "Volumes is not an object of objects"),
    (image({"Volumes": {"data": {}}}), "'data' is not an absolute path"),
    (image({"Volumes": {"/data/../../etc": {}}}), "is not an absolute path without '..'"),
    (image({"ExposedPorts": {"80/tcp": "yes"}}), "ExposedPorts is not an object of objects"),
    (image({"StopSignal": 15}), "StopSignal is not a string"),
    (image(None, **{"os.features": "f"}), "os.features is not a list"),
    (image({"Cmd": ["\ud800"]}), "unpaired surrogate"),
    (image({"Cmd": ["x" * (MAX_STRING_CHARS + 1)]}), f"longer than {MAX_STRING_CHARS}"),
    (image({"Env": ["A=1"] * (MAX_ITEMS + 1)}), f"more than {MAX_ITEMS} entries"),
    (image({"Entrypoint": ["a"] * MAX_ITEMS, "Cmd": ["b"]}), f"more than {MAX_ITEMS} arguments"),
])
def test_ill_typed_configs_are_refused(document: Any, message: str) -> None:
    with pytest.raises(UnsafeImageError, match=message):
        runtime_config(document)


@pytest.mark.parametrize("blob", [b"{", b"[1]", b"\xff", b"[" * 100_000 + b"]" * 100_000])
def test_parse_image_config_refuses_non_objects(blob: bytes) -> None:
    with pytest.raises(UnsafeImageError, match="image config"):
        parse_image_config(blob)
