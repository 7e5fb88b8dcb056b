#!/usr/bin/env bash
# The test suite as README and CI run it. The browser test drives Debian's chromium (never a browser
# download); it is installed here when missing and we are root, else that one test skips with a reason.
# The PACS tests run Debian's Orthanc with its DICOMweb plugin the same way: installed here when
# missing and root, started by the tests themselves on a loopback port of their own.
set -euo pipefail
cd "$(dirname "$0")/.."
apt_updated=
apt_install() {  # apt_install PACKAGE...: quietly, without recommends, updating the lists once
  # another apt (a machine's own updates) may hold the dpkg lock for a while: wait for it, don't give up
  [ -n "$apt_updated" ] || { apt-get -o DPkg::Lock::Timeout=300 update -qq && apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >/dev/null
}
if { ! command -v Orthanc >/dev/null 2>&1 && [ ! -x /usr/sbin/Orthanc ] || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; } \
   && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  # the package's postinst would start the system Orthanc service; the tests need only the binary,
  # so service starts are refused while it installs (policy-rc.d), unless a policy is already there
  policy=/usr/sbin/policy-rc.d own_policy=
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1; fi
  apt_install orthanc orthanc-dicomweb || echo "orthanc could not be installed: the PACS tests will skip"
  if [ -n "$own_policy" ]; then rm -f "$policy"; fi
fi
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt_install chromium || echo "chromium could not be installed: the browser test will skip"
fi
exec python -m pytest -q -n 2 --dist loadfile "$@"
