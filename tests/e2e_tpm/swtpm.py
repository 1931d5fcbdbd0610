"""A private swtpm (software TPM 2.0) on two free TCP ports, for the TPM end-to-end tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.ports import allocate_ports
from tests.procs import Proc


def adjacent_free_ports() -> tuple[int, int]:
    """Two free ports P, P+1: the swtpm TCTI always finds the control channel at port + 1."""
    port, ctrl = allocate_ports(2, consecutive=True)
    return port, ctrl


class Swtpm:
    """`swtpm socket --tpm2` with state under `state`; TCTI `swtpm:host=127.0.0.1,port=<port>`."""

    def __init__(self, state: Path, log: Path) -> None:
        binary = shutil.which("swtpm")
        if binary is None:
            pytest.skip("swtpm is not installed (scripts/system-deps.sh installs it)")
        state.mkdir(parents=True, exist_ok=True)
        self.port, self.ctrl_port = adjacent_free_ports()
        # not-need-init: no TPM2_Init over the control channel; startup-clear: swtpm sends TPM2_Startup(CLEAR) itself.
        self.proc = Proc([binary, "socket", "--tpm2", "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                          "--ctrl", f"type=tcp,port={self.ctrl_port},bindaddr=127.0.0.1", "--tpmstate", f"dir={state}",
                          "--flags", "not-need-init,startup-clear"], log, port=self.port)
        self.tcti = f"swtpm:host=127.0.0.1,port={self.port}"

    def stop(self) -> int:
        return self.proc.stop()
