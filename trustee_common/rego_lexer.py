"""A small Rego tokenizer: enough to find string literals and the tokens around them.

It knows Rego's lexical rules that matter for that: `#` comments run to the
end of the line, double-quoted strings hold backslash escapes and no raw
newline, raw strings run between backticks with no escapes at all. Every
other character is an identifier, a number, whitespace or a punctuation
mark (`==`, `!=`, `:=`, `<=`, `>=` are one token). The tokens cover the text
exactly, so a caller can rebuild it from them. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STRING = "string"
RAW = "raw"
COMMENT = "comment"
SPACE = "space"
IDENT = "ident"
NUMBER = "number"
PUNCT = "punct"

_TOKEN = re.compile(
    r'(?P<string>"(?:[^"\\\n]|\\.)*"?)'
    r"|(?P<raw>`[^`]*`?)"
    r"|(?P<comment>#[^\n]*)"
    r"|(?P<space>\s+)"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<number>[0-9][0-9A-Za-z_.]*)"
    r"|(?P<punct>==|!=|:=|<=|>=|.)",
    re.DOTALL,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    start: int
    #: True when a newline lies between this token and the previous code token (or it is the first).
    line_start: bool = False

    @property
    def is_literal(self) -> bool:
        return self.kind in (STRING, RAW)


def tokenize(text: str) -> list[Token]:
    """Every token of `text`, whitespace and comments included, in order."""
    return [Token(m.lastgroup or PUNCT, m.group(), m.start()) for m in _TOKEN.finditer(text)]


def code_tokens(text: str) -> list[Token]:
    """The tokens without whitespace and comments, each marked when it begins a line."""
    out: list[Token] = []
    newline = True
    for token in tokenize(text):
        if token.kind == SPACE:
            newline = newline or "\n" in token.text
            continue
        if token.kind == COMMENT:
            continue
        out.append(Token(token.kind, token.text, token.start, newline))
        newline = False
    return out


def literal_value(token: Token) -> str | None:
    """What a string literal means in OPA (escapes decoded); None for a malformed literal."""
    if token.kind == RAW:
        return token.text[1:-1] if len(token.text) >= 2 and token.text.endswith("`") else None
    if token.kind != STRING or len(token.text) < 2 or not token.text.endswith('"'):
        return None
    return decode_escapes(token.text[1:-1])


def callee_start(tokens: list[Token], paren: int) -> int | None:
    """The index of the first token of the (dotted) name called by the `(` at `paren`; None when no name precedes it."""
    start = paren
    while start >= 2 and tokens[start - 1].kind == IDENT and tokens[start - 2].text == ".":
        start -= 2
    if start < 1 or tokens[start - 1].kind != IDENT:
        return None
    return start - 1


_ESCAPE = re.compile(r'\\(?:u([0-9A-Fa-f]{4})|(["\\/bfnrt]))|\\')
_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def decode_escapes(body: str) -> str | None:
    """The escapes of a double-quoted literal's body decoded as OPA (Go) does; None on a bad escape.

    A surrogate pair in `\\uXXXX\\uXXXX` form is one character; a lone
    surrogate becomes U+FFFD, as Go's strconv.Unquote makes it."""
    units: list[str] = []
    position = 0
    for match in _ESCAPE.finditer(body):
        units.append(body[position : match.start()])
        position = match.end()
        if match.group(1) is not None:
            units.append(chr(int(match.group(1), 16)))
        elif match.group(2) is not None:
            units.append(_SIMPLE[match.group(2)])
        else:
            return None
    units.append(body[position:])
    return _join_surrogates("".join(units))


def _join_surrogates(text: str) -> str:
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        high = ord(text[i])
        if 0xD800 <= high <= 0xDBFF and i + 1 < len(text) and 0xDC00 <= ord(text[i + 1]) <= 0xDFFF:
            out.append(chr(0x10000 + ((high - 0xD800) << 10) + (ord(text[i + 1]) - 0xDC00)))
            i += 2
            continue
        out.append("\ufffd" if 0xD800 <= high <= 0xDFFF else text[i])
        i += 1
    return "".join(out)
