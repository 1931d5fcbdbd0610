"""`trustee run`: data-directory layout, reuse across restarts, and supervision."""

from __future__ import annotations

import os
import signal
import stat
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.tools.stack import TrusteeRun, child_pids, clean_env, free_ports, pid_alive, run_tool, wait_gone
from trustee_common.pki import ensure_token_signing_material, issue_leaf, make_ca, pem_cert, pem_private_key

KEPT_FILES = ("admin/private.key", "admin/public.pem", "admin/token", "as/ca.key", "as/ca.pem", "as/token.key",
              "as/token-cert-chain.pem")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def program_name(pid: int) -> str:
    """`rvps` for `/venv/bin/python /venv/bin/rvps --config ...` (console scripts run under python)."""
    names = [Path(arg).name for arg in cmdline(pid).split()[:2]]
    return names[1] if names and names[0].startswith("python") and len(names) > 1 else (names[0] if names else "")


@dataclass
class FirstRun:
    stack: TrusteeRun
    children: dict[str, int]
    kept: dict[str, bytes]
    output: str
    exit_code: int = -1
    stop_seconds: float = 0.0
    survivors: list[int] = field(default_factory=list)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> FirstRun:
    """Start on an empty data dir, note what it created, then SIGTERM `trustee` (only it)."""
    base = tmp_path_factory.mktemp("run")
    stack = TrusteeRun(base / "trustee-data", base / "first.log")
    pids = child_pids(stack.proc.popen.pid)
    children = {program_name(p): p for p in pids}
    record = FirstRun(stack, children, {f: (stack.data_dir / f).read_bytes() for f in KEPT_FILES}, stack.banner)
    started = time.monotonic()
    os.kill(stack.proc.popen.pid, signal.SIGTERM)
    record.exit_code = stack.proc.popen.wait(15)
    record.stop_seconds = time.monotonic() - started
    record.survivors = wait_gone(pids, 2.0)
    stack.stop()
    return record


def test_three_children_are_started(first_run: FirstRun) -> None:
    assert sorted(first_run.children) == ["grpc-as", "kbs", "rvps"], first_run.children


def test_banner_names_the_urls_and_the_first_command(first_run: FirstRun) -> None:
    stack = first_run.stack
    assert f"KBS   {stack.url}" in first_run.output
    assert (f"kbs-client --url {stack.url} config --admin-token-file {stack.admin_token} set-resource-policy --allow-all"
            in first_run.output)
    assert f"{stack.data_dir}/logs/" in first_run.output


def test_sigterm_stops_everything_within_10_seconds(first_run: FirstRun) -> None:
    assert first_run.exit_code == 0, first_run.stack.proc.output()
    assert first_run.stop_seconds < 10
    assert first_run.survivors == []


def test_secrets_are_owner_only(first_run: FirstRun) -> None:
    for name in ("admin/private.key", "admin/token", "as/token.key", "as/ca.key"):
        mode = stat.S_IMODE((first_run.stack.data_dir / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))


def test_generated_configs_follow_the_layout(first_run: FirstRun) -> None:
    data = first_run.stack.data_dir
    kbs = tomllib.loads((data / "kbs" / "config.toml").read_text())
    assert kbs["http_server"] == {"sockets": [f"127.0.0.1:{first_run.stack.kbs_port}"], "insecure_http": True}
    assert kbs["admin"]["authentication"]["bearer_jwt"]["identity_providers"] == [{"public_key_uri": str(data / "admin" / "public.pem")}]
    assert kbs["attestation_token"]["trusted_certs_paths"] == [str(data / "as" / "ca.pem")]
    assert kbs["attestation_service"]["as_addr"] == f"http://127.0.0.1:{first_run.stack.as_port}"
    assert kbs["plugins"] == [{"name": "resource", "type": "LocalFs", "dir_path": str(data / "kbs" / "repository")}]
    as_config = tomllib.loads((data / "as" / "config.toml").read_text())
    assert as_config["rvps_config"] == {"type": "GrpcRemote", "address": f"127.0.0.1:{first_run.stack.rvps_port}"}
    rvps = tomllib.loads((data / "rvps" / "config.toml").read_text())
    assert rvps["storage_backend"]["backends"]["sqlite"]["path"] == str(data / "rvps" / "storage.sqlite3")
    for name in ("rvps", "as", "kbs"):
        assert (data / "logs" / f"{name}.log").stat().st_size > 0


def test_restart_reuses_keys_and_a_dead_child_stops_the_rest(first_run: FirstRun, tmp_path: Path) -> None:
    data = first_run.stack.data_dir
    stack = TrusteeRun(data, tmp_path / "second.log")
    try:
        assert {f: (data / f).read_bytes() for f in KEPT_FILES} == first_run.kept
        pids = child_pids(stack.proc.popen.pid)
        kbs = next(p for p in pids if program_name(p) == "kbs")
        os.kill(kbs, signal.SIGKILL)
        assert stack.proc.popen.wait(15) == 1
        assert "kbs exited unexpectedly" in stack.proc.output()
        assert wait_gone(pids, 2.0) == []
    finally:
        stack.stop()


def test_a_child_that_fails_at_start_is_reported(tmp_path: Path) -> None:
    data = tmp_path / "trustee-data"
    files = ensure_token_signing_material(data / "as")
    files.token_key.write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    kbs_port, as_port, rvps_port = free_ports(3)
    result = run_tool("trustee", "run", "--data-dir", str(data), "--kbs-port", str(kbs_port), "--as-port", str(as_port),
                      "--rvps-port", str(rvps_port), env=clean_env(), timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("error: as exited with status")
    assert "  | " in result.stderr  # the AS log lines follow
    assert not any("rvps" in cmdline(p) and str(rvps_port) in cmdline(p) for p in _all_pids())


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and pid_alive(int(p.name))]


def test_tls_kbs_is_reachable_with_the_ca_as_cert_file(tmp_path: Path) -> None:
    ca_key, ca_cert = make_ca("test TLS CA")
    leaf_key, leaf_cert = issue_leaf(ca_key, ca_cert, "kbs", ip_addresses=("127.0.0.1",))
    (tmp_path / "ca.pem").write_bytes(pem_cert(ca_cert))
    (tmp_path / "tls.pem").write_bytes(pem_cert(leaf_cert))
    (tmp_path / "tls.key").write_bytes(pem_private_key(leaf_key))
    stack = TrusteeRun(tmp_path / "trustee-data", tmp_path / "tls.log",
                       extra=("--tls-cert", str(tmp_path / "tls.pem"), "--tls-key", str(tmp_path / "tls.key")))
    try:
        https = stack.url.replace("http://", "https://")
        assert f"KBS   {https}" in stack.banner
        assert f"--cert-file {tmp_path / 'tls.pem'}" in stack.banner
        kbs = tomllib.loads((stack.data_dir / "kbs" / "config.toml").read_text())["http_server"]
        assert kbs["insecure_http"] is False
        assert kbs["certificate"] == str(tmp_path / "tls.pem")
        token = str(stack.admin_token)
        ok = run_tool("kbs-client", "--url", https, "--cert-file", str(tmp_path / "ca.pem"), "config", "--admin-token-file", token,
                      "set-resource-policy", "--allow-all")
        assert ok.returncode == 0, ok.stderr
        untrusted = run_tool("kbs-client", "--url", https, "config", "--admin-token-file", token, "get-resource-policy")
        assert untrusted.returncode == 1
        assert untrusted.stderr.startswith("error: UpstreamUnavailable: cannot reach the KBS")
    finally:
        stack.stop()


def test_children_follow_a_killed_trustee(tmp_path: Path) -> None:
    stack = TrusteeRun(tmp_path / "trustee-data", tmp_path / "killed.log")
    pids = child_pids(stack.proc.popen.pid)
    assert len(pids) == 3
    os.kill(stack.proc.popen.pid, signal.SIGKILL)
    stack.proc.popen.wait(5)
    try:
        assert wait_gone(pids, 10.0) == []
    finally:
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        stack.stop()


def listening_processes(supervisor: int, port: int, expected: int) -> list[int]:
    """The pids among `supervisor` and its children that listen on `port`, once there are `expected` of them."""
    deadline = time.monotonic() + 60
    while True:
        root = psutil.Process(supervisor)
        found = [p.pid for p in (root, *root.children())
                 if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in p.net_connections("tcp"))]
        if len(found) == expected:
            return found
        assert time.monotonic() < deadline, f"{expected} processes did not listen on {port}: {found}"
        time.sleep(0.2)


def test_workers_flag_runs_several_kbs_and_as_processes(tmp_path: Path) -> None:
    """`--workers 2`: the KBS and the AS each supervise two processes on their port; all follow a killed `trustee`."""
    stack = TrusteeRun(tmp_path / "trustee-data", tmp_path / "workers.log", extra=("--workers", "2"))
    supervisors = {program_name(p): p for p in child_pids(stack.proc.popen.pid)}
    everything = list(supervisors.values())
    try:
        for name, port in (("kbs", stack.kbs_port), ("grpc-as", stack.as_port)):
            everything += [pid for pid in listening_processes(supervisors[name], port, 2) if pid != supervisors[name]]
        os.kill(stack.proc.popen.pid, signal.SIGKILL)
        stack.proc.popen.wait(5)
        assert wait_gone(everything, 20.0) == []
    finally:
        for pid in everything:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        stack.stop()


def test_default_workers_give_the_kbs_every_core_and_the_as_half(tmp_path: Path) -> None:
    """No `--workers` and no `TRUSTEE_WORKERS`: a KBS process per core, an AS process per two cores (at least one)."""
    cores = len(os.sched_getaffinity(0))
    stack = TrusteeRun(tmp_path / "trustee-data", tmp_path / "default-workers.log", unset=("TRUSTEE_WORKERS",))
    try:
        as_config = tomllib.loads((stack.data_dir / "as" / "config.toml").read_text())
        assert as_config["workers"] == max(1, cores // 2)
        supervisors = {program_name(p): p for p in child_pids(stack.proc.popen.pid)}
        assert len(listening_processes(supervisors["kbs"], stack.kbs_port, cores)) == cores
        assert len(listening_processes(supervisors["grpc-as"], stack.as_port, max(1, cores // 2))) == max(1, cores // 2)
    finally:
        stack.stop()


async def test_builtin_as_runs_the_kbs_alone(tmp_path: Path) -> None:
    """`--as builtin`: one child, the KBS, with the AS inside; the sample guest flow works against it."""
    from bench.client import ALLOW_ALL, admin, sample_client

    stack = TrusteeRun(tmp_path / "trustee-data", tmp_path / "builtin.log", extra=("--as", "builtin"))
    try:
        children = sorted(program_name(p) for p in child_pids(stack.proc.popen.pid))
        assert children == ["kbs"], children
        assert "AS    built into the KBS" in stack.banner
        config = tomllib.loads((stack.data_dir / "kbs" / "config.toml").read_text())
        assert config["attestation_service"]["type"] == "coco_as_builtin"
        async with admin(stack.url, stack.admin_token.read_text().strip()) as client:
            await client.set_resource_policy(ALLOW_ALL)
            await client.set_resource("default/builtin/key", b"from the built-in AS")
        async with sample_client(stack.url) as guest:
            assert await guest.get_resource("resource/default/builtin/key") == b"from the built-in AS"
    finally:
        stack.stop()
