#!/usr/bin/env bash
# The test suite as README and CI run it. The browser test drives Debian's chromium (never a browser
# download); it is installed here when missing and we are root, else that one test skips with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends chromium >/dev/null) \
    || echo "chromium could not be installed: the browser test will skip"
fi
exec python -m pytest -q -n 2 --dist loadfile "$@"
