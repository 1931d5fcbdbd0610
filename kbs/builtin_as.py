"""`AttestationServicePort` in process: the Attestation Service embedded in the KBS (`type = "coco_as_builtin"`).

The KBS calls `attestation_service.service.AttestationService` directly
(no gRPC hop, no AS or RVPS process). It is assembled as `grpc-as`
assembles it (`attestation_service.__main__`: the verifiers, the BuiltIn or
GrpcRemote RVPS, the default policies), over:

- storage: the KBS's own store (`[storage_backend]`), in the AS's own
  namespaces (`attestation_service_policy`, `reference_value`, ...), or a
  store of its own when `storage_type` overrides the type. Several KBS
  workers or replicas on one store therefore share policies and reference
  values; a change made through one is seen by the others within the
  appraisal-cache bound (1 s; at once by the one that made it);
- Rego: the KBS's policy-worker pool (`[policy_engine]`), unless
  `[attestation_service.policy_engine]` asks for a pool of its own;
- the token-signing key: `attestation_token_broker.signer.key_path` when
  given; otherwise one P-256 key kept in the store (namespace
  `attestation_service_signer`), created by whichever process starts
  first (`put(overwrite=False)`, then read back), so every worker and
  every replica on the store signs with the same key and a token issued by
  one is accepted by all. An SQLite store file holding it is made 0600.
  (With Memory storage the KBS runs one process; the key lives and dies
  with it.)

The KBS trusts that key in process (`TokenTrust.trusted_keys`): its tokens
verify without `[attestation_token] trusted_certs_paths`, which stays for
tokens of other issuers. Errors are the service's own `TrusteeError`s, as
the gRPC client reconstructs them from an AS, so the HTTP answers match.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

from attestation_service.__main__ import build_verifiers, load_signer, reference_value_provider
from attestation_service.appraisal_cache import InvalidatingProvider
from attestation_service.config import AsConfig
from attestation_service.core.request import VerificationRequest
from attestation_service.core.token import TokenSigner
from attestation_service.metrics import AsMetrics
from attestation_service.policy_store import PolicyStore
from attestation_service.service import AttestationService
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kbs.config import BuiltinAsConfig
from kbs.core.evidence import EvidenceItem
from trustee_common.b64 import url_decode, url_decode_text
from trustee_common.errors import ConfigError, MalformedRequestError
from trustee_common.rego_pool import RegoPool
from trustee_common.storage import KeyValueStore, StorageConfig, open_kv_store

logger = logging.getLogger(__name__)

SIGNER_NAMESPACE = "attestation_service_signer"
SIGNER_KEY = "token-signing-key.pem"
_PRIVATE_MODE = stat.S_IRUSR | stat.S_IWUSR


def _request(item: EvidenceItem, index: int) -> VerificationRequest:
    init = None if item.init_data_toml is None else ("toml", item.init_data_toml)
    try:
        return VerificationRequest.parse(tee=item.tee, evidence=item.evidence, runtime_data=("structured", item.structured_runtime_data),
                                         init_data=init, hash_algorithm=item.runtime_data_hash_algorithm)
    except MalformedRequestError as exc:
        raise MalformedRequestError(f"verification_requests[{index}]: {exc.detail}") from None


def signing_point(signer: TokenSigner) -> bytes:
    """The signer's public key as an uncompressed P-256 point (what `TokenTrust.trusted_keys` holds)."""
    jwk = signer.public_jwk
    return b"\x04" + url_decode(str(jwk["x"]), "x") + url_decode(str(jwk["y"]), "y")


class BuiltinAttestationService:
    """The port over an `AttestationService` in this process; `close()` releases what `open_builtin` opened."""

    def __init__(self, service: AttestationService, reference_values: InvalidatingProvider, signer: TokenSigner,
                 closers: list[Callable[[], Awaitable[None]]]) -> None:
        self.service = service
        self._reference_values = reference_values
        self.signing_key = signing_point(signer)
        #: Also signs the attestation reports when `[attestation_reports]` names no key (`kbs.reports`).
        self.token_signer = signer
        self._closers = closers

    async def evaluate(self, items: list[EvidenceItem], policy_ids: list[str]) -> str:
        return await self.service.evaluate([_request(item, i) for i, item in enumerate(items)], policy_ids)

    async def set_policy(self, policy_id: str, policy_b64url: str) -> None:
        await self.service.set_policy(policy_id, url_decode_text(policy_b64url, "policy"))

    async def register_reference_value(self, message: str) -> None:
        await self._reference_values.register(message)

    async def query_reference_value(self, reference_value_id: str) -> str | None:
        return await self._reference_values.query(reference_value_id)

    async def appraisal_epoch(self) -> str:
        return await self.service.appraisal_epoch()

    async def close(self) -> None:
        for close in reversed(self._closers):
            await close()
        self._closers.clear()


async def stored_signer(store: KeyValueStore, storage: StorageConfig) -> TokenSigner:
    """The one signing key of every process on `store`: created by the first to start, read back by all."""
    candidate = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    if await store.put(SIGNER_NAMESPACE, SIGNER_KEY, candidate, overwrite=False):
        logger.info("embedded AS: created a token-signing key in storage (namespace %s)", SIGNER_NAMESPACE)
    stored = await store.get(SIGNER_NAMESPACE, SIGNER_KEY)
    if stored is None:
        raise ConfigError(f"embedded AS: the token-signing key in storage namespace {SIGNER_NAMESPACE} vanished")
    if storage.storage_type == "Sqlite":
        _make_private(storage.sqlite_path)
    return TokenSigner.from_pem(stored)


def _make_private(path: Path) -> None:
    """The SQLite file (and its WAL files, which SQLite creates with the same mode) readable by this user only."""
    restricted = []
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & ~_PRIVATE_MODE:
                os.chmod(file, mode & _PRIVATE_MODE)
                restricted.append(file.name)
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("embedded AS: cannot restrict the mode of %s (it holds the token-signing key): %s", file, exc.strerror)
    if restricted:
        logger.info("embedded AS: %s hold the token-signing key: made readable by this user only", ", ".join(restricted))


async def open_builtin(settings: BuiltinAsConfig, kbs_storage: StorageConfig, kbs_store: KeyValueStore, kbs_engine: RegoPool,
                       metrics: AsMetrics) -> BuiltinAttestationService:
    """Assemble the embedded AS; its default policies are installed (kept if present) before it is returned."""
    config: AsConfig = settings.service
    closers: list[Callable[[], Awaitable[None]]] = []
    try:
        store = kbs_store
        if config.storage != kbs_storage:
            store = open_kv_store(config.storage)
            closers.append(store.close)
        engine = kbs_engine
        if settings.policy_engine is not None:
            engine = RegoPool.from_config(settings.policy_engine)
            closers.append(engine.close)
            await engine.start()
        rv_store = store
        if config.rvps.storage is not None:  # rvps_config.storage_type: BuiltIn reference values in a store of their own
            rv_store = open_kv_store(config.rvps.storage)
            closers.append(rv_store.close)
        provider = reference_value_provider(config, rv_store)
        close_provider = getattr(provider, "close", None)
        if close_provider is not None:
            closers.append(close_provider)
        signer = await stored_signer(store, config.storage) if config.signer is None else load_signer(config.signer)
        service = AttestationService(PolicyStore(store), provider, signer, config.token, build_verifiers(config, store), engine,
                                     verbose_token=config.verbose_token, metrics=metrics, cache_ttl=config.appraisal_cache_ttl_seconds)
        await service.load_default_policies()
    except BaseException:
        for close in reversed(closers):
            await close()
        raise
    where = "storage of its own" if store is not kbs_store else "the KBS's storage"
    logger.info("attestation service: built in (%s, %s RVPS, %s)", where, config.rvps.kind,
                "its own policy workers" if engine is not kbs_engine else "the KBS's policy workers")
    return BuiltinAttestationService(service, InvalidatingProvider(provider, service.inputs), signer, closers)
