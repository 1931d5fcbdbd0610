"""String-literal escapes: regopy's defect, and what our rewrite makes of policy texts.

`test_regopy_itself_does_not_decode_escapes` asserts regopy's DEFECTIVE
behaviour on purpose. When it fails, regopy decodes escapes itself: then
trustee_common.rego_escapes (and its call in trustee_common.rego) can be
dropped, and this file with it.
"""

from __future__ import annotations

import pytest

# regopy itself, through the one module allowed to import it (tests/common/test_cxx_allocator.py).
from trustee_common.rego import Input, Interpreter, RegoPolicy
from trustee_common.rego_escapes import rewrite_escapes, undecoded_literals, undecoded_warning
from trustee_common.rego_lexer import decode_escapes

TWO_LINES = "a\nb"


def test_regopy_itself_does_not_decode_escapes() -> None:
    """KNOWN DEFECT of regopy 1.5: `"a\\nb"` stays four characters. Delete this and the workaround once it fails."""
    interpreter = Interpreter()
    interpreter.add_module("p.rego", 'package p\nc := count("a\\nb")\neq := input.s == "a\\nb"\n')
    interpreter.set_input(Input({"s": TWO_LINES}))
    assert interpreter.query("x := data.p.c").results[0].bindings["x"] == 4  # OPA: 3
    assert interpreter.query("x := data.p.eq").results[0].bindings["x"] is False  # OPA: true


ALL_ESCAPES = r'"\n\t\r\b\f\"\\\/\u00e9\ud83d\ude00"'
ALL_DECODED = '\n\t\r\b\f"\\/é\U0001F600'


def test_escapes_decode_as_opa_says() -> None:
    assert decode_escapes(ALL_ESCAPES[1:-1]) == ALL_DECODED
    assert decode_escapes(r"\ud83d") == "\ufffd"  # a lone surrogate, as Go's strconv.Unquote
    assert decode_escapes(r"\d") is None
    assert decode_escapes(r"\u12") is None


POLICY = f"""package policy
import rego.v1

# comment: "\\n" and a ` are not code
all_escapes := {ALL_ESCAPES}
n := count("a\\nb")
same if input.s == "a\\nb"
lines := split(input.s, "\\n")
uni := "caf\\u00e9"
slash := "a\\/b"
raw_plain := `a\\nb`
raw_lines := `a
b`
pattern if regex.match("^a\\\\nb$", input.s)
raw_pattern if regex.match(`^\\d+$`, "123")
"""
RULES = ("all_escapes_ok", "n", "same", "lines", "uni", "slash", "raw_plain_n", "raw_lines_ok", "pattern", "raw_pattern")
CHECKS = """all_escapes_ok if all_escapes == input.all
raw_plain_n := count(raw_plain)
raw_lines_ok if raw_lines == input.s
"""


def test_policy_literals_mean_what_opa_says() -> None:
    policy = RegoPolicy(POLICY + CHECKS, rules=RULES)
    result = policy.evaluate({"s": TWO_LINES, "all": ALL_DECODED})
    assert result == {
        "all_escapes_ok": True,
        "n": 3,
        "same": True,
        "lines": ["a", "b"],
        "uni": "café",
        "slash": "a/b",
        "raw_plain_n": 4,
        "raw_lines_ok": True,
        "pattern": True,
        "raw_pattern": True,
    }


@pytest.mark.parametrize(
    ("source", "rewritten"),
    [
        ('x := "plain"', 'x := "plain"'),
        ('x := "caf\\u00e9"', 'x := "café"'),
        ('x := "a\\/b"', 'x := "a/b"'),
        ('x := "a\\nb"', 'x := base64.decode("YQpi")'),
        ("x := `a\\b`", 'x := base64.decode("YVxi")'),
        ("x := `a/b`", "x := `a/b`"),
        ('# "a\\nb"', '# "a\\nb"'),
        ('x := "#\\n" # "\\t"', 'x := base64.decode("Iwo=") # "\\t"'),
        ('f("a\\nb") := 1', 'f("a\\nb") := 1'),
        ('x := y with input.s as "a\\nb"', 'x := y with input.s as "a\\nb"'),
        ('x := y with input as {"s": "a\\nb"}', 'x := y with input as {"s": "a\\nb"}'),
        ('x if regex.match("\\\\d", y)', 'x if regex.match("\\\\d", y)'),
        ('x := "bad \\d"', 'x := "bad \\d"'),
    ],
)
def test_rewrite(source: str, rewritten: str) -> None:
    assert rewrite_escapes(source) == rewritten


def test_regopy_itself_cannot_return_a_string_holding_a_quote() -> None:
    """KNOWN DEFECT of regopy 1.5: its JSON output leaves strings unescaped. trustee_common.rego_output reads the tree instead."""
    interpreter = Interpreter()
    interpreter.add_module("p.rego", "package p\nx := input.s\n")
    interpreter.set_input(Input({"s": 'a"b'}))
    with pytest.raises(ValueError):
        interpreter.query("y := data.p.x")


RETURNING = r'''package policy
import rego.v1
quoted := "say \"hi\""
backslash := "C:\\dir"
lines := "a\nb"
control := "\u0001\t"
raw := `a\b`
echoed := input.s
keyed := {"k\"": [1, 2.5, true, null], 7: {"x"}}
'''


def test_rules_return_real_characters() -> None:
    """Values rules return keep their characters: quotes, backslashes, controls, from literals and from input alike."""
    names = ("quoted", "backslash", "lines", "control", "raw", "echoed", "keyed")
    echoed = 'in"put\\n\n\x7fé'
    result = RegoPolicy(RETURNING, rules=names).evaluate({"s": echoed})
    assert result == {
        "quoted": 'say "hi"',
        "backslash": "C:\\dir",
        "lines": "a\nb",
        "control": "\x01\t",
        "raw": "a\\b",
        "echoed": echoed,
        "keyed": {'k"': [1, 2.5, True, None], "7": ["x"]},
    }


def test_literals_left_undecoded_are_named_for_the_upload_warning() -> None:
    text = 'package p\nf("a\\nb") := 1\nallow if regex.match("a\\\\d", "a1")\nx := y with input.s as "c\\td"\nok := "e\\nf"\n'
    assert undecoded_literals(text) == ['line 2: "a\\nb"', 'line 4: "c\\td"']
    warning = undecoded_warning(text)
    assert warning is not None and 'line 2: "a\\nb"; line 4: "c\\td"' in warning
    assert undecoded_warning('package p\nok := "e\\nf"\nallow if regex.match("a\\\\d", "a1")\n') is None
