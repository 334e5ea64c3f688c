#!/usr/bin/env bash
# Start the test control plane built by build.sh, on 127.0.0.1 only:
#   etcd (Debian's 3.4) -> kube-apiserver -> kube-controller-manager, kube-scheduler -> one
#   kubemark hollow node (pods get scheduled and reach Running; no containers run).
# Usage: up.sh STATE_DIR   (writes STATE_DIR/kubeconfig, *.pid, *.log; down.sh STATE_DIR stops)
# Takes ~15 s from cached binaries. Never dial the hollow node's kubelet (no logs/exec).
set -euo pipefail

STATE="${1:?usage: up.sh STATE_DIR}"
VERSION=v1.20.2
CACHE="${HYPERPOOL_K8S_CACHE:-$HOME/.cache/hyperpool/k8s-$VERSION}"
BIN="$CACHE/bin"
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl kubemark; do
  [ -x "$BIN/$b" ] || { echo "up.sh: $BIN/$b missing; run k8s/testcluster/build.sh" >&2; exit 1; }
done
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ETCD_PORT=$(free_port); ETCD_PEER=$(free_port); API_PORT=$(free_port)
CM_PORT=$(free_port); SCHED_PORT=$(free_port); KUBELET_PORT=$(free_port); KUBELET_RO=$(free_port)

# -- certificates: one CA, the API server's serving cert, an admin client (system:masters),
#    and the service-account signing key pair.
PKI="$STATE/pki"
mkdir -p "$PKI"
if [ ! -f "$PKI/admin.crt" ]; then
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 365 \
      -subj "/CN=hyperpool-test-ca" 2>/dev/null
    cat > san.cnf <<CNF
[req]
distinguished_name = dn
[dn]
[ext]
subjectAltName = IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
extendedKeyUsage = serverAuth
CNF
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
      -extfile san.cnf -extensions ext -out apiserver.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr \
      -subj "/O=system:masters/CN=admin" 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
      -out admin.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
fi

KUBECONFIG_FILE="$STATE/kubeconfig"
"$BIN/kubectl" config set-cluster test --server="https://127.0.0.1:$API_PORT" \
  --certificate-authority="$PKI/ca.crt" --embed-certs --kubeconfig="$KUBECONFIG_FILE" >/dev/null
"$BIN/kubectl" config set-credentials admin --client-certificate="$PKI/admin.crt" \
  --client-key="$PKI/admin.key" --embed-certs --kubeconfig="$KUBECONFIG_FILE" >/dev/null
"$BIN/kubectl" config set-context test --cluster=test --user=admin \
  --kubeconfig="$KUBECONFIG_FILE" >/dev/null
"$BIN/kubectl" config use-context test --kubeconfig="$KUBECONFIG_FILE" >/dev/null

start() {  # start NAME CMD...
  local name=$1; shift
  "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}
fail() {
  echo "up.sh: $1; last lines of $STATE/$2.log:" >&2
  tail -20 "$STATE/$2.log" >&2 || true
  exit 1
}
wait_for() {  # wait_for SECONDS LOGNAME CMD...
  local limit=$1 log=$2; shift 2
  for _ in $(seq 1 $((limit * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    kill -0 "$(cat "$STATE/$log.pid")" 2>/dev/null || fail "$log exited" "$log"
    sleep 0.2
  done
  fail "$log not ready after ${limit}s" "$log"
}

start etcd etcd --name test --data-dir "$STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "test=http://127.0.0.1:$ETCD_PEER" --listen-metrics-urls "" \
  --quota-backend-bytes 2147483648
wait_for 30 etcd curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

# --endpoint-reconciler-type=none: the "kubernetes" Service endpoint would be 127.0.0.1,
# which the reconciler rejects (loopback). --insecure-port=0: 1.20 still opens :8080 otherwise.
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
  --insecure-port 0 --endpoint-reconciler-type none \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-account-issuer https://kubernetes.default.svc \
  --authorization-mode Node,RBAC --service-cluster-ip-range 10.96.0.0/16 \
  --allow-privileged=true --profiling=false --event-ttl 30m
wait_for 90 kube-apiserver "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" get --raw /readyz

start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$KUBECONFIG_FILE" --bind-address 127.0.0.1 --secure-port "$CM_PORT" --port 0 \
  --leader-elect=false --service-account-private-key-file "$PKI/sa.key" \
  --root-ca-file "$PKI/ca.crt" --cluster-signing-cert-file "$PKI/ca.crt" \
  --cluster-signing-key-file "$PKI/ca.key" --use-service-account-credentials=true \
  --controllers '*,-nodeipam,-route,-service,-cloud-node-lifecycle,-attachdetach,-persistentvolume-binder,-persistentvolume-expander,-pvc-protection,-pv-protection,-ttl' \
  --concurrent-gc-syncs 5 --profiling=false
start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig "$KUBECONFIG_FILE" --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" \
  --port 0 --leader-elect=false --profiling=false
start hollow-node "$BIN/kubemark" --morph kubelet --name hollow-node-0 \
  --kubeconfig "$KUBECONFIG_FILE" --kubelet-port "$KUBELET_PORT" \
  --kubelet-read-only-port "$KUBELET_RO" --kube-api-content-type application/json

node_ready() {
  "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" get node hollow-node-0 \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' | grep -qx True
}
wait_for 90 hollow-node node_ready
sa_ready() {
  "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" -n default get serviceaccount default
}
wait_for 60 kube-controller-manager sa_ready
echo "up.sh: control plane ready; KUBECONFIG=$KUBECONFIG_FILE"
