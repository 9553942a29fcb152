//! End-to-end harness: runs the real `htnn serve` and a real, unmodified istiod
//! (`pilot-discovery`) on loopback and checks what istiod ends up storing.
//!
//! Nothing here builds binaries. The paths come from the environment, which `make test` sets
//! to the builds it caches under `~/.cache/htnn/<tool>-<version>/` (see the Makefile); the
//! defaults below are for a checkout that keeps its own `.cache/` and `.venv/`:
//!
//! - `HTNN_BIN` — the `htnn` binary (default `<repo>/target/debug/htnn`);
//! - `HTNN_ISTIOD_BIN` — `pilot-discovery` (default `<repo>/.cache/istiod/bin/pilot-discovery`,
//!   built by `integration/scripts/build-istiod.sh`, `make istiod`);
//! - `HTNN_KUBE_APISERVER_BIN` and `HTNN_ETCD_BIN` — kube-apiserver and etcd (defaults
//!   `<repo>/.cache/kube/bin/{kube-apiserver,etcd}`, built by `integration/scripts/build-kube.sh`,
//!   `make kube`).
//!
//! The Kubernetes-mode tests also need `kubectl` (`HTNN_KUBECTL_BIN`, built by `make kube`;
//! else `kubectl` on `PATH`) and istio's CRDs, read from the istio.io/istio module at
//! `HTNN_ISTIO_MODULE_VERSION` (default: the Makefile's pin) in the Go module cache.
//!
//! The gateway tests ([`gateway`]) also need Envoy 1.40.0 (`ENVOY_BIN`, default
//! `<repo>/.venv/bin/envoy`) and `libhtnn.so` (in `HTNN_MODULE_DIR`, default
//! `<repo>/target/debug`).
//!
//! A missing binary is an error with a hint, never a skipped test. The harness also needs the
//! `curl` and `openssl` command line tools.
//!
//! istiod 1.30 cannot start without a Kubernetes client: its ServiceEntry controller
//! dereferences the multicluster controller, which only exists together with a kube client,
//! and panics at startup otherwise. So every test environment also runs a real etcd and
//! kube-apiserver ([`kube`]) and points istiod at them with `--registries=Kubernetes
//! --kubeconfig`. That cluster is empty apart from the namespace `istio-system`; all istio
//! config comes only from `htnn serve` over MCP.

pub mod certs;
pub mod check;
pub mod corpus;
pub mod env;
pub mod gateway;
pub mod http;
pub mod kube;
pub mod kubectl;
pub mod normalize;
pub mod process;
pub mod propagation;
pub mod race;
pub mod scale;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The repository root (the workspace directory).
/// The path in environment variable `var`, else `default`; relative paths are relative to the
/// repository.
pub fn path_from_env(var: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    if p.is_absolute() {
        p
    } else {
        repo_root().join(p)
    }
}

pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// `n` distinct free loopback ports. The listeners are held until all are chosen so the
/// same port is not handed out twice in one call, and a port is never handed out twice by
/// this process: tests run in parallel, and a port released by one test's call would
/// otherwise be the next call's pick while the first test's server has not bound it yet (seen:
/// a gateway test's Envoy port taken by another test's kube-apiserver). Another process may
/// still grab one afterwards.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        // Keep refused picks bound too, so the OS offers a different port next time.
        held.push(listener);
        if handed_out.insert(port) {
            ports.push(port);
        }
        if held.len() > n + 1000 {
            return Err(std::io::Error::other("no unused loopback port left"));
        }
    }
    Ok(ports)
}

/// The `q` quantile (0..=1) of `values`, nearest rank.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A loopback socket address.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Polls `check` every `interval` until it returns `Ok(Some(value))` or `timeout` passes.
/// `Ok(None)` means "not yet"; `Err` aborts at once. On timeout the last "not yet" reason
/// (from `describe`) is part of the error.
pub async fn poll_until<T, F, Fut>(
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> anyhow::Result<(T, Duration)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Result<T, String>>>,
{
    let start = Instant::now();
    loop {
        let reason = match check().await? {
            Ok(value) => return Ok((value, start.elapsed())),
            Err(reason) => reason,
        };
        if start.elapsed() >= timeout {
            anyhow::bail!("timed out after {timeout:?}: {reason}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Sum of all samples of Prometheus metrics whose name starts with `prefix`, from the
/// text exposition format.
pub fn metric_sum(text: &str, prefix: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || !line.starts_with(prefix) {
            continue;
        }
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_label_sets() {
        let text = "# HELP htnn_load_errors x\n# TYPE htnn_load_errors counter\n\
                    htnn_load_errors_total{source=\"dir\"} 2\nhtnn_load_errors_total{source=\"kube\"} 1\n\
                    htnn_invalid_objects 3\n";
        assert_eq!(metric_sum(text, "htnn_load_errors"), Some(3.0));
        assert_eq!(metric_sum(text, "htnn_invalid_objects"), Some(3.0));
        assert_eq!(metric_sum(text, "nope"), None);
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(8).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len());
    }
}
