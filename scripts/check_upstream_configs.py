"""Check upstream Trustee's own config files against our parsers (opt-in; not run by the test suite on the network).

    python scripts/check_upstream_configs.py /path/to/trustee-checkout

Finds every KBS, AS and RVPS config in a local checkout of
confidential-containers/trustee:

* TOML files holding `[http_server]` or `[admin]` (KBS);
* JSON files (AS: `work_dir`, `rvps_config`, `attestation_token_broker` or
  `verifier_config` at the top; RVPS: `storage` or `extractors` with no
  AS key), and `*.json.template` / `*.toml.template` Helm files rendered
  with the chart's defaults (`render_helm`: a few substitutions, not a Go
  template engine; a template it cannot render is reported as skipped);
* ```toml blocks of Markdown files that hold `[http_server]` (a complete
  KBS config; partial snippets are not configs on their own), and ```json
  blocks that parse as a JSON object with AS or RVPS keys at the top.

Each is rewritten (`rewrite`): file paths (strings starting with `/`,
`./` or `file://`, outside `extra_teekey_paths` and `allowed_endpoints`)
move under a temporary directory, and the ports of `sockets` become free
ones. Then our parser reads it (KBS: `kbs.config.parse_kbs_config`; AS:
`attestation_service.config.AsConfig.load`; RVPS: `rvps.config.RvpsConfig.load`)
and one line per config is printed: `path  kind  OK` (with the warnings
the KBS would log) or `path  kind  refused: <message>`. Exit status 0.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustee_common.errors import ConfigError, TrusteeError

AS_KEYS = ("work_dir", "rvps_config", "attestation_token_broker", "verifier_config")
RVPS_KEYS = ("storage", "extractors")
#: Keys whose string values start with "/" but are not file paths.
NOT_PATHS = ("extra_teekey_paths", "allowed_endpoints")
SKIPPED_DIRS = {".git", "target", "node_modules"}

#: The Helm chart's defaults (values.yaml, templates/_helpers.tpl) for what its config templates use.
HELM_INCLUDES = {
    "coco-trustee.kbs.sessionStorageType": "",
    "coco-trustee.kbs.tlsEnabled": "false",
    "coco-trustee.port.kbs": "8080",
    "coco-trustee.port.as": "50004",
    "coco-trustee.port.rvps": "50003",
    "coco-trustee.svc.as": "trustee-as.default.svc.cluster.local",
    "coco-trustee.svc.rvps": "trustee-rvps.default.svc.cluster.local",
    "coco-trustee.kbs.adminIssuer": "trustee",
    "coco-trustee.kbs.adminRole": "admin",
    "coco-trustee.storage.type": "LocalFs",
    "coco-trustee.storage.kbsLocalDir": "/opt/confidential-containers/kbs/repository",
    "coco-trustee.storage.asLocalDir": "/opt/confidential-containers/attestation-service",
    "coco-trustee.storage.rvpsLocalDir": "/opt/confidential-containers/attestation-service/reference_values",
    "coco-trustee.storage.localJsonDir": "/opt/confidential-containers/trustee/local-json",
    # The AS verifier fragment under values.yaml's defaults (as.verifier.nvidia and as.verifier.dcap set, no SNP sources).
    "coco-trustee.as.verifier": '"nvidia_verifier": {"type": "Local"}, "dcap_verifier": {"collateral_service": '
                                '"https://api.trustedservices.intel.com/sgx/certification/v4/", "tcb_update_type": "early"}',
}
#: Template variables and conditions under the defaults (storage LocalFs, no TLS, no session storage).
HELM_TRUE = {"$needLocalFs"}
HELM_VARS = {"$st": "LocalFs", "$sst": ""}
_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}")
_INCLUDE = re.compile(r'^include\s+"([^"]+)"\s+\.(\s*\|\s*(?:trim|nindent\s+\d+))?$')
_DEFAULT = re.compile(r"^default\s+(\S+)\s+\$\S+$")


@dataclass(frozen=True)
class Found:
    path: str
    kind: str  # "kbs" | "as" | "rvps"
    text: str
    suffix: str  # ".toml" | ".json"


def _toml_kind(data: dict[str, Any]) -> str | None:
    return "kbs" if "http_server" in data or "admin" in data else None


def _json_kind(data: object) -> str | None:
    if not isinstance(data, dict):
        return None
    if any(k in data for k in AS_KEYS):
        return "as"
    return "rvps" if any(k in data for k in RVPS_KEYS) else None


def render_helm(text: str) -> str:
    """Render a config template with the chart's defaults; `ValueError` naming what it cannot render."""
    out: list[str] = []
    stack: list[bool] = []
    for line in text.splitlines():
        actions = _ACTION.findall(line)
        bare = _ACTION.sub("", line).strip()
        if actions and not bare and len(actions) == 1 and _control(actions[0], stack):
            continue
        if not all(stack):
            continue
        out.append(_ACTION.sub(lambda m: _value(m.group(1)), line))
    if stack:
        raise ValueError("unbalanced if/end")
    return "\n".join(out) + "\n"


def _control(action: str, stack: list[bool]) -> bool:
    """Handle a line that is only a control action; False when it is a value to substitute."""
    if action.startswith("/*") or re.match(r"^\$\w+\s*:=", action):
        return True
    if action.startswith("if "):
        stack.append(_condition(action[3:].strip()))
        return True
    if action == "else":
        stack[-1] = not stack[-1]
        return True
    if action == "end":
        stack.pop()
        return True
    return False


def _condition(text: str) -> bool:
    if text.startswith("$"):
        return text in HELM_TRUE
    match = _INCLUDE.match(text)
    if match:
        return bool(HELM_INCLUDES.get(match.group(1), ""))
    raise ValueError(f"condition {text!r}")


def _value(action: str) -> str:
    if action in HELM_VARS:
        return HELM_VARS[action]
    match = _INCLUDE.match(action)
    if match and match.group(1) in HELM_INCLUDES:
        return HELM_INCLUDES[match.group(1)]
    match = _DEFAULT.match(action)
    if match:
        return match.group(1)
    raise ValueError(f"expression {action!r}")


def _markdown_blocks(text: str) -> Iterator[tuple[str, str, str]]:
    """(kind, text, suffix) of each Markdown block that is a whole config."""
    for match in re.finditer(r"^```(toml|json)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        language, block = match.groups()
        if language == "toml" and re.search(r"^\[http_server\]", block, flags=re.MULTILINE):
            yield "kbs", block, ".toml"
        elif language == "json":
            kind = _parsed_kind(block, json.loads, _json_kind)
            if kind:
                yield kind, block, ".json"


def find_configs(root: Path) -> tuple[list[Found], list[tuple[str, str]]]:
    """Every config under `root`, and (path, why) of the templates that could not be rendered."""
    found: list[Found] = []
    skipped: list[tuple[str, str]] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not SKIPPED_DIRS & set(p.relative_to(root).parts)):
        rel = path.relative_to(root).as_posix()
        name = path.name
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if name.endswith(".template"):
            try:
                text = render_helm(text)
            except ValueError as exc:
                skipped.append((rel, f"not rendered: {exc}"))
                continue
            name = name.removesuffix(".template")
        if name.endswith(".md"):
            found.extend(Found(f"{rel}#block{i}", kind, block, suffix)
                         for i, (kind, block, suffix) in enumerate(_markdown_blocks(text), 1))
        elif name.endswith(".toml") and name not in ("Cargo.toml", "rust-toolchain.toml"):
            kind = _parsed_kind(text, tomllib.loads, _toml_kind)
            if kind:
                found.append(Found(rel, kind, text, ".toml"))
        elif name.endswith(".json"):
            kind = _parsed_kind(text, json.loads, _json_kind)
            if kind:
                found.append(Found(rel, kind, text, ".json"))
    return found, skipped


def _parsed_kind(text: str, parse: Callable[[str], Any], kind: Callable[[Any], str | None]) -> str | None:
    try:
        return kind(parse(text))
    except ValueError:
        return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def rewrite(value: Any, base: Path, key: str = "") -> Any:
    """Paths under `base`, `sockets` ports to free ones; everything else as it is."""
    if isinstance(value, dict):
        return {k: rewrite(v, base, k) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite(v, base, key) for v in value]
    if not isinstance(value, str) or key in NOT_PATHS:
        return value
    if key == "sockets":
        host = value.rpartition(":")[0]
        return f"{host}:{free_port()}"
    for prefix in ("file://", "./", "/"):
        if value.startswith(prefix):
            return str(base / value.removeprefix(prefix).lstrip("/"))
    return value


def check(found: Found, base: Path) -> str:
    """`OK` (with warnings) or `refused: <message>`."""
    try:
        data = tomllib.loads(found.text) if found.suffix == ".toml" else json.loads(found.text)
    except ValueError as exc:
        return f"refused: not valid {found.suffix[1:].upper()}: {exc}"
    data = rewrite(data, base)
    try:
        warnings = _parse(found.kind, data, base)
    except (ConfigError, TrusteeError) as exc:
        return f"refused: {exc.detail}"
    return "OK" + (f" (warnings: {'; '.join(warnings)})" if warnings else "")


def _parse(kind: str, data: dict[str, Any], base: Path) -> tuple[str, ...]:
    if kind == "kbs":
        from kbs.config import parse_kbs_config

        return parse_kbs_config(data, default_dir=base).warnings
    path = base / f"{kind}-config.json"
    path.write_text(json.dumps(data))
    if kind == "as":
        from attestation_service.config import AsConfig

        AsConfig.load(path)
    else:
        from rvps.config import RvpsConfig

        RvpsConfig.load(path)
    return ()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("checkout", type=Path, help="a local checkout of confidential-containers/trustee")
    args = parser.parse_args(argv)
    if not args.checkout.is_dir():
        parser.error(f"{args.checkout} is not a directory")
    found, skipped = find_configs(args.checkout)
    width = max([len(f.path) for f in found] + [len(p) for p, _ in skipped] + [4])
    with tempfile.TemporaryDirectory(prefix="upstream-configs-") as tmp:
        for index, item in enumerate(found):
            base = Path(tmp) / str(index)
            base.mkdir()
            print(f"{item.path:<{width}}  {item.kind:<4}  {check(item, base)}")
    for path, why in skipped:
        print(f"{path:<{width}}  -     skipped: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
