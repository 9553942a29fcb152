//! The test environment: `htnn serve` on a config directory, istiod reading from it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tempfile::TempDir;

use crate::corpus::{self, ObjectKey};
use crate::kube::{KUBE_READY_TIMEOUT, Kube};
use crate::kubectl::Kubectl;
use crate::process::{ChildProcess, tail_file};
use crate::{free_ports, http, loopback};

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
const LOG_TAIL_BYTES: u64 = 12_000;

/// Paths of the binaries under test, from the environment.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub htnn: PathBuf,
    pub istiod: PathBuf,
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
}

impl Binaries {
    /// `HTNN_BIN` (default `target/debug/htnn`), `HTNN_ISTIOD_BIN` (default
    /// `.cache/istiod/bin/pilot-discovery`), `HTNN_KUBE_APISERVER_BIN` (default
    /// `.cache/kube/bin/kube-apiserver`) and `HTNN_ETCD_BIN` (default `.cache/kube/bin/etcd`);
    /// relative paths are relative to the repository. Missing binaries are an error that says
    /// how to get them.
    pub fn from_env() -> anyhow::Result<Self> {
        let resolve = crate::path_from_env;
        let htnn = resolve("HTNN_BIN", "target/debug/htnn");
        let istiod = resolve("HTNN_ISTIOD_BIN", ".cache/istiod/bin/pilot-discovery");
        let kube_apiserver = resolve("HTNN_KUBE_APISERVER_BIN", ".cache/kube/bin/kube-apiserver");
        let etcd = resolve("HTNN_ETCD_BIN", ".cache/kube/bin/etcd");
        let mut missing = Vec::new();
        if !htnn.is_file() {
            missing.push(format!(
                "htnn binary not found at {} — build it with `cargo build -p htnn-mcp-server` \
                 or point HTNN_BIN at it",
                htnn.display()
            ));
        }
        if !istiod.is_file() {
            missing.push(format!(
                "pilot-discovery not found at {} — build it with \
                 `integration/scripts/build-istiod.sh <istio module version>` (the Makefile passes \
                 ISTIO_MODULE_VERSION) or point HTNN_ISTIOD_BIN at it",
                istiod.display()
            ));
        }
        for (name, path, var) in [
            ("kube-apiserver", &kube_apiserver, "HTNN_KUBE_APISERVER_BIN"),
            ("etcd", &etcd, "HTNN_ETCD_BIN"),
        ] {
            if !path.is_file() {
                missing.push(format!(
                    "{name} not found at {} — build it with `make kube` (runs \
                     integration/scripts/build-kube.sh) or point {var} at it; istiod needs a real \
                     Kubernetes API server to start (see htnn_integration::kube)",
                    path.display()
                ));
            }
        }
        if !missing.is_empty() {
            bail!("{}", missing.join("\n"));
        }
        Ok(Self {
            htnn,
            istiod,
            kube_apiserver,
            etcd,
        })
    }
}

/// A running `htnn serve`.
pub struct Htnn {
    process: ChildProcess,
    pub xds_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub ready_after: Duration,
}

impl Htnn {
    /// Starts `htnn serve --config-dir` and waits (up to `timeout`) until `/readyz` answers 200.
    pub async fn start(
        bin: &Path,
        config_dir: &Path,
        xds_addr: SocketAddr,
        admin_addr: SocketAddr,
        log: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let args = vec!["--config-dir".into(), config_dir.as_os_str().to_owned()];
        Self::start_with_args(bin, &args, xds_addr, admin_addr, log, timeout).await
    }

    /// Starts `htnn serve <source args>` and waits (up to `timeout`) until `/readyz`
    /// answers 200.
    pub async fn start_with_args(
        bin: &Path,
        source_args: &[OsString],
        xds_addr: SocketAddr,
        admin_addr: SocketAddr,
        log: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .args(source_args)
            .arg("--xds-addr")
            .arg(xds_addr.to_string())
            .arg("--admin-addr")
            .arg(admin_addr.to_string())
            .env_remove("HTNN_CONFIG_DIR")
            .env_remove("KUBECONFIG")
            .env_remove("HTNN_XDS_ADDR")
            .env_remove("HTNN_ADMIN_ADDR");
        let start = Instant::now();
        let mut process = ChildProcess::spawn("htnn serve", cmd, log)?;
        loop {
            if let Some(status) = process.exited() {
                bail!(
                    "htnn serve exited ({status}) before /readyz answered 200; log:\n{}",
                    process.log_tail(LOG_TAIL_BYTES)
                );
            }
            if let Ok(r) = http::get(admin_addr, "/readyz", Duration::from_secs(1)).await
                && r.status == 200
            {
                break;
            }
            if start.elapsed() > timeout {
                bail!(
                    "htnn serve not ready after {timeout:?}; log:\n{}",
                    process.log_tail(LOG_TAIL_BYTES)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            process,
            xds_addr,
            admin_addr,
            ready_after: start.elapsed(),
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<http::Response> {
        http::get(self.admin_addr, path, HTTP_TIMEOUT).await
    }

    pub async fn metrics(&self) -> anyhow::Result<String> {
        let r = self.get("/metrics").await?;
        if r.status != 200 {
            bail!("/metrics answered {}", r.status);
        }
        Ok(r.text())
    }

    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    pub fn rss_kib(&self) -> Option<u64> {
        self.process.rss_kib()
    }
}

/// Tuning of one istiod beyond what every test environment sets.
#[derive(Debug, Clone, Default)]
pub struct IstiodOptions {
    /// Extra top-level lines for `mesh.yaml` (for example `enableAutoMtls: false\n`).
    pub mesh_extra: String,
    /// Extra environment variables (for example `PILOT_DEBOUNCE_AFTER`).
    pub env: Vec<(String, String)>,
}

/// A running istiod (`pilot-discovery discovery`) configured with `htnn serve` as its only
/// config source.
pub struct Istiod {
    process: ChildProcess,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub monitoring_addr: SocketAddr,
    pub workdir: PathBuf,
    pub ready_after: Duration,
}

impl Istiod {
    /// Writes `mesh.yaml` (root namespace `istio-system`, `mcp_addr` as the only config
    /// source, then [`IstiodOptions::mesh_extra`]) into `workdir`, starts istiod there and
    /// waits (up to `timeout`) until its xDS port accepts connections, which istiod opens only
    /// after it has received every config type from the MCP source.
    pub async fn start(
        bin: &Path,
        workdir: &Path,
        mcp_addr: SocketAddr,
        kubeconfig: &Path,
        options: &IstiodOptions,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let source = format!("xds://{mcp_addr}");
        Self::start_with_source(bin, workdir, &source, kubeconfig, options, timeout).await
    }

    /// [`Istiod::start`] with any `meshConfig.configSources` address as the only source, for
    /// example `fs:///abs/dir` (istiod's own file source, for comparisons). istiod opens its
    /// xDS port once that source has synced.
    pub async fn start_with_source(
        bin: &Path,
        workdir: &Path,
        config_source: &str,
        kubeconfig: &Path,
        options: &IstiodOptions,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(workdir)?;
        let mesh = workdir.join("mesh.yaml");
        std::fs::write(
            &mesh,
            format!(
                "rootNamespace: istio-system\nconfigSources:\n- address: {config_source}\n{}",
                options.mesh_extra
            ),
        )?;
        let ports = free_ports(4)?;
        let (grpc_addr, http_addr, monitoring_addr) =
            (loopback(ports[0]), loopback(ports[1]), loopback(ports[2]));
        let mut cmd = Command::new(bin);
        cmd.current_dir(workdir)
            .arg("discovery")
            // istiod does not start without a kube client, so it gets a real but empty
            // cluster (see crate::kube); all istio config comes from the MCP source in
            // mesh.yaml.
            .arg("--registries=Kubernetes")
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--meshConfig={}", mesh.display()))
            .arg(format!("--grpcAddr={grpc_addr}"))
            .arg(format!("--httpAddr={http_addr}"))
            .arg(format!("--monitoringAddr={monitoring_addr}"))
            .arg("--secureGRPCAddr=")
            .arg("--httpsAddr=")
            .arg("--ctrlz_address=127.0.0.1")
            .arg(format!("--ctrlz_port={}", ports[3]))
            .arg("--clusterID=Kubernetes")
            .env_remove("KUBECONFIG")
            .env("POD_NAMESPACE", "istio-system")
            .env("POD_NAME", "istiod-0")
            .env("ENABLE_CA_SERVER", "false")
            .env("PILOT_ENABLE_ALPN_FILTER", "false")
            .env("PILOT_ENABLE_METADATA_EXCHANGE", "false")
            .envs(options.env.iter().map(|(k, v)| (k, v)));
        let start = Instant::now();
        let mut process = ChildProcess::spawn("istiod", cmd, &workdir.join("istiod.log"))?;
        loop {
            if let Some(status) = process.exited() {
                bail!(
                    "istiod exited ({status}) before opening its xDS port; log:\n{}",
                    process.log_tail(LOG_TAIL_BYTES)
                );
            }
            if tokio::net::TcpStream::connect(grpc_addr).await.is_ok() {
                break;
            }
            if start.elapsed() > timeout {
                bail!(
                    "istiod did not open its xDS port {grpc_addr} within {timeout:?}; log:\n{}",
                    process.log_tail(LOG_TAIL_BYTES)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self {
            process,
            grpc_addr,
            http_addr,
            monitoring_addr,
            workdir: workdir.to_path_buf(),
            ready_after: start.elapsed(),
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<http::Response> {
        http::get(self.http_addr, path, HTTP_TIMEOUT).await
    }

    /// `/debug/configz`: every config object istiod holds, keyed by kind/namespace/name.
    pub async fn configz(&self) -> anyhow::Result<BTreeMap<ObjectKey, Value>> {
        let r = self.get("/debug/configz").await?;
        if r.status != 200 {
            bail!("/debug/configz answered {}: {}", r.status, r.text());
        }
        let list = match r.json()? {
            Value::Array(list) => list,
            Value::Null => Vec::new(),
            other => bail!(
                "/debug/configz is not a list: {}",
                other.to_string().chars().take(200).collect::<String>()
            ),
        };
        let mut out = BTreeMap::new();
        for object in list {
            let key = ObjectKey::of(&object)
                .with_context(|| format!("configz entry without kind/name: {object}"))?;
            out.insert(key, object);
        }
        Ok(out)
    }

    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }

    pub fn rss_kib(&self) -> Option<u64> {
        self.process.rss_kib()
    }
}

/// Rewrites one seeded config file: called with the file name and its text, returns the text
/// to write into the test's config directory.
pub type SeedRewrite = Box<dyn Fn(&str, String) -> anyhow::Result<String> + Send + Sync>;

/// How [`TestEnv::start_with`] sets up the environment.
#[derive(Default)]
pub struct EnvOptions {
    /// Config files (`*.yaml`, `*.yml`, `*.json`) copied into the fresh config directory.
    pub seed_dir: Option<PathBuf>,
    /// Applied to every seeded file on the way (for example to put free ports in).
    pub seed_rewrite: Option<SeedRewrite>,
    /// istiod's `mesh.yaml` additions and environment (see [`Istiod::start`]).
    pub istiod: IstiodOptions,
    /// Kubernetes mode: the seeded files are applied to the cluster with `kubectl` (after
    /// istio's CRDs and ours), and `htnn serve` watches the cluster instead of a directory.
    pub kubernetes: Option<KubeMode>,
}

/// How `htnn serve` runs in Kubernetes mode.
#[derive(Default, Clone)]
pub struct KubeMode {
    /// Extra `htnn serve` flags (e.g. `--lease-duration`, the webhook's).
    pub htnn_args: Vec<String>,
    /// Install only our CRDs, not istio's (to test kinds whose CRD appears later).
    pub without_istio_crds: bool,
    /// YAML applied with `kubectl` after the CRDs, before `htnn serve` starts.
    pub before_start: Vec<String>,
}

/// Everything one test needs: a temporary directory holding the config directory served by
/// `htnn serve`, istiod's working directory, the (empty) Kubernetes cluster istiod needs and
/// all logs. Dropping it stops the processes; if the test is failing, the logs are printed
/// first (including those registered with [`TestEnv::add_log`]).
pub struct TestEnv {
    pub binaries: Binaries,
    pub config_dir: PathBuf,
    pub htnn: Option<Htnn>,
    pub istiod: Istiod,
    pub kube: Kube,
    /// `kubectl` for [`TestEnv::kube`] (Kubernetes mode only).
    pub kubectl: Option<Kubectl>,
    htnn_log: PathBuf,
    /// What `htnn serve` is started with, besides its addresses.
    htnn_args: Vec<OsString>,
    xds_addr: SocketAddr,
    admin_addr: SocketAddr,
    extra_logs: Vec<(String, PathBuf)>,
    // Last: removed after the processes above are gone.
    tmp: TempDir,
}

pub const HTNN_READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const ISTIOD_READY_TIMEOUT: Duration = Duration::from_secs(90);

impl TestEnv {
    /// Copies the config files of `seed_dir` (if any) into a fresh config directory, then
    /// starts etcd + kube-apiserver and `htnn serve` (at once), then istiod.
    pub async fn start(seed_dir: Option<&Path>) -> anyhow::Result<Self> {
        Self::start_with(EnvOptions {
            seed_dir: seed_dir.map(Path::to_path_buf),
            ..EnvOptions::default()
        })
        .await
    }

    /// [`TestEnv::start`] with all options.
    pub async fn start_with(options: EnvOptions) -> anyhow::Result<Self> {
        let binaries = Binaries::from_env()?;
        let tmp = tempfile::Builder::new().prefix("htnn-it-").tempdir()?;
        let config_dir = tmp.path().join("config");
        std::fs::create_dir_all(&config_dir)?;
        if let Some(seed) = &options.seed_dir {
            seed_config(seed, &config_dir, options.seed_rewrite.as_ref())?;
        }
        let ports = free_ports(2)?;
        let (xds_addr, admin_addr) = (loopback(ports[0]), loopback(ports[1]));
        let htnn_log = tmp.path().join("htnn.log");
        let kube_dir = tmp.path().join("kube");
        let (kube, htnn, kubectl, htnn_args) = match &options.kubernetes {
            None => {
                let htnn_args = vec!["--config-dir".into(), config_dir.as_os_str().to_owned()];
                // Independent of each other: start both at once.
                let (kube, htnn) = tokio::try_join!(
                    Kube::start(
                        &binaries.kube_apiserver,
                        &binaries.etcd,
                        &kube_dir,
                        KUBE_READY_TIMEOUT,
                    ),
                    Htnn::start_with_args(
                        &binaries.htnn,
                        &htnn_args,
                        xds_addr,
                        admin_addr,
                        &htnn_log,
                        HTNN_READY_TIMEOUT,
                    ),
                )?;
                (kube, htnn, None, htnn_args)
            }
            Some(mode) => {
                let kube = Kube::start(
                    &binaries.kube_apiserver,
                    &binaries.etcd,
                    &kube_dir,
                    KUBE_READY_TIMEOUT,
                )
                .await?;
                let kubectl = Kubectl::from_env(kube.kubeconfig())?;
                if !mode.without_istio_crds {
                    kube.install_crds(&kubectl, &crate::kube::istio_crds_file()?)
                        .await?;
                }
                kube.install_crds(&kubectl, &crate::repo_root().join("deploy/crds.yaml"))
                    .await?;
                for yaml in &mode.before_start {
                    kubectl.apply_stdin(yaml).await?;
                }
                if options.seed_dir.is_some() {
                    kubectl.apply_file(&config_dir).await?;
                }
                let mut htnn_args: Vec<OsString> = vec![
                    "--kubeconfig".into(),
                    kube.kubeconfig().as_os_str().to_owned(),
                ];
                htnn_args.extend(mode.htnn_args.iter().map(OsString::from));
                let htnn = Htnn::start_with_args(
                    &binaries.htnn,
                    &htnn_args,
                    xds_addr,
                    admin_addr,
                    &htnn_log,
                    HTNN_READY_TIMEOUT,
                )
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{e:#}\n----- kube-apiserver log -----\n{}",
                        tail_file(kube.apiserver_log(), LOG_TAIL_BYTES)
                    )
                })?;
                (kube, htnn, Some(kubectl), htnn_args)
            }
        };
        let istiod = match Istiod::start(
            &binaries.istiod,
            &tmp.path().join("istiod"),
            xds_addr,
            kube.kubeconfig(),
            &options.istiod,
            ISTIOD_READY_TIMEOUT,
        )
        .await
        {
            Ok(i) => i,
            Err(e) => {
                bail!(
                    "{e:#}\n----- htnn serve log -----\n{}\n----- kube-apiserver log -----\n{}",
                    tail_file(&htnn_log, LOG_TAIL_BYTES),
                    tail_file(kube.apiserver_log(), LOG_TAIL_BYTES)
                );
            }
        };
        Ok(Self {
            binaries,
            config_dir,
            htnn: Some(htnn),
            istiod,
            kube,
            kubectl,
            htnn_log,
            htnn_args,
            xds_addr,
            admin_addr,
            extra_logs: Vec::new(),
            tmp,
        })
    }

    /// Adds a log file (of a process the test started next to this environment) to the
    /// failure report and to [`TestEnv::logs`].
    pub fn add_log(&mut self, name: &str, path: &Path) {
        self.extra_logs.push((name.to_string(), path.to_path_buf()));
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    pub fn htnn(&self) -> &Htnn {
        self.htnn.as_ref().expect("htnn serve is not running")
    }

    pub fn htnn_mut(&mut self) -> &mut Htnn {
        self.htnn.as_mut().expect("htnn serve is not running")
    }

    /// Writes a config file atomically (temporary name, then rename), as a deployment tool
    /// or a ConfigMap update would.
    pub fn write_config(&self, name: &str, content: &str) -> anyhow::Result<()> {
        let tmp = self.config_dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content)?;
        std::fs::rename(&tmp, self.config_dir.join(name))?;
        Ok(())
    }

    pub fn read_config(&self, name: &str) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.config_dir.join(name))?)
    }

    pub fn remove_config(&self, name: &str) -> anyhow::Result<()> {
        Ok(std::fs::remove_file(self.config_dir.join(name))?)
    }

    /// Kills `htnn serve` with SIGKILL (no graceful shutdown).
    pub fn kill_htnn(&mut self) {
        if let Some(mut h) = self.htnn.take() {
            h.process().kill();
        }
    }

    /// Starts `htnn serve` again on the same ports and config directory.
    pub async fn restart_htnn(&mut self) -> anyhow::Result<()> {
        self.kill_htnn();
        let htnn = Htnn::start_with_args(
            &self.binaries.htnn,
            &self.htnn_args,
            self.xds_addr,
            self.admin_addr,
            &self.htnn_log,
            HTNN_READY_TIMEOUT,
        )
        .await?;
        self.htnn = Some(htnn);
        Ok(())
    }

    /// Starts another `htnn serve` replica like the first one, on its own ports, logging to
    /// `<name>.log` (which failure reports include).
    pub async fn start_replica(&mut self, name: &str) -> anyhow::Result<Htnn> {
        let ports = free_ports(2)?;
        let log = self.tmp.path().join(format!("{name}.log"));
        let mut args = Vec::with_capacity(self.htnn_args.len() + 2);
        let mut given = self.htnn_args.iter();
        while let Some(a) = given.next() {
            if a == "--identity" {
                given.next();
            } else {
                args.push(a.clone());
            }
        }
        args.extend(["--identity".into(), name.into()]);
        let htnn = Htnn::start_with_args(
            &self.binaries.htnn,
            &args,
            loopback(ports[0]),
            loopback(ports[1]),
            &log,
            HTNN_READY_TIMEOUT,
        )
        .await?;
        self.add_log(name, &log);
        Ok(htnn)
    }

    /// `kubectl` for the cluster (Kubernetes mode only).
    pub fn kubectl(&self) -> &Kubectl {
        self.kubectl
            .as_ref()
            .expect("kubectl is set up in Kubernetes mode only")
    }

    /// The tails of all logs, for failure reports.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (name, path) in [
            ("htnn serve", self.htnn_log.clone()),
            ("istiod", self.istiod.workdir.join("istiod.log")),
            ("kube-apiserver", self.kube.apiserver_log().to_path_buf()),
            ("etcd", self.kube.etcd_log().to_path_buf()),
        ]
        .into_iter()
        .chain(
            self.extra_logs
                .iter()
                .map(|(name, path)| (name.as_str(), path.clone())),
        ) {
            out.push_str(&format!("\n----- {name}: {} -----\n", path.display()));
            out.push_str(&tail_file(&path, LOG_TAIL_BYTES));
        }
        out
    }
}

/// Copies the config files of `seed` into `config_dir`, through `rewrite` if given.
fn seed_config(
    seed: &Path,
    config_dir: &Path,
    rewrite: Option<&SeedRewrite>,
) -> anyhow::Result<()> {
    for entry in
        std::fs::read_dir(seed).with_context(|| format!("reading seed {}", seed.display()))?
    {
        let path = entry?.path();
        if !(path.is_file() && corpus::is_config_file(&path)) {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .context("file name")?;
        let target = config_dir.join(name);
        match rewrite {
            None => {
                std::fs::copy(&path, &target)?;
            }
            Some(rewrite) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let text = rewrite(name, text).with_context(|| format!("rewriting {name}"))?;
                std::fs::write(&target, text)?;
            }
        }
    }
    Ok(())
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== logs of the failed test (kept in {}) =====",
                self.tmp.path().display()
            );
            eprintln!("{}", self.logs());
            // Keep the directory for a post-mortem.
            if let Ok(placeholder) = TempDir::new() {
                let _ = std::mem::replace(&mut self.tmp, placeholder).keep();
            }
        }
        if let Some(h) = self.htnn.as_mut() {
            h.process().terminate(Duration::from_secs(2));
        }
        self.istiod.process().terminate(Duration::from_secs(2));
    }
}
