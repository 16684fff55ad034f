#!/usr/bin/env bash
# Usage: bash .ci/apt-ensure.sh PACKAGE...  — installs those Debian packages not yet installed
# (as root, or through sudo). Shared by .ci/setup.sh and .ci/wine-setup.sh.
set -euo pipefail
missing=()
for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
((${#missing[@]})) || exit 0
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
echo "apt: installing ${missing[*]}" >&2
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
