"""`trustee image encrypt` refusals: one line on stderr, exit 1 (2 for usage), and no output directory left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.oci_layouts import build_layout, file, read_manifest
from tests.tools.stack import run_tool


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    build_layout(tmp_path / "plain", [[file("a", b"one")], [file("b", b"two")]], tag="v1")
    return tmp_path / "plain"


@pytest.fixture
def pub(tmp_path: Path) -> Path:
    path = tmp_path / "ec.pub.pem"
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def out(tmp_path: Path) -> str:
    """The `--output` every refusal test gives; it must never appear."""
    return f"oci:{tmp_path / 'out'}"


def run(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = run_tool("trustee", "image", "encrypt", *args, cwd=tmp_path)
    return result.returncode, result.stdout, result.stderr


def assert_refused(tmp_path: Path, result: tuple[int, str, str], message: str, *, code: int = 1) -> None:
    status, out, err = result
    assert status == code, err
    assert out == ""
    if code == 1:
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert message in err, err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_already_encrypted_layers_are_refused(tmp_path: Path, plain: Path, pub: Path) -> None:
    assert run(tmp_path, "--input", f"oci:{plain}:v1", "--output", f"oci:{tmp_path / 'enc'}", "--recipient", f"jwe:{pub}")[0] == 0
    assert_refused(tmp_path, run(tmp_path, "--input", f"oci:{tmp_path / 'enc'}:v1", "--output", out(tmp_path),
                                 "--recipient", f"jwe:{pub}"), "layer 1 is already encrypted")


def test_kbs_refusal_leaves_no_output(tmp_path: Path, plain: Path) -> None:
    """No admin token anywhere (cwd is empty): an unreachable KBS is named, nothing is written."""
    assert_refused(tmp_path, run(tmp_path, "--input", f"oci:{plain}:v1", "--output", out(tmp_path),
                                 "--kbs-url", "http://127.0.0.1:9"), "cannot reach the KBS")


def test_blob_that_does_not_match_its_digest_is_refused(tmp_path: Path, plain: Path, pub: Path) -> None:
    layer = read_manifest(plain, "v1")["layers"][0]  # type: ignore[index]
    path = plain / "blobs" / "sha256" / layer["digest"][7:]
    path.write_bytes(path.read_bytes() + b"x")
    assert_refused(tmp_path, run(tmp_path, "--input", f"oci:{plain}:v1", "--output", out(tmp_path), "--recipient", f"jwe:{pub}"),
                   "layer 1: the blob is sha256:")


def test_missing_tag_is_named(tmp_path: Path, plain: Path, pub: Path) -> None:
    assert_refused(tmp_path, run(tmp_path, "--input", f"oci:{plain}:nope", "--output", out(tmp_path), "--recipient", f"jwe:{pub}"),
                   "no image tagged 'nope'")


def test_single_untagged_choice_and_default_tag(tmp_path: Path, plain: Path, pub: Path) -> None:
    code, _, err = run(tmp_path, "--input", f"oci:{plain}", "--output", f"oci:{tmp_path / 'enc'}", "--recipient", f"jwe:{pub}")
    assert code == 0, err
    assert read_manifest(tmp_path / "enc", "latest")["layers"]


def test_multi_platform_index_is_refused(tmp_path: Path, plain: Path, pub: Path) -> None:
    index = json.loads((plain / "index.json").read_text())
    index["manifests"][0]["mediaType"] = "application/vnd.oci.image.index.v1+json"
    (plain / "index.json").write_text(json.dumps(index))
    assert_refused(tmp_path, run(tmp_path, "--input", f"oci:{plain}:v1", "--output", out(tmp_path), "--recipient", f"jwe:{pub}"),
                   "multi-platform image index")


def test_existing_output_is_refused(tmp_path: Path, plain: Path, pub: Path) -> None:
    (tmp_path / "taken").mkdir()
    status, _, err = run(tmp_path, "--input", f"oci:{plain}:v1", "--output", f"oci:{tmp_path / 'taken'}", "--recipient", f"jwe:{pub}")
    assert status == 1 and "exists" in err and not any((tmp_path / "taken").iterdir())


def test_unusable_recipient_key_is_named(tmp_path: Path, plain: Path) -> None:
    bad = tmp_path / "ed.pub.pem"
    bad.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert_refused(tmp_path, run(tmp_path, "--input", f"oci:{plain}:v1", "--output", out(tmp_path), "--recipient", f"jwe:{bad}"),
                   f"--recipient {bad}: Ed25519PublicKey keys are not supported")


@pytest.mark.parametrize(("args", "message"), [
    ([], "give --kbs-url"),
    (["--key-id", "kbs:///default/image-kek/x"], "--key-id needs --kbs-url"),
    (["--kbs-url", "http://127.0.0.1:9", "--key-id", "kbs:///default/only-two"], "is not kbs:///<repository>/<type>/<tag>"),
    (["--kbs-url", "http://127.0.0.1:9", "--key-id", "kbs+plugin:///a/b/c"], "is not kbs:///"),
    (["--kbs-url", "http://127.0.0.1:9", "--recipient", "pgp:key"], "is not jwe:PUBLIC-KEY.pem"),
])
def test_usage_errors_exit_2(tmp_path: Path, plain: Path, args: list[str], message: str) -> None:
    assert_refused(tmp_path, run(tmp_path, "--input", f"oci:{plain}:v1", "--output", out(tmp_path), *args), message, code=2)


def test_bad_layout_reference_is_a_usage_error(tmp_path: Path) -> None:
    assert_refused(tmp_path, run(tmp_path, "--input", "docker://x", "--output", out(tmp_path)), "is not oci:DIR[:TAG]", code=2)
