"""`PullImage` of the CDH: the `[image]` settings, KBS-held keys and the puller, put together.

For each request the puller resolves what the `[image]` table points at
(registry credentials and a registries.conf given as `kbs:///` resources are
fetched through the attested KBS path at each pull, so a changed resource
takes effect at the next pull; `file:///` ones are read then too), pulls and
unpacks the image into `<bundle_path>/rootfs` with encrypted layers opened
by `LayerKeys`, and records the pull in the attestation agent's runtime
measurement log, as upstream's CDH does (`github.com/confidential-containers`
/ `PullImage` / `{"image":"<url>", "digest":"<digest>"}`; an AA that cannot
be reached or does not measure is only logged).

At most `MAX_CONCURRENT_PULLS` pulls run at once; others wait their turn.
"""

from __future__ import annotations

import asyncio
import logging
import tomllib
from pathlib import Path, PurePosixPath
from typing import Protocol

from guest.attestation_agent.agent import MeasurementResult
from guest.cdh.image_config import ImageSettings, parse_registry_config
from guest.cdh.image_keys import LayerKeys
from guest.image import config as pull_config
from guest.image.pull import pull_image
from trustee_common.config import ConfigTable
from trustee_common.errors import ConfigError, MalformedRequestError, TrusteeError, clip_repr

logger = logging.getLogger(__name__)

MAX_CONCURRENT_PULLS = 2
MAX_URI_FILE_BYTES = 1 << 20
MEASUREMENT_DOMAIN = "github.com/confidential-containers"
MEASUREMENT_OPERATION = "PullImage"


class ResourceSource(Protocol):
    async def get_resource(self, uri: str) -> bytes: ...


class Measurer(Protocol):
    async def extend_runtime_measurement(self, domain: str, operation: str, content: str) -> MeasurementResult: ...


class ImagePuller:
    def __init__(self, settings: ImageSettings, resources: ResourceSource, keys: LayerKeys, measurer: Measurer | None) -> None:
        self._settings = settings
        self._resources = resources
        self._keys = keys
        self._measurer = measurer
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_PULLS)

    async def pull(self, image_url: str, bundle_path: str) -> str:
        if not image_url:
            raise MalformedRequestError("PullImage: image_url is empty")
        if not bundle_path or not PurePosixPath(bundle_path).is_absolute() or ".." in PurePosixPath(bundle_path).parts:
            raise MalformedRequestError(f"PullImage: bundle_path {clip_repr(bundle_path)} is not an absolute path without '..'")
        async with self._slots:
            config = await self._config()
            digest = await pull_image(image_url, Path(bundle_path), config=config, decrypt=self._keys.decrypt)
        logger.info("pulled image %s (%s) into %s", clip_repr(image_url), digest, bundle_path)
        await self._measure(image_url, digest)
        return digest

    async def _config(self) -> pull_config.ImageConfig:
        settings = self._settings
        registry = settings.registry_config
        if settings.registry_configuration_uri:
            text = await self._read_uri(settings.registry_configuration_uri, "image.registry_configuration_uri")
            try:
                registry = parse_registry_config(ConfigTable(tomllib.loads(text.decode()), "registry configuration"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"image.registry_configuration_uri: not a TOML registries.conf ({exc})") from None
        credentials = {}
        if settings.authenticated_registry_credentials_uri:
            raw = await self._read_uri(settings.authenticated_registry_credentials_uri, "image.authenticated_registry_credentials_uri")
            credentials = pull_config.parse_credentials(raw)
        return pull_config.ImageConfig(
            work_dir=Path(settings.work_dir),
            max_concurrent_layer_downloads_per_image=settings.max_concurrent_layer_downloads_per_image,
            registry_rules=registry or (),
            credentials=credentials,
            extra_root_certificates=settings.extra_root_certificates,
            https_proxy=settings.proxy.https_proxy,
            http_proxy=settings.proxy.http_proxy,
            no_proxy=settings.proxy.no_proxy,
        )

    async def _read_uri(self, uri: str, key: str) -> bytes:
        if uri.startswith("kbs://"):
            return await self._resources.get_resource(uri)
        path = Path(uri.removeprefix("file://"))
        try:
            data = await asyncio.to_thread(_read_bounded, path)
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
        if len(data) > MAX_URI_FILE_BYTES:
            raise ConfigError(f"{key}: {path} is larger than {MAX_URI_FILE_BYTES} bytes")
        return data

    async def _measure(self, image_url: str, digest: str) -> None:
        if self._measurer is None:
            return
        content = f'{{"image":"{image_url}", "digest":"{digest}"}}'  # upstream's exact text: a space after the comma
        try:
            result = await self._measurer.extend_runtime_measurement(MEASUREMENT_DOMAIN, MEASUREMENT_OPERATION, content)
        except TrusteeError as exc:
            logger.warning("image pull not recorded in the runtime measurement log: %s", exc.detail)
            return
        if result is not MeasurementResult.OK:
            logger.info("image pull not recorded in the runtime measurement log: %s", result.name)


def _read_bounded(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(MAX_URI_FILE_BYTES + 1)
