#!/usr/bin/env bash
# The base image every Dockerfile here starts FROM: debian:bookworm-slim.
#
# Users have it from Docker Hub, and so does this script where a registry answers
# (`docker pull`). Where none does (this project's CI machines), it is made locally, once:
# Debian's debootstrap (minbase variant) from the machine's own Debian mirror, trimmed as the
# official slim image is (no docs, man pages or locales), then `docker import`. Only where the
# base image comes from differs; the Dockerfiles are the same for everybody.
set -euo pipefail

IMAGE=debian:bookworm-slim
say() { echo "base-image: $*"; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "$IMAGE present ($(docker image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=iec))"
  exit 0
fi
if timeout 60 docker pull -q "$IMAGE" >/dev/null 2>&1; then
  say "$IMAGE pulled"
  exit 0
fi
command -v debootstrap >/dev/null || { say "no registry and no debootstrap: run configs/docker.sh" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { say "no registry answers; making $IMAGE with debootstrap needs root" >&2; exit 1; }

# The machine's Debian mirror (deb822 or one-line sources), else deb.debian.org.
mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
started=$(date +%s)
root=$(mktemp -d /var/tmp/hyperpool-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
say "no registry answers; debootstrap --variant=minbase bookworm from $mirror"
if ! debootstrap --variant=minbase bookworm "$root" "$mirror" > "$root.log" 2>&1; then
  tail -n 20 "$root.log" >&2
  say "debootstrap failed (log above)" >&2
  exit 1
fi
rm -f "$root.log"
cat > "$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
EOF
# As the official slim image: no documentation, manuals or locales, now or in later installs.
cat > "$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
find "$root/usr/share/doc" -mindepth 2 -not -name copyright -delete 2>/dev/null || true
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
       "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log
tar -C "$root" -c . | docker import -c 'CMD ["bash"]' - "$IMAGE" >/dev/null
say "made $IMAGE in $(( $(date +%s) - started )) s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=iec))"
