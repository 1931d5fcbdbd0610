"""Which form of `data["resource-path"]` a resource policy expects, read from its text.

Upstream's KBS gives the policy a list of segments (`["repo", "type", "tag"]`;
its tests use `data["resource-path"][1]` and `count(data["resource-path"]) == 3`),
while upstream's user documentation shows a string (`split(data["resource-path"], "/")`)
and this KBS gave the string until now. Each form silently denies in a
policy written for the other, so the KBS picks, once per policy text, the
form the text uses:

* `LIST` when some use needs a list: the path indexed or iterated
  (`data["resource-path"][i]`, `x in data["resource-path"]`), passed to
  `count`, `concat` (as the array), `is_array` or an `array.*` function,
  or compared with an array literal;
* otherwise `STRING` ("repo/type/tag"): for a text that splits it, passes it
  to another string function, compares it with a string, or does not use it.

A name bound to the path (`p := data["resource-path"]`) counts as the path.
A text with uses of both kinds gets `LIST` (what upstream's KBS gives) and
`mixed` is set so the KBS can warn at upload. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from trustee_common.rego_lexer import IDENT, PUNCT, Token, code_tokens, literal_value

LIST = "list"
STRING = "string"
PATH_KEY = "resource-path"

_LIST_CALLS = frozenset({"count", "is_array", "array.concat", "array.slice", "array.reverse"})
_STRING_CALLS = frozenset({
    "split", "startswith", "endswith", "contains", "indexof", "indexof_n", "substring", "lower", "upper",
    "trim", "trim_left", "trim_right", "trim_prefix", "trim_suffix", "trim_space", "replace", "is_string",
    "strings.replace_n", "strings.reverse", "strings.count", "strings.any_prefix_match", "strings.any_suffix_match",
    "regex.match", "regex.split", "regex.find_n", "glob.match", "base64.encode", "urlquery.encode",
})


@dataclass(frozen=True)
class PathForm:
    form: str
    #: What decided it, for the upload log line.
    reason: str
    mixed: bool = False

    def value(self, path: str) -> str | list[str]:
        """`path` ("repo/type/tag") in this form."""
        return path.split("/") if self.form == LIST else path


def path_form(text: str) -> PathForm:
    """The form `text` expects, as described in the module docstring."""
    tokens = code_tokens(text)
    sites = _path_sites(tokens)
    list_uses: list[str] = []
    string_uses: list[str] = []
    for start, end in sites:
        verdict = _classify(tokens, start, end)
        if verdict is not None:
            (list_uses if verdict[0] == LIST else string_uses).append(verdict[1])
    if list_uses:
        reason = "the text uses it as a list (" + ", ".join(sorted(set(list_uses))) + ")"
        if string_uses:
            reason += " and as a string (" + ", ".join(sorted(set(string_uses))) + ")"
        return PathForm(LIST, reason, mixed=bool(string_uses))
    if string_uses:
        return PathForm(STRING, "the text uses it as a string (" + ", ".join(sorted(set(string_uses))) + ")")
    if sites:
        return PathForm(STRING, "the text's uses of it work with either form; the string is the default")
    return PathForm(STRING, "the text does not use it; the string is the default")


def _path_sites(tokens: list[Token]) -> list[tuple[int, int]]:
    """Token ranges that denote the path: `data["resource-path"]` and the names bound to it."""
    sites: list[tuple[int, int]] = []
    for i in range(len(tokens) - 3):
        if (
            tokens[i].kind == IDENT and tokens[i].text == "data" and (i == 0 or tokens[i - 1].text != ".")
            and tokens[i + 1].text == "[" and tokens[i + 2].is_literal
            and literal_value(tokens[i + 2]) == PATH_KEY and tokens[i + 3].text == "]"
        ):
            sites.append((i, i + 4))
    aliases = {_alias(tokens, start, end) for start, end in sites} - {None}
    for i, token in enumerate(tokens):
        if token.kind == IDENT and token.text in aliases and not _is_binding(tokens, i) and (i == 0 or tokens[i - 1].text != "."):
            sites.append((i, i + 1))
    return sites


def _alias(tokens: list[Token], start: int, end: int) -> str | None:
    """`name` when the site is the whole right side of `name := <site>` or `name = <site>`."""
    if start >= 2 and tokens[start - 1].text in (":=", "=") and tokens[start - 2].kind == IDENT:
        following = tokens[end] if end < len(tokens) else None
        if following is None or following.line_start or following.text in (";", "}", "if"):
            return tokens[start - 2].text
    return None


def _is_binding(tokens: list[Token], i: int) -> bool:
    return i + 1 < len(tokens) and tokens[i + 1].text in (":=", "=") and (i + 2 < len(tokens) and tokens[i + 2].text == "data")


def _classify(tokens: list[Token], start: int, end: int) -> tuple[str, str] | None:
    """(form, what shows it) for one use of the path, or None when the use says nothing."""
    after = tokens[end] if end < len(tokens) else None
    before = tokens[start - 1] if start > 0 else None
    if after is not None and after.text == "[" and not after.line_start:
        return LIST, "indexed"
    if before is not None and before.kind == IDENT and before.text == "in":
        return LIST, "iterated with `in`"
    call = _enclosing_call(tokens, start, end)
    if call is not None:
        name, position = call
        if name in _LIST_CALLS or name.startswith("array.") or (name == "concat" and position == 1):
            return LIST, f"passed to {name}"
        if name in _STRING_CALLS or name.startswith(("strings.", "regex.", "glob.")):
            return STRING, f"passed to {name}"
    compared = _compared_with(tokens, start, end)
    if compared == "[":
        return LIST, "compared with an array"
    if compared == '"':
        return STRING, "compared with a string"
    return None


def _enclosing_call(tokens: list[Token], start: int, end: int) -> tuple[str, int] | None:
    """(callee, argument index) when the site is a whole argument of a call."""
    if start == 0 or end >= len(tokens) or tokens[start - 1].text not in ("(", ",") or tokens[end].text not in (")", ","):
        return None
    depth = 0
    position = 0
    i = start - 1
    while i >= 0:
        text = tokens[i].text if tokens[i].kind == PUNCT else ""
        if text in (")", "]", "}"):
            depth += 1
        elif text in ("[", "{") or (text == "(" and depth > 0):
            if depth == 0:
                return None
            depth -= 1
        elif text == "(":
            return _callee(tokens, i), position
        elif text == "," and depth == 0:
            position += 1
        i -= 1
    return None


def _callee(tokens: list[Token], paren: int) -> str:
    start = paren
    while start >= 2 and tokens[start - 1].kind == IDENT and tokens[start - 2].text == ".":
        start -= 2
    if start < 1 or tokens[start - 1].kind != IDENT:
        return ""
    return "".join(t.text for t in tokens[start - 1 : paren])


def _compared_with(tokens: list[Token], start: int, end: int) -> str | None:
    """`"` or `[` when the site is compared (`==`, `!=`) with a string literal or an array literal."""
    if end + 1 < len(tokens) and tokens[end].text in ("==", "!="):
        other = tokens[end + 1]
        return '"' if other.is_literal else ("[" if other.text == "[" else None)
    if start >= 2 and tokens[start - 1].text in ("==", "!="):
        other = tokens[start - 2]
        if other.is_literal:
            return '"'
        if other.text == "]":
            return "["
    return None
