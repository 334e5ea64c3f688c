#!/usr/bin/env bash
# Stop what up.sh STATE_DIR started: the node and the controllers first, etcd last.
# SIGTERM, then SIGKILL after HYPERPOOL_K8S_DOWN_GRACE seconds (default 10). Only processes
# whose command line names STATE_DIR are signalled (a stale pid file never hits a stranger).
# Keeps STATE_DIR (logs, etcd data, certificates, ports): up.sh STATE_DIR restarts the same
# cluster; rm -rf STATE_DIR afterwards for a fresh one. Always exits 0.
set -uo pipefail
STATE="${1:?usage: down.sh STATE_DIR}"
[ -d "$STATE" ] || exit 0
STATE="$(cd "$STATE" && pwd)"
GRACE="${HYPERPOOL_K8S_DOWN_GRACE:-10}"

ours() {  # ours PID: alive and started by up.sh for this STATE_DIR
  kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "$STATE/"
}
stop() {  # stop NAME...: TERM all, wait for all, KILL the rest
  local name pid pids=() deadline
  for name in "$@"; do
    [ -f "$STATE/$name.pid" ] || continue
    pid=$(cat "$STATE/$name.pid")
    if ours "$pid"; then kill -TERM "$pid" 2>/dev/null && pids+=("$pid"); fi
  done
  deadline=$(( $(date +%s) + GRACE ))
  for pid in "${pids[@]}"; do
    while ours "$pid" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
    if ours "$pid"; then
      echo "down.sh: pid $pid did not stop in ${GRACE}s; killing" >&2
      kill -KILL "$pid" 2>/dev/null
    fi
  done
  for name in "$@"; do rm -f "$STATE/$name.pid"; done
}
stop real-kubelet kube-proxy hollow-node kube-scheduler kube-controller-manager
# The real node's leftovers (real-node.sh): its pods' containers (the pod dirs under the
# kubelet's root name their UIDs; other containers on this dockerd are left alone), the
# tmpfs/bind mounts under its root, kube-proxy's iptables chains, and the dockerd ownership.
if [ -f "$STATE/real-node-dir.path" ]; then
  node_dir=$(cat "$STATE/real-node-dir.path")
  case "$node_dir" in
    /tmp/hp-kubelet.*)
      for uid in $(ls "$node_dir/root/pods" 2>/dev/null); do
        docker ps -aq --filter "label=io.kubernetes.pod.uid=$uid" 2>/dev/null
      done | xargs -r docker rm -f >/dev/null 2>&1
      awk -v d="$node_dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
        xargs -r -n1 umount -l 2>/dev/null
      rm -rf "$node_dir" ;;
  esac
  rm -f "$STATE/real-node-dir.path"
  if [ -f "$STATE/env" ]; then
    bin=$(sed -n 's/^export HYPERPOOL_K8S_BIN=//p' "$STATE/env")
    [ -x "$bin/kube-proxy" ] && "$bin/kube-proxy" --cleanup >/dev/null 2>&1
  fi
  [ "$(cat /run/hyperpool-real-node 2>/dev/null)" = "$STATE" ] && rm -f /run/hyperpool-real-node
fi
stop kube-apiserver
stop etcd
# The hollow node's short temp dir (see up.sh), only if it is one of ours.
if [ -f "$STATE/hollow-node-tmp.path" ]; then
  node_tmp=$(cat "$STATE/hollow-node-tmp.path")
  case "$node_tmp" in /tmp/hp-node.*) rm -rf "$node_tmp" ;; esac
  rm -f "$STATE/hollow-node-tmp.path"
fi
exit 0
