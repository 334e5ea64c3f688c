#!/usr/bin/env bash
# Check a cluster from up.sh STATE_DIR does what the controller's tests rely on:
#  1. a Deployment with 2 replicas reaches 2 Running pods (scheduler + hollow node);
#  2. a ResourceQuota blocks a pod beyond it (ReplicaSet FailedCreate "exceeded quota") and
#     its status is computed;
#  3. deleting a Deployment garbage-collects its ReplicaSet and pods (ownerReferences);
#  4. an apiextensions.k8s.io/v1 CRD with a status subresource is served (status is only
#     writable through /status).
# Usage: smoke.sh STATE_DIR   (about 30 s; works in a throw-away namespace, deleted at the end)
set -euo pipefail
STATE="$(cd "${1:?usage: smoke.sh STATE_DIR}" && pwd)"
# shellcheck disable=SC1091
. "$STATE/env"
NS="smoke-$$"
k() { "$HYPERPOOL_K8S_BIN/kubectl" --request-timeout 10s "$@"; }
ok() { echo "smoke: ok: $*"; }
die() { echo "smoke: FAILED: $*" >&2; exit 1; }
until_true() {  # until_true SECONDS WHAT CMD...
  local limit=$1 what=$2 deadline; shift 2; deadline=$(( $(date +%s) + limit ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || die "$what (after ${limit}s)"
    sleep 0.5
  done
}
cleanup() {
  k delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  k delete crd widgets.smoke.hyperpool.test --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT
k create namespace "$NS" >/dev/null
until_true 30 "ServiceAccount $NS/default" k -n "$NS" get sa default -o name >/dev/null 2>&1

# 1. Deployment -> ReplicaSet -> 2 Running pods.
k -n "$NS" apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: example.invalid/web:1
        resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 100m, memory: 64Mi}}
EOF
running() { [ "$(k -n "$NS" get pods -l app=web --field-selector=status.phase=Running -o name | wc -l)" = 2 ]; }
until_true 60 "2 Running pods of deployment web" running
k -n "$NS" rollout status deployment/web --timeout=30s >/dev/null || die "rollout status web"
ok "Deployment web: 2/2 pods Running on $(k -n "$NS" get pods -l app=web -o 'jsonpath={.items[0].spec.nodeName}')"

# 2. ResourceQuota: room for 3 pods of 100m; a 4-replica Deployment gets 3 and FailedCreate.
k -n "$NS" apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: ResourceQuota
metadata: {name: cap}
spec: {hard: {requests.cpu: 300m, limits.cpu: 300m, pods: "10"}}
EOF
quota_status() { [ "$(k -n "$NS" get resourcequota cap -o 'jsonpath={.status.used.requests\.cpu}')" = 200m ]; }
until_true 30 "ResourceQuota status.used (200m)" quota_status
ok "ResourceQuota status computed: used requests.cpu=200m of 300m"
k -n "$NS" scale deployment/web --replicas=4 >/dev/null
exceeded() {
  k -n "$NS" get events --field-selector reason=FailedCreate -o 'jsonpath={.items[*].message}' |
    grep -q 'exceeded quota'
}
until_true 30 "FailedCreate 'exceeded quota' event" exceeded
[ "$(k -n "$NS" get pods -l app=web -o name | wc -l)" = 3 ] || die "expected 3 pods under quota"
ok "quota blocks the 4th pod: $(k -n "$NS" get events --field-selector reason=FailedCreate \
   -o 'jsonpath={.items[0].message}' | cut -c1-140)"
replica_failure() {
  k -n "$NS" get deployment web \
    -o 'jsonpath={.status.conditions[?(@.type=="ReplicaFailure")].reason}' | grep -q FailedCreate
}
until_true 30 "Deployment condition ReplicaFailure" replica_failure
ok "Deployment web has condition ReplicaFailure/FailedCreate"

# 3. Garbage collection: deleting the Deployment (background propagation) removes RS + pods.
rs=$(k -n "$NS" get rs -l app=web -o name)
[ -n "$rs" ] || die "no ReplicaSet for web"
k -n "$NS" delete deployment web --wait=false >/dev/null
gone() { [ -z "$(k -n "$NS" get rs,pods -l app=web -o name)" ]; }
until_true 60 "ReplicaSet and pods of web garbage-collected" gone
ok "deleting Deployment web garbage-collected $rs and its pods"

# 4. CRD (apiextensions.k8s.io/v1) with a status subresource.
k apply -f - >/dev/null <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.hyperpool.test}
spec:
  group: smoke.hyperpool.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: integer, minimum: 1}}}
          status: {type: object, properties: {phase: {type: string}}}
EOF
k wait --for=condition=Established crd/widgets.smoke.hyperpool.test --timeout=30s >/dev/null
served() { k api-resources --api-group=smoke.hyperpool.test -o name | grep -q widgets; }
until_true 30 "Widget kind served" served
k -n "$NS" apply -f - >/dev/null <<'EOF'
apiVersion: smoke.hyperpool.test/v1
kind: Widget
metadata: {name: w1}
spec: {size: 2}
status: {phase: ignored-on-create}
EOF
[ -z "$(k -n "$NS" get widget w1 -o 'jsonpath={.status.phase}')" ] ||
  die "status was written through the main resource"
if k -n "$NS" apply -f - >/dev/null 2>&1 <<'EOF'
apiVersion: smoke.hyperpool.test/v1
kind: Widget
metadata: {name: w2}
spec: {size: 0}
EOF
then die "schema validation (minimum: 1) did not reject size: 0"; fi
k -n "$NS" get --raw "/apis/smoke.hyperpool.test/v1/namespaces/$NS/widgets/w1/status" >/dev/null
body=$(k -n "$NS" get widget w1 -o json | python3 -c 'import json,sys; o=json.load(sys.stdin); o["status"]={"phase":"Ready"}; print(json.dumps(o))')
k replace --raw "/apis/smoke.hyperpool.test/v1/namespaces/$NS/widgets/w1/status" -f - <<<"$body" >/dev/null
[ "$(k -n "$NS" get widget w1 -o 'jsonpath={.status.phase}')" = Ready ] || die "status not written via /status"
ok "CRD apiextensions.k8s.io/v1 with status subresource: status only via /status, schema enforced"
echo "smoke: all checks passed"
