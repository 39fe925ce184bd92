#!/usr/bin/env bash
# Make sure the real servers the test suite starts (on its own ports), and the browser
# its consent-page test drives, are installed.
set -euo pipefail
here="$(dirname "$0")"
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v memcached >/dev/null || need+=(memcached)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
# The OAuth consent page's browser test: headless Chromium driven through chromedriver.
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
for tool in "$@"; do command -v "$tool" >/dev/null || need+=("$tool"); done
[ ${#need[@]} -eq 0 ] && exit 0
bash "$here/ensure-packages.sh" "${need[@]}"
# The packages' own daemons are not ours: stop them so they hold no ports or memory.
for service in redis-server memcached postgresql; do
    service "$service" stop >/dev/null 2>&1 || true
done
