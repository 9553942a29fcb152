#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from their Go modules into $CACHE_DIR/bin (idempotent).
#
# Neither project can be `go install`ed at a version: k8s.io/kubernetes replaces its staging
# modules with local paths and etcd's server module replaces its siblings. Replaces are only
# honoured in the main module, so each is built from a small wrapper module of our own that
# points the staging modules at their published versions.
set -euo pipefail

: "${KUBE_VERSION:?KUBE_VERSION (e.g. v1.37.2) is required}"
: "${ETCD_VERSION:?ETCD_VERSION (e.g. v3.6.16) is required}"
: "${CACHE_DIR:?CACHE_DIR is required}"
bin="$CACHE_DIR/bin"
mkdir -p "$bin"
export GOFLAGS=-mod=mod

# Builds from a module carry no version stamp in the binary; record what we built beside it.
kube_stale() { [ "$(cat "$bin/$1.version" 2>/dev/null)" != "${KUBE_VERSION}" ] || ! [ -x "$bin/$1" ]; }

# One wrapper module serves every k8s.io/kubernetes command; it is set up at most once per run.
kube_src=""
kube_module() {
  [ -n "$kube_src" ] && return 0
  local staging="v0.${KUBE_VERSION#v1.}" gomod m
  kube_src="$CACHE_DIR/kube-src"
  rm -rf "$kube_src" && mkdir -p "$kube_src" && cd "$kube_src"
  go mod init htnn.local/kube-build >/dev/null 2>&1
  gomod=$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')
  for m in $(sed -n 's#^\s*\(k8s.io/[A-Za-z0-9._-]*\) => \./staging/.*#\1#p' "$gomod"); do
    go mod edit -replace "$m=$m@$staging"
  done
  go get "k8s.io/kubernetes@${KUBE_VERSION}"
}

build_kube_cmd() { # name [go build flags...]
  local name=$1; shift
  kube_stale "$name" || return 0
  kube_module
  echo "building $name ${KUBE_VERSION} (slow on the first run)"
  (cd "$kube_src" && go build "$@" -o "$bin/$name" "k8s.io/kubernetes/cmd/$name")
  echo "${KUBE_VERSION}" > "$bin/$name.version"
}
build_kube_cmd kube-apiserver
# The tests apply CRDs and objects with kubectl; a preinstalled one may be missing or too old.
# Stamped with the version variables the release build sets, so that `kubectl version` is
# right and it does not warn about version skew against our apiserver.
kv=k8s.io/component-base/version minor=${KUBE_VERSION#v1.}
build_kube_cmd kubectl -ldflags "-X $kv.gitVersion=${KUBE_VERSION} -X $kv.gitMajor=1 -X $kv.gitMinor=${minor%%.*}"

# Capture the output first: with pipefail, `grep -q`/`head` closing the pipe early would kill
# etcd with SIGPIPE and fail (or rebuild) at random.
etcd_version() { "$bin/etcd" --version 2>/dev/null || true; }
if [[ "$(etcd_version)" != *"${ETCD_VERSION#v}"* ]]; then
  src="$CACHE_DIR/etcd-src"
  rm -rf "$src" && mkdir -p "$src" && cd "$src"
  go mod init htnn.local/etcd-build >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
  echo "building etcd ${ETCD_VERSION}"
  go build -o "$bin/etcd" go.etcd.io/etcd/server/v3
fi

echo "kube-apiserver $(cat "$bin/kube-apiserver.version")"
echo "kubectl $(cat "$bin/kubectl.version")"
etcd_version | sed -n 1p
