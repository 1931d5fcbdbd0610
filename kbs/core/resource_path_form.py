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
  compared or unified with an array literal (`==`, `!=`, `=`), or
  destructured (`[repo, kind, tag] := data["resource-path"]`);
* otherwise `STRING` ("repo/type/tag"): for a text that splits it, passes it
  to another string function, compares it with a string, or does not use it.

A name bound to the path (`p := data["resource-path"]`) counts as the path,
and so does a parameter of a function of the text that the path is passed
to (`f(data["resource-path"])` with `f(p) if p[0] == "a"`): its uses in
that function's rules decide, followed through up to 4 such calls.
A text with uses of both kinds gets `LIST` (what upstream's KBS gives) and
`mixed` is set so the KBS can warn at upload. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from trustee_common.rego_lexer import IDENT, PUNCT, Token, callee_start, code_tokens, literal_value

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


#: Keywords after which `[` opens an array literal rather than indexing a name.
_KEYWORDS = frozenset({"if", "in", "some", "every", "not", "else", "return", "with", "as", "contains", "default"})


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
    """The form `text` expects, as described in the module docstring. Linear in the text's size (bounded follow-through)."""
    text_ = _Text(code_tokens(text))
    sites = _path_sites(text_.tokens)
    list_uses: list[str] = []
    string_uses: list[str] = []
    for start, end in sites:
        for form, what in text_.classify(start, end, MAX_CALL_DEPTH):
            (list_uses if form == LIST else string_uses).append(what)
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


#: How many calls of the text's own functions a use of the path is followed through.
MAX_CALL_DEPTH = 4
#: How many parameter uses all that following may look at, in total: a text of many functions stays cheap to read.
MAX_FOLLOWED_USES = 20_000

Verdicts = list[tuple[str, str]]
_OPEN, _CLOSE = "([{", ")]}"


class _Text:
    """A policy's tokens with its bracket structure, computed once: what each bracket matches, what encloses each token."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        n = len(tokens)
        #: For a closing bracket, its opening one; for an opening one, its closing one (-1: unmatched).
        self.partner = [-1] * n
        #: The innermost open bracket around each token (-1: none) and the token's argument index inside it.
        self.parent = [-1] * n
        self.position = [0] * n
        self.rule_starts: list[int] = []
        stack: list[list[int]] = []  # [open index, commas seen]
        for i, token in enumerate(tokens):
            if token.line_start and not stack:
                self.rule_starts.append(i)
            if stack:
                self.parent[i], self.position[i] = stack[-1]
            if token.kind != PUNCT:
                continue
            if token.text in _OPEN:
                stack.append([i, 0])
            elif token.text in _CLOSE and stack:
                opened = stack.pop()[0]
                self.partner[opened], self.partner[i] = i, opened
            elif token.text == "," and stack:
                stack[-1][1] += 1
        self.functions = self._functions()
        self._followed: dict[tuple[str, int, int], Verdicts] = {}
        self._budget = MAX_FOLLOWED_USES

    def classify(self, start: int, end: int, depth: int) -> Verdicts:
        """(form, what shows it) for one use of the path; empty when the use says nothing."""
        tokens = self.tokens
        after = tokens[end] if end < len(tokens) else None
        before = tokens[start - 1] if start > 0 else None
        if after is not None and after.text == "[" and not after.line_start:
            return [(LIST, "indexed")]
        if before is not None and before.kind == IDENT and before.text == "in":
            return [(LIST, "iterated with `in`")]
        call = self._enclosing_call(start, end)
        if call is not None:
            name, position = call
            if name in _LIST_CALLS or name.startswith("array.") or (name == "concat" and position == 1):
                return [(LIST, f"passed to {name}")]
            if name in _STRING_CALLS or name.startswith(("strings.", "regex.", "glob.")):
                return [(STRING, f"passed to {name}")]
            if name in self.functions and depth > 0:
                return self._follow(name, position, depth - 1)
        if start >= 2 and tokens[start - 1].text in (":=", "=") and self._array_literal_ends_at(start - 2):
            return [(LIST, "destructured as an array")]
        compared = self._compared_with(start, end)
        if compared == "[":
            return [(LIST, "compared with an array")]
        if compared == '"':
            return [(STRING, "compared with a string")]
        return []

    def _follow(self, name: str, position: int, depth: int) -> Verdicts:
        """The uses of parameter `position` of the text's function `name`, in each of its rules (memoised, within budget)."""
        key = (name, position, depth)
        if key in self._followed:
            return self._followed[key]
        self._followed[key] = []  # a recursive function adds nothing new through itself
        found: Verdicts = []
        for params, (first, last) in self.functions[name]:
            param = params[position] if position < len(params) else None
            if param is None:
                continue
            for i in range(first, last):
                if self.tokens[i].kind == IDENT and self.tokens[i].text == param and self.tokens[i - 1].text != ".":
                    self._budget -= 1
                    if self._budget < 0:
                        return found
                    found += [(form, f"{what} in function {name}") for form, what in self.classify(i, i + 1, depth)]
        self._followed[key] = found
        return found

    def _functions(self) -> dict[str, list[tuple[list[str | None], tuple[int, int]]]]:
        """The text's functions: rules whose head is `name(params)`; name -> (parameter names, token span of the rule)."""
        tokens = self.tokens
        functions: dict[str, list[tuple[list[str | None], tuple[int, int]]]] = {}
        for n, head in enumerate(self.rule_starts):
            if tokens[head].kind != IDENT or head + 1 >= len(tokens) or tokens[head + 1].text != "(" or self.partner[head + 1] < 0:
                continue
            close = self.partner[head + 1]
            params: list[str | None] = []
            current: list[Token] = []
            for i in range(head + 2, close + 1):
                if i == close or (tokens[i].text == "," and self.parent[i] == head + 1):
                    params.append(current[0].text if len(current) == 1 and current[0].kind == IDENT else None)
                    current = []
                else:
                    current.append(tokens[i])
            span_end = self.rule_starts[n + 1] if n + 1 < len(self.rule_starts) else len(tokens)
            functions.setdefault(tokens[head].text, []).append((params, (close + 1, span_end)))
        return functions

    def _enclosing_call(self, start: int, end: int) -> tuple[str, int] | None:
        """(callee, argument index) when the site is a whole argument of a call."""
        tokens = self.tokens
        if start == 0 or end >= len(tokens) or tokens[start - 1].text not in ("(", ",") or tokens[end].text not in (")", ","):
            return None
        opened = self.parent[start]
        if opened < 0 or tokens[opened].text != "(":
            return None
        return _callee(tokens, opened), self.position[start]

    def _compared_with(self, start: int, end: int) -> str | None:
        """`"` or `[` when the site is compared or unified (`==`, `!=`, `=`) with a string or an array literal."""
        tokens = self.tokens
        if end + 1 < len(tokens) and tokens[end].text in ("==", "!=", "="):
            other = tokens[end + 1]
            return '"' if other.is_literal else ("[" if other.text == "[" else None)
        if start >= 2 and tokens[start - 1].text in ("==", "!=", "="):
            if tokens[start - 2].is_literal:
                return '"'
            if self._array_literal_ends_at(start - 2):
                return "["
        return None

    def _array_literal_ends_at(self, close: int) -> bool:
        """Whether `tokens[close]` is the `]` of an array literal (not of an index such as `x[0]`)."""
        opened = self.partner[close] if self.tokens[close].text == "]" else -1
        if opened < 0:
            return False
        return opened == 0 or self.tokens[opened].line_start or _opens_a_value(self.tokens[opened - 1])


def _callee(tokens: list[Token], paren: int) -> str:
    start = callee_start(tokens, paren)
    return "" if start is None else "".join(t.text for t in tokens[start:paren])


def _opens_a_value(previous: Token) -> bool:
    """Whether a `[` right after `previous` starts an array literal: after an operator or a keyword, not after a term."""
    if previous.kind == PUNCT:
        return previous.text not in (")", "]", "}", ".")
    return previous.kind == IDENT and previous.text in _KEYWORDS
