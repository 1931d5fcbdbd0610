"""One C++ allocator for the whole process, set up before regopy loads.

regopy's `librego_shared.so` carries snmalloc and exports its own
`operator new`/`operator delete`. Which of the two allocators a piece of C++
code uses depends on the order the dynamic linker saw the libraries:

- when `libstdc++.so.6` is first loaded by another extension (grpcio's
  `cygrpc` is one: every gRPC service imports it before any policy), the
  code inside libstdc++ keeps libstdc++'s own `new`/`delete` (glibc
  malloc) while rego-cpp's code binds to snmalloc. An object that libstdc++
  allocates and rego-cpp frees goes to snmalloc's `delete`, and the glibc
  block is never freed. Each attestation evaluated by the AS lost ~40-80 KB
  this way (issue 9);
- when regopy loads first, libstdc++ binds to snmalloc and grpcio keeps
  glibc's, the same split the other way round.

`share_cxx_allocator()` makes libstdc++ part of the global symbol scope
(`RTLD_GLOBAL`) before `librego_shared.so` is loaded; the dynamic linker
then resolves rego-cpp's `new`/`delete` to libstdc++'s, like every other
C++ library in the process, whatever was imported before. It must run
before the first `import regopy`; `trustee_common.rego` (the only importer
of regopy) calls it. Without glibc's libstdc++ (another libc, macOS's
two-level namespaces) there is nothing to do.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

LIBSTDCXX = "libstdc++.so.6"
#: The regopy module that loads `librego_shared.so`.
REGOPY_LOADER = "regopy.rego_shared"

_shared = False


def share_cxx_allocator() -> bool:
    """Promote libstdc++ to the global scope; True when regopy will use libstdc++'s new/delete."""
    global _shared
    if _shared:
        return True
    if REGOPY_LOADER in sys.modules:
        logger.warning("regopy was loaded before %s: rego-cpp may mix two C++ allocators and leak memory", __name__)
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        ctypes.CDLL(LIBSTDCXX, mode=os.RTLD_GLOBAL | os.RTLD_NOW)
    except OSError:
        return False
    _shared = True
    return True
