#!/usr/bin/env bash
# The test cluster's real node "real-node-0": a kubelet running pods on this machine's dockerd
# (dockershim, built into the 1.20 kubelet) and kube-proxy for Services. Called by up.sh once
# the control plane is ready (NODE_IP = docker0's address in the environment); down.sh stops
# it and removes what its pods left behind. README.md beside this file explains each choice:
# * one real kubelet per dockerd: a second one kills the first one's pods within seconds
#   ("Killing unwanted pod"), so /run/hyperpool-real-node names the STATE_DIR that owns it;
# * the node is tainted hyperpool.test/real-node=true:NoSchedule: the controller's tests keep
#   their pods on the hollow node, and a namespace chooses the real node with two annotations
#   (PodNodeSelector and PodTolerationRestriction admission), leaving manifests unchanged;
# * the kubelet resets vm.overcommit_memory, kernel.panic and kernel.panic_on_oops at start:
#   they are saved before and put back once the node is Ready;
# * image GC is off: images here are built locally and can never be pulled again;
# * no CNI: pods are on docker's bridge; no cluster DNS: they use the host's resolv.conf.
set -euo pipefail
STATE="$(cd "${1:?usage: real-node.sh STATE_DIR}" && pwd)"
: "${NODE_IP:?real-node.sh: set NODE_IP to the docker0 address, as up.sh does}"
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
# shellcheck disable=SC1091
. "$STATE/ports.env"
# shellcheck disable=SC1091
. "$STATE/env"
TIMEOUT="${HYPERPOOL_K8S_UP_TIMEOUT:-120}"
started=$(date +%s)
started_iso=$(date -u +%FT%TZ)
BIN=$HYPERPOOL_K8S_BIN
PKI="$STATE/pki"
NODE=real-node-0
PAUSE_IMAGE=hyperpool/pause:3.4-v1.20.2
OWNER=/run/hyperpool-real-node
KUBECTL=("$BIN/kubectl" --kubeconfig "$KUBECONFIG" --request-timeout 5s)

# --- one real kubelet per dockerd ----------------------------------------------------------
exec 8>"$OWNER.lock"
flock 8
if [ -f "$OWNER" ]; then
  other=$(cat "$OWNER")
  pid=$(cat "$other/real-kubelet.pid" 2>/dev/null || true)
  if [ "$other" != "$STATE" ] && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
     tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$other/"; then
    api_pid=$(cat "$other/kube-apiserver.pid" 2>/dev/null || true)
    if [ -n "$api_pid" ] && kill -0 "$api_pid" 2>/dev/null; then
      echo "real-node.sh: the real node of $other runs on this dockerd; a second kubelet" \
           "would kill its pods: stop it first (k8s/testcluster/down.sh $other)" >&2
      exit 1
    fi
    # Its control plane is gone (a test run killed before its teardown): nothing can use
    # that node any more, so it is stopped rather than left to block every later cluster.
    echo "real-node.sh: stopping the orphaned real node of $other (its API server is gone)"
    bash "$(dirname "$0")/down.sh" "$other"
  fi
fi
echo "$STATE" > "$OWNER"

# --- the pause image, from build.sh's static binary ------------------------------------------
if ! docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1; then
  tar -C "$BIN" -c pause | docker import --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >/dev/null
  echo "real-node.sh: imported $PAUSE_IMAGE"
fi

# --- kubeconfigs of the node's two identities (up.sh made the certificates) ------------------
identity() {  # identity FILE CERT-NAME
  rm -f "$1"
  "$BIN/kubectl" config set-cluster t --server="$HYPERPOOL_K8S_API_URL" \
    --certificate-authority="$PKI/ca.crt" --embed-certs --kubeconfig="$1" >/dev/null
  "$BIN/kubectl" config set-credentials u --client-certificate="$PKI/$2.crt" \
    --client-key="$PKI/$2.key" --embed-certs --kubeconfig="$1" >/dev/null
  "$BIN/kubectl" config set-context t --cluster=t --user=u --kubeconfig="$1" >/dev/null
  "$BIN/kubectl" config use-context t --kubeconfig="$1" >/dev/null
  chmod 600 "$1"
}
identity "$STATE/real-node.kubeconfig" real-node
identity "$STATE/kube-proxy.kubeconfig" kube-proxy

# Unix sockets live under the kubelet's root: a pytest STATE_DIR is too long for their 107-byte
# limit, so the root is a short dir of its own, recorded in STATE_DIR (down.sh removes it).
if [ -f "$STATE/real-node-dir.path" ] && [ -d "$(cat "$STATE/real-node-dir.path")" ]; then
  DIR=$(cat "$STATE/real-node-dir.path")
else
  DIR=$(mktemp -d /tmp/hp-kubelet.XXXXXX)
  echo "$DIR" > "$STATE/real-node-dir.path"
fi
mkdir -p "$DIR/root" "$DIR/certs" "$DIR/volume-plugins" "$DIR/dockershim"

SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)
saved=()
for k in "${SYSCTLS[@]}"; do saved+=("$k=$(sysctl -n "$k")"); done

start real-kubelet "$BIN/kubelet" \
  --kubeconfig "$STATE/real-node.kubeconfig" --hostname-override "$NODE" --node-ip "$NODE_IP" \
  --address "$NODE_IP" --port "$REAL_KUBELET_PORT" --read-only-port 0 \
  --healthz-bind-address 127.0.0.1 --healthz-port "$REAL_KUBELET_HEALTHZ_PORT" \
  --tls-cert-file "$PKI/kubelet.crt" --tls-private-key-file "$PKI/kubelet.key" \
  --client-ca-file "$PKI/ca.crt" --anonymous-auth=false --authorization-mode Webhook \
  --root-dir "$DIR/root" --cert-dir "$DIR/certs" --volume-plugin-dir "$DIR/volume-plugins" \
  --container-runtime docker --docker-endpoint unix:///var/run/docker.sock \
  --experimental-dockershim-root-directory "$DIR/dockershim" \
  --container-runtime-endpoint "unix://$DIR/dockershim.sock" \
  --image-service-endpoint "unix://$DIR/dockershim.sock" \
  --cgroup-driver cgroupfs --network-plugin= --pod-infra-container-image "$PAUSE_IMAGE" \
  --fail-swap-on=false --make-iptables-util-chains=false \
  --image-gc-high-threshold 100 --image-gc-low-threshold 99 \
  --register-with-taints hyperpool.test/real-node=true:NoSchedule \
  --node-labels hyperpool.test/real-node=true --resolv-conf /etc/resolv.conf \
  --cluster-domain cluster.local --v 1
start kube-proxy "$BIN/kube-proxy" \
  --kubeconfig "$STATE/kube-proxy.kubeconfig" --hostname-override "$NODE" \
  --proxy-mode iptables --cluster-cidr 172.17.0.0/16 --oom-score-adj 0 \
  --conntrack-max-per-core 0 --healthz-bind-address "127.0.0.1:$PROXY_HEALTHZ_PORT" \
  --metrics-bind-address "127.0.0.1:$PROXY_METRICS_PORT" --v 1

real_node_ready() {  # Ready, kubelet healthy, and its Lease renewed by this run
  local state renew
  curl -fsS --max-time 2 "http://127.0.0.1:$REAL_KUBELET_HEALTHZ_PORT/healthz" >/dev/null || return 1
  state=$("${KUBECTL[@]}" get node "$NODE" -o \
    'jsonpath={.status.conditions[?(@.type=="Ready")].status}') || return 1
  renew=$("${KUBECTL[@]}" -n kube-node-lease get lease "$NODE" \
    -o 'jsonpath={.spec.renewTime}') || return 1
  [ "$state" = True ] && [[ ! "${renew:0:19}" < "${started_iso:0:19}" ]]
}
wait_for "node $NODE Ready (kubelet on dockerd at $NODE_IP)" real-kubelet real_node_ready
for kv in "${saved[@]}"; do sysctl -q -w "$kv"; done
echo "real-node.sh: put back ${saved[*]}"
wait_for "kube-proxy healthy" kube-proxy \
  curl -fsS --max-time 2 "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"
