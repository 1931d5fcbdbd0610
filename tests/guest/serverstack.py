"""The real server side for the guest end-to-end tests: rvps, grpc-as and kbs.

Each service runs as its own console script on a free loopback port with
SQLite storage under a temporary directory; the KBS trusts the local token
CA and an Ed25519 admin key made here. `ServerStack.admin_post` is the
admin API as an operator would use it.
"""

from __future__ import annotations

import base64
from pathlib import Path

import aiohttp

from tests.procs import Proc, free_port, script
from trustee_common.admin_token import generate_admin_key, mint_admin_token
from trustee_common.pki import ensure_token_signing_material

START_TIMEOUT = 60.0
ALLOW_POLICY = 'package policy\ndefault allow := false\nallow if { data.plugin == "resource" }\n'
DENY_POLICY = "package policy\ndefault allow := false\n"


def storage(path: Path) -> str:
    return f'[storage_backend]\nstorage_type = "Sqlite"\n[storage_backend.backends.sqlite]\npath = "{path}"\n'


class ServerStack:
    """rvps + grpc-as + kbs, started in that order."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        base = self.base
        rvps_port, as_port, self.kbs_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.kbs_port}"
        (base / "rvps.toml").write_text(storage(base / "rvps.sqlite3"))
        self.procs.append(Proc([script("rvps"), "--config", str(base / "rvps.toml"), "--address", f"127.0.0.1:{rvps_port}"],
                               base / "rvps.log", port=rvps_port, timeout=START_TIMEOUT))
        signing = ensure_token_signing_material(base / "pki")
        (base / "as.toml").write_text(
            storage(base / "as.sqlite3")
            + f'[rvps_config]\ntype = "GrpcRemote"\naddress = "127.0.0.1:{rvps_port}"\n'
            + f'[attestation_token_broker.signer]\nkey_path = "{signing.token_key}"\ncert_path = "{signing.token_cert_chain}"\n'
        )
        self.procs.append(Proc([script("grpc-as"), "--config-file", str(base / "as.toml"), "--socket", f"127.0.0.1:{as_port}"],
                               base / "as.log", port=as_port, timeout=START_TIMEOUT))
        self.admin_key, public = generate_admin_key()
        (base / "admin.pem").write_bytes(public)
        (base / "repository").mkdir(exist_ok=True)
        (base / "kbs.toml").write_text(
            f'[http_server]\nsockets = ["127.0.0.1:{self.kbs_port}"]\ninsecure_http = true\n'
            '[admin]\nauthorization_mode = "AuthenticatedAuthorization"\n'
            f'[admin.authentication.bearer_jwt]\nidentity_providers = [{{ public_key_uri = "{base / "admin.pem"}" }}]\n'
            '[admin.authorization.regex_acl]\nacls = [{ role = "admin", allowed_endpoints = "^/kbs/v0/.+$" }]\n'
            f'[attestation_token]\ntrusted_certs_paths = ["{signing.ca_cert}"]\n'
            f'[attestation_service]\ntype = "coco_as_grpc"\nas_addr = "http://127.0.0.1:{as_port}"\n'
            + storage(base / "kbs.sqlite3")
            + f'[[plugins]]\nname = "resource"\ntype = "LocalFs"\ndir_path = "{base / "repository"}"\n'
        )
        self.kbs = Proc([script("kbs"), "--config-file", str(base / "kbs.toml")], base / "kbs.log", port=self.kbs_port,
                        timeout=START_TIMEOUT)
        self.procs.append(self.kbs)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    async def admin_post(self, path: str, *, json: object = None, data: bytes | None = None) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {mint_admin_token(self.admin_key)}"}
        async with aiohttp.ClientSession() as session, session.post(f"{self.url}/kbs/v0/{path}", headers=headers, json=json,
                                                                    data=data) as response:
            return response.status, await response.text()

    async def set_policy(self, rego: str) -> None:
        encoded = base64.urlsafe_b64encode(rego.encode()).rstrip(b"=").decode()
        status, text = await self.admin_post("resource-policy", json={"policy": encoded})
        assert status == 200, text

    async def set_resource(self, path: str, value: bytes) -> None:
        status, text = await self.admin_post(f"resource/{path}", data=value)
        assert status == 200, text
