#!/usr/bin/env bash
# Prerequisites of `npm run test:slow` (the real edk2 build): the edk2 build tools, the aarch64
# cross compiler, QEMU to boot the result, and a deb-src line so `apt-get source edk2` works.
# Installs them when run as root on Debian/Ubuntu; otherwise says what to install and fails.
set -euo pipefail
packages="acpica-tools nasm uuid-dev gcc g++ make python3 gcc-aarch64-linux-gnu dpkg-dev qemu-system-arm qemu-efi-aarch64"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
has_deb_src() {
  grep -rqsE '^(deb-src |Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}
if [ -z "$missing" ] && has_deb_src; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "test:slow needs:${missing:- (nothing)}${missing:+ (apt-get install$missing)}" >&2
  has_deb_src || echo "and a deb-src entry in /etc/apt/sources.list(.d) for 'apt-get source edk2'" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! has_deb_src; then
  # Mirror the first deb entry as deb-src (deb822 or one-line format).
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >/etc/apt/sources.list.d/vmforge-deb-src.sources
  else
    grep -E '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' >/etc/apt/sources.list.d/vmforge-deb-src.list
  fi
fi
apt-get update -q
# shellcheck disable=SC2086
[ -z "$missing" ] || apt-get install -y -q --no-install-recommends $missing
