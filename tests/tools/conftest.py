"""One `trustee run` shared by the kbs-client and rvps-tool tests of this folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tools.stack import TrusteeRun


@pytest.fixture(scope="package")
def trustee(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrusteeRun]:
    base = tmp_path_factory.mktemp("trustee")
    stack = TrusteeRun(base / "trustee-data", base / "trustee.log")
    yield stack
    stack.stop()
