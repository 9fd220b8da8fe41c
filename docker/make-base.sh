#!/bin/sh
# Build the base image the Dockerfile starts FROM, locally: a minimal Debian bookworm with
# Python 3.11 and venv, made with debootstrap and `docker import`, so no image registry is
# needed (Docker Hub may be unreachable). The machine's CA bundle and pip settings are copied
# in, so that pip inside `docker build` reaches the package index the way pip here does.
#
#   docker/make-base.sh            build it unless it exists (prints the image name)
#   docker/make-base.sh --force    build it again
#
# Needs root (debootstrap) and a Debian mirror; about 2 minutes. MONITOR_BASE_IMAGE names
# the image (default monitor-base:bookworm), DEBIAN_MIRROR the mirror.
set -eu

image=${MONITOR_BASE_IMAGE:-monitor-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "${1:-}" != "--force" ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

if ! command -v debootstrap >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

root=$(mktemp -d /tmp/monitor-base.XXXXXX)
trap 'rm -rf "$root"' EXIT INT TERM

debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"

# This machine's CA bundle (it may hold a site CA that pip needs) and its pip settings that
# make sense inside a container: the index URLs, not local folders.
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
{
  echo "[global]"
  echo "cert = /etc/ssl/certs/ca-certificates.crt"
  for key in index-url extra-index-url trusted-host; do
    value=$(python3 -m pip config get "global.$key" 2>/dev/null || true)
    value=$(printf '%s\n' "$value" | tr ' ' '\n' | grep -E '^https?://|^[a-z0-9.-]+$' | tr '\n' ' ' || true)
    if [ -n "$value" ]; then echo "$key = $value"; fi
  done
} >"$root/etc/pip.conf"

# An image is not a system: no package lists, docs or locales it would never use.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/locale/*

tar -C "$root" -c . | docker import \
  -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "$image"
