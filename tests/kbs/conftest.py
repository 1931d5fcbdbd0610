"""Shared fixtures: key material and one real `kbs` process for the whole folder.

The shared KBS points at a closed AS port (attestation paths that need the
AS live in test_e2e.py). Tests that depend on the resource policy set it
themselves first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.kbs.helpers import Kbs, Material, kbs_toml, make_material, start_kbs
from tests.procs import free_port


@pytest.fixture(scope="session")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return make_material(tmp_path_factory.mktemp("material"))


@pytest.fixture(scope="session")
def kbs(tmp_path_factory: pytest.TempPathFactory, material: Material) -> Iterator[Kbs]:
    directory = tmp_path_factory.mktemp("kbs-main")
    port = free_port()
    server = start_kbs(directory, kbs_toml(port, material, directory / "repo", as_port=free_port(), payload_mib=1), port)
    yield server
    server.proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


@pytest.fixture
def repo(kbs: Kbs) -> Path:
    return kbs.repo
