//! Propagation of one VirtualService edit to istiod, `htnn serve` (xds://) next to istiod's
//! own file source (fs://); see `htnn_integration::propagation`.
//!
//! `cargo run --release -p htnn-integration --example bench_propagation [-- SIZE...]`
//!
//! SIZE: numbers of VirtualServices (default 1000 10000, or `HTNN_BENCH_SIZES=1000,10000`);
//! `HTNN_BENCH_EDITS` edits per path and size (default 20); `HTNN_BENCH_POLICIES=1` adds a
//! run of htnn serve with HTNN policies next to the istio objects. Needs `HTNN_BIN`,
//! `HTNN_ISTIOD_BIN`, `HTNN_KUBE_APISERVER_BIN` and `HTNN_ETCD_BIN` (see the crate docs).

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};

const DEFAULT_SIZES: [usize; 2] = [1000, 10_000];
const DEFAULT_EDITS: usize = 20;

fn parse_sizes(list: impl IntoIterator<Item = String>) -> anyhow::Result<Vec<usize>> {
    list.into_iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().with_context(|| format!("size {s:?}")))
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut sizes = parse_sizes(std::env::args().skip(1))?;
    if sizes.is_empty()
        && let Ok(list) = std::env::var("HTNN_BENCH_SIZES")
    {
        sizes = parse_sizes(list.split(',').map(String::from))?;
    }
    if sizes.is_empty() {
        sizes = DEFAULT_SIZES.to_vec();
    }
    let edits = match std::env::var("HTNN_BENCH_EDITS") {
        Ok(e) => e.parse().context("HTNN_BENCH_EDITS")?,
        Err(_) => DEFAULT_EDITS,
    };
    let policies = std::env::var("HTNN_BENCH_POLICIES").is_ok_and(|v| v == "1");
    // On Ctrl-C or SIGTERM the benchmark future is dropped, which stops every process it
    // started (istiod, htnn serve, kube-apiserver, etcd) and removes its temporary directory.
    let (mut int, mut term) = (
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
    );
    let rows = tokio::select! {
        rows = htnn_integration::propagation::run_with(&sizes, edits, policies) => rows?,
        _ = int.recv() => bail!("interrupted"),
        _ = term.recv() => bail!("terminated"),
    };
    htnn_integration::propagation::print(&rows);
    Ok(())
}
