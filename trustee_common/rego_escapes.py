"""Work around regopy 1.5 keeping string literals in their escaped source form.

OPA decodes the escapes of a double-quoted literal (`\\n`, `\\t`, `\\r`,
`\\b`, `\\f`, `\\"`, `\\\\`, `\\/`, `\\uXXXX`, surrogate pairs too): `"a\\nb"`
is three characters. regopy (rego-cpp 1.5) keeps the characters as written,
so `count("a\\nb")` is 4 and `input.s == "a\\nb"` is false for a two-line
`input.s` (regopy gives `input` strings their real characters). A raw
string holding a newline, `"` or `\\` is kept escaped the same way.
tests/common/test_rego_escapes.py shows the defect in regopy itself; when
it fails, regopy is fixed and this module can go.

`rewrite_escapes(text)` returns the policy text with each such literal
replaced by an equivalent regopy understands, and every other byte as it was:

* decoded, the literal holds no `"`, `\\` or control character (say
  `"caf\\u00e9"`, `"a\\/b"`): the plain literal of the decoded text (`"café"`,
  `"a/b"`), a constant that is valid wherever a literal is;
* otherwise `base64.decode("<base64 of the UTF-8 text>")`, which regopy
  evaluates to the real characters.

Left as written, because regopy would refuse or crash on a call there or
decodes the escapes itself: literals in the arguments of a function's head
(`f("a\\n") := ...`), the value of `with ... as` (literals nested in it too), and the arguments of
`regex.*` and `glob.*` calls (regopy's regex and glob built-ins decode
their pattern's escapes themselves). A malformed literal is left for the
compiler to reject. `undecoded_literals(text)` names the first two kinds
(where the escapes keep regopy's meaning), so a service can warn at upload.
Pure.
"""

from __future__ import annotations

import base64

from trustee_common.rego_lexer import IDENT, PUNCT, RAW, STRING, Token, callee_start, code_tokens, literal_value

#: Built-in namespaces whose functions decode the escapes of their string arguments themselves in regopy.
SELF_DECODING = ("regex.", "glob.")


def rewrite_escapes(text: str) -> str:
    """`text` with the literals regopy would misread replaced as described above."""
    if "\\" not in text and "`" not in text:
        return text
    tokens = code_tokens(text)
    keep = _kept_positions(tokens)
    parts: list[str] = []
    position = 0
    for index, token in enumerate(tokens):
        if not token.is_literal or index in keep:
            continue
        replacement = _replacement(token)
        if replacement is None:
            continue
        parts.append(text[position : token.start])
        parts.append(replacement)
        position = token.start + len(token.text)
    if not parts:
        return text
    parts.append(text[position:])
    return "".join(parts)


def undecoded_literals(text: str, limit: int = 6) -> list[str]:
    """`line N: <literal>` for the first `limit` literals with escapes left as written where regopy does not decode them."""
    if "\\" not in text and "`" not in text:
        return []
    tokens = code_tokens(text)
    found: list[str] = []
    line, counted = 1, 0
    for index, role in sorted(_kept_roles(tokens).items()):
        token = tokens[index]
        if role == "self" or _replacement(token) is None:
            continue
        line += text.count("\n", counted, token.start)
        counted = token.start
        found.append(f"line {line}: {token.text[:40]}")
        if len(found) >= limit:
            break
    return found


def undecoded_warning(text: str) -> str | None:
    """One warning line naming the literals `undecoded_literals` finds, or None."""
    found = undecoded_literals(text)
    if not found:
        return None
    return ("escapes in a function head or a `with ... as` value keep their written form under regopy "
            "(a \\n there is two characters, not a newline): " + "; ".join(found[:5]) + ("; ..." if len(found) > 5 else ""))


def needs_call(value: str) -> bool:
    """True when regopy can hold `value` only through a call (it has `"`, `\\` or a control character)."""
    return any(c in '"\\' or ord(c) < 0x20 for c in value)


def _replacement(token: Token) -> str | None:
    if token.kind == RAW and "\\" not in token.text and '"' not in token.text and not any(ord(c) < 0x20 for c in token.text):
        return None
    if token.kind == STRING and "\\" not in token.text:
        return None
    value = literal_value(token)
    if value is None:
        return None
    if not needs_call(value):
        return '"' + value + '"'
    encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
    return f'base64.decode("{encoded}")'


def _kept_positions(tokens: list[Token]) -> set[int]:
    """Indexes of literals to leave as written: function-head arguments, `with ... as` values, regex/glob arguments."""
    return set(_kept_roles(tokens))


def _kept_roles(tokens: list[Token]) -> dict[int, str]:
    """`_kept_positions` with why each is kept: "head", "with" or "self" (a regex/glob argument)."""
    keep: dict[int, str] = {}
    stack: list[str] = []  # per open bracket: "head", "self", "with", or "" (anything else)
    for index, token in enumerate(tokens):
        if token.kind == PUNCT and token.text in "([{":
            stack.append(_bracket_role(tokens, index, depth=len(stack)))
        elif token.kind == PUNCT and token.text in ")]}":
            if stack:
                stack.pop()
        elif token.is_literal:
            after_as = index > 0 and tokens[index - 1].kind == IDENT and tokens[index - 1].text == "as"
            roles = [role for role in stack if role]
            if after_as or roles:
                keep[index] = "with" if after_as else roles[-1]
    return keep


def _bracket_role(tokens: list[Token], index: int, depth: int) -> str:
    """What the bracket at `index` opens: a function head, a regex/glob call, a `with` value, or something else."""
    if index > 0 and tokens[index - 1].kind == IDENT and tokens[index - 1].text == "as":
        return "with"
    if tokens[index].text != "(":
        return ""
    start = callee_start(tokens, index)
    if start is None:
        return ""
    callee = "".join(t.text for t in tokens[start:index])
    if callee.startswith(SELF_DECODING):
        return "self"
    first = tokens[start]
    if depth == 0 and (first.line_start or (start > 0 and tokens[start - 1].text == "default")):
        return "head"
    return ""
