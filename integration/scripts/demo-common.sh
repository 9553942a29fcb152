# Sourced by demo.sh (htnn reads examples/config from disk) and demo-k8s.sh (htnn reads the
# same objects from the Kubernetes API). Both run the same processes on the same loopback
# ports, so they share everything here: the binaries, process control and ordered cleanup, the
# cluster, istiod, the gateway and the curl demonstrations. Sourcing sets $root and $run and
# installs the cleanup trap.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
: "${HTNN_BIN:=$root/target/debug/htnn}"
: "${HTNN_ISTIOD_BIN:?run through make demo or make demo-k8s, which builds istiod and sets HTNN_ISTIOD_BIN}"
: "${ENVOY_BIN:?run through make demo or make demo-k8s, which installs Envoy and sets ENVOY_BIN}"
: "${HTNN_MODULE_DIR:=$root/target/debug}"
: "${HTNN_KUBE_APISERVER_BIN:?run through make demo or make demo-k8s, which builds kube-apiserver and sets HTNN_KUBE_APISERVER_BIN}"
: "${HTNN_ETCD_BIN:?run through make demo or make demo-k8s, which builds etcd and sets HTNN_ETCD_BIN}"
# Logs, certificates, etcd's data and the kubeconfig; /tmp/htnn-demo.* or /tmp/htnn-demo-k8s.*.
run=$(mktemp -d "/tmp/htnn-$(basename "$0" .sh).XXXXXX")
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

# etcd and kube-apiserver on loopback, the namespace istio-system (istiod's and the Lease's),
# and $run/kubeconfig for everything that talks to the cluster.
start_cluster() {
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
  wait_for kube-apiserver kcurl https://127.0.0.1:26443/readyz
  kcurl -X POST -H 'content-type: application/json' https://127.0.0.1:26443/api/v1/namespaces \
    -d '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"istio-system"}}' >/dev/null || true
  cat >"$run/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:26443", certificate-authority: "$run/certs/apiserver.crt"}}]
users: [{name: admin, user: {token: htnn-demo-token}}]
contexts: [{name: local, context: {cluster: local, user: admin}}]
current-context: local
KUBECONFIG
}
kcurl() { curl -sfk -H "Authorization: Bearer htnn-demo-token" "$@"; }

start_istiod() {
  echo "== starting istiod (config source: xds://127.0.0.1:15051 only)"
  start istiod env -C "$run" POD_NAMESPACE=istio-system POD_NAME=istiod-0 ENABLE_CA_SERVER=false \
    PILOT_ENABLE_ALPN_FILTER=false PILOT_ENABLE_METADATA_EXCHANGE=false \
    "$HTNN_ISTIOD_BIN" discovery --kubeconfig="$run/kubeconfig" --meshConfig="$root/examples/mesh.yaml" \
    --grpcAddr=127.0.0.1:15010 --httpAddr=127.0.0.1:15080 --monitoringAddr=127.0.0.1:15014 \
    --secureGRPCAddr="" --httpsAddr="" --clusterID=Kubernetes
  wait_for istiod bash -c 'exec 3<>/dev/tcp/127.0.0.1/15010'
}

start_gateway() {
  echo "== starting the echo backend and the Envoy gateway with libhtnn.so"
  start backend python3 "$root/examples/echo_backend.py" 18080
  start envoy env ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$HTNN_MODULE_DIR" "$ENVOY_BIN" -c "$root/examples/envoy-gateway.yaml" \
    --use-dynamic-base-id --concurrency 1
  wait_for "the gateway listener" curl -s -o /dev/null http://127.0.0.1:18000/
}

# The echo backend answers with the request it got; show drops the headers every request has,
# so what the plugins added or removed stands out.
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
demo_requests() {
  show "public route: demo adds x-greeting" -H "$H" http://127.0.0.1:18000/public
  show "no key: 401" -H "$H" http://127.0.0.1:18000/orders
  show "rick's key: 200, key stripped, greeting names rick" -H "$H" -H "x-api-key: rick-secret" http://127.0.0.1:18000/orders
  show "morty's key in the query: his consumer-level demo config wins" -H "$H" "http://127.0.0.1:18000/orders?api_key=morty-secret"
  echo
  echo "\$ for i in \$(seq 8); do curl ... -H 'x-api-key: rick-secret' /orders; done    # limitReq: 429 after the burst"
  for _ in $(seq 8); do curl -s -o /dev/null -w '%{http_code} ' -H "$H" -H "x-api-key: rick-secret" http://127.0.0.1:18000/orders; done
  echo
}

# The end of both demos: exit (cleanup runs on EXIT) or keep everything up until Ctrl-C.
finish() {
  if [ "${HTNN_DEMO_ONCE:-}" = 1 ]; then exit 0; fi
  echo "Press Ctrl-C to stop."
  wait
}
