"""The tdx attester's start-up init-data check (guest-components.md 3.9), on the fake configfs-tsm.

The quotes are real (GCP's v4 and dcap-qvl's v5 from the corpus) with their
MRCONFIGID bytes replaced: the attester does not verify the quote's signature,
it only reads MRCONFIGID, and the AS's quote parser confirms the attester
reads the right 48 bytes of both layouts. A quote carrying what `trustee
initdata digest --tee tdx` prints for an init-data file passes the check for
that file's digest; any other MRCONFIGID stops the AA with a clear error.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from attestation_service.core.verifiers.tdx.quote import parse_quote

from guest.attestation_agent.initdata import parse_init_data
from guest.attesters.tdx import MR_CONFIG_ID_OFFSET, QUOTE_HEADER_SIZE, TdxAttester, TdxPaths, quote_mr_config_id
from tests.guest_tdx.conftest import FakeConfigfs
from tests.procs import script
from trustee_common.errors import AttestationError

CORPUS_TDX = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "tdx"
INIT_DATA = b'version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\n"aa.toml" = "[token_configs.kbs]\\nurl = \\"https://kbs.example\\"\\n"\n'


def with_mr_config_id(quote: bytes, value: bytes) -> bytes:
    version = int.from_bytes(quote[:2], "little")
    start = QUOTE_HEADER_SIZE + (6 if version == 5 else 0) + MR_CONFIG_ID_OFFSET
    return quote[:start] + value + quote[start + 48 :]


@pytest.mark.parametrize("folder", ["gcp-ccel", "dcap-qvl-v5-tcb-unsupported"])
def test_attester_reads_the_mrconfigid_the_verifier_parses(folder: str) -> None:
    quote = with_mr_config_id((CORPUS_TDX / folder / "quote.bin").read_bytes(), bytes(range(48)))
    assert quote_mr_config_id(quote) == bytes(range(48)) == parse_quote(quote).body.mr_config_id


def test_quote_of_an_unknown_version_is_refused() -> None:
    with pytest.raises(AttestationError, match="version 3"):
        quote_mr_config_id(b"\x03\x00" + bytes(700))
    with pytest.raises(AttestationError, match="too short"):
        quote_mr_config_id(b"\x04\x00" + bytes(100))


@pytest.fixture
def init_data(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "initdata.toml"
    path.write_bytes(INIT_DATA)
    result = subprocess.run([script("trustee"), "initdata", "digest", "--tee", "tdx", str(path)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return path, bytes.fromhex(result.stdout.strip())


def test_td_launched_with_the_printed_mrconfigid_passes(configfs: FakeConfigfs, gcp_quote: bytes,
                                                        init_data: tuple[Path, bytes]) -> None:
    path, printed = init_data
    configfs.outblob = with_mr_config_id(gcp_quote, printed)
    TdxAttester(TdxPaths(tsm_report=configfs.root)).bind_init_data(parse_init_data(path.read_bytes(), "init-data").digest)
    assert configfs.inblobs == [bytes(64)]
    assert configfs.removed == configfs.created


def test_td_launched_with_other_init_data_is_refused(configfs: FakeConfigfs, gcp_quote: bytes,
                                                     init_data: tuple[Path, bytes]) -> None:
    path, printed = init_data
    other = bytes([printed[0] ^ 1]) + printed[1:]
    configfs.outblob = with_mr_config_id(gcp_quote, other)
    with pytest.raises(AttestationError, match=f"MRCONFIGID is {other.hex()}, the init-data digest padded/truncated to 48 "
                                               f"bytes is {printed.hex()}"):
        TdxAttester(TdxPaths(tsm_report=configfs.root)).bind_init_data(parse_init_data(path.read_bytes(), "init-data").digest)


def test_sha256_digest_is_zero_padded(configfs: FakeConfigfs, gcp_quote: bytes) -> None:
    digest = bytes(range(1, 33))
    configfs.outblob = with_mr_config_id(gcp_quote, digest + bytes(16))
    TdxAttester(TdxPaths(tsm_report=configfs.root)).bind_init_data(digest)
