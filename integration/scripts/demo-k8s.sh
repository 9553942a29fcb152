#!/usr/bin/env bash
# make demo-k8s: the demo of make demo (demo.sh), but htnn reads its configuration from the
# Kubernetes API instead of a directory. istio's CRDs and HTNN's are installed in the loopback
# kube-apiserver, examples/config is applied with kubectl, and htnn serve --kubeconfig watches
# it and writes the `Accepted` conditions back. After the curl demonstrations it edits a
# policy with kubectl (served within a second) and makes an invalid edit (reported in the
# status; the last valid version keeps serving).
set -euo pipefail
source "$(dirname "$0")/demo-common.sh"
: "${HTNN_ISTIO_MODULE_VERSION:?run through make demo-k8s, which sets HTNN_ISTIO_MODULE_VERSION}"
KUBECTL=${HTNN_KUBECTL_BIN:-$(command -v kubectl || true)}
[ -x "$KUBECTL" ] || { echo "no kubectl: run through make demo-k8s (make kube builds it) or put kubectl on PATH" >&2; exit 1; }
# The printed commands use paths relative to the clone, so that they can be pasted there.
cd "$root"

# istio's CRDs come from the istio.io/istio module istiod is built from (already in the module
# cache after make istiod). In an empty directory: go mod download outside a module needs no go.mod.
istio_dir=$(cd "$run" && GOFLAGS=-mod=mod go mod download -json "istio.io/istio@$HTNN_ISTIO_MODULE_VERSION" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
istio_crds=$istio_dir/manifests/charts/base/files/crd-all.gen.yaml
[ -f "$istio_crds" ] || { echo "istio's CRDs are not at $istio_crds" >&2; exit 1; }

# The demo's kubectl commands are printed as a user would type them, without --kubeconfig.
kubectl() { "$KUBECTL" --kubeconfig "$run/kubeconfig" "$@"; }
quote() { # prints its arguments shell-quoted, but only those that need it, in single quotes
  local a out=()
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  echo "${out[*]}"
}
k() { # kubectl-args...: print the command, then run it
  echo
  echo "\$ kubectl $(quote "$@")"
  kubectl "$@"
}
# Give htnn (and istiod, and Envoy) time to catch up, quietly: the demo shows the result, not
# the polling. A timeout is not fatal; the next command shows what went wrong.
eventually() { # seconds command...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 0
    sleep 0.2
  done
}

echo "To run the kubectl commands below yourself: export KUBECONFIG=$run/kubeconfig"
echo
echo "== starting etcd and kube-apiserver"
start_cluster

echo "== installing istio's CRDs and HTNN's"
# Server-side: istio's CRDs are too big for the last-applied annotation of a client-side apply.
k apply --server-side -f "$istio_crds"
k apply -f deploy/crds.yaml
k wait --for=condition=Established crd --all --timeout=60s

echo
echo "== applying the demo's objects (Gateway, ServiceEntry, VirtualService, FilterPolicies, Consumers)"
k apply -f examples/config/

echo
echo "== starting htnn serve on the cluster (no --config-dir)"
start htnn "$HTNN_BIN" serve --kubeconfig "$run/kubeconfig" --xds-addr 127.0.0.1:15051 --admin-addr 127.0.0.1:15052
wait_for "htnn serve" curl -sf http://127.0.0.1:15052/readyz

start_istiod
start_gateway
demo_requests

echo
echo "== what htnn wrote back: the Accepted condition of every HTNN object"
eventually 10 kubectl wait --for=condition=Accepted filterpolicies --all --timeout=1s
k get filterpolicies
k get consumers.htnn.mosn.io

echo
echo "== an edit: public-hello's demo plugin now sets x-hello-k8s"
edited=$(date +%s%N)
k patch filterpolicy public-hello --type=merge -p '{"spec":{"filters":{"demo":{"config":{"hostName":"x-hello-k8s"}}}}}'
hello_k8s() { curl -sf -H "$H" http://127.0.0.1:18000/public | grep -q x-hello-k8s; }
eventually 10 hello_k8s
show "the new header, served $((($(date +%s%N) - edited) / 1000000)) ms after the patch" -H "$H" http://127.0.0.1:18000/public

echo
echo "== an invalid edit: denyIfNoConsumer must be a boolean (the CRD leaves plugin configs to htnn)"
invalid_orders_auth='apiVersion: htnn.mosn.io/v1
kind: FilterPolicy
metadata:
  name: orders-auth
  namespace: default
spec:
  targetRef:
    group: networking.istio.io
    kind: VirtualService
    name: api
    sectionName: orders
  filters:
    keyAuth:
      config:
        keys:
        - name: x-api-key
        - name: api_key
          source: QUERY
    consumerRestriction:
      config:
        denyIfNoConsumer: maybe
    limitReq:
      config:
        average: 5
        period: 1s
        burst: 5
    demo:
      config:
        hostName: x-greeting'
echo
echo "\$ kubectl apply -f - <<'EOF'"
echo "$invalid_orders_auth"
echo "EOF"
kubectl apply -f - <<<"$invalid_orders_auth"
eventually 10 kubectl wait --for=jsonpath='{.status.conditions[0].reason}'=Invalid filterpolicy/orders-auth --timeout=1s
k get fp orders-auth -o jsonpath='{.status.conditions[0].reason}: {.status.conditions[0].message}'
echo
show "the last valid version keeps serving: still 401 without a key" -H "$H" http://127.0.0.1:18000/orders
show "and 200 with rick's" -H "$H" -H "x-api-key: rick-secret" http://127.0.0.1:18000/orders

echo
echo "Everything runs on loopback. Try: export KUBECONFIG=$run/kubeconfig; kubectl edit fp public-hello"
echo "and curl again; htnn's view: curl localhost:15052/debug/status ; istiod's: curl localhost:15080/debug/configz"
finish
