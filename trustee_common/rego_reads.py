"""Which parts of `input` a Rego policy can read, decided from its text alone (pure).

Rego reaches the input only through the root document `input`. When every
occurrence of the identifier `input` in a policy's modules starts a chain of
static references (`.name` or `["literal"]`, at least one), the policy can
read nothing but the subtrees at those paths: `input.tdx.quote.body.mr_td`
reads that one value, `input.tdx[x]` the whole `tdx` object. Everything
else (`input` passed whole to a function or compared, iterated with
`input[x]`, replaced with `with input`, bound by `import input`, or a
template string, whose references hide inside a literal) makes the answer
None: the policy may read all of it.

`trim_input` keeps only those subtrees. A policy evaluated on the trimmed
input gives the result it gives on the full input, because each reference
it makes resolves to the same value or is undefined in both. The Rego pool
(`trustee_common.rego_pool`) trims before it converts (less work) and keys
its result cache on the trimmed input, so guests whose evidence differs
only in what the policy does not read (a nonce, a TEE key) share results.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from trustee_common.rego_lexer import IDENT, PUNCT, Token, code_tokens, literal_value

#: Paths (key sequences from the input's root) that a policy can read.
InputPaths = frozenset[tuple[str, ...]]


def input_paths(modules: Iterable[str]) -> InputPaths | None:
    """The input paths the modules read, or None when they may read the whole input."""
    paths: set[tuple[str, ...]] = set()
    for text in modules:
        tokens = code_tokens(text)
        for index, token in enumerate(tokens):
            if token.kind == PUNCT and token.text == "$" and index + 1 < len(tokens) and tokens[index + 1].is_literal:
                return None  # a template string (`$"{input.x}"`) can reference the input inside a literal
            if token.kind != IDENT or token.text != "input":
                continue
            before = tokens[index - 1] if index else None
            if before is not None and before.kind == PUNCT and before.text == ".":
                continue  # `x.input`: a key named "input" of something else
            if before is not None and before.kind == IDENT and before.text in ("import", "with"):
                return None
            path = _static_path(tokens, index + 1)
            if not path:
                return None
            paths.add(path)
    return frozenset(paths)


def _static_path(tokens: list[Token], start: int) -> tuple[str, ...] | None:
    """The keys of the `.name` / `["literal"]` chain from `start`; None for a malformed literal."""
    keys: list[str] = []
    at = start
    while at + 1 < len(tokens):
        mark, key = tokens[at], tokens[at + 1]
        if mark.kind == PUNCT and mark.text == "." and key.kind == IDENT:
            keys.append(key.text)
            at += 2
            continue
        closing = tokens[at + 2] if at + 2 < len(tokens) else None
        if mark.kind == PUNCT and mark.text == "[" and key.is_literal and closing is not None and closing.text == "]":
            value = literal_value(key)
            if value is None:
                return None
            keys.append(value)
            at += 3
            continue
        break
    return tuple(keys)


def trim_input(value: Any, paths: InputPaths | None) -> Any:
    """`value` with only the subtrees at `paths` (all of it when `paths` is None or it is not an object)."""
    if paths is None or not isinstance(value, dict):
        return value
    kept: dict[str, Any] = {}
    for path in sorted(paths, key=len):
        _keep(value, kept, path)
    return kept


def _keep(source: dict[str, Any], target: dict[str, Any], path: tuple[str, ...]) -> None:
    """Copy the subtree at `path` from `source` into `target` (nothing when the path does not resolve)."""
    *parents, last = path
    for key in parents:
        child = source.get(key)
        if not isinstance(child, dict):
            return  # a reference through a non-object is undefined with or without trimming
        held = target.get(key)
        if held is child:
            return  # a shorter path already kept this whole subtree
        if not isinstance(held, dict):
            held = target[key] = {}
        source, target = child, held
    if last in source:
        target[last] = source[last]
