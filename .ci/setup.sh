#!/usr/bin/env bash
# Installs everything a fresh Debian machine needs for the demo and the fast tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# wixl + msitools: the MSI table checks are fast tests (tests/windows/test_msi_tables.py)
# osslsigncode + gcc + openssl: the release refusals (a signed PE, a real ELF) are fast tests
bash .ci/apt-ensure.sh unixodbc libsqliteodbc python3-venv wixl msitools osslsigncode gcc openssl

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    # tufup (before the move to tuf 7) pins tuf 4.0.x: a venv made before then still has it
    .venv/bin/pip uninstall -q -y tufup pynacl 2>/dev/null || true
    .venv/bin/pip install -q -e '.[dev]'
    touch "$stamp"
fi
