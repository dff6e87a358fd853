#!/usr/bin/env bash
# Builds the Debian 13 (trixie) tree whose QEMU 10 the tests run as a second QEMU
# (`chroot <tree> qemu-system-x86_64 ...`), with its SeaBIOS and OVMF: contrib/debian-tree.sh for
# trixie (TREE_PACKAGES and TREE_DOCS as described there).
#
#   bash contrib/debian13-tree.sh [DIR]
#
# DIR defaults to $PHYSBITS_TEST_TRIXIE, else /var/cache/physbits-test/trixie (kept between runs).
set -euo pipefail
exec bash "$(dirname "$0")/debian-tree.sh" trixie "${1:-${PHYSBITS_TEST_TRIXIE:-/var/cache/physbits-test/trixie}}"
