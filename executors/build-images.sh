#!/usr/bin/env bash
# `make images`: build every image of the project from this repository, with Docker's layer
# cache (a second run rebuilds nothing that did not change; a code change rebuilds only the
# last layers of each image). Prints each image's build time and size.
#
#   hyperpool/executor-generic   executors/generic/Dockerfile   pool worker, Python + POSIX tools
#   hyperpool/executor-montage   executors/montage/Dockerfile   pool worker with Debian's Montage
#   hyperpool/operator           executors/operator/Dockerfile  `hyperpool controller`
#   hyperpool/rabbitmq, hyperpool/redis, hyperpool/prometheus (configs/images/*/Dockerfile):
#                                the compose stack's services, from Debian's packages
#
# All start FROM debian:bookworm-slim (executors/base-image.sh makes it where no registry
# answers). A failing build prints the step that failed and the end of its output.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${HYPERPOOL_IMAGE_TAG:-latest}
# Each image is also tagged with the package's version: Kubernetes pulls a `:latest` image
# on every pod start (imagePullPolicy Always by default), which fails for images that exist
# only on the node, as here; a versioned tag defaults to IfNotPresent.
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' hyperpool/__init__.py)
IMAGES=(
  "executor-generic executors/generic/Dockerfile"
  "executor-montage executors/montage/Dockerfile"
  "operator executors/operator/Dockerfile"
  "rabbitmq configs/images/rabbitmq/Dockerfile"
  "redis configs/images/redis/Dockerfile"
  "prometheus configs/images/prometheus/Dockerfile"
)
# The classic builder: BuildKit needs the buildx plugin with newer Docker CLIs, and a
# `# syntax=` frontend would have to come from a registry. Layer caching is the same.
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0

bash executors/base-image.sh
# The machine's own extra CAs (e.g. a TLS-intercepting proxy's), so pip in a build reaches PyPI
# as the host does (executors/ca/README.md).
find executors/ca -name '*.crt' -delete
cp /usr/local/share/ca-certificates/*.crt executors/ca/ 2>/dev/null || true
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for entry in "${IMAGES[@]}"; do
  read -r name file <<<"$entry"
  image="hyperpool/$name:$TAG"
  started=$(date +%s)
  if ! docker build -f "$file" -t "$image" . >"$log" 2>&1; then
    echo "images: building $image ($file) failed; the step and its last output:" >&2
    # classic builder: "Step N/M : ..."; BuildKit: "#N [stage] RUN ..."
    grep -nE '^Step [0-9]+/[0-9]+ :|^#[0-9]+ \[' "$log" | tail -n 1 >&2 || true
    tail -n 25 "$log" >&2
    exit 1
  fi
  [ -z "$VERSION" ] || docker tag "$image" "hyperpool/$name:$VERSION"
  cached=$(grep -c -- '---> Using cache' "$log" || true)
  size=$(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=iec)
  echo "images: $image (and :$VERSION) in $(( $(date +%s) - started )) s, $size ($cached cached steps)"
done
