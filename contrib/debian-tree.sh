#!/usr/bin/env bash
# Builds a Debian tree with mmdebstrap: the Debian 13 (trixie) tree whose QEMU 10 the tests run as a
# second QEMU (`chroot <tree> qemu-system-x86_64 ...`, contrib/debian13-tree.sh), and the Debian 12
# (bookworm) and 13 trees the package test installs the .deb into (test/e2e/package*.test.ts).
#
#   bash contrib/debian-tree.sh SUITE DIR
#
# SUITE is a Debian codename (bookworm, trixie). Built once from the Debian archive apt on this
# machine already uses (read from apt's own sources, deb822 or sources.list), then reused. The tree
# is built beside DIR and renamed into place only when complete, so a killed build never leaves a
# tree that looks complete; a lock keeps two builds from racing. On failure: one line on stderr
# saying why, exit 1.
#
# Every tree holds QEMU, SeaBIOS and OVMF; TREE_PACKAGES adds packages to the list, TREE_DOCS=keep
# installs /usr/share/doc and man pages (dropped by default, to keep a QEMU tree small).
set -euo pipefail

SUITE="${1:?usage: debian-tree.sh SUITE DIR}"
DIR="${2:?usage: debian-tree.sh SUITE DIR}"
case "$SUITE" in
  bookworm) LABEL="Debian 12" ;;
  trixie) LABEL="Debian 13" ;;
  *) LABEL="Debian $SUITE" ;;
esac
PACKAGES="qemu-system-x86,ovmf,seabios${TREE_PACKAGES:+,$TREE_PACKAGES}"
DOCS="${TREE_DOCS:-drop}"
# What a complete tree records; a different suite or package list rebuilds it.
STAMP="physbits-test-tree suite=$SUITE packages=$PACKAGES${TREE_DOCS:+ docs=$DOCS}"
MARKER=".physbits-tree-complete"

fail() {
  echo "debian-tree: cannot build the $LABEL tree at $DIR: $*" >&2
  exit 1
}

complete() { [ -f "$DIR/$MARKER" ] && [ "$(cat "$DIR/$MARKER")" = "$STAMP" ]; }

complete && exit 0

[ "$(id -u)" -eq 0 ] || fail "run as root (mmdebstrap root mode; the tests chroot into it)"
command -v mmdebstrap >/dev/null 2>&1 || fail "mmdebstrap is not installed (apt-get install mmdebstrap)"

# The Debian archive apt already uses: the URI of the "deb" entry for this machine's own release
# (not -security, not -updates). apt-get indextargets reads both sources formats.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$codename" ] || fail "/etc/os-release names no VERSION_CODENAME (not Debian?)"
archive=$(apt-get indextargets --no-release-info --format '$(TARGET_OF) $(RELEASE) $(REPO_URI)' 2>/dev/null |
  awk -v rel="$codename" '$1 == "deb" && $2 == rel { print $3; exit }') || true
[ -n "$archive" ] || fail "no Debian archive found in apt's sources (/etc/apt/sources.list.d/*.sources, /etc/apt/sources.list)"

parent=$(dirname "$DIR")
mkdir -p "$parent" || fail "cannot create $parent"
exec 9>"$DIR.lock" || fail "cannot open $DIR.lock"
flock 9
complete && exit 0

work="$DIR.building.$$"
log="$DIR.log"
trap 'rm -rf "$work"' EXIT
rm -rf "$DIR" "$DIR".building.*
echo "building the $LABEL tree at $DIR from $archive (about a minute, 300 MB; log: $log)"
excludes=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*')
[ "$DOCS" = keep ] && excludes=()
if ! mmdebstrap --variant=apt --include="$PACKAGES" "${excludes[@]}" \
  "$SUITE" "$work" "deb $archive $SUITE main" >"$log" 2>&1; then
  fail "mmdebstrap failed: $(grep -E '^E:' "$log" | tail -n 1 || tail -n 1 "$log")"
fi
[ -x "$work/usr/bin/qemu-system-x86_64" ] || fail "the tree has no usr/bin/qemu-system-x86_64"
chroot "$work" qemu-system-x86_64 --version >/dev/null 2>&1 || fail "chroot $work qemu-system-x86_64 --version failed"
echo "$STAMP" >"$work/$MARKER"
mv -T "$work" "$DIR"
trap - EXIT
echo "$LABEL tree ready: $DIR ($(chroot "$DIR" qemu-system-x86_64 --version | head -n 1))"
