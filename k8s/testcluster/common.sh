# Sourced by up.sh and real-node.sh: start components in the background and wait for them.
# Expects STATE (the cluster's state dir), TIMEOUT (seconds per wait) and started (date +%s).

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

start() {  # start NAME CMD... : in the background, detached from our stdin/stdout
  local name=$1; shift
  echo "=== $(date -u +%FT%TZ) $(basename "$0"): $*" >>"$STATE/$name.log"
  "$@" </dev/null >>"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

fail() {  # fail WHAT LOGNAME: say so with the log's tail, stop what was started, exit 1
  echo "$(basename "$0"): FAILED: $1 ($(( $(date +%s) - started ))s); last lines of $STATE/$2.log:" >&2
  tail -25 "$STATE/$2.log" >&2 || true
  echo "$(basename "$0"): stopping what was started (logs stay in $STATE)" >&2
  bash "$(dirname "$0")/down.sh" "$STATE" >&2 || true
  exit 1
}

wait_for() {  # wait_for WHAT LOGNAME CMD... : until CMD succeeds; fail if the process dies
  local what=$1 log=$2 deadline=$(( $(date +%s) + TIMEOUT )); shift 2
  until "$@" >/dev/null 2>&1; do
    alive "$log" || { sleep 0.5; fail "$log exited while waiting for $what" "$log"; }
    [ "$(date +%s)" -lt "$deadline" ] || fail "$what not reached after ${TIMEOUT}s" "$log"
    sleep 0.2
  done
  echo "$(basename "$0"): [$(( $(date +%s) - started ))s] $what"
}

free_ports() {  # free_ports N: N distinct free TCP ports in 20000-32767 on 127.0.0.1
  python3 - "$1" <<'PY'
import random, socket, sys
ports = []
while len(ports) < int(sys.argv[1]):
    p = random.randrange(20000, 32768)
    if p in ports:
        continue
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's listeners do
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    ports.append(p)
print(*ports)
PY
}

# The real node's address: docker's bridge gateway. The kubelet refuses a loopback node IP,
# and the pods (on that bridge, no CNI) reach the host there.
docker_bridge_ip() {
  ip -4 -o addr show docker0 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}'
}
