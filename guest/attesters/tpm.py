"""The `tpm` attester: a TPM 2.0 quote through tpm2-pytss (guest-components.md 3.4).

TCTI: `AA_TPM_TCTI` (any tpm2-tss TCTI string, e.g. `swtpm:host=127.0.0.1,port=2321`
or `device:/dev/tpmrm0`), else `device:$AA_TPM_DEVICE`, else the first of
`/dev/tpmrm0`, `/dev/tpm0`, `/dev/tpm1`, `/dev/tpm2` that exists.

Attestation key: the persistent object at `AA_TPM_AK_HANDLE` (hex, default
0x81010002, as upstream) when it exists; otherwise a restricted RSA-2048
RSASSA-SHA256 signing primary created in the endorsement hierarchy, which
the TPM derives from its endorsement seed, so it is the same key on every
call (and flushed after each quote).

Evidence (upstream's): `{"ak_public": <std b64 DER SPKI>, "tpm_quote":
{"message": <std b64 TPMS_ATTEST>, "signature": <std b64 TPMT_SIGNATURE>,
"pcrs": [24 hex SHA-256]}}`, the quote's qualifying data being the report
data zero-padded/truncated to 32 bytes; plus `event_log` (std b64) when the
platform has one (`AA_TPM_EVENTLOG`, else the kernel's
`/sys/kernel/security/tpm0/binary_bios_measurements`).
With a TPM-bound TEE key (`guest.attesters.tpm_keys`, docs/tpm-bound-keys.md;
on unless `AA_TPM_BOUND_KEY` is `0`/`false`/`no`) the evidence also has
`tee_pubkey_certify`: `{"public": <std b64 TPMT_PUBLIC of the key>,
"attest": <std b64 TPMS_ATTEST of TPM2_Certify by the AK>, "signature":
<std b64 TPMT_SIGNATURE>}`, the certification's qualifying data being the
same 32 bytes as the quote's. When the key cannot be created the AA falls
back to a software key (logged) and the evidence has no such field.
Init data is bound by extending PCR 8 with its SHA-256 digest; runtime
measurements extend the requested PCR (SHA-256 bank, 32-byte digests).
tpm2-pytss is imported only when the attester is used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from guest.attesters.tpm_keys import TpmKeyPair
from trustee_common.b64 import std_encode
from trustee_common.errors import AttestationError, MalformedRequestError, TrusteeError
from trustee_common.jose import TeeKeyPair

logger = logging.getLogger(__name__)

ENV_TCTI = "AA_TPM_TCTI"
ENV_DEVICE = "AA_TPM_DEVICE"
ENV_AK_HANDLE = "AA_TPM_AK_HANDLE"
ENV_EVENTLOG = "AA_TPM_EVENTLOG"
ENV_BOUND_KEY = "AA_TPM_BOUND_KEY"
DEFAULT_AK_HANDLE = 0x81010002
DEVICES = ("/dev/tpmrm0", "/dev/tpm0", "/dev/tpm1", "/dev/tpm2")
KERNEL_EVENTLOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
NONCE_SIZE = 32
PCR_COUNT = 24
INIT_DATA_PCR = 8


@dataclass(frozen=True)
class TpmSettings:
    tcti: str
    ak_handle: int = DEFAULT_AK_HANDLE
    event_log: Path | None = None
    #: Whether the AA uses a TPM-bound TEE key (`AA_TPM_BOUND_KEY`, default on).
    bound_key: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TpmSettings | None:
        """Settings when a TPM is configured or present, else None."""
        tcti = environ.get(ENV_TCTI)
        if not tcti:
            device = environ.get(ENV_DEVICE) or next((d for d in DEVICES if os.path.exists(d)), None)
            if device is None:
                return None
            tcti = f"device:{device}"
        handle_text = environ.get(ENV_AK_HANDLE)
        try:
            handle = DEFAULT_AK_HANDLE if not handle_text else int(handle_text.removeprefix("0x").removeprefix("0X"), 16)
        except ValueError:
            raise MalformedRequestError(f"{ENV_AK_HANDLE}={handle_text!r} is not a hex handle") from None
        log_text = environ.get(ENV_EVENTLOG)
        log = Path(log_text) if log_text else (KERNEL_EVENTLOG if KERNEL_EVENTLOG.exists() else None)
        bound = environ.get(ENV_BOUND_KEY, "1").strip().lower() not in ("0", "false", "no", "off")
        return cls(tcti, handle, log, bound)


def detect_tpm(environ: Mapping[str, str]) -> TpmSettings | None:
    return TpmSettings.from_env(environ)


class TpmAttester:
    tee = "tpm"

    def __init__(self, settings: TpmSettings) -> None:
        self.settings = settings

    # --- TPM access --------------------------------------------------------------------

    def _esapi(self) -> Any:
        try:
            from tpm2_pytss import ESAPI
        except ImportError as exc:
            raise AttestationError(f"tpm attester: tpm2-pytss is not usable ({exc})") from None
        try:
            return ESAPI(self.settings.tcti)
        except Exception as exc:
            raise AttestationError(f"tpm attester: cannot open TCTI {self.settings.tcti!r}: {exc}") from None

    def _ak(self, esapi: Any) -> tuple[Any, Any, bool]:
        """`(handle, TPM2B_PUBLIC, transient)`: the persistent AK, or the endorsement-hierarchy primary."""
        from tpm2_pytss import TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE, TPMA_OBJECT
        from tpm2_pytss.constants import ESYS_TR, TPM2_CAP, TPM2_HC

        # Ask for the persistent handles first: a failed TR_FromTPMPublic makes libtss2 log errors.
        _, data = esapi.get_capability(TPM2_CAP.HANDLES, TPM2_HC.PERSISTENT_FIRST, 64)
        if self.settings.ak_handle in [int(h) for h in data.data.handles]:
            handle = esapi.tr_from_tpmpublic(self.settings.ak_handle)
            public, _, _ = esapi.read_public(handle)
            return handle, public, False
        attributes = (TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
                      | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH)
        template = TPM2B_PUBLIC.parse("rsa2048:rsassa-sha256:null", objectAttributes=attributes)
        handle, public, _, _, _ = esapi.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.ENDORSEMENT)
        return handle, public, True

    @staticmethod
    def _read_pcrs(esapi: Any) -> list[str]:
        from tpm2_pytss import TPML_PCR_SELECTION

        values: list[str] = []
        for start in range(0, PCR_COUNT, 8):
            selection = TPML_PCR_SELECTION.parse("sha256:" + ",".join(str(i) for i in range(start, start + 8)))
            _, _, digests = esapi.pcr_read(selection)
            values.extend(bytes(d).hex() for d in digests)
        if len(values) != PCR_COUNT:
            raise AttestationError(f"tpm attester: read {len(values)} SHA-256 PCRs, expected {PCR_COUNT}")
        return values

    def get_evidence(self, report_data: bytes) -> dict[str, Any]:
        return self.get_evidence_for_key(report_data, None)

    def create_tee_key(self) -> TeeKeyPair | None:
        """A TPM-bound TEE key, or None (software key) when disabled or the TPM cannot make one."""
        if not self.settings.bound_key:
            return None
        try:
            return TpmKeyPair.create(self.settings.tcti)
        except TrusteeError as exc:
            logger.warning("tpm attester: no TPM-bound TEE key, using a software key: %s", exc.detail)
            return None

    def get_evidence_for_key(self, report_data: bytes, key_pair: TeeKeyPair | None) -> dict[str, Any]:
        """The quote evidence; with a `TpmKeyPair`, also its TPM2_Certify by the AK (`tee_pubkey_certify`)."""
        from tpm2_pytss import TPM2B_DATA, TPML_PCR_SELECTION, TPMS_SCHEME_HASH, TPMT_SIG_SCHEME, TPMU_SIG_SCHEME, TSS2_Exception
        from tpm2_pytss.constants import TPM2_ALG

        nonce = report_data[:NONCE_SIZE].ljust(NONCE_SIZE, b"\0")
        bound = key_pair if isinstance(key_pair, TpmKeyPair) else None
        certify: dict[str, str] | None = None
        esapi = self._esapi()
        try:
            handle, public, transient = self._ak(esapi)
            try:
                scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.RSASSA, details=TPMU_SIG_SCHEME(rsassa=TPMS_SCHEME_HASH(hashAlg=TPM2_ALG.SHA256)))
                attest, signature = esapi.quote(handle, TPML_PCR_SELECTION.parse("sha256:all"), TPM2B_DATA(nonce), scheme)
                pcrs = self._read_pcrs(esapi)
                if bound is not None:
                    certify = self._certify(esapi, handle, bound, nonce, scheme)
            finally:
                if transient:
                    esapi.flush_context(handle)
        except TSS2_Exception as exc:
            raise AttestationError(f"tpm attester: {exc}") from None
        finally:
            esapi.close()
        key = serialization.load_pem_public_key(public.to_pem())
        spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        evidence: dict[str, Any] = {
            "ak_public": std_encode(spki),
            "tpm_quote": {
                "message": std_encode(bytes(attest.marshal())[2:]),  # TPM2B_ATTEST without its size
                "signature": std_encode(bytes(signature.marshal())),
                "pcrs": pcrs,
            },
        }
        if certify is not None:
            evidence["tee_pubkey_certify"] = certify
        log = self._event_log()
        if log is not None:
            evidence["event_log"] = std_encode(log)
        return evidence

    @staticmethod
    def _certify(esapi: Any, ak: Any, key: TpmKeyPair, nonce: bytes, scheme: Any) -> dict[str, str]:
        """TPM2_Certify of the bound key by the AK, qualified by the quote's nonce."""
        from tpm2_pytss import TPM2B_DATA

        handle = key.load(esapi)
        try:
            attest, signature = esapi.certify(handle, ak, TPM2B_DATA(nonce), scheme)
        finally:
            esapi.flush_context(handle)
        return {
            "public": std_encode(key.tpmt_public()),
            "attest": std_encode(bytes(attest.marshal())[2:]),
            "signature": std_encode(bytes(signature.marshal())),
        }

    def _event_log(self) -> bytes | None:
        path = self.settings.event_log
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            logger.warning("tpm attester: cannot read the event log %s: %s", path, exc.strerror)
            return None

    # --- capabilities -------------------------------------------------------------------

    def extend_pcr(self, index: int, digest: bytes) -> None:
        from tpm2_pytss import TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA, TSS2_Exception
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG

        if len(digest) != 32:
            raise MalformedRequestError(f"tpm attester: a SHA-256 PCR extend needs 32 bytes, got {len(digest)}")
        if not 0 <= index < PCR_COUNT:
            raise MalformedRequestError(f"tpm attester: PCR {index} is not in 0..23")
        esapi = self._esapi()
        try:
            values = TPML_DIGEST_VALUES([TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=digest))])
            esapi.pcr_extend(ESYS_TR.parse(f"pcr{index}"), values)
        except TSS2_Exception as exc:
            raise AttestationError(f"tpm attester: PCR {index} extend failed: {exc}") from None
        finally:
            esapi.close()

    def bind_init_data(self, digest: bytes) -> None:
        """Extend PCR 8 with the init-data digest (SHA-256 init data only, as upstream)."""
        self.extend_pcr(INIT_DATA_PCR, digest)

    def extend_runtime_measurement(self, event_digest: bytes, register_index: int) -> None:
        self.extend_pcr(register_index, event_digest)
