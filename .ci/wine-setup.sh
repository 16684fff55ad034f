#!/usr/bin/env bash
# Installs what the Windows-artefact tests need (Wine 8, wixl, msitools, osslsigncode, mingw
# binutils for the harness's forwarding DLL, openssl) and prepares the cached Wine build prefix
# (Windows CPython + pinned requirements). Idempotent: a second run takes a few seconds.
# Called by the `wine` tests' session fixture (tests/windows/conftest.py); safe to run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

bash .ci/apt-ensure.sh wine wine64 wixl msitools osslsigncode binutils-mingw-w64-x86-64 \
    openssl unzip unixodbc libsqliteodbc

python3 build/wine/winehost.py setup
