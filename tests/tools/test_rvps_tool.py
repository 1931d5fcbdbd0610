"""`rvps-tool` against the RVPS started by `trustee run`."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tests.tools.stack import TrusteeRun, clean_env, run_tool


def message(values: dict[str, object], version: str = "0.1.0") -> str:
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    return json.dumps({"version": version, "type": "sample", "payload": payload})


def rvps_tool(stack: TrusteeRun, *args: str) -> tuple[int, str, str]:
    result = run_tool("rvps-tool", *args, "--addr", f"http://{stack.rvps_addr}")
    return result.returncode, result.stdout, result.stderr


def test_register_query_list_delete(trustee: TrusteeRun, tmp_path: Path) -> None:
    path = tmp_path / "message.json"
    path.write_text(message({"tool.digest": ["aa", "bb"], "tool.svn": 4}))
    code, _, err = rvps_tool(trustee, "register", "--path", str(path))
    assert code == 0, err

    code, out, err = rvps_tool(trustee, "query", "-r", "tool.digest")
    assert code == 0, err
    assert json.loads(out) == ["aa", "bb"]

    code, out, err = rvps_tool(trustee, "query")
    assert code == 0, err
    listed = {record["name"]: record for record in json.loads(out)}
    assert listed["tool.digest"]["value"] == ["aa", "bb"]
    assert listed["tool.svn"]["value"] == 4
    assert listed["tool.svn"]["expiration"].endswith("Z")

    code, _, err = rvps_tool(trustee, "delete", "-r", "tool.digest")
    assert code == 0, err
    code, out, err = rvps_tool(trustee, "query", "--reference-value-id", "tool.digest")
    assert code == 1
    assert out == ""
    assert err.startswith("error: ReferenceValueNotFound")
    assert "tool.digest" not in {record["name"] for record in json.loads(rvps_tool(trustee, "query")[1])}


def test_value_registered_through_the_kbs_is_visible_in_the_rvps(trustee: TrusteeRun) -> None:
    result = run_tool("kbs-client", "--url", trustee.url, "config", "--admin-token-file", str(trustee.admin_token),
                      "set-sample-reference-value", "via.kbs", "xyz")
    assert result.returncode == 0, result.stderr
    code, out, err = rvps_tool(trustee, "query", "-r", "via.kbs")
    assert code == 0, err
    assert json.loads(out) == ["xyz"]


def test_address_from_the_environment(trustee: TrusteeRun) -> None:
    result = run_tool("rvps-tool", "query", env=clean_env(RVPS_TOOL_ADDR=trustee.rvps_addr))
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), list)


def test_bad_messages_exit_1_with_one_clear_line(trustee: TrusteeRun, tmp_path: Path) -> None:
    cases = {
        "not-json.json": "this is not json",
        "bad-version.json": message({"x": 1}, version="9.9.9"),
        "bad-payload.json": json.dumps({"version": "0.1.0", "type": "sample", "payload": "%%%"}),
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        code, out, err = rvps_tool(trustee, "register", "-p", str(path))
        assert code == 1, name
        assert out == ""
        assert err.startswith("error: RvpsError: "), err
        assert len(err.strip().splitlines()) == 1


def test_delete_of_an_unknown_id_exits_1(trustee: TrusteeRun) -> None:
    code, _, err = rvps_tool(trustee, "delete", "-r", "never.registered")
    assert code == 1
    assert "never.registered" in err
