#!/usr/bin/env bash
# Installs everything fanhsm needs to build, test, benchmark and run its demo on Debian 12,
# by package name from Debian's archive. Run as root. Safe to run again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

packages=(
  # build
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev
  # libraries
  libsqlite3-dev libcli11-dev nlohmann-json3-dev libfmt-dev libcurl4-openssl-dev
  libgumbo-dev libfuse3-dev fuse3 libxxhash-dev prometheus-cpp-dev
  xfslibs-dev  # xfs_fs.h: invisible writes on an xfs cache (XFS_IOC_OPEN_BY_HANDLE)
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev python3 python3-pytest
  e2fsprogs xfsprogs btrfs-progs util-linux attr curl fio psmisc procps bc
  # copy and archive tools the copy tests run over a mount; ACLs for the security tests
  coreutils tar libarchive-tools cpio rsync acl
  # a self-signed certificate for the TLS test server
  openssl
)
# Extra packages other parts of the project list one per line (e.g. test servers).
for list in "$here"/deps-*.txt; do
  [ -e "$list" ] || continue
  while read -r pkg; do
    pkg=${pkg%%#*}
    pkg=$(echo "$pkg" | tr -d '[:space:]')
    [ -n "$pkg" ] && packages+=("$pkg")
  done < "$list"
done

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: run as root (apt-get needs it)" >&2
  exit 1
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Servers installed for tests must not start as system services: tests start their own.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
