#!/usr/bin/env bash
# Installs the system packages the tests and the demo use, with apt, when they are missing.
set -euo pipefail

need=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v nbdkit >/dev/null 2>&1 || need+=(nbdkit)
command -v nbdinfo >/dev/null 2>&1 || need+=(libnbd-bin)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
[ -x /usr/bin/time ] || need+=(time)
command -v rpm >/dev/null 2>&1 || need+=(rpm)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# The console's browser test (agent/internal/consoletest) drives headless Chromium.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# mkfs.ext4 -d builds the filesystems file-level restore is tested on (hub/internal/files).
command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.ext4 ] || need+=(e2fsprogs)
# mkfs.xfs -p (a protofile) and xfs_db build the XFS filesystems of the same tests.
command -v mkfs.xfs >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.xfs ] || need+=(xfsprogs)
# mkntfs and ntfs-3g (FUSE, as root: mkntfs and ntfscp cannot make directories) build the NTFS ones.
command -v mkntfs >/dev/null 2>&1 || [ -x /usr/sbin/mkntfs ] || [ -x /sbin/mkntfs ] || need+=(ntfs-3g)

if [ ${#need[@]} -gt 0 ]; then
  echo "deps.sh: installing ${need[*]} with apt" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
