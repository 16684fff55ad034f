#!/usr/bin/env bash
# The whole test suite: static checks, fast tests, then the heavy suites (real PyInstaller builds,
# then the Windows artefacts under Wine). Each stage must pass.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"; ruff check .
echo "== mypy"; mypy
echo "== fast tests"; pytest -q -m "not freeze and not wine and not outage"
echo "== outage acceptance (real r4agent run processes, real time)"; pytest -q -m outage
echo "== freeze tests (real PyInstaller builds)"; pytest -q -m freeze
echo "== wine tests (Windows exe, service, MSI)"; pytest -q -m wine
