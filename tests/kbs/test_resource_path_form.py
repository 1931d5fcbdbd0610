"""Resource policies written for either form of `data["resource-path"]`, against a real KBS.

Upstream's KBS gives the list of segments (its e2e policy indexes and counts
it); its user documentation splits a string. The KBS reads which form a
policy uses from its text (kbs.core.resource_path_form), logs it at upload,
and each kind allows and denies as it would where it was written. Also: a
policy string literal with escapes (`\\n`, `\\"`, `\\u00e9`) means what OPA
says (trustee_common.rego_escapes).
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from kbs.core.resource_path_form import LIST, STRING, path_form
from tests.kbs.helpers import Kbs, Material, ear_claims, load_signing, mint_token, variant
from tests.kbs.test_resource import admin_post, get_with, set_policy
from trustee_common.jose import TeeKeyPair

#: Upstream's e2e-test policy (integration-tests, kbs/test), with our TEE's claim path.
UPSTREAM_E2E_LIST = """package policy

default allow = false

allow if {
    count(data["resource-path"]) == 3
    data.plugin == "resource"
    input["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["tdx"]["productId"] == data["resource-path"][1]
}
"""

#: The shape upstream's user documentation shows.
DOCUMENTED_SPLIT = """package policy
import rego.v1

default allow := false

path := split(data["resource-path"], "/")

allow if {
    count(path) == 3
    path[0] == "myrepo"
    input["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["tdx"]["productId"] == path[1]
}
"""

#: List form through destructuring and a function of the policy's own.
DESTRUCTURED_IN_A_FUNCTION = """package policy
import rego.v1

default allow := false

names_product(p) if {
    [repo, kind, _] := p
    repo == "myrepo"
    input["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["tdx"]["productId"] == kind
}

allow if names_product(data["resource-path"])
"""

STRING_EQUALITY = """package policy
import rego.v1

allow if data["resource-path"] == "myrepo/secret/one"
"""

ESCAPED = r"""package policy
import rego.v1

# "\n" in a comment, and a raw string: `\n` stays two characters
raw := `\n`

allow if {
    input.submods.cpu0["ear.veraison.annotated-evidence"].init_data_claims.note == "line one\nline \"two\"\t\u00e9\ud83d\ude00\\"
    count(raw) == 2
}
"""
NOTE = 'line one\nline "two"\té\U0001F600\\'


def token(material: Material, key: TeeKeyPair, product: str = "secret", note: str | None = None) -> str:
    claims: dict[str, Any] = ear_claims("tdx", key.public_jwk())
    evidence = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    evidence["tdx"]["productId"] = product
    if note is not None:
        evidence["init_data_claims"] = {"note": note}
    signing_key, chain = load_signing(material)
    return mint_token(claims, signing_key, chain=chain)


@pytest.fixture
async def resources(http: aiohttp.ClientSession, kbs: Kbs, material: Material) -> list[str]:
    paths = ["myrepo/secret/one", "myrepo/other/one", "elsewhere/secret/one"]
    for path in paths:
        await admin_post(http, kbs, material, "resource/" + path, data=path.encode())
    return paths


async def outcomes(http: aiohttp.ClientSession, kbs: Kbs, paths: list[str], bearer: str) -> dict[str, int]:
    found = {}
    for path in paths:
        status, body = await get_with(http, kbs, "resource/" + path, bearer)
        assert status == 200 or variant(body) == "PolicyDeny", body
        found[path] = status
    return found


def upload_line(kbs: Kbs) -> str:
    lines = re.findall(r"resource policy replaced .*", kbs.proc.output())
    assert lines, kbs.proc.output()[-2000:]
    return str(lines[-1])


@pytest.mark.parametrize(
    ("policy", "form", "allowed"),
    [
        (UPSTREAM_E2E_LIST, "a list of segments", {"myrepo/secret/one", "elsewhere/secret/one"}),
        (DOCUMENTED_SPLIT, "the string", {"myrepo/secret/one"}),
        (STRING_EQUALITY, "the string", {"myrepo/secret/one"}),
        (DESTRUCTURED_IN_A_FUNCTION, "a list of segments", {"myrepo/secret/one"}),
    ],
    ids=["upstream-e2e-list", "documented-split", "string-equality", "destructured-in-a-function"],
)
async def test_each_form_of_policy_allows_and_denies_as_written(
    http: aiohttp.ClientSession, kbs: Kbs, material: Material, resources: list[str], policy: str, form: str, allowed: set[str]
) -> None:
    await set_policy(http, kbs, material, policy)
    assert f'data["resource-path"] is {form}' in upload_line(kbs)
    key = TeeKeyPair.generate()
    found = await outcomes(http, kbs, resources, token(material, key))
    assert found == {path: 200 if path in allowed else 403 for path in resources}
    # A productId that names no path segment: the policies that compare it deny everything.
    still = allowed if policy is STRING_EQUALITY else set()
    found = await outcomes(http, kbs, resources, token(material, key, product="nothing"))
    assert found == {path: 200 if path in still else 403 for path in resources}


async def test_escapes_in_a_resource_policy_mean_what_opa_says(
    http: aiohttp.ClientSession, kbs: Kbs, material: Material, resources: list[str]
) -> None:
    await set_policy(http, kbs, material, ESCAPED)
    key = TeeKeyPair.generate()
    assert set((await outcomes(http, kbs, resources[:1], token(material, key, note=NOTE))).values()) == {200}
    # The escaped spelling itself (what regopy alone compared against) is a different string.
    written = NOTE.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"').replace("\t", "\\t")
    assert set((await outcomes(http, kbs, resources[:1], token(material, key, note=written))).values()) == {403}
    assert "Traceback" not in kbs.proc.output()


HEAD = "package policy\nimport rego.v1\n"


@pytest.mark.parametrize(
    ("body", "form", "mixed"),
    [
        ('allow if data["resource-path"][0] == "a"', LIST, False),
        ('allow if count(data["resource-path"]) == 3', LIST, False),
        ('allow if { every part in data["resource-path"] { part != "" } }', LIST, False),
        ('allow if concat("/", data["resource-path"]) == "a/b/c"', LIST, False),
        ('allow if data["resource-path"] == ["a", "b", "c"]', LIST, False),
        ('p := data["resource-path"]\nallow if p[1] == "b"', LIST, False),
        ('allow if split(data["resource-path"], "/")[0] == "a"', STRING, False),
        ('allow if startswith(data["resource-path"], "a/")', STRING, False),
        ('allow if data["resource-path"] == "a/b/c"', STRING, False),
        ('allow if "a/b/c" != data["resource-path"]', STRING, False),
        ('p := data["resource-path"]\nallow if endswith(p, "/c")', STRING, False),
        ('allow if data[`resource-path`] == "a/b/c"', STRING, False),
        ('allow if data["resource-path"] == input.path', STRING, False),
        ("allow if input.x", STRING, False),
        ('# data["resource-path"][0]\nallow if data["resource-path"] == "a/b/c"', STRING, False),
        ('allow if { startswith(data["resource-path"], "a"); data["resource-path"][0] == "a" }', LIST, True),
        ('allow if {\n    [repo, _, _] := data["resource-path"]\n    repo == "a"\n}', LIST, False),
        ('allow if { [repo, kind, tag] = data["resource-path"]; repo == "a" }', LIST, False),
        ('allow if data["resource-path"] = ["a", "b", "c"]', LIST, False),
        ('allow if ["a", "b", "c"] = data["resource-path"]', LIST, False),
        ('allow if data["resource-path"] = "a/b/c"', STRING, False),
        ('allow if input.parts[0] == data["resource-path"]', STRING, False),
        ('first_is_a(p) if p[0] == "a"\nallow if first_is_a(data["resource-path"])', LIST, False),
        ('has_prefix(p, x) if startswith(p, x)\nallow if has_prefix(data["resource-path"], "a/")', STRING, False),
        ('ok(x, p) if {\n    p[0] == x\n}\nallow if ok("a", data["resource-path"])', LIST, False),
        ('inner(p) := count(p)\nouter(q) := inner(q)\nallow if outer(data["resource-path"]) == 3', LIST, False),
        ('unused(p) := true\nallow if unused(data["resource-path"])', STRING, False),
    ],
)
def test_the_form_is_read_from_the_text(body: str, form: str, mixed: bool) -> None:
    found = path_form(HEAD + body + "\n")
    assert (found.form, found.mixed) == (form, mixed), found.reason


async def test_a_policy_using_both_forms_gets_the_list_and_a_warning(
    http: aiohttp.ClientSession, kbs: Kbs, material: Material, resources: list[str]
) -> None:
    mixed = HEAD + 'allow if { data["resource-path"][0] == "myrepo"; startswith(data["resource-path"], "myrepo/") }\n'
    await set_policy(http, kbs, material, mixed)
    assert 'data["resource-path"] is a list of segments' in upload_line(kbs)
    assert "WARNING kbs.resources: the resource policy uses data[\"resource-path\"] both as a list and as a string" in kbs.proc.output()
    # As under upstream's KBS: the string use is undefined on a list, so nothing is released.
    assert set((await outcomes(http, kbs, resources, token(material, TeeKeyPair.generate()))).values()) == {403}


async def test_escapes_regopy_keeps_as_written_are_named_at_upload(http: aiohttp.ClientSession, kbs: Kbs, material: Material) -> None:
    policy = HEAD + 'names("a\\nb") := true\nallow if names(input.x)\n'
    await set_policy(http, kbs, material, policy)
    assert 'WARNING kbs.resources: resource policy: escapes in a function head or a `with ... as` value keep their written form' \
        in kbs.proc.output()
    assert 'line 3: "a\\nb"' in kbs.proc.output()


@pytest.mark.parametrize(
    ("text", "form"),
    [
        # Each of these took minutes (quadratic or exponential reading) before the reading became linear and bounded.
        ("x := f(" + ",".join('data["resource-path"]' for _ in range(20000)) + ")\n", STRING),
        ("".join("f(p) if { " + "; ".join("f(p)" for _ in range(50)) + " }\n" for _ in range(200))
         + 'allow if f(data["resource-path"])\n', STRING),
        ("".join("f(p) if g(p, p, p)\n" for _ in range(2000)) + "".join("g(a, b, c) if f(a)\n" for _ in range(2000))
         + 'allow if f(data["resource-path"])\nh(p) if p[0] == "a"\nallow if h(data["resource-path"])\n', LIST),
    ],
    ids=["long-argument-list", "fan-out", "mutual-recursion"],
)
def test_big_hostile_texts_are_read_in_bounded_work(text: str, form: str) -> None:
    assert path_form(HEAD + text).form == form
