"""`trustee guest`: Attestation Agent, Confidential Data Hub and REST API server.

Writes `aa.toml` and `cdh.toml` into the guest data directory, starts
`attestation-agent`, `confidential-data-hub` and `api-server-rest` in that
order on 127.0.0.1 (each once the previous one's port is open), prints the
`curl` command to try, then waits (`trustee_cli.supervisor`).
"""

from __future__ import annotations

from pathlib import Path

from trustee_cli.configs import LOOPBACK, GuestSettings, socket_address
from trustee_cli.material import prepare_guest_dir
from trustee_cli.supervisor import ChildSpec, Supervisor, check_port_free, program


def _children(root: Path, settings: GuestSettings) -> list[ChildSpec]:
    aa_addr = socket_address(LOOPBACK, settings.aa_port)
    cdh_addr = socket_address(LOOPBACK, settings.cdh_port)
    rest_argv = [program("api-server-rest"), "--bind", socket_address(LOOPBACK, settings.rest_port), "--features", "all",
                 "--aa_addr", aa_addr, "--cdh_addr", cdh_addr]
    aa_argv = [program("attestation-agent"), "-a", aa_addr, "-c", str(root / "aa.toml")]
    if settings.init_data_toml:
        aa_argv += ["-t", settings.init_data_toml]
    return [
        ChildSpec("attestation-agent", aa_argv, settings.aa_port, port_flag="--aa-port"),
        ChildSpec("confidential-data-hub", [program("confidential-data-hub"), "-c", str(root / "cdh.toml")], settings.cdh_port,
                  port_flag="--cdh-port"),
        ChildSpec("api-server-rest", rest_argv, settings.rest_port, port_flag="--rest-port"),
    ]


def banner(root: Path, settings: GuestSettings) -> str:
    rest = f"http://{socket_address(LOOPBACK, settings.rest_port)}"
    return "\n".join([
        f"trustee guest is running against {settings.kbs_url}; configs in {root}",
        f"  REST API               {rest}",
        f"  attestation-agent      grpc://{socket_address(LOOPBACK, settings.aa_port)}",
        f"  confidential-data-hub  grpc://{socket_address(LOOPBACK, settings.cdh_port)}",
        f"  logs  {root}/logs/{{attestation-agent,confidential-data-hub,api-server-rest}}.log",
        "Try (after setting a resource policy and the resource default/test/secret in the KBS):",
        f"  curl {rest}/cdh/resource/default/test/secret",
        "Stop with Ctrl-C.",
    ])


def run_guest(data_dir: Path, settings: GuestSettings) -> int:
    root = data_dir.absolute()
    children = _children(root, settings)
    for spec in children:
        check_port_free(spec.host, spec.port, spec.port_flag)
    prepare_guest_dir(root, settings)
    supervisor = Supervisor(root / "logs")
    supervisor.install_signal_handlers()
    if not supervisor.start_all(children):
        return 0
    print(banner(root, settings), flush=True)
    return supervisor.supervise()
