#!/usr/bin/env bash
# Installs what the Windows-artefact tests need (Wine 8, wixl, msitools, osslsigncode, mingw
# binutils for the harness's forwarding DLL, openssl) and prepares the cached Wine build prefix
# (Windows CPython + pinned requirements). Idempotent: a second run takes a few seconds.
# Called by the `wine` tests' session fixture (tests/windows/conftest.py); safe to run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(wine wine64 wixl msitools osslsigncode binutils-mingw-w64-x86-64 openssl unzip
              unixodbc libsqliteodbc)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    echo "wine-setup: installing ${missing[*]}" >&2
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

python3 build/wine/winehost.py setup
