#!/usr/bin/env bash
# Build the Debian image that Molecule's test hosts run from (Debian 12 unless
# WEBRTC_EDGE_SUITE says trixie), with systemd as PID 1, and make sure a Docker
# engine is there to run it.
#
# No container registry is reachable, so the image comes from Debian's archive:
# debootstrap (minbase) into a scratch folder, a few container tweaks in the
# chroot, then `docker import`. Idempotent: each step is skipped when its
# result is already there, and the image is rebuilt only when this script
# changes (its sha256 is stored as an image label).
#
#   bash tests/tools/build-image.sh           # engine + image, reused when current
#   WEBRTC_EDGE_IMAGE_REBUILD=1 bash ...    # force a fresh image
#   WEBRTC_EDGE_SUITE=trixie bash ...       # Debian 13: webrtc-edge/debian13-systemd:latest,
#     then WEBRTC_EDGE_IMAGE=webrtc-edge/debian13-systemd:latest molecule test -s cluster
#
# Environment (all optional):
#   WEBRTC_EDGE_SUITE          bookworm (Debian 12) or trixie (Debian 13)  (bookworm)
#   WEBRTC_EDGE_IMAGE          image reference  (webrtc-edge/debian<12|13>-systemd:latest)
#   WEBRTC_EDGE_IMAGE_REBUILD  1 = rebuild even when current
#   DEBIAN_MIRROR              archive for debootstrap and the image's apt
#                              (http://deb.debian.org/debian)
#   DEBIAN_SECURITY_MIRROR     (http://deb.debian.org/debian-security)
#   DOCKERD_LOG                where a dockerd started here logs (/var/log/dockerd.log)
#   DEBOOTSTRAP_CACHE          .deb cache reused across rebuilds
#                              (/var/cache/webrtc-edge/debootstrap)
set -euo pipefail

SUITE=${WEBRTC_EDGE_SUITE:-bookworm}
case $SUITE in
  bookworm) RELEASE=12 ;;
  trixie) RELEASE=13 ;;
  *) printf '[image] error: WEBRTC_EDGE_SUITE must be bookworm or trixie (got %s)\n' "$SUITE" >&2; exit 1 ;;
esac
IMAGE=${WEBRTC_EDGE_IMAGE:-webrtc-edge/debian$RELEASE-systemd:latest}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
DEBOOTSTRAP_CACHE=${DEBOOTSTRAP_CACHE:-/var/cache/webrtc-edge/debootstrap}
LOCK_FILE=/tmp/webrtc-edge-image-build.lock
HASH_LABEL=org.webrtc-edge.image.build-hash

# What the image holds beyond minbase. python3-apt saves Ansible's apt module
# from installing it on every first run.
INCLUDE=python3,python3-apt,systemd,systemd-sysv,dbus,iproute2,ca-certificates,sudo

# Units that only make sense on real hardware or a console; in a container
# they fail or hang the boot.
MASK_UNITS=(
  getty.target
  console-getty.service
  getty-static.service
  systemd-udevd.service
  systemd-udev-trigger.service
  systemd-udev-settle.service
  systemd-udevd-control.socket
  systemd-udevd-kernel.socket
  systemd-modules-load.service
  systemd-remount-fs.service
  systemd-firstboot.service
  systemd-binfmt.service
  systemd-hwdb-update.service
  systemd-sysctl.service
  systemd-journald-audit.socket
  systemd-ask-password-console.path
  systemd-ask-password-wall.path
  dev-hugepages.mount
  dev-mqueue.mount
  sys-fs-fuse-connections.mount
  sys-kernel-config.mount
  sys-kernel-debug.mount
  sys-kernel-tracing.mount
  proc-sys-fs-binfmt_misc.automount
  proc-sys-fs-binfmt_misc.mount
)

log() { printf '[image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# --- Docker engine ------------------------------------------------------------

apt_install() {
  # An update first when the package lists are missing or older than a day.
  if [[ -z $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -1) ]]; then
    as_root apt-get -o DPkg::Lock::Timeout=900 update
  fi
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get -o DPkg::Lock::Timeout=900 install -y "$@"
}

ensure_docker_installed() {
  if ! command -v dockerd >/dev/null; then
    log "installing docker.io from Debian"
    apt_install docker.io
  fi
}

docker_answers() { docker info >/dev/null 2>&1; }

ensure_dockerd_running() {
  if docker_answers; then
    return
  fi
  if pgrep -x dockerd >/dev/null; then
    log "dockerd is running but not answering yet; waiting"
  else
    # No systemd here (nor in CI): start the daemon directly, in a session of
    # its own so it outlives this script; it starts its own containerd. The
    # build lock (fd 9) must not leak into it.
    log "starting dockerd (log: $DOCKERD_LOG)"
    as_root mkdir -p "$(dirname "$DOCKERD_LOG")"
    # shellcheck disable=SC2016 # $1 is the inner shell's, not this script's
    as_root sh -c 'exec setsid --fork dockerd >>"$1" 2>&1 </dev/null' sh "$DOCKERD_LOG" 9>&-
  fi
  local i
  for ((i = 0; i < 60; i++)); do
    if docker_answers; then
      log "dockerd is up"
      return
    fi
    sleep 1
  done
  tail -n 30 "$DOCKERD_LOG" >&2 || true
  die "dockerd did not answer within 60 s"
}

# --- Base image ---------------------------------------------------------------

# Everything that decides the image's content: this script and the settings.
build_hash() {
  {
    cat "${BASH_SOURCE[0]}"
    printf '%s\n' "$MIRROR" "$SECURITY_MIRROR" "$SUITE"
  } | sha256sum | cut -d' ' -f1
}

image_current() {
  local want=$1 have
  have=$(docker image inspect --format "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$IMAGE" 2>/dev/null) || return 1
  [[ $have == "$want" ]]
}

# Container tweaks, applied inside the fresh root file system.
configure_rootfs() {
  local root=$1

  # apt: the same archive as the host, plus updates and security; no
  # translations. Lists and caches are dropped at the end, as in Debian's own
  # images, so roles must update the cache (they do on a real server too).
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat >"$root/etc/apt/apt.conf.d/90webrtc-edge-container" <<'EOF'
// Test-host image: no translation files, no cached .debs.
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
EOF

  # dpkg: no fsync after each file, as in Docker's official Debian images
  # (docker-apt-speedup): a test host's disk need not survive a power cut, and
  # the roles' package installs take a quarter less time (measured: python3-venv
  # and nftables, 15 s -> 11 s).
  echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/90webrtc-edge-unsafe-io"

  # systemd: boot to multi-user, mask what cannot work in a container.
  local unit
  for unit in "${MASK_UNITS[@]}"; do
    ln -sfn /dev/null "$root/etc/systemd/system/$unit"
  done
  ln -sfn /lib/systemd/system/multi-user.target "$root/etc/systemd/system/default.target"

  # An empty machine-id is not a "first boot" (so no preset-all), yet systemd
  # gives every container its own id at boot.
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
  ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"

  # Docker manages these; keep no build-host leftovers.
  : >"$root/etc/hostname"
  rm -f "$root/etc/resolv.conf"

  # Shrink: apt lists, caches, logs, docs of the bootstrap itself.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log \
    "$root"/var/log/apt/* "$root"/tmp/* "$root"/var/tmp/*
  mkdir -p "$root/var/lib/apt/lists/partial"
  # Date the (empty) lists to the epoch: Ansible's apt module judges
  # cache_valid_time by this folder's mtime, and a freshly built image would
  # otherwise look freshly updated and install from no lists at all.
  touch -d @0 "$root/var/lib/apt/lists"
}

build_image() {
  local hash=$1 work root
  work=$(mktemp -d /var/tmp/webrtc-edge-image.XXXXXX)
  # shellcheck disable=SC2064  # expand now: $work is local
  trap "as_root rm -rf '$work'" EXIT
  root=$work/rootfs

  log "debootstrap $SUITE (minbase) from $MIRROR"
  as_root mkdir -p "$DEBOOTSTRAP_CACHE"
  as_root debootstrap --variant=minbase --include="$INCLUDE" \
    --cache-dir="$DEBOOTSTRAP_CACHE" "$SUITE" "$root" "$MIRROR" \
    >"$work/debootstrap.log" 2>&1 || {
    tail -n 40 "$work/debootstrap.log" >&2
    die "debootstrap failed"
  }

  log "configuring the root file system"
  as_root bash -c "$(declare -p MIRROR SECURITY_MIRROR SUITE MASK_UNITS); $(declare -f configure_rootfs); configure_rootfs '$root'"

  log "importing as $IMAGE"
  as_root tar -C "$root" --numeric-owner -c . | docker import \
    --change 'ENV container=docker' \
    --change 'CMD ["/lib/systemd/systemd"]' \
    --change "LABEL $HASH_LABEL=$hash" \
    --change "LABEL org.opencontainers.image.description=\"Debian $RELEASE with systemd, webrtc-edge Molecule test host\"" \
    --message "webrtc-edge test host, build $hash" \
    - "$IMAGE" >/dev/null

  as_root rm -rf "$work"
  trap - EXIT
}

ensure_image() {
  local hash
  hash=$(build_hash)
  if [[ ${WEBRTC_EDGE_IMAGE_REBUILD:-0} != 1 ]] && image_current "$hash"; then
    log "$IMAGE is current (build ${hash:0:12}); reusing it"
    return
  fi
  command -v debootstrap >/dev/null || apt_install debootstrap
  build_image "$hash"
  # Drop the images this one replaced (now untagged); ignore any in use.
  docker image prune --force --filter "label=$HASH_LABEL" >/dev/null || true
  log "built $IMAGE ($(docker image inspect --format '{{ .Size }}' "$IMAGE" | numfmt --to=iec))"
}

main() {
  # One build at a time on this machine (parallel `make test` runs).
  exec 9>"$LOCK_FILE"
  flock 9
  ensure_docker_installed
  ensure_dockerd_running
  ensure_image
}

main "$@"
