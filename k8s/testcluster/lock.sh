# Sourced by build.sh: one build at a time, and a build that is stopped takes its whole process
# tree with it and releases the lock. (A build killed under a test timeout once left an orphan
# `go build` holding .build.lock for 12 minutes: it had inherited the lock's descriptor.)
#
#   take_lock FILE   hold FILE's flock on fd 9 (waits, saying so, while another build has it)
#   run CMD...       run CMD so that it never holds the lock, and dies with this script: it runs
#                    in the background under `wait`, which a signal interrupts (a foreground
#                    child would delay the trap until it ended), with fd 9 closed and a parent-
#                    death signal (setpriv --pdeathsig) for when this script is SIGKILLed.

take_lock() {
  exec 9>"$1"
  if ! flock -n 9; then
    echo "testcluster: another build.sh holds $1; waiting"
    flock 9
  fi
}

_descendants() {
  local child
  for child in $(pgrep -P "$1" || true); do
    _descendants "$child"
    echo "$child"
  done
}

_stop_tree() {
  trap - INT TERM HUP
  local pids
  pids=$(_descendants $$)
  # shellcheck disable=SC2086  # a list of pids
  [ -z "$pids" ] || kill -TERM $pids 2>/dev/null || true
  echo "testcluster: stopped; its children are stopped too and the build lock is released" >&2
  exit 130
}
trap _stop_tree INT TERM HUP

run() {
  setpriv --pdeathsig KILL -- "$@" 9>&- &
  wait $!
}
