"""The clevis pin `trustee` driven by Debian's own `clevis`, against real processes.

`trustee run` (KBS, AS, RVPS) and `trustee guest` (AA, CDH, REST API) run
on loopback; `clevis encrypt trustee CONFIG` stores a fresh key in the KBS
through the admin API and `clevis decrypt` (which finds our pin through
`clevis.pin` in the JWE header and `PATH`) gets it back through the
guest's CDH only while the KBS's resource policy allows it. The JWE is
also opened by the `jose` tool clevis itself uses, with the key fetched
through the guest REST API, so its format is checked independently.
Skipped only when clevis is not installed (Debian package `clevis`).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.procs import BIN, Proc, script
from tests.tools.stack import TrusteeRun, clean_env, free_ports, run_tool

if shutil.which("clevis") is None or shutil.which("jose") is None:
    pytest.skip("clevis is not installed (Debian package clevis; scripts/system-deps.sh installs it)", allow_module_level=True)

pytestmark = pytest.mark.e2e

DATA = b"luks passphrase \x00\x01\xfe" * 3
DISK_PATH = "default/disk/root"
DISK_ONLY_POLICY = """package policy
import rego.v1

default allow := false

allow if {
    data.plugin == "resource"
    startswith(data["resource-path"], "default/disk/")
}
"""
#: The policy docs/disk-encryption.md recommends: disk keys only to a real TEE whose every appraisal is affirming.
ATTESTED_ONLY_POLICY = """package policy
import rego.v1

default allow := false

allow if {
    data.plugin == "resource"
    startswith(data["resource-path"], "default/disk/")
    count(input.submods) > 0
    every submod in input.submods {
        submod["ear.status"] == "affirming"
    }
    not input.submods.cpu0["ear.veraison.annotated-evidence"].sample
}
"""
PINS = {"clevis-encrypt-trustee": "clevis_trustee.encrypt", "clevis-decrypt-trustee": "clevis_trustee.decrypt"}


@dataclass
class Stack:
    server: TrusteeRun
    guest: Proc
    rest_url: str
    cdh_port: int
    workdir: Path
    env: dict[str, str]


def pin_dir(base: Path) -> Path:
    """Where `clevis` finds our pins: the installed console scripts, or the same entry points written here.

    An editable install made before the pins were added has no console scripts for them; the
    scripts written here are what pip would write (import the module, call `main`).
    """
    if all((BIN / name).exists() for name in PINS):
        return BIN
    folder = base / "pins"
    folder.mkdir()
    for name, module in PINS.items():
        path = folder / name
        path.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import main\nsys.exit(main())\n")
        path.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("clevis")
    server = TrusteeRun(base / "trustee-data", base / "trustee.log")
    rest, aa, cdh = free_ports(3)
    try:
        guest = Proc([script("trustee"), "guest", "--kbs-url", server.url, "--rest-port", str(rest), "--aa-port", str(aa),
                      "--cdh-port", str(cdh), "--data-dir", str(base / "trustee-guest")],
                     base / "guest.log", port=rest, env=clean_env(), timeout=120)
    except BaseException:
        server.stop()
        raise
    env = clean_env(PATH=f"{pin_dir(base)}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("CLEVIS_TRUSTEE_CDH", None)
    yield Stack(server, guest, f"http://127.0.0.1:{rest}", cdh, base, env)
    guest.stop()
    server.stop()


def set_policy(stack: Stack, rego: str) -> None:
    policy = stack.workdir / "policy.rego"
    policy.write_text(rego)
    result = run_tool("kbs-client", "--url", stack.server.url, "config", "--admin-token-file", str(stack.server.admin_token),
                      "set-resource-policy", "--policy-file", str(policy))
    assert result.returncode == 0, result.stderr


def clevis(stack: Stack, *args: str, data: bytes, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run Debian's clevis in an empty folder: no default admin-token file (./trustee-data/admin/token) is found there."""
    cwd = stack.workdir / "cwd"
    cwd.mkdir(exist_ok=True)
    return subprocess.run(["clevis", *args], input=data, capture_output=True, env=env or stack.env, cwd=cwd, timeout=180,
                          check=False)


def pin_config(stack: Stack, path: str = DISK_PATH, **extra: str) -> str:
    return json.dumps({"url": stack.server.url, "path": path, "admin_token_file": str(stack.server.admin_token),
                       "cdh": stack.rest_url, **extra})


def encrypt(stack: Stack, path: str = DISK_PATH, **extra: str) -> bytes:
    result = clevis(stack, "encrypt", "trustee", pin_config(stack, path, **extra), data=DATA)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def header(jwe: bytes) -> dict[str, object]:
    segment = jwe.split(b".")[0]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4)))
    return decoded


def decrypt_error(stack: Stack, jwe: bytes, env: dict[str, str] | None = None) -> str:
    result = clevis(stack, "decrypt", data=jwe, env=env)
    assert result.returncode != 0
    assert result.stdout == b""
    return result.stderr.decode()


def test_pin_summary_and_usage(stack: Stack) -> None:
    """`clevis` finds pins on PATH (it lists only those next to itself, so the summary is checked directly)."""
    summary = subprocess.run(["clevis-encrypt-trustee", "--summary"], capture_output=True, text=True, env=stack.env, timeout=60,
                             check=False)
    assert summary.returncode == 0 and "Trustee KBS" in summary.stdout
    usage = clevis(stack, "encrypt", "trustee", data=b"")
    assert usage.returncode == 2 and b"url: <string>" in usage.stderr


def test_round_trip_while_the_policy_allows(stack: Stack) -> None:
    set_policy(stack, DISK_ONLY_POLICY)
    jwe = encrypt(stack)
    assert jwe.count(b".") == 4
    protected = header(jwe)
    assert protected["alg"] == "dir" and protected["enc"] == "A256GCM"
    assert protected["clevis"] == {"pin": "trustee", "trustee": {"url": stack.server.url, "path": DISK_PATH, "cdh": stack.rest_url}}
    result = clevis(stack, "decrypt", data=jwe)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == DATA


def test_jwe_carries_no_secret(stack: Stack) -> None:
    set_policy(stack, DISK_ONLY_POLICY)
    jwe = encrypt(stack, "default/disk/nosecret")
    token = stack.server.admin_token.read_text().strip()
    assert token.encode() not in jwe and str(stack.server.admin_token).encode() not in jwe
    key = fetch_through_rest(stack, "default/disk/nosecret")
    assert json.loads(key)["k"].encode() not in jwe


def fetch_through_rest(stack: Stack, path: str) -> bytes:
    result = subprocess.run(["curl", "-sSf", f"{stack.rest_url}/cdh/resource/{path}"], capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_jose_opens_the_jwe_with_the_kbs_key(stack: Stack) -> None:
    """clevis's own JOSE tool decrypts our JWE with the key the KBS holds: the format is standard."""
    set_policy(stack, DISK_ONLY_POLICY)
    jwe = encrypt(stack, "default/disk/jose")
    key = stack.workdir / "jose.jwk"
    key.write_bytes(fetch_through_rest(stack, "default/disk/jose"))
    result = subprocess.run(["jose", "jwe", "dec", "-k", str(key), "-i-"], input=jwe, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == DATA


def test_round_trip_through_cdh_grpc(stack: Stack) -> None:
    set_policy(stack, DISK_ONLY_POLICY)
    jwe = encrypt(stack, "default/disk/grpc", cdh=f"grpc://127.0.0.1:{stack.cdh_port}")
    result = clevis(stack, "decrypt", data=jwe)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == DATA


def test_deny_policy_refuses_with_a_clear_message(stack: Stack) -> None:
    set_policy(stack, DISK_ONLY_POLICY)
    jwe = encrypt(stack, "default/disk/denied")
    set_policy(stack, "package policy\nimport rego.v1\n\ndefault allow := false\n")
    try:
        for cdh in (stack.rest_url, f"grpc://127.0.0.1:{stack.cdh_port}"):
            error = decrypt_error(stack, jwe, env={**stack.env, "CLEVIS_TRUSTEE_CDH": cdh})
            assert "refused to release default/disk/denied" in error, error
            assert "Traceback" not in error
    finally:
        set_policy(stack, DISK_ONLY_POLICY)


def test_attested_only_policy_refuses_the_sample_attester(stack: Stack) -> None:
    """The docs' policy: this guest has no TEE (sample evidence), so its disk key stays in the KBS."""
    set_policy(stack, DISK_ONLY_POLICY)
    jwe = encrypt(stack, "default/disk/attested")
    set_policy(stack, ATTESTED_ONLY_POLICY)
    try:
        assert "refused to release default/disk/attested" in decrypt_error(stack, jwe)
    finally:
        set_policy(stack, DISK_ONLY_POLICY)


def flip(jwe: bytes, part: int) -> bytes:
    parts = jwe.strip().split(b".")
    segment = bytearray(parts[part])
    segment[len(segment) // 2] = ord("A") if segment[len(segment) // 2] != ord("A") else ord("B")
    parts[part] = bytes(segment)
    return b".".join(parts)


def test_tampered_jwe_is_refused(stack: Stack) -> None:
    set_policy(stack, DISK_ONLY_POLICY)
    jwe = encrypt(stack, "default/disk/tamper")
    for part in (2, 3, 4):
        assert "integrity check failed" in decrypt_error(stack, flip(jwe, part))


def test_altered_header_is_refused(stack: Stack) -> None:
    """Same key, same path, one header member changed: the header is the GCM additional data."""
    set_policy(stack, DISK_ONLY_POLICY)
    jwe = encrypt(stack, "default/disk/header")
    protected = header(jwe)
    protected["extra"] = "x"
    encoded = base64.urlsafe_b64encode(json.dumps(protected).encode()).rstrip(b"=")
    assert "integrity check failed" in decrypt_error(stack, b".".join([encoded, *jwe.split(b".")[1:]]))


def test_rebinding_a_path_orphans_the_old_jwe_with_a_clear_message(stack: Stack) -> None:
    set_policy(stack, DISK_ONLY_POLICY)
    old = encrypt(stack, "default/disk/rebound")
    encrypt(stack, "default/disk/rebound")
    assert "is not the one this JWE was made with" in decrypt_error(stack, old)


def test_cdh_down_is_named(stack: Stack) -> None:
    set_policy(stack, DISK_ONLY_POLICY)
    jwe = encrypt(stack, "default/disk/down")
    closed = free_ports(1)[0]
    error = decrypt_error(stack, jwe, env={**stack.env, "CLEVIS_TRUSTEE_CDH": f"http://127.0.0.1:{closed}"})
    assert f"cannot reach the guest REST API at http://127.0.0.1:{closed}" in error
    error = decrypt_error(stack, jwe, env={**stack.env, "CLEVIS_TRUSTEE_CDH": f"grpc://127.0.0.1:{closed}"})
    assert f"cannot reach the confidential data hub at 127.0.0.1:{closed}" in error


def test_encrypt_without_admin_token_prints_nothing(stack: Stack) -> None:
    config = json.dumps({"url": stack.server.url, "path": "default/disk/noadmin"})
    result = clevis(stack, "encrypt", "trustee", config, data=DATA, env={**stack.env, "HOME": str(stack.workdir)})
    assert result.returncode == 1 and result.stdout == b""
    assert "refused to store the key at default/disk/noadmin" in result.stderr.decode()


@pytest.mark.parametrize(("config", "message"), [
    ('{"url": "http://127.0.0.1:1"}', "missing the required 'path' property"),
    ('{"url": "http://127.0.0.1:1", "path": "disk/root"}', "path: 'disk/root' is not <repository>/<type>/<tag>"),
    ('{"url": "ftp://x", "path": "default/disk/a"}', "url: 'ftp://x' is not an http:// or https:// URL"),
    ('{"url": "http://127.0.0.1:1", "path": "default/disk/a", "thp": "x"}', "unknown key 'thp'"),
    ('{"url": "http://127.0.0.1:1", "path": "default/disk/a", "cdh": "tcp://x"}', "cdh: 'tcp://x' is not"),
    ('{"url": "http://127.0.0.1:1", "path": "default/disk/a", "admin_token_file": "/nonexistent"}',
     "cannot read admin_token_file /nonexistent"),
    ("[1]", "configuration must be a JSON object"),
])
def test_bad_config_is_named(stack: Stack, config: str, message: str) -> None:
    result = clevis(stack, "encrypt", "trustee", config, data=DATA)
    assert result.returncode == 1 and result.stdout == b""
    error = result.stderr.decode()
    assert message in error and "Traceback" not in error, error


def test_other_pins_jwe_is_refused_by_ours(stack: Stack) -> None:
    """`clevis decrypt` dispatches on clevis.pin; our pin run directly on another pin's JWE says so."""
    other = clevis(stack, "encrypt", "null", "{}", data=DATA)
    assert other.returncode == 0, other.stderr.decode()
    result = subprocess.run(["clevis-decrypt-trustee"], input=other.stdout, capture_output=True, env=stack.env, timeout=60,
                            check=False)
    assert result.returncode == 1 and "JWE pin mismatch" in result.stderr.decode()


LUKS_TOOLS = ("clevis-luks-bind", "clevis-luks-pass", "cryptsetup")


def luks_volume(stack: Stack) -> Path:
    """A LUKS2 volume in a plain file (no loop device, no device-mapper); skip when this sandbox cannot make one."""
    missing = [tool for tool in LUKS_TOOLS if shutil.which(tool, path=f"{stack.env['PATH']}{os.pathsep}/usr/sbin:/sbin") is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian packages clevis-luks, cryptsetup-bin)")
    volume = stack.workdir / "luks.img"
    with volume.open("wb") as out:
        out.truncate(32 * 1024 * 1024)
    (stack.workdir / "luks.pass").write_text("initial passphrase")
    formatted = subprocess.run(["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
                                "--pbkdf-force-iterations", "1000", "--key-file", str(stack.workdir / "luks.pass"), str(volume)],
                               capture_output=True, text=True, env=stack.env, timeout=120, check=False)
    if formatted.returncode != 0:
        pytest.skip(f"cryptsetup luksFormat is not allowed here: {formatted.stderr.strip()}")
    return volume


def test_luks_bind_and_pass(stack: Stack) -> None:
    """`clevis luks bind ... trustee` adds a key slot; `clevis luks pass` gets its passphrase back through the CDH."""
    set_policy(stack, DISK_ONLY_POLICY)
    volume = luks_volume(stack)
    env = {**stack.env, "PATH": f"{stack.env['PATH']}{os.pathsep}/usr/sbin:/sbin"}
    bind = subprocess.run(["clevis", "luks", "bind", "-y", "-d", str(volume), "-k", str(stack.workdir / "luks.pass"), "-s", "3",
                           "trustee", pin_config(stack, "default/disk/luks")], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert bind.returncode == 0, bind.stderr
    listed = subprocess.run(["clevis", "luks", "list", "-d", str(volume)], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert "3: unknown pin 'trustee'" in listed.stdout, listed.stdout + listed.stderr  # clevis 19 names only its own pins' configs
    passphrase = subprocess.run(["clevis", "luks", "pass", "-d", str(volume), "-s", "3"], capture_output=True, env=env, timeout=180,
                                check=False)
    assert passphrase.returncode == 0, passphrase.stderr.decode()
    opened = subprocess.run(["cryptsetup", "open", "--test-passphrase", "--key-slot", "3", "--key-file", "-", str(volume)],
                            input=passphrase.stdout, capture_output=True, env=env, timeout=120, check=False)
    assert opened.returncode == 0, opened.stderr.decode()
    set_policy(stack, "package policy\nimport rego.v1\n\ndefault allow := false\n")
    try:
        denied = subprocess.run(["clevis", "luks", "pass", "-d", str(volume), "-s", "3"], capture_output=True, env=env, timeout=180,
                                check=False)
        assert denied.returncode != 0 and denied.stdout == b""
    finally:
        set_policy(stack, DISK_ONLY_POLICY)


def test_latchset_pin_jwe_decrypts_through_the_cdh(stack: Stack) -> None:
    """A JWE shaped as latchset's clevis-pin-trustee writes it (made here with clevis's `jose` tool) opens through our pin.

    That pin's key resource is `{"key_type": "oct", "key": "<string>"}` and its JWK `k` is the base64url of
    the string's bytes; its header has `clevis.servers` and `clevis.path` and no `kid`.
    """
    set_policy(stack, DISK_ONLY_POLICY)
    key_text = "0123456789abcdefghijklmnopqrstuv"
    resource = stack.workdir / "latchset.json"
    resource.write_text(json.dumps({"key_type": "oct", "key": key_text}))
    stored = run_tool("kbs-client", "--url", stack.server.url, "config", "--admin-token-file", str(stack.server.admin_token),
                      "set-resource", "--path", "default/disk/latchset", "--resource-file", str(resource))
    assert stored.returncode == 0, stored.stderr
    jwk = stack.workdir / "latchset.jwk"
    jwk.write_text(json.dumps({"kty": "oct", "k": base64.urlsafe_b64encode(key_text.encode()).rstrip(b"=").decode()}))
    template = json.dumps({"protected": {"alg": "dir", "enc": "A256GCM", "clevis": {
        "pin": "trustee", "servers": [{"url": stack.server.url, "cert": ""}], "path": "default/disk/latchset"}}})
    made = subprocess.run(["jose", "jwe", "enc", "-i", template, "-k", str(jwk), "-I-", "-c"], input=DATA, capture_output=True,
                          timeout=60, check=False)
    assert made.returncode == 0, made.stderr.decode()
    result = clevis(stack, "decrypt", data=made.stdout, env={**stack.env, "CLEVIS_TRUSTEE_CDH": stack.rest_url})
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == DATA


def test_sss_threshold_with_another_pin(stack: Stack) -> None:
    """clevis's sss pin runs `clevis encrypt trustee` for its sub-pin; with t=2 both the KBS and the other pin must agree."""
    set_policy(stack, DISK_ONLY_POLICY)
    sub = json.loads(pin_config(stack, "default/disk/sss"))
    config = json.dumps({"t": 2, "pins": {"trustee": sub, "null": {}}})
    made = clevis(stack, "encrypt", "sss", config, data=DATA)
    assert made.returncode == 0, made.stderr.decode()
    opened = clevis(stack, "decrypt", data=made.stdout)
    assert opened.returncode == 0, opened.stderr.decode()
    assert opened.stdout == DATA
    set_policy(stack, "package policy\nimport rego.v1\n\ndefault allow := false\n")
    try:
        refused = clevis(stack, "decrypt", data=made.stdout)
        assert refused.returncode != 0 and refused.stdout == b""
    finally:
        set_policy(stack, DISK_ONLY_POLICY)
