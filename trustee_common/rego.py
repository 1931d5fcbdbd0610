"""Rego policies evaluated with regopy, compiled once and reused.

regopy compiles modules and base documents (`data`) together into a
bundle, and a bundle is then queried with any number of inputs at a small
fraction of the compile cost. Since `data` is part of the compiled bundle,
`RegoPolicy` keeps a small LRU of bundles keyed by the canonical `data`
document: a policy is compiled once per distinct `data` (a resource path
for the KBS, a reference-value snapshot for the AS) and every request after
that only queries. Construction compiles once with empty data, so a policy
that does not parse or compile is refused up front with the engine's
message (`InvalidPolicyError`).

regopy is imported only here, after `share_cxx_allocator()`, so that
rego-cpp and every other C++ library share libstdc++'s allocator (mixing
it with regopy's snmalloc leaked memory on every evaluation).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from trustee_common.canonical import canonical_json
from trustee_common.cxx_allocator import share_cxx_allocator
from trustee_common.errors import InternalError, InvalidPolicyError

share_cxx_allocator()  # before librego_shared.so loads: see trustee_common/cxx_allocator.py

from regopy import Bundle, Input, Interpreter, RegoError  # noqa: E402 (after share_cxx_allocator)

DEFAULT_CACHE_SIZE = 64
MAX_POLICY_BYTES = 1 << 20


class _Compiled:
    def __init__(self, interpreter: Interpreter, bundle: Bundle) -> None:
        self.interpreter = interpreter
        self.bundle = bundle


class RegoPolicy:
    """One policy module (plus optional helper modules) and its entry-point rules."""

    def __init__(
        self,
        text: str,
        *,
        package: str = "policy",
        rules: tuple[str, ...] = ("allow",),
        helpers: tuple[str, ...] = (),
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        if len(text.encode()) > MAX_POLICY_BYTES:
            raise InvalidPolicyError(f"policy is larger than {MAX_POLICY_BYTES} bytes")
        declared = _PACKAGE.search(text)
        if declared is None or declared.group(1) != package:
            raise InvalidPolicyError(f"policy must declare `package {package}`")
        self.text = text
        self.package = package
        self.rules = rules
        self._helpers = helpers
        self._cache_size = cache_size
        self._bundles: OrderedDict[bytes, _Compiled] = OrderedDict()
        self._compile({})

    @property
    def digest(self) -> str:
        return hashlib.sha384(self.text.encode()).hexdigest()

    def _compile(self, data: dict[str, Any]) -> _Compiled:
        key = hashlib.sha256(canonical_json(data)).digest()
        cached = self._bundles.get(key)
        if cached is not None:
            self._bundles.move_to_end(key)
            return cached
        interpreter = Interpreter()
        try:
            with _quiet_stdout():
                interpreter.add_module("policy.rego", self.text)
                for i, helper in enumerate(self._helpers):
                    interpreter.add_module(f"helper{i}.rego", helper)
                if data:
                    interpreter.add_data_json(json.dumps(data))
                bundle = interpreter.build(None, [f"{self.package}/{rule}" for rule in self.rules])
        except RegoError as exc:
            raise InvalidPolicyError(f"policy does not compile: {_first_line(str(exc))}") from None
        if not bundle.ok():
            raise InvalidPolicyError("policy does not compile")
        compiled = _Compiled(interpreter, bundle)
        self._bundles[key] = compiled
        if len(self._bundles) > self._cache_size:
            self._bundles.popitem(last=False)
        return compiled

    def evaluate(self, input_: Any, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Evaluate every rule; an undefined rule is absent from the result."""
        compiled = self._compile(data or {})
        compiled.interpreter.set_input(Input(input_))
        results: dict[str, Any] = {}
        for rule in self.rules:
            try:
                output = compiled.interpreter.query_bundle_entrypoint(compiled.bundle, f"{self.package}/{rule}")
            except RegoError as exc:
                raise InternalError(f"policy evaluation of {rule} failed: {_first_line(str(exc))}") from None
            except ValueError:  # regopy cannot decode the output of some runtime errors
                raise InternalError(f"policy evaluation of {rule} failed with a runtime error") from None
            if not output.ok():
                raise InternalError(f"policy evaluation of {rule} failed: {_first_line(str(output))}")
            if output.results and output.results[0].expressions:
                results[rule] = output.results[0].expressions[0]
        return results


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """rego-cpp prints compile errors to fd 1; keep them off our stdout (they are raised too)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


_PACKAGE = re.compile(r"^\s*package\s+([A-Za-z_][A-Za-z0-9_.]*)", re.MULTILINE)
_ERROR = re.compile(r"\(error \d+:[^|]*\|(\d+)\|\d+\s*\(errormsg \d+:([^)]*)\)")


def _first_line(text: str) -> str:
    """Condense rego-cpp's error S-expression to `offset N: message`."""
    found = _ERROR.findall(text)
    if found:
        return "; ".join(f"at byte {offset}: {msg}" for offset, msg in found[:3])
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:4])[:300] if lines else "unknown error"
