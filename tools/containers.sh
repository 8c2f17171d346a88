#!/usr/bin/env bash
# `make containers`: podman, buildah, debootstrap, runc and catatonit (`--init`) from Debian's packages, configured as they
# work on a VM without systemd: runc (crun fails on hybrid cgroups), cgroupfs, a file events log, and
# container ulimits no higher than this shell's hard limits (a container may not raise them).
# An existing /etc/containers/containers.conf is kept as it is.
set -euo pipefail
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
missing=()
for tool in podman buildah debootstrap runc catatonit; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || [ -x "/usr/libexec/podman/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "llamafleet: installing ${missing[*]} (Debian packages) to build and run the image"
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
conf=/etc/containers/containers.conf
if [ ! -f "$conf" ]; then
  nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
  [ "$nofile" = unlimited ] || [ "$nofile" -gt 16384 ] && nofile=16384
  [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
  echo "llamafleet: writing $conf (runc, cgroupfs, file events, nofile=$nofile nproc=$nproc)"
  $SUDO mkdir -p /etc/containers
  $SUDO tee "$conf" >/dev/null <<CONF
# Written by llamafleet's tools/containers.sh: podman on a machine without systemd.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
fi
