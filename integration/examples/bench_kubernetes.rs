//! Kubernetes mode, measured: `kubectl apply` of a policy → Envoy behaving differently
//! (median of 20), time to `Accepted` for 1,000 policies applied at once, and the resident
//! memory of `htnn serve --kubernetes` with the examples and with the 1,000 policies.
//!
//! `make bench-kubernetes` (or `cargo run --release -p htnn-integration --example
//! bench_kubernetes`). Needs what `tests/kubernetes.rs` needs; `HTNN_BENCH_POLICIES` changes
//! the number of policies (default 1000), `HTNN_BENCH_EDITS` the number of edits (20).

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use htnn_integration::env::KubeMode;
use htnn_integration::gateway::{DEMO_HOST, Echoed, GatewayEnv, public_hello};
use htnn_integration::{percentile, poll_until};

fn env_number(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v:?}")),
        Err(_) => Ok(default),
    }
}

fn virtual_services(n: usize, backend_port: u16) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bench-{i}, namespace: default}}
spec:
  gateways: [istio-system/ingress]
  hosts: [bench-{i}.demo.local]
  http:
  - name: bench-{i}
    route: [{{destination: {{host: backend.demo.internal, port: {{number: {backend_port}}}}}}}]
"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn policies(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: htnn.mosn.io/v1
kind: FilterPolicy
metadata: {{name: bench-{i}, namespace: default}}
spec:
  targetRef: {{group: networking.istio.io, kind: VirtualService, name: bench-{i}}}
  filters:
    demo: {{config: {{hostName: x-bench-{i}}}}}
"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn quantile(samples: &[Duration], q: f64) -> Duration {
    let secs: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    Duration::from_secs_f64(percentile(&secs, q))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let edits = env_number("HTNN_BENCH_EDITS", 20)?;
    let n = env_number("HTNN_BENCH_POLICIES", 1000)?;
    let gw = GatewayEnv::start_kubernetes(KubeMode::default()).await?;
    let kubectl = gw.env.kubectl().clone();
    let rss_examples = gw.env.htnn().rss_kib();
    println!(
        "environment ready after {:?}; htnn serve RSS with the examples: {:?} KiB",
        gw.ready_after, rss_examples
    );

    // kubectl apply of an edited policy → /public carries the new header.
    let mut from_start = Vec::new();
    let mut from_return = Vec::new();
    for i in 0..edits {
        let header = format!("x-edit-{i}");
        let text = public_hello(&header);
        let start = Instant::now();
        kubectl.apply_stdin(&text).await?;
        let returned = start.elapsed();
        poll_until(
            Duration::from_secs(10),
            Duration::from_millis(5),
            || async {
                let r = gw.get(DEMO_HOST, "/public", &[]).await?;
                Ok(match Echoed::of(&r) {
                    Some(e) if e.header(&header).is_some() => Ok(()),
                    _ => Err(format!("{}: {}", r.status, r.text())),
                })
            },
        )
        .await?;
        let took = start.elapsed();
        from_start.push(took);
        from_return.push(took.saturating_sub(returned));
    }
    from_start.sort();
    from_return.sort();
    println!(
        "kubectl apply of a policy → Envoy changed, {edits} edits: median {} (p90 {}, max {}) \
         from the start of kubectl apply; median {} after kubectl returned",
        ms(quantile(&from_start, 0.5)),
        ms(quantile(&from_start, 0.9)),
        ms(from_start[from_start.len() - 1]),
        ms(quantile(&from_return, 0.5)),
    );

    // n policies at once, each on its own VirtualService (applied first, not measured).
    let t = Instant::now();
    kubectl
        .clone()
        .with_timeout(Duration::from_secs(600))
        .apply_stdin(&virtual_services(n, gw.backend.addr.port()))
        .await?;
    println!("{n} VirtualServices applied in {}", ms(t.elapsed()));
    let start = Instant::now();
    kubectl
        .clone()
        .with_timeout(Duration::from_secs(600))
        .apply_stdin(&policies(n))
        .await?;
    let applied = start.elapsed();
    let (_, _) = poll_until(
        Duration::from_secs(300),
        Duration::from_millis(250),
        || async {
            let list = kubectl
                .get_json(&["filterpolicies", "-n", "default"])
                .await?;
            let accepted = list["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter(|o| {
                            o["metadata"]["name"]
                                .as_str()
                                .is_some_and(|n| n.starts_with("bench-"))
                        })
                        .filter(|o| {
                            o.pointer("/status/conditions")
                                .and_then(Value::as_array)
                                .is_some_and(|c| {
                                    c.iter()
                                        .any(|c| c["type"] == "Accepted" && c["status"] == "True")
                                })
                        })
                        .count()
                })
                .unwrap_or(0);
            Ok(if accepted == n {
                Ok(())
            } else {
                Err(format!("{accepted} of {n} Accepted"))
            })
        },
    )
    .await?;
    let all = start.elapsed();
    println!(
        "{n} policies in one kubectl apply: kubectl took {}; all {n} Accepted {} after it started \
         ({} after it returned)",
        ms(applied),
        ms(all),
        ms(all.saturating_sub(applied))
    );
    // The last one protects its route in Envoy too.
    let host = format!("bench-{}.demo.local", n - 1);
    let header = format!("x-bench-{}", n - 1);
    poll_until(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let r = gw.get(&host, "/", &[]).await?;
            Ok(match Echoed::of(&r) {
                Some(e) if e.header(&header).is_some() => Ok(()),
                _ => Err(format!("{}: {}", r.status, r.text())),
            })
        },
    )
    .await?;
    println!(
        "htnn serve RSS: {:?} KiB with the examples, {:?} KiB with {n} more VirtualServices and \
         {n} policies",
        rss_examples,
        gw.env.htnn().rss_kib()
    );
    Ok(())
}
