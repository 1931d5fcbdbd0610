#!/usr/bin/env bash
# Debian packages the tests need: real PostgreSQL and Redis servers (the storage
# tests start private instances of them), curl (the end-to-end tests),
# clevis (the `trustee` pin tests drive Debian's `clevis encrypt`/`clevis decrypt`; clevis-luks and
# cryptsetup-bin bind a LUKS2 volume in a file to it), skopeo and
# docker-registry (the encrypted-image tests push to a real OCI distribution registry and check
# layer encryption against skopeo's ocicrypt), softhsm2 (the KBS `pkcs11` plugin tests keep
# resources in a SoftHSM 2 token), and for
# the TPM tests swtpm (a software TPM 2.0) plus what building tpm2-pytss needs
# (the tss2 libraries and headers, pkg-config, a C compiler).
# Installs only what is missing; uses sudo when not run as root.
set -euo pipefail

missing=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v clevis >/dev/null 2>&1 || missing+=(clevis)
command -v clevis-luks-bind >/dev/null 2>&1 || missing+=(clevis-luks)
{ command -v cryptsetup || [ -x /usr/sbin/cryptsetup ] || [ -x /sbin/cryptsetup ]; } >/dev/null 2>&1 || missing+=(cryptsetup-bin)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v softhsm2-util >/dev/null 2>&1 || missing+=(softhsm2)
command -v swtpm >/dev/null 2>&1 || missing+=(swtpm)
command -v swtpm_setup >/dev/null 2>&1 || missing+=(swtpm-tools)
pkg-config --exists tss2-esys 2>/dev/null || missing+=(libtss2-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
# tpm2-pytss compiles a CFFI extension: it needs Python.h of the interpreter that builds the venv.
"${PYTHON:-python3}" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    2>/dev/null || missing+=(python3-dev)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing Debian packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${missing[@]}"
