#!/usr/bin/env bash
# Install Debian packages when missing: with apt-get as root, otherwise say what to install.
set -euo pipefail
missing=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "Missing system packages: ${missing[*]}" >&2
    echo "Install them (e.g. 'sudo apt-get install ${missing[*]}') and run make again." >&2
    exit 1
fi
echo "Installing ${missing[*]} with apt-get ..."
# Debian's packages start their daemons on the default ports; tests use their own servers.
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
