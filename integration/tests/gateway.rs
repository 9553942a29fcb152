//! `htnn serve` → real istiod → stock Envoy 1.40.0 gateway with `libhtnn.so` → echo backend:
//! the demo's policies (`examples/config`) checked with real requests.
//!
//! Needs, besides the binaries of `tests/istiod.rs`, Envoy (`ENVOY_BIN`) and `libhtnn.so`
//! (`HTNN_MODULE_DIR`); see `htnn_integration::gateway`. Each test starts its own
//! environment (kube-apiserver + etcd, htnn serve, istiod, Envoy, echo backend), one test at
//! a time.

use std::time::{Duration, Instant};

use htnn_integration::gateway::{DEMO_HOST, Echoed, GatewayEnv};
use htnn_integration::{poll_until, race};

/// One environment at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How fast a policy change must change what Envoy does.
const PROPAGATION: Duration = Duration::from_secs(3);
/// How often behaviour is probed while waiting for a change.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

const RICK: (&str, &str) = ("x-api-key", "rick-secret");
const POLICIES: &str = "30-policies.yaml";

async fn start() -> GatewayEnv {
    start_with(Vec::new()).await
}

async fn start_with(istiod_env: Vec<(String, String)>) -> GatewayEnv {
    let gw = GatewayEnv::start_with(istiod_env)
        .await
        .unwrap_or_else(|e| panic!("starting the gateway environment: {e:#}"));
    println!(
        "environment ready after {:?} (kube-apiserver {:?}, htnn serve {:?}, istiod xDS port {:?})",
        gw.ready_after,
        gw.env.kube.ready_after,
        gw.env.htnn().ready_after,
        gw.env.istiod.ready_after
    );
    gw
}

async fn get(gw: &GatewayEnv, host: &str, path: &str, headers: &[(&str, &str)]) -> Echo {
    let r = gw
        .get(host, path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET {host}{path}: {e:#}"));
    Echo {
        echoed: Echoed::of(&r),
        status: r.status,
        body: r.text(),
    }
}

/// A gateway answer, and what the backend saw if it came from there.
struct Echo {
    status: u16,
    body: String,
    echoed: Option<Echoed>,
}

impl Echo {
    fn backend(&self) -> &Echoed {
        self.echoed.as_ref().unwrap_or_else(|| {
            panic!(
                "not an answer of the backend: {} {}",
                self.status, self.body
            )
        })
    }
}

/// `30-policies.yaml` with the demo `hostName` of the policy `public-hello` set to `name`.
fn with_public_host_name(policies: &str, name: &str) -> String {
    let (head, tail) = policies
        .split_once("name: public-hello")
        .expect("examples/config/30-policies.yaml has the policy public-hello");
    let start = tail
        .find("hostName: ")
        .expect("public-hello configures demo.hostName");
    let end = start + tail[start..].find('\n').unwrap_or(tail.len() - start);
    format!(
        "{head}name: public-hello{}hostName: {name}{}",
        &tail[..start],
        &tail[end..]
    )
}

/// What demo adds for a request without a consumer.
const ANONYMOUS_GREETING: &str = "hello, guest";

/// Edits `public-hello`'s demo header name to `name` and waits until `/public` carries
/// `name: hello,` (and no longer the previous header); returns the time from the write.
async fn edit_public_host_name(
    gw: &GatewayEnv,
    previous: &str,
    name: &str,
    timeout: Duration,
    interval: Duration,
) -> anyhow::Result<Duration> {
    let text = with_public_host_name(&gw.env.read_config(POLICIES)?, name);
    let start = Instant::now();
    gw.env.write_config(POLICIES, &text)?;
    poll_until(timeout, interval, || async {
        let r = gw.get(DEMO_HOST, "/public", &[]).await?;
        Ok(match Echoed::of(&r) {
            Some(e)
                if e.header(name) == Some(ANONYMOUS_GREETING) && e.header(previous).is_none() =>
            {
                Ok(())
            }
            Some(e) => Err(format!("backend saw headers {:?}", e.headers)),
            None => Err(format!("{}: {}", r.status, r.text())),
        })
    })
    .await?;
    Ok(start.elapsed())
}

/// keyAuth + consumerRestriction + demo + limitReq on `/orders`, demo on `/public`, and
/// morty's consumer-level demo override, as `make demo` shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_policies_apply() {
    let _serial = SERIAL.lock().await;
    let gw = start().await;

    // The public route: only demo, without a consumer.
    let r = get(&gw, DEMO_HOST, "/public", &[]).await;
    assert_eq!(r.backend().header("x-greeting"), Some(ANONYMOUS_GREETING));

    // No key: 401 from the gateway, the backend never sees it.
    let served = gw.backend.served();
    let r = get(&gw, DEMO_HOST, "/orders", &[]).await;
    assert_eq!(r.status, 401, "no key: {}", r.body);
    assert!(r.echoed.is_none(), "401 came from the backend: {}", r.body);
    // A key nobody has: 401 too.
    let r = get(&gw, DEMO_HOST, "/orders", &[("x-api-key", "summer-secret")]).await;
    assert_eq!(r.status, 401, "unknown key: {}", r.body);
    assert_eq!(
        gw.backend.served(),
        served,
        "rejected requests reached the backend"
    );

    // rick's key: 200, the key is stripped, demo greets rick.
    let r = get(&gw, DEMO_HOST, "/orders", &[RICK]).await;
    assert_eq!(r.status, 200, "rick: {}", r.body);
    let seen = r.backend();
    assert_eq!(seen.path, "/orders");
    assert_eq!(seen.header("x-greeting"), Some("hello, rick"), "{seen:?}");
    assert_eq!(seen.header("x-api-key"), None, "key not stripped: {seen:?}");
    assert_eq!(gw.backend.served_with_key(), 0);

    // morty's key in the query: his consumer-level demo config replaces the route's.
    let r = get(&gw, DEMO_HOST, "/orders?api_key=morty-secret", &[]).await;
    let seen = r.backend();
    assert_eq!(seen.header("x-morty"), Some("hello, morty"), "{seen:?}");
    assert_eq!(
        seen.header("x-greeting"),
        None,
        "route demo config ran for morty"
    );
    assert!(
        !seen.path.contains("morty-secret"),
        "key not stripped from the query: {}",
        seen.path
    );
    assert_eq!(gw.backend.served_with_key(), 0);

    // limitReq (average 5/s, burst 5): a quick series runs into 429.
    tokio::time::sleep(Duration::from_millis(1200)).await; // a full bucket
    let served = gw.backend.served();
    let mut statuses = Vec::new();
    let mut timings = Vec::new();
    let series = Instant::now();
    for _ in 0..12 {
        let t = Instant::now();
        statuses.push(get(&gw, DEMO_HOST, "/orders", &[RICK]).await.status);
        timings.push(t.elapsed().as_millis());
    }
    println!(
        "12 quick requests with rick's key in {:?}: {statuses:?}, each took {timings:?} ms",
        series.elapsed()
    );
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        ok + limited,
        statuses.len(),
        "unexpected statuses: {statuses:?}"
    );
    assert!(ok >= 5, "the burst of 5 was not allowed: {statuses:?}");
    assert!(limited >= 1, "no 429 after the burst: {statuses:?}");
    assert_eq!(statuses[0], 200);
    assert_eq!(
        gw.backend.served() - served,
        ok as u64,
        "429 answers reached the backend"
    );
    // The bucket refills.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get(&gw, DEMO_HOST, "/orders", &[RICK]).await.status, 200);
}

/// Editing a policy file changes what Envoy does within 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_edit_reaches_envoy_within_3s() {
    let _serial = SERIAL.lock().await;
    let gw = start().await;
    let took = edit_public_host_name(&gw, "x-greeting", "x-edited", PROPAGATION, PROBE_INTERVAL)
        .await
        .unwrap_or_else(|e| panic!("editing demo.hostName of public-hello: {e:#}"));
    println!("policy edit → new header at the backend after {took:?}");
    assert!(took < PROPAGATION, "took {took:?}");
    // The other policy is untouched.
    let r = get(&gw, DEMO_HOST, "/orders", &[RICK]).await;
    assert_eq!(r.backend().header("x-greeting"), Some("hello, rick"));
}

/// Consumers travel by ECDS to a carrier filter that is disabled on the request path: a
/// consumer added later becomes usable, and a removed one stops working, without any route
/// or listener change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_added_and_removed_later_reach_envoy() {
    let _serial = SERIAL.lock().await;
    let gw = start().await;
    let summer = ("x-api-key", "summer-secret");
    assert_eq!(get(&gw, DEMO_HOST, "/orders", &[summer]).await.status, 401);
    let consumer = "apiVersion: htnn.mosn.io/v1
kind: Consumer
metadata: {name: summer, namespace: default}
spec:
  auth:
    keyAuth: {config: {key: summer-secret}}
";
    gw.env.write_config("45-summer.yaml", consumer).unwrap();
    let (_, took) = poll_until(PROPAGATION, PROBE_INTERVAL, || async {
        let r = gw.get(DEMO_HOST, "/orders", &[summer]).await?;
        Ok(if r.status == 200 {
            Ok(())
        } else {
            Err(format!("status {}", r.status))
        })
    })
    .await
    .unwrap_or_else(|e| panic!("new consumer not usable: {e:#}"));
    println!("new consumer usable after {took:?}");
    let r = get(&gw, DEMO_HOST, "/orders", &[summer]).await;
    assert_eq!(r.backend().header("x-greeting"), Some("hello, summer"));

    gw.env.remove_config("45-summer.yaml").unwrap();
    let (_, took) = poll_until(PROPAGATION, PROBE_INTERVAL, || async {
        let r = gw.get(DEMO_HOST, "/orders", &[summer]).await?;
        Ok(if r.status == 401 {
            Ok(())
        } else {
            Err(format!("status {}", r.status))
        })
    })
    .await
    .unwrap_or_else(|e| panic!("removed consumer still accepted: {e:#}"));
    println!("removed consumer rejected after {took:?}");
    // The others still authenticate (the polling above may have used up the rate limit).
    let status = get(&gw, DEMO_HOST, "/orders", &[RICK]).await.status;
    assert!(status == 200 || status == 429, "rick got {status}");
}

/// Deleting the policies removes their plugins: no key needed, no greeting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_policies_removes_plugins() {
    let _serial = SERIAL.lock().await;
    let gw = start().await;
    assert_eq!(get(&gw, DEMO_HOST, "/orders", &[]).await.status, 401);

    let start = Instant::now();
    gw.env.remove_config(POLICIES).unwrap();
    let (_, took) = poll_until(PROPAGATION, PROBE_INTERVAL, || async {
        let r = gw.get(DEMO_HOST, "/orders", &[]).await?;
        Ok(match Echoed::of(&r) {
            Some(e) if e.header("x-greeting").is_none() => Ok(()),
            Some(e) => Err(format!("backend saw {:?}", e.headers)),
            None => Err(format!("{}: {}", r.status, r.text())),
        })
    })
    .await
    .unwrap_or_else(|e| panic!("/orders after deleting the policies: {e:#}"));
    println!(
        "policies deleted → /orders open after {took:?} ({:?} after the delete)",
        start.elapsed()
    );
    let r = get(&gw, DEMO_HOST, "/public", &[]).await;
    assert_eq!(r.backend().header("x-greeting"), None, "demo still runs");
    // Without keyAuth a key is just a header: it reaches the backend.
    let r = get(&gw, DEMO_HOST, "/orders", &[RICK]).await;
    assert_eq!(r.backend().header("x-api-key"), Some("rick-secret"));
    // No rate limit any more either.
    for _ in 0..12 {
        assert_eq!(get(&gw, DEMO_HOST, "/orders", &[]).await.status, 200);
    }
    let status = gw.htnn_status().await.unwrap();
    assert!(
        !status.keys().any(|k| k.starts_with("FilterPolicy ")),
        "deleted policies still have a status: {status:?}"
    );
}

/// An invalid policy (unknown plugin; bad plugin config) is `Invalid` in htnn's
/// `/debug/status`, and the valid policies keep working, edits included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policy_is_reported_and_valid_ones_keep_working() {
    let _serial = SERIAL.lock().await;
    let gw = start().await;
    let invalid = "\
apiVersion: htnn.mosn.io/v1
kind: FilterPolicy
metadata: {name: bad-unknown-plugin, namespace: default}
spec:
  targetRef: {group: networking.istio.io, kind: VirtualService, name: api, sectionName: orders}
  filters:
    noSuchPlugin: {config: {}}
---
apiVersion: htnn.mosn.io/v1
kind: FilterPolicy
metadata: {name: bad-plugin-config, namespace: default}
spec:
  targetRef: {group: networking.istio.io, kind: VirtualService, name: api, sectionName: public}
  filters:
    limitReq: {config: {average: lots}}
";
    gw.env.write_config("50-invalid.yaml", invalid).unwrap();
    let (status, took) = poll_until(PROPAGATION, PROBE_INTERVAL, || async {
        let status = gw.htnn_status().await?;
        let reason = |name: &str| {
            status
                .get(&format!("FilterPolicy default/{name}"))
                .and_then(|s| s.get("reason"))
                .and_then(|r| r.as_str())
                .map(str::to_string)
        };
        Ok(
            if reason("bad-unknown-plugin").as_deref() == Some("Invalid")
                && reason("bad-plugin-config").as_deref() == Some("Invalid")
            {
                Ok(status)
            } else {
                Err(format!("/debug/status: {status:?}"))
            },
        )
    })
    .await
    .unwrap_or_else(|e| panic!("invalid policies not reported: {e:#}"));
    println!("invalid policies reported after {took:?}:");
    for (key, s) in &status {
        println!("  {key}: {} — {}", s["reason"], s["message"]);
    }
    let message = |name: &str| {
        status[&format!("FilterPolicy default/{name}")]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(message("bad-unknown-plugin").contains("noSuchPlugin"));
    assert!(message("bad-plugin-config").contains("average"));
    for name in ["orders-auth", "public-hello"] {
        assert_eq!(
            status[&format!("FilterPolicy default/{name}")]["reason"],
            "Accepted",
            "{name}"
        );
    }

    // Give a (wrong) push time to reach Envoy, then check the valid policies.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(get(&gw, DEMO_HOST, "/orders", &[]).await.status, 401);
    let r = get(&gw, DEMO_HOST, "/orders", &[RICK]).await;
    assert_eq!(r.backend().header("x-greeting"), Some("hello, rick"));
    let r = get(&gw, DEMO_HOST, "/public", &[]).await;
    assert_eq!(r.backend().header("x-greeting"), Some(ANONYMOUS_GREETING));
    // The invalid limitReq on /public is not applied.
    for _ in 0..12 {
        assert_eq!(get(&gw, DEMO_HOST, "/public", &[]).await.status, 200);
    }

    // Valid changes still go through next to the invalid ones.
    let took = edit_public_host_name(
        &gw,
        "x-greeting",
        "x-still-valid",
        PROPAGATION,
        PROBE_INTERVAL,
    )
    .await
    .unwrap_or_else(|e| panic!("editing a valid policy next to invalid ones: {e:#}"));
    println!("edit of a valid policy next to invalid ones reached Envoy after {took:?}");

    // Breaking the policy that protects /orders must not open the route: it is reported
    // Invalid and its last valid version keeps serving.
    let policies = gw.env.read_config("30-policies.yaml").unwrap();
    let broken = policies.replacen("denyIfNoConsumer: true", "denyIfNoConsumer: maybe", 1);
    assert_ne!(broken, policies, "30-policies.yaml changed shape");
    gw.env.write_config("30-policies.yaml", &broken).unwrap();
    let (message, took) = poll_until(PROPAGATION, PROBE_INTERVAL, || async {
        let status = gw.htnn_status().await?;
        let s = &status["FilterPolicy default/orders-auth"];
        Ok(if s["reason"] == "Invalid" {
            Ok(s["message"].as_str().unwrap_or_default().to_string())
        } else {
            Err(format!("orders-auth: {s}"))
        })
    })
    .await
    .unwrap_or_else(|e| panic!("broken orders-auth not reported: {e:#}"));
    println!("broken orders-auth reported after {took:?}: {message}");
    assert!(message.contains("denyIfNoConsumer"), "{message}");
    assert!(
        message.contains("last valid version keeps serving"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(get(&gw, DEMO_HOST, "/orders", &[]).await.status, 401);
    let r = get(&gw, DEMO_HOST, "/orders", &[RICK]).await;
    assert_eq!(r.backend().header("x-greeting"), Some("hello, rick"));
}

/// A route and its policy written in one file never leave a window in which the route is
/// live without the policy: 50 times, while clients hammer the new host without a key, the
/// file appears (atomically), the route goes live (rick gets 200), the file is removed and
/// the route disappears (404). The backend must never serve a no-key request. A control run
/// first writes a route without a policy and checks that the same clients do get through.
///
/// With istiod's default debounce (`PILOT_DEBOUNCE_AFTER=100ms`), as deployed. Note that this
/// debounce merges the EnvoyFilter and VirtualService changes of one file into one push, so
/// this test passes even if htnn pushed them in the wrong order; see the next test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_never_live_without_its_policy() {
    let _serial = SERIAL.lock().await;
    race::run(&start().await, race::Writer::Dir, race::ITERATIONS).await;
}

/// The same with istiod pushing 1 ms after a change, so that the EnvoyFilter and the
/// VirtualService of one file may reach Envoy in separate pushes and their order matters.
///
/// Without staged pushes this failed about once per 100 route additions: htnn sent the
/// EnvoyFilter before the VirtualService and istiod stored them in that order, but istiod's
/// memory config store (krt) delivers change events of each kind from its own goroutine, so
/// the VirtualService's push could reach the debouncer first and reuse the previous push
/// context's EnvoyFilter index. htnn now pushes the VirtualService only after istiod ACKed the
/// EnvoyFilter plus a settle time (`--push-settle`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_never_live_without_its_policy_with_1ms_istiod_debounce() {
    let _serial = SERIAL.lock().await;
    race::run(
        &start_with(vec![("PILOT_DEBOUNCE_AFTER".into(), "1ms".into())]).await,
        race::Writer::Dir,
        race::ITERATIONS,
    )
    .await;
}

const LATENCY_PROBE_INTERVAL: Duration = Duration::from_millis(5);

/// Measurement: time from a policy file write to Envoy behaving differently.
/// `cargo test -p htnn-integration --test gateway -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run explicitly"]
async fn policy_propagation_latency() {
    let _serial = SERIAL.lock().await;
    let gw = start().await;
    let mut samples = Vec::new();
    let mut previous = "x-greeting".to_string();
    for i in 0..20 {
        let name = format!("x-latency-{i}");
        let took = edit_public_host_name(
            &gw,
            &previous,
            &name,
            Duration::from_secs(10),
            LATENCY_PROBE_INTERVAL,
        )
        .await
        .unwrap_or_else(|e| panic!("edit {i}: {e:#}"));
        samples.push(took);
        previous = name;
        // Let istiod's debounce settle so the samples are independent.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "policy file write → Envoy behaviour over {} edits: min {:?}, median {:?}, p90 {:?}, \
         max {:?} (probe interval {LATENCY_PROBE_INTERVAL:?})",
        samples.len(),
        samples[0],
        pct(0.5),
        pct(0.9),
        samples[samples.len() - 1]
    );
}
