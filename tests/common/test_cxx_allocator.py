"""rego-cpp and grpcio in one process share one C++ allocator (no native leak per evaluation).

regopy's library brings snmalloc's `operator new`/`delete`; when grpcio
loaded libstdc++ first, objects libstdc++ allocated were freed by snmalloc
(which ignores them): the AS lost 40-80 KB per attestation. Each check runs
in a fresh interpreter so the import order is the one under test, and
counts glibc's heap in use (`mallinfo2`), which only native leaks move.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("trustee_common", "kbs", "as", "rvps", "guest", "tools", "tests", "bench", "scripts")

PROBE = """
import ctypes, json, sys
{first}
from trustee_common.rego import RegoPolicy

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
policy = RegoPolicy('''package policy
import rego.v1
default allow := false
claims := {{k: sprintf("%v-%v", [k, v]) | some k, v in input.values}}
allow if {{ count(claims) == count(input.values); startswith(input.name, data.prefix) }}
''', rules=("allow", "claims"), data_keys=("prefix",))
values = {{f"key{{i}}": "v" * i for i in range(20)}}
for i in range(50):
    policy.evaluate({{"name": f"guest-{{i}}", "values": values}}, {{"prefix": "guest"}})
before = libc.mallinfo2().uordblks
for i in range(300):
    result = policy.evaluate({{"name": f"guest-{{i}}", "values": values}}, {{"prefix": "guest"}})
assert result["allow"] is True, result
print(json.dumps({{"grown": libc.mallinfo2().uordblks - before}}))
"""


def heap_growth(first_import: str) -> int:
    code = PROBE.format(first=first_import)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    grown: int = json.loads(done.stdout.strip().splitlines()[-1])["grown"]
    return grown


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallinfo2 and ELF symbol binding")
@pytest.mark.parametrize("first_import", ["import grpc", "pass"])
def test_300_evaluations_leave_the_native_heap_flat(first_import: str) -> None:
    # Before the fix, "import grpc" first grew the heap by ~7 MB here (~22 KB per evaluation).
    assert heap_growth(first_import) < 1 << 20


def imports_regopy(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "regopy" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "regopy":
            return True
    return False


def test_regopy_is_imported_only_by_trustee_common_rego() -> None:
    """Anything importing regopy first would load it before `share_cxx_allocator()`."""
    sources = sorted(p for top in SOURCE_DIRS for p in (ROOT / top).rglob("*.py"))
    assert [str(p.relative_to(ROOT)) for p in sources if imports_regopy(p)] == ["trustee_common/rego.py"]
