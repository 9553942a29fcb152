#!/usr/bin/env bash
# make demo: etcd + kube-apiserver (istiod needs a Kubernetes client; the cluster stays empty),
# htnn serve on examples/config, istiod reading only htnn over MCP, an echo backend, and a
# stock Envoy 1.40.0 gateway with libhtnn.so. Then shows the plugins at work with curl.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
: "${HTNN_BIN:=$root/target/debug/htnn}"
: "${HTNN_ISTIOD_BIN:?run through make demo, which builds istiod and sets HTNN_ISTIOD_BIN}"
: "${ENVOY_BIN:?run through make demo, which installs Envoy and sets ENVOY_BIN}"
: "${HTNN_MODULE_DIR:=$root/target/debug}"
: "${HTNN_KUBE_APISERVER_BIN:?run through make demo, which builds kube-apiserver and sets HTNN_KUBE_APISERVER_BIN}"
: "${HTNN_ETCD_BIN:?run through make demo, which builds etcd and sets HTNN_ETCD_BIN}"
run=$(mktemp -d /tmp/htnn-demo.XXXXXX)
names=() pids=()
# Dead means gone or a zombie (exited, not yet reaped by us).
gone() {
  local stat
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 0
  stat=${stat##*) }
  [ "${stat%% *}" = Z ]
}
stop() { # name pid: SIGTERM to its process group, SIGKILL to what is left after 2 s
  kill -TERM -- "-$2" 2>/dev/null || return 0
  for _ in $(seq 20); do gone "$2" && break; sleep 0.1; done
  gone "$2" || echo "$1 still running 2 s after SIGTERM; killing it"
  kill -KILL -- "-$2" 2>/dev/null || true
  wait "$2" 2>/dev/null || true
}
# In reverse start order, so nothing outlives what it depends on: a kube-apiserver whose
# etcd is gone retries it for minutes before exiting.
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "== stopping"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop "${names[i]}" "${pids[i]}"; done
  echo "logs were in $run"
}
trap cleanup EXIT INT TERM

# Each process runs in its own session (so its own process group). Ctrl-C at the terminal
# then reaches only this script, which stops them in order; without that every process gets
# the SIGINT at once. `stop` signals the whole group, so anything a process spawned goes too.
start() { # name command...
  local name=$1; shift
  setsid "$@" >"$run/$name.log" 2>&1 &
  names+=("$name") pids+=($!)
}
wait_for() { # what command...
  local what=$1; shift
  for _ in $(seq 1 120); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "timed out waiting for $what; see $run" >&2
  exit 1
}

echo "== starting etcd and kube-apiserver (empty cluster; istiod needs a Kubernetes client)"
openssl genrsa -out "$run/sa.key" 2048 2>/dev/null
echo "htnn-demo-token,admin,admin,system:masters" >"$run/tokens.csv"
start etcd "$HTNN_ETCD_BIN" --data-dir "$run/etcd" --listen-client-urls http://127.0.0.1:24379 \
  --advertise-client-urls http://127.0.0.1:24379 --listen-peer-urls http://127.0.0.1:24380 \
  --initial-advertise-peer-urls http://127.0.0.1:24380 --initial-cluster default=http://127.0.0.1:24380
start kube-apiserver "$HTNN_KUBE_APISERVER_BIN" --etcd-servers=http://127.0.0.1:24379 \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
  --secure-port=26443 --cert-dir="$run/certs" --service-account-key-file="$run/sa.key" \
  --service-account-signing-key-file="$run/sa.key" --service-account-issuer=https://kubernetes.default.svc \
  --authorization-mode=AlwaysAllow --token-auth-file="$run/tokens.csv" --service-cluster-ip-range=10.96.0.0/24
kcurl() { curl -sfk -H "Authorization: Bearer htnn-demo-token" "$@"; }
wait_for kube-apiserver kcurl https://127.0.0.1:26443/readyz
kcurl -X POST -H 'content-type: application/json' https://127.0.0.1:26443/api/v1/namespaces \
  -d '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"istio-system"}}' >/dev/null || true
cat >"$run/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:26443", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: htnn-demo-token}}]
contexts: [{name: local, context: {cluster: local, user: admin}}]
current-context: local
KUBECONFIG

echo "== starting htnn serve on examples/config"
start htnn "$HTNN_BIN" serve --config-dir "$root/examples/config" --xds-addr 127.0.0.1:15051 --admin-addr 127.0.0.1:15052
wait_for "htnn serve" curl -sf http://127.0.0.1:15052/readyz

echo "== starting istiod (config source: xds://127.0.0.1:15051 only)"
start istiod env -C "$run" POD_NAMESPACE=istio-system POD_NAME=istiod-0 ENABLE_CA_SERVER=false \
  PILOT_ENABLE_ALPN_FILTER=false PILOT_ENABLE_METADATA_EXCHANGE=false \
  "$HTNN_ISTIOD_BIN" discovery --kubeconfig="$run/kubeconfig" --meshConfig="$root/examples/mesh.yaml" \
  --grpcAddr=127.0.0.1:15010 --httpAddr=127.0.0.1:15080 --monitoringAddr=127.0.0.1:15014 \
  --secureGRPCAddr="" --httpsAddr="" --clusterID=Kubernetes
wait_for istiod bash -c 'exec 3<>/dev/tcp/127.0.0.1/15010'

echo "== starting the echo backend and the Envoy gateway with libhtnn.so"
start backend python3 "$root/examples/echo_backend.py" 18080
start envoy env ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$HTNN_MODULE_DIR" "$ENVOY_BIN" -c "$root/examples/envoy-gateway.yaml" \
  --use-dynamic-base-id --concurrency 1
wait_for "the gateway listener" curl -s -o /dev/null http://127.0.0.1:18000/

show() { # title curl-args...
  local title=$1; shift
  echo
  echo "\$ curl $(printf "%q " "$@")   # $title"
  curl -s -w '\n%{http_code}' "$@" | python3 -c '
import json, sys
*body, code = sys.stdin.read().split("\n")
body = "\n".join(body)
try:
    doc = json.loads(body)
    noise = ("user-agent", "accept", "x-request-id", "x-forwarded-proto", "x-forwarded-for",
             "x-envoy-external-address", "x-envoy-attempt-count", "x-envoy-decorator-operation")
    for k in noise:
        doc.get("headers", {}).pop(k, None)
    body = json.dumps(doc)
except ValueError:
    pass
print(body)
print("-> HTTP", code)'
}
H="Host: api.demo.local"
show "public route: demo adds x-greeting" -H "$H" http://127.0.0.1:18000/public
show "no key: 401" -H "$H" http://127.0.0.1:18000/orders
show "rick's key: 200, key stripped, greeting names rick" -H "$H" -H "x-api-key: rick-secret" http://127.0.0.1:18000/orders
show "morty's key in the query: his consumer-level demo config wins" -H "$H" "http://127.0.0.1:18000/orders?api_key=morty-secret"
echo
echo "\$ for i in \$(seq 8); do curl ... -H 'x-api-key: rick-secret' /orders; done    # limitReq: 429 after the burst"
for _ in $(seq 8); do curl -s -o /dev/null -w '%{http_code} ' -H "$H" -H "x-api-key: rick-secret" http://127.0.0.1:18000/orders; done
echo
echo
echo "Everything runs on loopback. Try: edit examples/config/30-policies.yaml and curl again;"
echo "htnn's view: curl localhost:15052/debug/status ; istiod's: curl localhost:15080/debug/configz"
if [ "${HTNN_DEMO_ONCE:-}" = 1 ]; then exit 0; fi
echo "Press Ctrl-C to stop."
wait
