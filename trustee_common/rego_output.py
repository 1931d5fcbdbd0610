"""Read a query's bindings from rego-cpp's result tree, not from its JSON text.

regopy builds every `Output` by parsing rego-cpp's JSON rendering of the
result, and rego-cpp 1.5 writes strings into that JSON without escaping
them: a rule whose value holds `"` makes the whole output unreadable, and
one holding a backslash comes back changed (`a\\nb` read as a newline).
The tree holds each string's real characters, so this module walks it.

`binding_values(native, output, names)` returns the value of each named
binding of the first result (absent when the binding is undefined), as
JSON-shaped Python values: sets become lists (in the engine's order),
object keys that are not strings become their JSON text, as OPA renders
them. `native` is rego-cpp's library with the node calls declared
(`trustee_common.rego` sets it up, after the allocator is shared); this
module imports no regopy so that it can be loaded in any order. A tree
deeper than `MAX_DEPTH` or of an unknown kind raises `OutputError`;
a runtime error of the policy found in the tree raises `EvaluationFailedError`.
"""

from __future__ import annotations

import ctypes
import json
from typing import Any

#: rego-cpp's node kinds (regopy.NodeKind values).
TERM, SCALAR, ARRAY, SET, OBJECT, OBJECT_ITEM = 1002, 1003, 1004, 1005, 1006, 1007
INT, FLOAT, STRING, TRUE, FALSE, BOOLEAN, NULL = 1008, 1009, 1010, 1011, 1012, 1111, 1013
ERROR, ERROR_MESSAGE = 1800, 1801
#: Nesting beyond this is refused (results are built from bounded inputs; this keeps recursion safe).
MAX_DEPTH = 200


class OutputError(Exception):
    """The result tree has a shape this reader does not know."""


class EvaluationFailedError(Exception):
    """The result holds a runtime error of the policy (e.g. a division by zero); the message is the engine's."""


def binding_values(native: Any, output: int, names: list[str]) -> dict[str, Any]:
    """`{name: value}` for each name bound in the first result of `output`."""
    values: dict[str, Any] = {}
    for name in names:
        node = native.regoOutputBindingAtIndex(output, 0, name.encode())
        if node:
            values[name] = node_value(native, node, 0)
    return values


def node_value(native: Any, node: int, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise OutputError(f"result nested deeper than {MAX_DEPTH}")
    node_type, get = native.regoNodeType, native.regoNodeGet
    kind = node_type(node)
    while kind == TERM or kind == SCALAR:
        node = get(node, 0)
        kind = node_type(node)
    if kind == INT:
        return int(_text(native, node))
    if kind == STRING:
        return _text(native, node)
    if kind == OBJECT:
        return dict(_item(native, get(node, i), depth + 1) for i in range(native.regoNodeSize(node)))
    if kind == ARRAY or kind == SET:
        return [node_value(native, get(node, i), depth + 1) for i in range(native.regoNodeSize(node))]
    if kind == TRUE or kind == FALSE:
        return kind == TRUE
    if kind == BOOLEAN:
        return _text(native, node) == "true"
    if kind == FLOAT:
        return float(_text(native, node))
    if kind == NULL:
        return None
    if kind == ERROR:
        raise EvaluationFailedError(_error_message(native, node))
    raise OutputError(f"result holds a node of kind {kind}")


def _item(native: Any, item: int, depth: int) -> tuple[str, Any]:
    if native.regoNodeType(item) != OBJECT_ITEM or native.regoNodeSize(item) != 2:
        raise OutputError("object entry is not a key and a value")
    key = node_value(native, native.regoNodeGet(item, 0), depth + 1)
    text = key if isinstance(key, str) else json.dumps(key, separators=(",", ":"))
    return text, node_value(native, native.regoNodeGet(item, 1), depth + 1)


def _error_message(native: Any, node: int) -> str:
    for i in range(native.regoNodeSize(node)):
        child = native.regoNodeGet(node, i)
        if native.regoNodeType(child) == ERROR_MESSAGE:
            return _text(native, child).strip() or "runtime error"
    return "runtime error"


def _text(native: Any, node: int) -> str:
    size = native.regoNodeValueSize(node)
    buffer = ctypes.create_string_buffer(size)
    if native.regoNodeValue(node, buffer, size):
        raise OutputError("the engine could not give a node's value")
    return buffer.raw[: max(size - 1, 0)].decode("utf-8")  # the size counts a terminating NUL; a NUL inside is kept
