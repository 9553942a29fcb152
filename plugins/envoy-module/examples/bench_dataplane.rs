//! Data-plane benchmark: Envoy CPU time per request with no filter, a native filter, Lua, and
//! libhtnn.so (`make bench-dataplane`; not part of `make test`).
//!
//! ```text
//! cargo build --release -p htnn-envoy-module
//! cargo run --release -p htnn-envoy-module --example bench_dataplane
//! ```
//!
//! Environment: `ENVOY_BIN` (default `/work/main/.venv/bin/envoy`), `HTNN_MODULE_DIR` (directory
//! of `libhtnn.so`, default `/work/main/target/release`), `WRK_BIN` (default `wrk`), and for
//! tuning `BENCH_ROUNDS` (10), `BENCH_SECS` (2), `BENCH_WARMUP_SECS` (2), `BENCH_CONNS` (32),
//! `BENCH_ENVOY_CPU` (0), `BENCH_LOAD_CPU` (1). `BENCH_PRINT_CONFIG=<a..e|e*>` prints that
//! scenario's Envoy bootstrap (listener :10000, admin :9901) and exits, for profiling by hand.
//!
//! Scenarios, all doing "a little header work" per request:
//! - (a) no filter (the baseline);
//! - (b) native `header_mutation` adding `x-bench: hello, %REQ(x-guest)%` (reads one header,
//!   adds one);
//! - (c) Lua doing the same (`get` + `add`);
//! - (d) htnn with `demo` only (reads filter state `guest_name`, adds `x-bench`);
//! - (e) htnn with keyAuth + limitReq (never limiting) + demo, a consumer in the `htnn.consumers`
//!   carrier and the request carrying its key;
//! - (e*) as (e) with the carrier filter `disabled: true` (Envoy installs its config, i.e. the
//!   consumers, but creates no per-stream instance): what a translator emitting it so would save.
//!
//! One Envoy per scenario, all started up front with `--concurrency 1` and pinned with `taskset`
//! to one CPU; `wrk` (one thread, keep-alive) runs pinned to another CPU. Every route is an
//! Envoy-internal `direct_response`, so there is no backend: decoder filters still run (the
//! router answers the direct response after them) and so do encoder filters on the reply.
//! Rounds are interleaved across scenarios (a..e*, then e*..a, ...) so slow drifts in machine
//! load hit every scenario alike. Per round we take Envoy's utime+stime delta from
//! `/proc/<pid>/stat` over the load window and divide by the 2xx responses Envoy counted in the
//! same window (admin stats, read outside the window): CPU µs per request. Medians are reported;
//! overheads are medians of per-round differences (same moment, same machine load).
//!
//! Before measuring, a `/verify` route (same filters, plus response headers echoing request
//! headers through `%REQ()%`) proves that each scenario's filters really ran.
//!
//! The machine is shared (builds, tests): the numbers are noisy, the `±range` column says how
//! much. For a deterministic comparison run one scenario's bootstrap (`BENCH_PRINT_CONFIG`) under
//! `valgrind --tool=callgrind` and count instructions per request.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const DM_FILTER: &str =
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";
const DM_PER_ROUTE: &str = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute";
const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

/// Every load request carries these: a guest name (read by the native and Lua filters) and the
/// consumer key (read by keyAuth in scenario e, ignored elsewhere).
const GUEST: (&str, &str) = ("x-guest", "rick");
const API_KEY: (&str, &str) = ("x-api-key", "rick-key");
const NAMESPACE: &str = "bench";

// ------------------------------------------------------------------------------------------------
// Scenarios
// ------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    None,
    Native,
    Lua,
    HtnnDemo,
    HtnnFull,
    /// `HtnnFull` with the consumer carrier filter `disabled: true`: Envoy still hands it its
    /// config (the consumers get installed) but creates no per-stream instance of it.
    HtnnFullCarrierOff,
}

impl Kind {
    fn is_htnn(self) -> bool {
        matches!(
            self,
            Kind::HtnnDemo | Kind::HtnnFull | Kind::HtnnFullCarrierOff
        )
    }
}

struct Scenario {
    kind: Kind,
    label: &'static str,
    /// Expected value of `x-bench` at the route (as echoed by `/verify`).
    expect_bench: &'static str,
    /// Whether the route still sees the `x-api-key` request header.
    expect_key_kept: bool,
}

const SCENARIOS: [Scenario; 6] = [
    Scenario {
        kind: Kind::None,
        label: "(a) no filter",
        expect_bench: "",
        expect_key_kept: true,
    },
    Scenario {
        kind: Kind::Native,
        label: "(b) native header_mutation",
        expect_bench: "hello, rick",
        expect_key_kept: true,
    },
    Scenario {
        kind: Kind::Lua,
        label: "(c) lua",
        expect_bench: "hello, rick",
        expect_key_kept: true,
    },
    Scenario {
        kind: Kind::HtnnDemo,
        label: "(d) htnn demo",
        // No consumer and no `guest_name` filter state: demo greets nobody.
        expect_bench: "hello,",
        expect_key_kept: true,
    },
    Scenario {
        kind: Kind::HtnnFull,
        label: "(e) htnn keyAuth+limitReq+demo",
        expect_bench: "hello, rick",
        // keyAuth strips the credential.
        expect_key_kept: false,
    },
    Scenario {
        kind: Kind::HtnnFullCarrierOff,
        label: "(e*) = (e), carrier disabled",
        expect_bench: "hello, rick",
        expect_key_kept: false,
    },
];

fn module() -> Value {
    json!({"name": "htnn", "do_not_close": true})
}

fn string_value(doc: &Value) -> Value {
    json!({"@type": STRING_VALUE, "value": doc.to_string()})
}

fn htnn_chain(kind: Kind) -> Value {
    let demo = json!({"name": "demo", "config": {"hostName": "x-bench"}});
    let plugins = match kind {
        Kind::HtnnDemo => json!([demo]),
        Kind::HtnnFull | Kind::HtnnFullCarrierOff => json!([
            {"name": "keyAuth", "config": {"keys": [{"name": API_KEY.0}]}},
            // Far above any rate we can reach: never delays, never rejects.
            {"name": "limitReq", "config": {"average": 1_000_000_000u32, "period": "1s", "burst": 1_000_000_000u32}},
            demo,
        ]),
        _ => json!([]),
    };
    json!({"namespace": NAMESPACE, "plugins": plugins})
}

fn http_filters(kind: Kind) -> Value {
    let mut filters = Vec::new();
    match kind {
        Kind::None => {}
        Kind::Native => filters.push(json!({
            "name": "envoy.filters.http.header_mutation",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                "mutations": {"request_mutations": [{"append": {
                    // Reads one request header (the formatter) and adds another.
                    "header": {"key": "x-bench", "value": format!("hello, %REQ({})%", GUEST.0)},
                    "append_action": "APPEND_IF_EXISTS_OR_ADD",
                }}]},
            }
        })),
        Kind::Lua => filters.push(json!({
            "name": "envoy.filters.http.lua",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": format!(
                    "function envoy_on_request(h)\n  local hs = h:headers()\n  local g = hs:get(\"{}\") or \"\"\n  hs:add(\"x-bench\", \"hello, \" .. g)\nend\n",
                    GUEST.0
                )},
            }
        })),
        Kind::HtnnDemo | Kind::HtnnFull | Kind::HtnnFullCarrierOff => {
            if kind != Kind::HtnnDemo {
                filters.push(json!({
                    "name": "htnn.consumers",
                    "disabled": kind == Kind::HtnnFullCarrierOff,
                    "typed_config": {
                        "@type": DM_FILTER,
                        "dynamic_module_config": module(),
                        "filter_name": "htnn.consumers",
                        "filter_config": string_value(&json!({
                            NAMESPACE: {"rick": {"auth": {"keyAuth": {"key": API_KEY.1}}}}
                        })),
                    }
                }));
            }
            // The chain is per route (what HTNN's policies produce); the filter-level config
            // (gateway chain) stays empty.
            filters.push(json!({
                "name": "htnn",
                "typed_config": {
                    "@type": DM_FILTER,
                    "dynamic_module_config": module(),
                    "filter_name": "htnn",
                }
            }));
        }
    }
    filters.push(json!({"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}));
    Value::Array(filters)
}

fn route(kind: Kind, path: &str, verify: bool) -> Value {
    let mut r = json!({
        "name": path.trim_start_matches('/'),
        "match": {"path": path},
        "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
    });
    if kind.is_htnn() {
        r["typed_per_filter_config"] = json!({"htnn": {
            "@type": DM_PER_ROUTE,
            "dynamic_module_config": module(),
            "filter_name": "htnn",
            "filter_config": string_value(&htnn_chain(kind)),
        }});
    }
    if verify {
        // What the route saw after the decoder filters ran.
        r["response_headers_to_add"] = json!([
            {"header": {"key": "x-seen-bench", "value": "%REQ(x-bench)%"}},
            {"header": {"key": "x-seen-key", "value": format!("%REQ({})%", API_KEY.0)}},
        ]);
    }
    r
}

fn bootstrap(kind: Kind, port: u16, admin: u16) -> Value {
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [{
            "name": "bench",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "bench",
                    "route_config": {"name": "bench", "virtual_hosts": [{
                        "name": "all",
                        "domains": ["*"],
                        "routes": [route(kind, "/bench", false), route(kind, "/verify", true)],
                    }]},
                    "http_filters": http_filters(kind),
                }
            }]}]
        }]}
    })
}

// ------------------------------------------------------------------------------------------------
// Processes
// ------------------------------------------------------------------------------------------------

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

struct Envoy {
    child: Child,
    port: u16,
    admin: u16,
    dir: tempfile::TempDir,
}

impl Envoy {
    fn start(kind: Kind, envoy_bin: &str, module_dir: &str, cpu: &str) -> Envoy {
        let (port, admin) = (free_port(), free_port());
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("envoy.json");
        std::fs::write(&cfg, bootstrap(kind, port, admin).to_string()).expect("write config");
        let log = std::fs::File::create(dir.path().join("envoy.log")).expect("log file");
        // `taskset` execs Envoy, so the child's pid is Envoy's.
        let child = Command::new("taskset")
            .args(["-c", cpu, envoy_bin, "-c"])
            .arg(&cfg)
            .args([
                "--concurrency",
                "1",
                "--use-dynamic-base-id",
                "-l",
                "warning",
            ])
            .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `taskset -c {cpu} {envoy_bin}`: {e}"));
        Envoy {
            child,
            port,
            admin,
            dir,
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("envoy exited during startup ({status}):\n{}", self.log());
            }
            if http_get(self.admin, "/ready", &[]).is_ok_and(|r| r.status == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "envoy not ready after 30s:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Counter from the admin endpoint (0 if absent).
    fn counter(&self, name: &str) -> u64 {
        let resp = http_get(self.admin, &format!("/stats?filter=^{name}$"), &[])
            .unwrap_or_else(|e| panic!("admin /stats: {e}"));
        let prefix = format!("{name}: ");
        resp.body
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// (2xx, non-2xx) downstream responses so far.
    fn responses(&self) -> (u64, u64) {
        let ok = self.counter("http.bench.downstream_rq_2xx");
        let other: u64 = ["1xx", "3xx", "4xx", "5xx"]
            .iter()
            .map(|c| self.counter(&format!("http.bench.downstream_rq_{c}")))
            .sum();
        (ok, other)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of every thread of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // The command name may contain spaces; fields after it start with the state (field 3).
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> u64 { fields[n - 3].parse().expect("stat field") };
    field(14) + field(15)
}

fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One `connection: close` GET; enough for the admin endpoint and the verification requests.
fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> std::io::Result<HttpResponse> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("incomplete response"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// Checks that the scenario's filters ran (what the route saw, echoed by `/verify`).
fn verify(s: &Scenario, envoy: &Envoy) -> Result<(), String> {
    let r = http_get(envoy.port, "/verify", &[GUEST, API_KEY]).map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("status {} body {:?}", r.status, r.body));
    }
    // An empty `%REQ()%` yields no header (or "-", depending on the formatter).
    let seen = |h: &str| {
        r.header(h)
            .filter(|v| !v.is_empty() && *v != "-")
            .unwrap_or("")
            .to_owned()
    };
    let bench = seen("x-seen-bench");
    if bench != s.expect_bench {
        return Err(format!(
            "route saw x-bench {bench:?}, expected {:?}",
            s.expect_bench
        ));
    }
    let key_kept = !seen("x-seen-key").is_empty();
    if key_kept != s.expect_key_kept {
        return Err(format!(
            "x-api-key reached the route: {key_kept}, expected {}",
            s.expect_key_kept
        ));
    }
    if matches!(s.kind, Kind::HtnnFull | Kind::HtnnFullCarrierOff) {
        let r = http_get(envoy.port, "/verify", &[GUEST, (API_KEY.0, "wrong")])
            .map_err(|e| e.to_string())?;
        if r.status != 401 {
            return Err(format!("a wrong key got {}, expected 401", r.status));
        }
    }
    Ok(())
}

struct WrkResult {
    rps: f64,
}

fn run_wrk(wrk: &str, cpu: &str, port: u16, secs: u64, conns: u64) -> WrkResult {
    let out = Command::new("taskset")
        .args(["-c", cpu, wrk, "-t1"])
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .args(["-H", &format!("{}: {}", GUEST.0, GUEST.1)])
        .args(["-H", &format!("{}: {}", API_KEY.0, API_KEY.1)])
        .arg(format!("http://127.0.0.1:{port}/bench"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `taskset -c {cpu} {wrk}`: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    WrkResult { rps }
}

// ------------------------------------------------------------------------------------------------
// Measurement
// ------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Sample {
    rps: f64,
    cpu_us_per_req: f64,
    busy: f64,
}

/// One load window against `envoy`: wrk's req/s, Envoy CPU per 2xx response.
fn measure(
    envoy: &Envoy,
    wrk: &str,
    load_cpu: &str,
    secs: u64,
    conns: u64,
    tick_us: f64,
) -> Sample {
    let (ok0, bad0) = envoy.responses();
    let cpu0 = cpu_ticks(envoy.pid());
    let t0 = Instant::now();
    let w = run_wrk(wrk, load_cpu, envoy.port, secs, conns);
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_ticks(envoy.pid());
    let (ok1, bad1) = envoy.responses();
    assert_eq!(
        bad1,
        bad0,
        "non-2xx responses during the load window:\n{}",
        envoy.log()
    );
    let served = ok1 - ok0;
    assert!(served > 0, "no request served");
    Sample {
        rps: w.rps,
        cpu_us_per_req: (cpu1 - cpu0) as f64 * tick_us / served as f64,
        busy: (cpu1 - cpu0) as f64 * tick_us / 1e6 / wall,
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "HOLDS" } else { "MISSED" }
}

/// `(a)`, `(b)`, ... from a scenario label.
fn tag(s: &Scenario) -> &'static str {
    s.label.split_whitespace().next().unwrap_or(s.label)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let envoy_bin = env_or("ENVOY_BIN", "/work/main/.venv/bin/envoy");
    let module_dir = env_or("HTNN_MODULE_DIR", "/work/main/target/release");
    let module_dir = std::fs::canonicalize(&module_dir)
        .unwrap_or_else(|_| PathBuf::from(&module_dir))
        .display()
        .to_string();
    let wrk = env_or("WRK_BIN", "wrk");
    let rounds = env_num("BENCH_ROUNDS", 10).max(1);
    let secs = env_num("BENCH_SECS", 2).max(1);
    let warmup = env_num("BENCH_WARMUP_SECS", 2);
    let conns = env_num("BENCH_CONNS", 32).max(1);
    let envoy_cpu = env_or("BENCH_ENVOY_CPU", "0");
    let load_cpu = env_or("BENCH_LOAD_CPU", "1");

    assert!(
        PathBuf::from(&module_dir).join("libhtnn.so").is_file(),
        "libhtnn.so not found in {module_dir}; run `cargo build --release -p htnn-envoy-module` \
         or set HTNN_MODULE_DIR"
    );
    let version = Command::new(&envoy_bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run ENVOY_BIN={envoy_bin}: {e}"));
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    assert!(
        Command::new(&wrk).arg("--version").output().is_ok(),
        "`{wrk}` not found: apt-get install -y wrk (or set WRK_BIN)"
    );

    // For profiling one scenario by hand: print its bootstrap (ports 10000/9901) and stop.
    if let Ok(which) = std::env::var("BENCH_PRINT_CONFIG") {
        let s = SCENARIOS
            .iter()
            .find(|s| tag(s) == format!("({which})"))
            .unwrap_or_else(|| panic!("BENCH_PRINT_CONFIG={which:?}: expected a..e or e*"));
        println!("{}", bootstrap(s.kind, 10000, 9901));
        return;
    }

    let tick_us = 1e6 / clock_ticks_per_sec() as f64;
    println!("envoy:   {envoy_bin} ({version})");
    println!("module:  {module_dir}/libhtnn.so");
    println!(
        "setup:   envoy --concurrency 1 on CPU {envoy_cpu}; wrk -t1 -c{conns} on CPU {load_cpu}; \
         direct_response routes; {rounds} rounds x {secs}s per scenario (interleaved), {warmup}s warm-up"
    );

    // Start every Envoy up front (idle ones cost nothing measurable), then verify each.
    let mut envoys: Vec<Envoy> = SCENARIOS
        .iter()
        .map(|s| Envoy::start(s.kind, &envoy_bin, &module_dir, &envoy_cpu))
        .collect();
    for (s, e) in SCENARIOS.iter().zip(envoys.iter_mut()) {
        e.wait_ready();
        if let Err(msg) = verify(s, e) {
            panic!("{}: filters did not behave: {msg}\n{}", s.label, e.log());
        }
    }
    println!("verify:  every scenario's filters ran (checked through /verify)");

    if warmup > 0 {
        for e in &envoys {
            run_wrk(&wrk, &load_cpu, e.port, warmup, conns);
        }
    }

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); SCENARIOS.len()];
    for round in 0..rounds {
        // Alternate the order so that no scenario always runs right after another one.
        let mut order: Vec<usize> = (0..envoys.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            samples[i].push(measure(&envoys[i], &wrk, &load_cpu, secs, conns, tick_us));
        }
        let line: Vec<String> = SCENARIOS
            .iter()
            .zip(&samples)
            .map(|(sc, s)| {
                let x = s[round as usize];
                format!(
                    "{} {:.2} ({:.0}% busy)",
                    tag(sc),
                    x.cpu_us_per_req,
                    x.busy * 100.0
                )
            })
            .collect();
        println!("round {}: CPU µs/req  {}", round + 1, line.join("  "));
    }

    // Overhead vs (a) is paired per round (same moment, same machine load), then the median.
    let cpu: Vec<f64> = samples
        .iter()
        .map(|s| median(s.iter().map(|x| x.cpu_us_per_req).collect()))
        .collect();
    let rps: Vec<f64> = samples
        .iter()
        .map(|s| median(s.iter().map(|x| x.rps).collect()))
        .collect();
    let overhead: Vec<f64> = samples
        .iter()
        .map(|s| {
            median(
                s.iter()
                    .zip(&samples[0])
                    .map(|(x, a)| x.cpu_us_per_req - a.cpu_us_per_req)
                    .collect(),
            )
        })
        .collect();
    let spread: Vec<f64> = samples
        .iter()
        .map(|s| {
            let v: Vec<f64> = s.iter().map(|x| x.cpu_us_per_req).collect();
            let max = v.iter().copied().fold(f64::MIN, f64::max);
            let min = v.iter().copied().fold(f64::MAX, f64::min);
            max - min
        })
        .collect();

    println!();
    println!(
        "{:<34} {:>8} {:>11} {:>7} {:>12} {:>10} {:>10}",
        "scenario", "req/s", "CPU µs/req", "±range", "overhead µs", "ovh / (b)", "CPU / (a)"
    );
    for (i, s) in SCENARIOS.iter().enumerate() {
        let vs_b = if i == 0 {
            "-".to_owned()
        } else {
            format!("{:.2}x", overhead[i] / overhead[1])
        };
        println!(
            "{:<34} {:>8.0} {:>11.2} {:>7.2} {:>12.2} {:>10} {:>9.2}x",
            s.label,
            rps[i],
            cpu[i],
            spread[i],
            overhead[i],
            vs_b,
            cpu[i] / cpu[0]
        );
    }
    println!(
        "(CPU µs/req: median over rounds of Envoy utime+stime / 2xx served; ±range: max-min over \
         rounds; overhead: median of per-round (x - a))"
    );
    println!();

    // Indices into SCENARIOS.
    let (b, c, d, e, e_off) = (1, 2, 3, 4, 5);
    // x - y per round (same moment), then the median: less noisy than comparing two medians.
    let paired = |x: usize, y: usize| {
        median(
            samples[x]
                .iter()
                .zip(&samples[y])
                .map(|(p, q)| p.cpu_us_per_req - q.cpu_us_per_req)
                .collect(),
        )
    };
    let d_ratio = overhead[d] / overhead[b];
    println!(
        "target (d) overhead within 1.3x of (b): {} ({:.2} vs {:.2} µs/req: {:.2}x)",
        verdict(d_ratio <= 1.3),
        overhead[d],
        overhead[b],
        d_ratio
    );
    let e_minus_c = paired(e, c);
    println!(
        "target (e) cheaper than (c):            {} ({:.2} vs {:.2} CPU µs/req; (e)-(c) per round: {:+.2})",
        verdict(e_minus_c < 0.0),
        cpu[e],
        cpu[c],
        e_minus_c
    );
    let eoff_minus_c = paired(e_off, c);
    println!(
        "info   (e*) cheaper than (c):           {} ({:.2} vs {:.2} CPU µs/req; (e*)-(c) per round: {:+.2}; \
         the carrier costs {:.2} µs/req per stream)",
        verdict(eoff_minus_c < 0.0),
        cpu[e_off],
        cpu[c],
        eoff_minus_c,
        paired(e, e_off)
    );
    println!(
        "note: 2-core machine; other work on it (builds, tests) adds noise: compare runs with care."
    );
    drop(envoys);
}
