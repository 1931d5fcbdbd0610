"""Layering contract: core modules import no transport, generated stub or database driver.

Adapters (aiohttp handlers, gRPC servicers, storage backends) depend on the
core, never the reverse. This walks the import statements of every core
module, so a violation fails here with the module and the import named.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("aiohttp", "grpc", "grpc_health", "trustee_pb", "sqlite3", "asyncpg", "psycopg", "redis")

CORE_MODULES = sorted(
    [
        *ROOT.glob("kbs/core/**/*.py"),
        *ROOT.glob("as/attestation_service/core/**/*.py"),
        *ROOT.glob("rvps/core/**/*.py"),
        *ROOT.glob("trustee_common/ocicrypt/*.py"),
        *(ROOT / "trustee_common" / name for name in (
            "addresses.py", "admin_token.py", "audit_events.py", "b64.py", "canonical.py", "config.py", "errors.py", "requestid.py",
            "jose.py", "jwe_decrypt.py", "jwe_encrypt.py", "messages.py", "pki.py", "rego.py", "rego_reads.py", "tee.py", "storage/base.py",
        )),
        *(ROOT / "guest" / name for name in (
            "resource_uri.py", "attesters/base.py", "attesters/sample.py", "attestation_agent/agent.py",
            "attestation_agent/config.py", "attestation_agent/initdata.py", "cdh/hub.py", "cdh/config.py", "rest/routes.py",
        )),
    ]
)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_module_list_is_not_empty() -> None:
    assert len(CORE_MODULES) > 30
    assert all(path.exists() for path in CORE_MODULES)


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_no_adapter_library(path: Path) -> None:
    bad = sorted(name for name in imported_modules(path) if name.split(".")[0] in FORBIDDEN)
    assert not bad, f"{path.relative_to(ROOT)} imports {', '.join(bad)}"
