#!/usr/bin/env bash
# Installs what physbits needs on a Debian machine, only where missing: Node.js and npm, QEMU,
# socat, Prometheus (promtool), Alertmanager and libvirt (for the tests and the demo), and the
# Debian 13 tree whose QEMU 10 the tests run beside this machine's QEMU (contrib/debian13-tree.sh)
# and the Debian 12 and 13 trees the package test installs the .deb into (contrib/debian-tree.sh);
# strace and systemd-analyze (the unit's system-call filter is tested against what the daemon calls);
# openssl (throwaway certificate authorities for the https peer tests); util-linux's setpriv (test
# daemons and guests die with their test worker).
set -euo pipefail
pkgs=(qemu-system-x86 qemu-utils socat prometheus prometheus-alertmanager libvirt-daemon-system libvirt-clients ovmf mmdebstrap lintian strace util-linux systemd openssl)
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  # The packages' own services are not wanted here: physbits' tests start what they need.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
bash "$(dirname "$0")/debian13-tree.sh"
# The trees the package is installed into (test/e2e/package.test.ts, package-bookworm.test.ts):
# Debian 13 and Debian 12 (Proxmox VE 8's base), each with its own Node.js, systemd
# (systemd-analyze), man-db and procps, documentation kept.
export TREE_PACKAGES=nodejs,ca-certificates,systemd,init-system-helpers,procps,man-db TREE_DOCS=keep
bash "$(dirname "$0")/debian-tree.sh" trixie "${PHYSBITS_TEST_TRIXIE_PACKAGE:-/var/cache/physbits-test/trixie-package}"
bash "$(dirname "$0")/debian-tree.sh" bookworm "${PHYSBITS_TEST_BOOKWORM_PACKAGE:-/var/cache/physbits-test/bookworm-package}"
