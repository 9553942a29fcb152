#!/usr/bin/env bash
# make demo: etcd + kube-apiserver (istiod needs a Kubernetes client; the cluster stays empty),
# htnn serve on examples/config, istiod reading only htnn over MCP, an echo backend, and a
# stock Envoy 1.40.0 gateway with libhtnn.so. Then shows the plugins at work with curl.
# make demo-k8s (demo-k8s.sh) is the same with the objects in the cluster instead.
set -euo pipefail
source "$(dirname "$0")/demo-common.sh"

echo "== starting etcd and kube-apiserver (empty cluster; istiod needs a Kubernetes client)"
start_cluster

echo "== starting htnn serve on examples/config"
start htnn "$HTNN_BIN" serve --config-dir "$root/examples/config" --xds-addr 127.0.0.1:15051 --admin-addr 127.0.0.1:15052
wait_for "htnn serve" curl -sf http://127.0.0.1:15052/readyz

start_istiod
start_gateway
demo_requests
echo
echo "Everything runs on loopback. Try: edit examples/config/30-policies.yaml and curl again;"
echo "htnn's view: curl localhost:15052/debug/status ; istiod's: curl localhost:15080/debug/configz"
finish
