//! The route-and-policy race: a VirtualService and the FilterPolicy protecting it, written
//! together, must never leave a window in which the route is live without its policy.
//! Shared by the file-mode and the Kubernetes-mode gateway tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::env::TestEnv;
use crate::gateway::{Echoed, GatewayEnv, PROBE_HEADER};
use crate::{http, poll_until};

const PROBE_INTERVAL: Duration = Duration::from_millis(20);
const RICK: (&str, &str) = ("x-api-key", "rick-secret");

/// How the race's objects reach `htnn serve`.
#[derive(Clone, Copy, Debug)]
pub enum Writer {
    /// One file in the config directory, written atomically.
    Dir,
    /// One `kubectl apply` of the whole text (and `kubectl delete` of it).
    Kubectl,
}

impl Writer {
    async fn put(self, env: &TestEnv, file: &str, text: &str) {
        match self {
            Writer::Dir => env.write_config(file, text).unwrap(),
            Writer::Kubectl => {
                env.kubectl()
                    .apply_stdin(text)
                    .await
                    .unwrap_or_else(|e| panic!("kubectl apply {file}: {e:#}"));
            }
        }
    }

    async fn remove(self, env: &TestEnv, file: &str, text: &str) {
        match self {
            Writer::Dir => env.remove_config(file).unwrap(),
            Writer::Kubectl => {
                env.kubectl()
                    .delete_stdin(text)
                    .await
                    .unwrap_or_else(|e| panic!("kubectl delete {file}: {e:#}"));
            }
        }
    }
}

/// Per iteration of the race test: what the no-key client saw.
#[derive(Debug, Default, Clone)]
pub struct RaceStats {
    sent: u64,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    last_error: Option<String>,
}

/// Iterations of a full run.
pub const ITERATIONS: usize = 50;
const RACE_CLIENTS: usize = 2;
const NO_KEY: &str = "nokey";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The stats slot and host of the control run: a route written without a policy.
const CONTROL: usize = usize::MAX;
const CONTROL_PROBE: &str = "control";

fn race_name(i: usize) -> String {
    if i == CONTROL {
        "race-control".into()
    } else {
        format!("race-{i}")
    }
}

fn race_host(i: usize) -> String {
    format!("{}.demo.local", race_name(i))
}

/// A VirtualService for a new host, routing to the backend.
fn race_vs(i: usize, backend_port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  gateways: [istio-system/ingress]
  hosts: [{host}]
  http:
  - name: {name}
    route: [{{destination: {{host: backend.demo.internal, port: {{number: {backend_port}}}}}}}]
",
        name = race_name(i),
        host = race_host(i)
    )
}

/// The FilterPolicy protecting [`race_vs`]: a consumer is required.
fn race_policy(i: usize) -> String {
    format!(
        "apiVersion: htnn.mosn.io/v1
kind: FilterPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  targetRef: {{group: networking.istio.io, kind: VirtualService, name: {name}}}
  filters:
    keyAuth: {{config: {{keys: [{{name: x-api-key}}]}}}}
    consumerRestriction: {{config: {{denyIfNoConsumer: true}}}}
",
        name = race_name(i)
    )
}

/// Waits until a request with rick's key on `host` gets 404 (no route).
pub async fn wait_route_gone(gw: &GatewayEnv, host: &str) -> anyhow::Result<Duration> {
    let (_, took) = poll_until(Duration::from_secs(15), PROBE_INTERVAL, || async {
        let r = gw.get(host, "/race", &[RICK]).await?;
        Ok(if r.status == 404 {
            Ok(())
        } else {
            Err(format!("{}: {}", r.status, r.text()))
        })
    })
    .await?;
    Ok(took)
}

/// While clients hammer a new host without a key, `iterations` times: the route and its
/// policy appear (one write), the route goes live (rick gets 200), both are removed and the
/// route disappears (404). The backend must never serve a no-key request. A control run
/// first writes a route without a policy and checks that the same clients do get through.
pub async fn run(gw: &GatewayEnv, writer: Writer, iterations: usize) {
    let gateway = gw.envoy.listener_addr;
    let backend_port = gw.backend.addr.port();

    let stop = Arc::new(AtomicBool::new(false));
    // One slot per iteration, then the control run's.
    let stats: Arc<Mutex<BTreeMap<usize, RaceStats>>> = Arc::default();
    let iteration = Arc::new(AtomicUsize::new(CONTROL));
    let mut clients = Vec::new();
    for _ in 0..RACE_CLIENTS {
        let (iteration, stop, stats) = (
            Arc::clone(&iteration),
            Arc::clone(&stop),
            Arc::clone(&stats),
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let i = iteration.load(Ordering::SeqCst);
                let host = race_host(i);
                let probe = if i == CONTROL { CONTROL_PROBE } else { NO_KEY };
                let headers = [("Host", host.as_str()), (PROBE_HEADER, probe)];
                let r = http::request(gateway, "GET", "/race", &headers, CLIENT_TIMEOUT).await;
                let mut stats = stats.lock().unwrap();
                let s = stats.entry(i).or_default();
                s.sent += 1;
                match r {
                    Ok(r) => *s.statuses.entry(r.status).or_default() += 1,
                    Err(e) => {
                        s.errors += 1;
                        s.last_error = Some(format!("{e:#}"));
                    }
                }
            }
        }));
    }

    // Control: the same clients against a route written WITHOUT its policy must get through
    // to the backend, or the check below could not see an unprotected window.
    let file = "59-race-control.yaml";
    let host = race_host(CONTROL);
    let control = race_vs(CONTROL, backend_port);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    writer.put(&gw.env, file, &control).await;
    poll_until(Duration::from_secs(15), PROBE_INTERVAL, || async {
        let n = gw.backend.probes(CONTROL_PROBE);
        Ok(if n > 0 {
            Ok(())
        } else {
            Err("no control request served yet".to_string())
        })
    })
    .await
    .unwrap_or_else(|e| {
        panic!("control: the no-key clients never reached an unprotected route: {e:#}")
    });
    let t_detected = t.elapsed();
    writer.remove(&gw.env, file, &control).await;
    wait_route_gone(gw, &host)
        .await
        .unwrap_or_else(|e| panic!("control: route not removed: {e:#}"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    println!(
        "control (route without policy): backend served a no-key request {} ms after the write, \
         {} in all; clients saw {:?}",
        t_detected.as_millis(),
        gw.backend.probes(CONTROL_PROBE),
        stats
            .lock()
            .unwrap()
            .get(&CONTROL)
            .map(|s| s.statuses.clone())
    );

    // (rick's key passed through the unprotected control route.)
    let with_key_before = gw.backend.served_with_key();
    let started = Instant::now();
    let mut live_after = Vec::new();
    let mut gone_after = Vec::new();
    for i in 0..iterations {
        iteration.store(i, Ordering::SeqCst);
        let host = race_host(i);
        let file = format!("60-race-{i}.yaml");
        // The no-key clients are on the new host before the file appears.
        tokio::time::sleep(Duration::from_millis(50)).await;

        let t = Instant::now();
        // Route first, then its policy, in one file written atomically.
        let text = format!("{}---\n{}", race_vs(i, backend_port), race_policy(i));
        writer.put(&gw.env, &file, &text).await;
        poll_until(Duration::from_secs(15), PROBE_INTERVAL, || async {
            let r = gw.get(&host, "/race", &[RICK]).await?;
            Ok(match Echoed::of(&r) {
                Some(e) if e.path == "/race" => Ok(()),
                _ => Err(format!("{}: {}", r.status, r.text())),
            })
        })
        .await
        .unwrap_or_else(|e| panic!("race-{i}: route not live: {e:#}"));
        let t_live = t.elapsed();
        // Let the clients hit the protected route for a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;

        let t = Instant::now();
        writer.remove(&gw.env, &file, &text).await;
        wait_route_gone(gw, &host)
            .await
            .unwrap_or_else(|e| panic!("race-{i}: route not removed: {e:#}"));
        let t_gone = t.elapsed();
        // A last burst against the removed route.
        tokio::time::sleep(Duration::from_millis(50)).await;

        let s = stats.lock().unwrap().get(&i).cloned().unwrap_or_default();
        println!(
            "race-{i:02}: live after {:>4} ms, gone after {:>4} ms; no-key requests {:>5} {:?}{}; \
             backend served no-key so far: {}",
            t_live.as_millis(),
            t_gone.as_millis(),
            s.sent,
            s.statuses,
            if s.errors > 0 {
                format!(", {} errors (last: {:?})", s.errors, s.last_error)
            } else {
                String::new()
            },
            gw.backend.probes(NO_KEY)
        );
        live_after.push(t_live);
        gone_after.push(t_gone);
        assert_eq!(
            gw.backend.probes(NO_KEY),
            0,
            "race-{i}: the backend served a request without a key: {s:?}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let elapsed = started.elapsed();

    let mut stats = stats.lock().unwrap().clone();
    stats.remove(&CONTROL);
    let mut total = RaceStats::default();
    for s in stats.values() {
        total.sent += s.sent;
        total.errors += s.errors;
        for (status, n) in &s.statuses {
            *total.statuses.entry(*status).or_default() += n;
        }
    }
    live_after.sort();
    gone_after.sort();
    println!(
        "{iterations} iterations in {elapsed:?}: {} no-key requests ({:.0}/s) {:?}, {} errors; \
         backend served {} no-key requests; route live after median {:?} (max {:?}), gone after \
         median {:?} (max {:?})",
        total.sent,
        total.sent as f64 / elapsed.as_secs_f64(),
        total.statuses,
        total.errors,
        gw.backend.probes(NO_KEY),
        live_after[live_after.len() / 2],
        live_after[live_after.len() - 1],
        gone_after[gone_after.len() / 2],
        gone_after[gone_after.len() - 1],
    );
    assert_eq!(
        gw.backend.probes(NO_KEY),
        0,
        "no-key requests reached the backend"
    );
    assert_eq!(
        total.statuses.get(&200),
        None,
        "no-key requests got 200: {total:?}"
    );
    assert_eq!(
        gw.backend.served_with_key(),
        with_key_before,
        "rick's key reached the backend: keyAuth did not run"
    );
    let protected = total.statuses.get(&401).copied().unwrap_or(0);
    assert!(
        protected > 0,
        "the no-key clients never reached a protected route: {total:?}"
    );
    let without_401: Vec<usize> = (0..iterations)
        .filter(|i| stats.get(i).is_none_or(|s| !s.statuses.contains_key(&401)))
        .collect();
    println!("iterations in which the no-key clients never hit the live route: {without_401:?}");
    assert!(
        total.errors * 100 <= total.sent,
        "too many failed requests: {total:?}"
    );
}
