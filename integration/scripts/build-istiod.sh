#!/usr/bin/env bash
# Build istio's pilot-discovery (istiod) from its Go module into a local cache, once.
#
# Usage: build-istiod.sh [ISTIO_MODULE_VERSION]
#   ISTIO_MODULE_VERSION  Go module version of istio.io/istio (pseudo-version; istio tags have no
#                         "v" prefix, so they are not semver tags for Go). Taken from the first
#                         argument or the environment; the Makefile pins it.
#   ISTIOD_CACHE_DIR      where to build (default: <repo>/.cache/istiod); the binary lands in
#                         $ISTIOD_CACHE_DIR/bin/pilot-discovery and the log in build.log.
#   ISTIOD_FORCE=1        rebuild even if a working binary is present.
#
# Idempotent: if bin/pilot-discovery exists and `pilot-discovery version` runs, nothing is done.
# GOCACHE/GOMODCACHE are left at their defaults so repeated builds reuse Go's caches.
set -euo pipefail

version="${1:-${ISTIO_MODULE_VERSION:-}}"
if [[ -z "$version" ]]; then
	echo "build-istiod.sh: ISTIO_MODULE_VERSION is not set (pass it as the first argument or in the environment)" >&2
	exit 2
fi

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache_dir="${ISTIOD_CACHE_DIR:-$repo_root/.cache/istiod}"
bin="$cache_dir/bin/pilot-discovery"
log="$cache_dir/build.log"

if [[ -x "$bin" && "${ISTIOD_FORCE:-0}" != 1 ]]; then
	if "$bin" version >/dev/null 2>&1; then
		echo "pilot-discovery already built: $bin"
		exit 0
	fi
	echo "build-istiod.sh: $bin exists but does not run; rebuilding" >&2
fi

if ! command -v go >/dev/null 2>&1; then
	echo "build-istiod.sh: 'go' not found in PATH" >&2
	exit 1
fi

# A concurrent `go install` of the same module would only compete for the two build cores.
if pgrep -f "go install istio.io/istio/pilot/cmd/pilot-discovery" >/dev/null 2>&1; then
	echo "build-istiod.sh: another pilot-discovery build is already running; wait for it" >&2
	exit 1
fi

mkdir -p "$cache_dir/bin"

# The commit is the last dash-separated part of a pseudo-version (v0.0.0-<time>-<commit>).
revision="${version##*-}"
ldflags="-X istio.io/istio/pkg/version.buildGitRevision=${revision}"
ldflags+=" -X istio.io/istio/pkg/version.buildVersion=${ISTIO_BUILD_VERSION:-$version}"

echo "building pilot-discovery from istio.io/istio@${version} (log: $log)"
(
	cd "$cache_dir"
	# These modules are referenced by istio at pseudo-versions the checksum database may not
	# know; go.sum inside the istio module still pins them.
	export GONOSUMDB="github.com/agentgateway,github.com/envoyproxy/go-control-plane,istio.io/client-go${GONOSUMDB:+,$GONOSUMDB}"
	export GOBIN="$cache_dir/bin"
	go install -ldflags="$ldflags" "istio.io/istio/pilot/cmd/pilot-discovery@${version}"
) >"$log" 2>&1 || {
	echo "build-istiod.sh: go install failed; last lines of $log:" >&2
	tail -n 30 "$log" >&2
	exit 1
}

"$bin" version >/dev/null 2>&1 || {
	echo "build-istiod.sh: built $bin but '$bin version' fails" >&2
	exit 1
}
echo "built $bin"
