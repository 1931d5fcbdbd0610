"""Rego policies evaluated with regopy: compiled once per text, queried with any input and data.

A policy is described by a `PolicySpec` (module text, package, entry-point
rules, helper modules, and the names of the top-level `data` documents the
caller supplies per evaluation). `RegoPolicy` compiles a spec into one
regopy bundle, once; nothing supplied at evaluation time (input, resource
path, query string, reference values) is part of what is compiled, so the
number of compiled bundles depends only on the number of distinct policy
texts, never on what clients send.

Per-evaluation `data`: rego-cpp fixes `data` when it builds a bundle, so the
compiled query overrides each declared data document with Rego's `with`
keyword from a value carried in the input under the reserved key
`DATA_INPUT_KEY` (policies see that key in `input` too; they should not
rely on it). A declared key the caller leaves out evaluates as `{}`.

Built-ins: rego-cpp has no switch to remove built-ins, so after compiling,
the bundle's plan (the engine's own list of every built-in the policy can
call, whatever the syntax used to reach it) is checked and a policy that
uses a built-in in `DENIED_BUILTINS` is refused (`InvalidPolicyError`).
Evaluation itself happens in worker processes (`trustee_common.rego_pool`),
which also run with an empty environment.

String literals are compiled as OPA means them although regopy keeps their
escapes undecoded: `trustee_common.rego_escapes` rewrites the text first.
Results are read from the engine's result tree (`trustee_common.rego_output`),
not from regopy's JSON rendering, which leaves strings unescaped: a rule may
return any string, from a literal or from `input`.

regopy is imported only here, after `share_cxx_allocator()`, so that
rego-cpp and every other C++ library share libstdc++'s allocator (mixing
it with regopy's snmalloc leaked memory on every evaluation).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from trustee_common.config import ConfigTable
from trustee_common.cxx_allocator import share_cxx_allocator
from trustee_common.errors import ConfigError, InternalError, InvalidPolicyError
from trustee_common.rego_escapes import rewrite_escapes
from trustee_common.rego_output import EvaluationFailedError, OutputError, binding_values

share_cxx_allocator()  # before librego_shared.so loads: see trustee_common/cxx_allocator.py

from regopy import Bundle, Input, Interpreter, RegoError, rego_shared  # noqa: E402 (after share_cxx_allocator)
from regopy.rego_shared import rego_node_get, rego_node_size, rego_node_value  # noqa: E402

MAX_POLICY_BYTES = 1 << 20
DEFAULT_EVALUATION_TIMEOUT = 2.0
DEFAULT_WORKERS = 2
DEFAULT_MAX_WORKER_MEMORY_MIB = 1024
MIN_WORKER_MEMORY_MIB = 128
MAX_EVALUATION_TIMEOUT = 300.0
MAX_WORKERS = 64
DATA_INPUT_KEY = "__trustee_data"
#: Built-ins that reach the process environment or the network; a policy that uses one is refused.
DENIED_BUILTINS = frozenset({"opa.runtime", "http.send", "net.lookup_ip_addr", "providers.aws.sign_req"})
#: Built-ins whose value depends on more than their arguments (the clock, randomness, signing with a
#: random nonce): a policy that uses one is never served from the pool's result cache.
NONDETERMINISTIC_BUILTINS = frozenset({
    "time.now_ns", "rand.intn", "uuid.rfc4122", "io.jwt.decode_verify", "io.jwt.encode_sign", "io.jwt.encode_sign_raw",
    "crypto.x509.parse_and_verify_certificates", "crypto.x509.parse_and_verify_certificates_with_options",
    "trace", "print", *DENIED_BUILTINS,
})
DEFAULT_RESULT_CACHE_ENTRIES = 4096
MAX_RESULT_CACHE_ENTRIES = 1 << 20


@dataclass(frozen=True)
class PolicyEngineConfig:
    """`[policy_engine]`: time and memory limits per Rego compile/evaluation, worker processes, result cache."""

    evaluation_timeout: float = DEFAULT_EVALUATION_TIMEOUT
    workers: int = DEFAULT_WORKERS
    max_worker_memory_mib: int = DEFAULT_MAX_WORKER_MEMORY_MIB
    #: Results of deterministic policies kept per process (0: no cache); see `trustee_common.rego_pool`.
    result_cache_entries: int = DEFAULT_RESULT_CACHE_ENTRIES

    @classmethod
    def from_table(cls, table: ConfigTable, where: str = "policy_engine") -> PolicyEngineConfig:
        timeout = table.number("evaluation_timeout", DEFAULT_EVALUATION_TIMEOUT, minimum_exclusive=0.0)
        workers = table.integer("workers", DEFAULT_WORKERS, minimum=1)
        memory = table.integer("max_worker_memory_mib", DEFAULT_MAX_WORKER_MEMORY_MIB, minimum=MIN_WORKER_MEMORY_MIB)
        cache = table.integer("result_cache_entries", DEFAULT_RESULT_CACHE_ENTRIES, minimum=0)
        table.finish()
        if timeout > MAX_EVALUATION_TIMEOUT:
            raise ConfigError(f"{where}.evaluation_timeout must be <= {MAX_EVALUATION_TIMEOUT:g} seconds, got {timeout:g}")
        if workers > MAX_WORKERS:
            raise ConfigError(f"{where}.workers must be <= {MAX_WORKERS}, got {workers}")
        if cache > MAX_RESULT_CACHE_ENTRIES:
            raise ConfigError(f"{where}.result_cache_entries must be <= {MAX_RESULT_CACHE_ENTRIES}, got {cache}")
        return cls(timeout, workers, memory, cache)


@dataclass(frozen=True)
class PolicySpec:
    """Everything that is compiled; the digest keys every compiled-policy cache."""

    text: str
    package: str = "policy"
    rules: tuple[str, ...] = ("allow",)
    helpers: tuple[str, ...] = ()
    data_keys: tuple[str, ...] = ()

    @functools.cached_property
    def digest(self) -> str:
        fields = [self.text, self.package, list(self.rules), list(self.helpers), list(self.data_keys)]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()

    @property
    def size(self) -> int:
        return len(self.text) + sum(len(h) for h in self.helpers)

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "package": self.package, "rules": self.rules, "helpers": self.helpers, "data_keys": self.data_keys}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> PolicySpec:
        return cls(
            str(value["text"]),
            str(value["package"]),
            tuple(value["rules"]),
            tuple(value["helpers"]),
            tuple(value["data_keys"]),
        )


class RegoPolicy:
    """One compiled policy (plus optional helper modules) and its entry-point rules."""

    def __init__(
        self,
        text: str,
        *,
        package: str = "policy",
        rules: tuple[str, ...] = ("allow",),
        helpers: tuple[str, ...] = (),
        data_keys: tuple[str, ...] = (),
    ) -> None:
        self.spec = PolicySpec(text, package, rules, helpers, data_keys)
        check_text(text, package)
        self._interpreter, self._bundle = _build(self.spec)
        #: No built-in in `NONDETERMINISTIC_BUILTINS`: the result depends on the input and data alone.
        self.deterministic = not used_builtins(self._interpreter, self._bundle) & NONDETERMINISTIC_BUILTINS

    @classmethod
    def from_spec(cls, spec: PolicySpec) -> RegoPolicy:
        return cls(spec.text, package=spec.package, rules=spec.rules, helpers=spec.helpers, data_keys=spec.data_keys)

    @property
    def digest(self) -> str:
        return self.spec.digest

    def evaluate(self, input_: Any, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Evaluate every rule; an undefined rule is absent from the result."""
        supplied = data or {}
        unknown = sorted(set(supplied) - set(self.spec.data_keys))
        if unknown:
            raise InternalError(f"policy data has undeclared key(s) {', '.join(unknown)}")
        if self.spec.data_keys:
            if not isinstance(input_, dict):
                raise InternalError("policy input must be an object")
            input_ = {**input_, DATA_INPUT_KEY: {key: supplied.get(key, {}) for key in self.spec.data_keys}}
        self._interpreter.set_input(rego_input(input_))
        names = [f"r{index}" for index in range(len(self.spec.rules))]
        bindings = _query(self._interpreter, self._bundle, names)
        results: dict[str, Any] = {}
        for rule, name in zip(self.spec.rules, names, strict=True):
            values = bindings.get(name)
            if isinstance(values, list) and values:
                results[rule] = values[0]
        return results


def _query(interpreter: Interpreter, bundle: Bundle, names: list[str]) -> dict[str, Any]:
    """Run the bundle's query; the named bindings read from the result tree (`trustee_common.rego_output`)."""
    try:
        output = rego_shared.rego_bundle_query(interpreter._impl, bundle._impl)
    except RegoError as exc:
        raise InternalError(f"policy evaluation failed: {_first_line(str(exc))}") from None
    try:
        if not _NATIVE.regoOutputOk(output):
            raise InternalError(f"policy evaluation failed: {_first_line(rego_shared.rego_output_string(output))}")
        if _NATIVE.regoOutputSize(output) == 0:
            raise InternalError("policy evaluation was undefined")
        return binding_values(_NATIVE, output, names)
    except EvaluationFailedError as exc:
        raise InternalError(f"policy evaluation failed: {str(exc)[:300]}") from None
    except (OutputError, UnicodeDecodeError, ValueError) as exc:
        raise InternalError(f"policy result cannot be read: {exc}") from None
    finally:
        rego_shared.rego_free_output(output)


def rego_input(value: Any) -> Input:
    """`regopy.Input(value)`, built faster for JSON values (dict, list, str, int, float, bool, None).

    The same library calls as regopy's converter, dispatched on the exact type
    and without releasing the GIL around each tiny call; any other type
    (e.g. a set) goes through regopy's converter. A value the engine cannot
    take (a string that is not valid Unicode) is an `InternalError`, not a
    crash of the worker; integers wrap to 64 bits as with regopy's converter.
    """
    handle = _NATIVE.regoNewInput()
    try:
        _add_input(handle, value)
    except _UnsupportedTypeError:
        _NATIVE.regoFreeInput(handle)
        return Input(value)
    except (ctypes.ArgumentError, UnicodeEncodeError, RecursionError, _NativeError) as exc:
        _NATIVE.regoFreeInput(handle)
        raise InternalError(f"policy input cannot be passed to the policy engine: {type(exc).__name__}") from None
    made: Input = Input.__new__(Input)
    made._impl = handle
    return made


class _UnsupportedTypeError(Exception):
    pass


class _NativeError(Exception):
    pass


def _add_input(handle: int, value: Any) -> None:
    kind = type(value)
    if kind is str:
        code = _NATIVE.regoInputString(handle, value.encode("utf-8"))
    elif kind is dict:
        for key, item in value.items():
            _add_input(handle, key)
            _add_input(handle, item)
            if _NATIVE.regoInputObjectItem(handle):
                raise _NativeError
        code = _NATIVE.regoInputObject(handle, len(value))
    elif kind is list:
        for item in value:
            _add_input(handle, item)
        code = _NATIVE.regoInputArray(handle, len(value))
    elif kind is bool:
        code = _NATIVE.regoInputBoolean(handle, value)
    elif kind is int:
        code = _NATIVE.regoInputInt(handle, value)
    elif value is None:
        code = _NATIVE.regoInputNull(handle)
    elif kind is float:
        code = _NATIVE.regoInputFloat(handle, value)
    else:
        raise _UnsupportedTypeError
    if code:
        raise _NativeError


def _native_library() -> Any:
    """regopy's library (already loaded) with calls that keep the GIL: each input call is short."""
    library = ctypes.PyDLL(rego_shared.path)
    pointer, code = ctypes.c_void_p, ctypes.c_uint32
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "regoNewInput": (pointer, []),
        "regoFreeInput": (None, [pointer]),
        "regoInputString": (code, [pointer, ctypes.c_char_p]),
        "regoInputObjectItem": (code, [pointer]),
        "regoInputObject": (code, [pointer, ctypes.c_uint32]),
        "regoInputArray": (code, [pointer, ctypes.c_uint32]),
        "regoInputBoolean": (code, [pointer, ctypes.c_bool]),
        "regoInputInt": (code, [pointer, ctypes.c_int64]),
        "regoInputNull": (code, [pointer]),
        "regoInputFloat": (code, [pointer, ctypes.c_double]),
        "regoOutputOk": (ctypes.c_bool, [pointer]),
        "regoOutputSize": (code, [pointer]),
        "regoOutputBindingAtIndex": (pointer, [pointer, code, ctypes.c_char_p]),
        "regoNodeType": (code, [pointer]),
        "regoNodeSize": (code, [pointer]),
        "regoNodeGet": (pointer, [pointer, code]),
        "regoNodeValueSize": (code, [pointer]),
        "regoNodeValue": (code, [pointer, ctypes.c_char_p, code]),
    }
    for name, (result, arguments) in signatures.items():
        function = getattr(library, name)
        function.restype, function.argtypes = result, arguments
    return library


_NATIVE = _native_library()


def check_text(text: str, package: str) -> None:
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise InvalidPolicyError(f"policy is larger than {MAX_POLICY_BYTES} bytes")
    declared = _PACKAGE.search(text)
    if declared is None or declared.group(1) != package:
        raise InvalidPolicyError(f"policy must declare `package {package}`")


def evaluation_query(spec: PolicySpec) -> str:
    """`r<i> := [x | x := data.<package>.<rule i>]` per rule, each with the data overrides.

    The overrides read the carried data through a variable local to each
    comprehension, so the supplied data is not a binding of the query: the
    worker would otherwise get it back in every output and parse it again.
    (rego-cpp ignores a `with` whose value is a reference into `input`.)
    """
    withs = "".join(f" with data[{json.dumps(key)}] as __td[{json.dumps(key)}]" for key in spec.data_keys)
    carried = f"__td := input[{json.dumps(DATA_INPUT_KEY)}]; " if spec.data_keys else ""
    parts = []
    for index, rule in enumerate(spec.rules):
        if not _RULE.fullmatch(rule):
            raise InvalidPolicyError(f"invalid entry-point rule name {rule!r}")
        parts.append(f"r{index} := [__x | {carried}__x := data.{spec.package}.{rule}{withs}]")
    return "; ".join(parts)


def _build(spec: PolicySpec) -> tuple[Interpreter, Bundle]:
    interpreter = Interpreter()
    try:
        with _quiet_stdout():
            interpreter.add_module("policy.rego", rewrite_escapes(spec.text))
            for i, helper in enumerate(spec.helpers):
                interpreter.add_module(f"helper{i}.rego", rewrite_escapes(helper))
            bundle = interpreter.build(evaluation_query(spec), [])
    except RegoError as exc:
        raise InvalidPolicyError(f"policy does not compile: {_first_line(str(exc))}") from None
    if not bundle.ok():
        raise InvalidPolicyError("policy does not compile")
    denied = sorted(used_builtins(interpreter, bundle) & DENIED_BUILTINS)
    if denied:
        raise InvalidPolicyError(
            f"policy uses the built-in function(s) {', '.join(denied)}, which are disabled "
            "(they reach the process environment or the network)"
        )
    return interpreter, bundle


def used_builtins(interpreter: Interpreter, bundle: Bundle) -> set[str]:
    """Every built-in the compiled plan can call: the engine's own list (the plan's `builtin_funcs`).

    Read from the bundle's node tree (saving the bundle to disk to read its
    `plan.json` aborts the process when grpc is loaded). The list sits at a
    fixed place in rego-cpp 1.5's bundle tree; if that place does not hold
    only built-in names, every value in the tree is returned instead (a
    superset: a denied name anywhere refuses the policy).
    """
    root = bundle.node()._impl
    listed = _node_path_values(root, (1, 0, 2))
    if listed is not None and all(interpreter.is_builtin(name) for name in listed):
        return set(listed)
    found: set[str] = set()
    _all_values(root, found)
    return found


def _child(node: Any, index: int) -> Any:
    return rego_node_get(node, index) if 0 <= index < rego_node_size(node) else None


def _value(node: Any) -> str | None:
    try:
        return str(rego_node_value(node))
    except (RegoError, ValueError):
        return None


def _node_path_values(root: Any, path: tuple[int, ...]) -> list[str] | None:
    node = root
    for index in path:
        node = _child(node, index)
        if node is None:
            return None
    names = []
    for k in range(rego_node_size(node)):
        entry = _child(node, k)
        name = None if entry is None or _child(entry, 0) is None else _value(_child(entry, 0))
        if name is None:
            return None
        names.append(name)
    return names


def _all_values(node: Any, found: set[str]) -> None:
    value = _value(node)
    if value is not None:
        found.add(value)
    for k in range(rego_node_size(node)):
        _all_values(rego_node_get(node, k), found)


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
_RULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ERROR = re.compile(r"\(error \d+:[^|]*\|(\d+)\|\d+\s*\(errormsg \d+:([^)]*)\)")


def _first_line(text: str) -> str:
    """Condense rego-cpp's error S-expression to `offset N: message`."""
    found = _ERROR.findall(text)
    if found:
        return "; ".join(f"at byte {offset}: {msg}" for offset, msg in found[:3])
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:4])[:300] if lines else "unknown error"
