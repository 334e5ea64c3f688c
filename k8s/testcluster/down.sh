#!/usr/bin/env bash
# Stop what up.sh STATE_DIR started (node first, etcd last), then forget the state.
set -uo pipefail
STATE="${1:?usage: down.sh STATE_DIR}"
for name in hollow-node kube-scheduler kube-controller-manager kube-apiserver etcd; do
  pidfile="$STATE/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
  rm -f "$pidfile"
done
exit 0
