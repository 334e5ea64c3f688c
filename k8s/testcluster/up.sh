#!/usr/bin/env bash
# Start the test control plane built by build.sh, on 127.0.0.1 only:
#   etcd (Debian's 3.4) -> kube-apiserver -> kube-controller-manager, kube-scheduler -> one
#   kubemark hollow node "hollow-node-0" (pods get scheduled and reach Running; no containers
#   run, so never dial its kubelet: no logs/exec/port-forward) -> one real node "real-node-0"
#   (real-node.sh: kubelet on this machine's dockerd, and kube-proxy), tainted so that only
#   pods that ask for it run there (README.md, "The real node").
# HYPERPOOL_K8S_REAL_NODE=0 leaves the real node out (no dockerd needed then).
#
# Usage: up.sh STATE_DIR        (down.sh STATE_DIR stops it; about 15 s from cached binaries)
# Writes STATE_DIR/kubeconfig (admin, system:masters), STATE_DIR/env (sourceable: KUBECONFIG,
# HYPERPOOL_K8S_BIN, HYPERPOOL_K8S_API_URL, ports), STATE_DIR/*.pid, STATE_DIR/*.log.
# Exits 0 once /readyz is ok, the node is Ready and schedulable, and the default
# ServiceAccount exists, leaving the processes running. Idempotent: on a STATE_DIR whose
# cluster is running it just says so; a stopped one is restarted with the same ports and data.
# Ports are free ones picked in 20000-32767 (below Linux's ephemeral range) unless set:
# HYPERPOOL_K8S_API_PORT, _ETCD_PORT, _ETCD_PEER_PORT, _CM_PORT, _SCHED_PORT, _KUBELET_PORT,
# _KUBELET_RO_PORT (each prefixed HYPERPOOL_K8S_).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"


STATE="${1:?usage: up.sh STATE_DIR}"
VERSION=v1.20.2
CACHE="${HYPERPOOL_K8S_CACHE:-$HOME/.cache/hyperpool/k8s-$VERSION}"
BIN="$CACHE/bin"
TIMEOUT="${HYPERPOOL_K8S_UP_TIMEOUT:-120}"  # seconds for each wait below
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl kubemark; do
  [ -x "$BIN/$b" ] || { echo "up.sh: $BIN/$b missing; run k8s/testcluster/build.sh" >&2; exit 1; }
done
ETCD_BIN=$(command -v etcd) || { echo "up.sh: etcd missing; run k8s/testcluster/build.sh" >&2; exit 1; }
BIN="$(cd "$BIN" && pwd -P)"  # pin this build even if build.sh swaps $CACHE/bin later
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler hollow-node)
REAL_NODE="${HYPERPOOL_K8S_REAL_NODE:-1}"
NODE_IP=""
if [ "$REAL_NODE" = 1 ]; then
  COMPONENTS+=(real-kubelet kube-proxy)
  docker version >/dev/null 2>&1 && NODE_IP=$(docker_bridge_ip)
  [ -n "$NODE_IP" ] || {
    echo "up.sh: the real node needs a running dockerd with its docker0 bridge: run \`make docker\`" \
         "(or HYPERPOOL_K8S_REAL_NODE=0 for a cluster with the hollow node only)" >&2; exit 1; }
fi
KUBECONFIG_FILE="$STATE/kubeconfig"
KUBECTL=("$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" --request-timeout 5s)
started=$(date +%s)
started_iso=$(date -u +%FT%TZ)

running=0
for c in "${COMPONENTS[@]}"; do alive "$c" && running=$((running + 1)); done
if [ "$running" = "${#COMPONENTS[@]}" ] && "${KUBECTL[@]}" get --raw /readyz >/dev/null 2>&1; then
  echo "up.sh: already running; KUBECONFIG=$KUBECONFIG_FILE"
  exit 0
elif [ "$running" != 0 ]; then
  echo "up.sh: $STATE has a partly running cluster; stopping it first"
  bash "$(dirname "$0")/down.sh" "$STATE"
fi

# --- ports: reuse the STATE_DIR's (etcd's data remembers its peer URL), else pick free ones --
PORT_NAMES=(ETCD_PORT ETCD_PEER_PORT API_PORT CM_PORT SCHED_PORT KUBELET_PORT KUBELET_RO_PORT
            REAL_KUBELET_PORT REAL_KUBELET_HEALTHZ_PORT PROXY_HEALTHZ_PORT PROXY_METRICS_PORT)
# shellcheck disable=SC1091
[ -f "$STATE/ports.env" ] && . "$STATE/ports.env"
read -r -a picked < <(free_ports "${#PORT_NAMES[@]}")
for i in "${!PORT_NAMES[@]}"; do  # a name missing from ports.env (an older up.sh) gets one now
  name=${PORT_NAMES[$i]}
  if [ -z "${!name:-}" ]; then
    override="HYPERPOOL_K8S_$name"
    printf -v "$name" '%s' "${!override:-${picked[$i]}}"
    echo "$name=${!name}" >> "$STATE/ports.env"
  fi
done
for name in "${PORT_NAMES[@]}"; do
  p=${!name}
  python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$p" \
    2>/dev/null || { echo "up.sh: port $p on 127.0.0.1 is taken (see $STATE/ports.env)" >&2; exit 1; }
done

# --- certificates: one CA, the API server's serving cert, an admin client (system:masters),
#     and the service-account signing key pair. Kept across restarts of the STATE_DIR.
PKI="$STATE/pki"
# Recipe 2 adds the real node's certificates and the node's address in the API server's.
if [ "$(cat "$PKI/.complete" 2>/dev/null)" != "2 $NODE_IP" ]; then
  rm -rf "$PKI" && mkdir -p "$PKI"
  (
    cd "$PKI"
    ossl() { openssl "$@" 2>/dev/null; }
    ossl req -x509 -newkey rsa:2048 -nodes -sha256 -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=hyperpool-test-ca"
    cat > ext.cnf <<CNF
[server]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,IP:10.96.0.1,${NODE_IP:+IP:$NODE_IP,}DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
[client]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
[kubelet]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:${NODE_IP:-127.0.0.1},DNS:real-node-0
CNF
    ossl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
    ossl x509 -req -sha256 -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -days 3650 -extfile ext.cnf -extensions server -out apiserver.crt
    ossl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=admin"
    ossl x509 -req -sha256 -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -days 3650 -extfile ext.cnf -extensions client -out admin.crt
    client() {  # client NAME SUBJECT: a client certificate of the test CA
      ossl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
      ossl x509 -req -sha256 -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -days 3650 -extfile ext.cnf -extensions client -out "$1.crt"
    }
    # The real node: the API server's client for logs/exec (system:masters), the kubelet's
    # identity (Node authorizer), kube-proxy's (bound to system:node-proxier by default), and
    # the kubelet's serving certificate for the node's address.
    client apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
    client real-node "/O=system:nodes/CN=system:node:real-node-0"
    client kube-proxy "/CN=system:kube-proxy"
    ossl req -newkey rsa:2048 -nodes -keyout kubelet.key -out kubelet.csr -subj "/CN=real-node-0"
    ossl x509 -req -sha256 -in kubelet.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -days 3650 -extfile ext.cnf -extensions kubelet -out kubelet.crt
    ossl genrsa -out sa.key 2048
    ossl rsa -in sa.key -pubout -out sa.pub
    chmod 600 ./*.key
  ) || { echo "up.sh: openssl failed making $PKI" >&2; exit 1; }
  echo "2 $NODE_IP" > "$PKI/.complete"
fi

API_URL="https://127.0.0.1:$API_PORT"
rm -f "$KUBECONFIG_FILE"
"$BIN/kubectl" config set-cluster hyperpool-test --server="$API_URL" \
  --certificate-authority="$PKI/ca.crt" --embed-certs --kubeconfig="$KUBECONFIG_FILE" >/dev/null
"$BIN/kubectl" config set-credentials admin --client-certificate="$PKI/admin.crt" \
  --client-key="$PKI/admin.key" --embed-certs --kubeconfig="$KUBECONFIG_FILE" >/dev/null
"$BIN/kubectl" config set-context hyperpool-test --cluster=hyperpool-test --user=admin \
  --namespace=default --kubeconfig="$KUBECONFIG_FILE" >/dev/null
"$BIN/kubectl" config use-context hyperpool-test --kubeconfig="$KUBECONFIG_FILE" >/dev/null
chmod 600 "$KUBECONFIG_FILE"
cat > "$STATE/env" <<EOF
export KUBECONFIG=$KUBECONFIG_FILE
export HYPERPOOL_K8S_BIN=$BIN
export HYPERPOOL_K8S_API_URL=$API_URL
export HYPERPOOL_K8S_STATE=$STATE
export HYPERPOOL_K8S_NODE_IP=$NODE_IP
EOF
sed 's/^/export HYPERPOOL_K8S_/' "$STATE/ports.env" >> "$STATE/env"

# --- processes --------------------------------------------------------------------------------
start etcd "$ETCD_BIN" --name hyperpool-test --data-dir "$STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "hyperpool-test=http://127.0.0.1:$ETCD_PEER_PORT" \
  --listen-metrics-urls "" --quota-backend-bytes 2147483648 --logger zap --log-outputs stderr
wait_for "etcd healthy" etcd curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

# Flags, see README.md: loopback only; no insecure port; "kubernetes" Service endpoints are
# not reconciled (the reconciler refuses a loopback advertise address); service-account
# tokens signed with our key pair (issuer required by 1.20's TokenRequest); the admission
# plugins the controller's tests rely on, spelled out (all are 1.20 defaults).
# With the real node, pods reach the API server through the "kubernetes" Service (kube-proxy
# on the node's address), so it listens there too (one --bind-address: 0.0.0.0) and the
# endpoint reconciler publishes the node's address; it dials the real kubelet for logs/exec.
if [ "$REAL_NODE" = 1 ]; then
  API_NET=(--bind-address 0.0.0.0 --advertise-address "$NODE_IP" --endpoint-reconciler-type lease
           --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt"
           --kubelet-client-key "$PKI/apiserver-kubelet-client.key"
           --kubelet-preferred-address-types InternalIP,Hostname)
else
  API_NET=(--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --endpoint-reconciler-type none)
fi
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" "${API_NET[@]}" --secure-port "$API_PORT" \
  --insecure-port 0 \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-account-issuer https://kubernetes.default.svc \
  --authorization-mode Node,RBAC --service-cluster-ip-range 10.96.0.0/16 \
  --enable-admission-plugins NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultTolerationSeconds,Priority,ResourceQuota,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,PodNodeSelector,PodTolerationRestriction \
  --allow-privileged=true --profiling=false --event-ttl 30m
wait_for "kube-apiserver /readyz ok" kube-apiserver "${KUBECTL[@]}" get --raw /readyz

# All controllers a Deployment/quota/GC/PV test needs; the cloud, IPAM, attach/detach, expander
# and TTL ones have nothing to do here and only log errors.
start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$KUBECONFIG_FILE" --bind-address 127.0.0.1 --secure-port "$CM_PORT" --port 0 \
  --leader-elect=false --service-account-private-key-file "$PKI/sa.key" \
  --root-ca-file "$PKI/ca.crt" --cluster-signing-cert-file "$PKI/ca.crt" \
  --cluster-signing-key-file "$PKI/ca.key" --use-service-account-credentials=true \
  --controllers '*,-nodeipam,-route,-service,-cloud-node-lifecycle,-attachdetach,-persistentvolume-expander,-ttl' \
  --profiling=false
start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig "$KUBECONFIG_FILE" --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" \
  --port 0 --leader-elect=false --profiling=false
# The hollow kubelet makes its root dir with ioutil.TempDir and binds unix sockets in it, whose
# paths may not exceed 107 bytes (a pytest STATE_DIR is longer: "bind: invalid argument"). So
# it gets a short dir of its own under /tmp, recorded in STATE_DIR; down.sh removes it.
NODE_TMP=$(mktemp -d /tmp/hp-node.XXXXXX)
echo "$NODE_TMP" > "$STATE/hollow-node-tmp.path"
TMPDIR="$NODE_TMP" start hollow-node "$BIN/kubemark" --morph kubelet \
  --name hollow-node-0 --kubeconfig "$KUBECONFIG_FILE" --kubelet-port "$KUBELET_PORT" \
  --kubelet-read-only-port "$KUBELET_RO_PORT" --kube-api-content-type application/json \
  --node-labels hyperpool.test/hollow=true

wait_for "kube-scheduler healthy" kube-scheduler \
  curl -kfsS --max-time 2 "https://127.0.0.1:$SCHED_PORT/healthz"
wait_for "kube-controller-manager healthy" kube-controller-manager \
  curl -kfsS --max-time 2 "https://127.0.0.1:$CM_PORT/healthz"
node_ready() {  # Ready, the node lifecycle controller has lifted the not-ready taint, and
  # this run's kubelet has renewed its Lease (a restarted STATE_DIR keeps the old Ready status)
  local state renew
  state=$("${KUBECTL[@]}" get node hollow-node-0 -o \
    'jsonpath={.status.conditions[?(@.type=="Ready")].status}/{.spec.taints}') || return 1
  renew=$("${KUBECTL[@]}" -n kube-node-lease get lease hollow-node-0 \
    -o 'jsonpath={.spec.renewTime}') || return 1
  [ "$state" = True/ ] && [[ ! "${renew:0:19}" < "${started_iso:0:19}" ]]
}
wait_for "node hollow-node-0 Ready and untainted" hollow-node node_ready
wait_for "ServiceAccount default/default exists" kube-controller-manager \
  "${KUBECTL[@]}" -n default get serviceaccount default
if [ "$REAL_NODE" = 1 ]; then
  NODE_IP="$NODE_IP" bash "$(dirname "$0")/real-node.sh" "$STATE" ||
    fail "the real node did not start" real-kubelet
fi
echo "up.sh: control plane ready in $(( $(date +%s) - started ))s; export KUBECONFIG=$KUBECONFIG_FILE (or: . $STATE/env)"
