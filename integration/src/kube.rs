//! A real, empty Kubernetes control plane for istiod: etcd plus kube-apiserver on loopback.
//!
//! istiod cannot start without a Kubernetes client. Its ServiceEntry controller calls
//! `ConfigCluster()` on the multicluster controller, and that controller only exists
//! when there is a kube client (`pilot/pkg/serviceregistry/serviceentry/controller.go`,
//! since istio PR #58951). Without one, istiod panics with a nil pointer dereference
//! (`serviceentry.newController`) before it opens any port. So the harness runs istiod with
//! `--registries=Kubernetes --kubeconfig=<this cluster>`.
//!
//! The cluster starts empty: it holds no Services, no istio CRDs, only the namespace
//! `istio-system` (istiod's leader election writes its locks there). istiod sees it as a
//! cluster with no workloads. All istio config still comes only from `htnn serve` over MCP
//! (`meshConfig.configSources`). Tests of `htnn serve`'s Kubernetes source add CRDs with
//! [`Kube::install_crds`]: istio's own ([`istio_crds_file`], from the Go module istiod is built
//! from, never copied into this repository) and HTNN's.
//!
//! The binaries are real, unmodified etcd and kube-apiserver
//! (`integration/scripts/build-kube.sh`, `make kube`). The apiserver authenticates a fixed
//! bearer token ([`TOKEN`], group `system:masters`) and authorizes everything. HTTPS calls to
//! it go through the `curl` command line tool, so the harness needs no TLS stack.
//!
//! Every test environment starts its own cluster, at the same time as `htnn serve`: it is
//! ready in about 2–3 s on a loaded 2-core machine (measured 1.9–3.0 s, median ≈ 2.4 s). That
//! is too little to justify sharing one across tests. A shared cluster would live in a
//! `static`, which is never dropped, so its processes would outlive the test binary. Both
//! processes run in their own process groups and are killed (SIGKILL, no graceful shutdown
//! needed for throwaway data) when [`Kube`] is dropped, the apiserver first. (The order
//! matters for a graceful stop: an apiserver whose etcd is gone retries it for minutes.)

use std::ffi::OsStr;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::kubectl::Kubectl;
use crate::process::{ChildProcess, tail_file};
use crate::{free_ports, loopback, repo_root};

/// The bearer token the apiserver accepts (user `admin`, group `system:masters`).
pub const TOKEN: &str = "htnn-test-token";

/// How long `start` waits for `/readyz` to answer `ok`.
pub const KUBE_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Attempts when a port picked by [`free_ports`] was taken before the child bound it.
const START_ATTEMPTS: usize = 3;
const LOG_TAIL_BYTES: u64 = 8_000;
const CURL_TIMEOUT_SECS: &str = "5";
/// How long [`Kube::install_crds`] waits for the CRDs to be Established and served.
const CRD_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Kube::restart_apiserver`] lets the apiserver shut down gracefully.
const APISERVER_STOP_GRACE: Duration = Duration::from_secs(10);
/// Where istio's CRDs are inside the `istio.io/istio` Go module.
const ISTIO_CRDS_IN_MODULE: &str = "manifests/charts/base/files/crd-all.gen.yaml";

/// A running etcd and kube-apiserver. Dropping it kills both (their whole process groups).
pub struct Kube {
    // Declared (so dropped) before etcd: the apiserver goes first.
    apiserver: ChildProcess,
    etcd: ChildProcess,
    /// The apiserver's HTTPS address.
    pub addr: SocketAddr,
    /// From spawning etcd to `/readyz` answering `ok` and `istio-system` existing.
    pub ready_after: Duration,
    kubeconfig: PathBuf,
    /// What [`Kube::restart_apiserver`] starts again.
    apiserver_bin: PathBuf,
    dir: PathBuf,
    etcd_client: SocketAddr,
}

/// Why one start attempt failed.
enum StartError {
    /// A child could not bind its port: retry on fresh ports.
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl Kube {
    /// [`Kube::start`] with the binaries named by `HTNN_KUBE_APISERVER_BIN` and
    /// `HTNN_ETCD_BIN` (defaults `.cache/kube/bin/...`); a missing one is an error that says
    /// how to get it.
    pub async fn start_from_env(dir: &Path) -> anyhow::Result<Self> {
        let apiserver =
            crate::path_from_env("HTNN_KUBE_APISERVER_BIN", ".cache/kube/bin/kube-apiserver");
        let etcd = crate::path_from_env("HTNN_ETCD_BIN", ".cache/kube/bin/etcd");
        for (bin, var) in [
            (&apiserver, "HTNN_KUBE_APISERVER_BIN"),
            (&etcd, "HTNN_ETCD_BIN"),
        ] {
            if !bin.is_file() {
                bail!(
                    "{} not found: build it with `make kube` or point {var} at it",
                    bin.display()
                );
            }
        }
        Self::start(&apiserver, &etcd, dir, KUBE_READY_TIMEOUT).await
    }

    /// Starts etcd and kube-apiserver with their data, certificates, logs and the kubeconfig
    /// under `dir`, waits (up to `timeout`) until the apiserver is ready and creates the
    /// namespace `istio-system`.
    pub async fn start(
        apiserver_bin: &Path,
        etcd_bin: &Path,
        dir: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let sa_key = dir.join("sa.key");
        generate_rsa_key(&sa_key)?;
        let tokens = dir.join("tokens.csv");
        std::fs::write(&tokens, format!("{TOKEN},admin,admin,system:masters\n"))?;
        let mut attempt = 1;
        loop {
            match Self::start_once(apiserver_bin, etcd_bin, dir, timeout).await {
                Ok(kube) => return Ok(kube),
                Err(StartError::PortTaken(e)) if attempt < START_ATTEMPTS => {
                    eprintln!("kube: a port was taken, retrying on fresh ports: {e:#}");
                    attempt += 1;
                }
                Err(StartError::PortTaken(e) | StartError::Other(e)) => return Err(e),
            }
        }
    }

    async fn start_once(
        apiserver_bin: &Path,
        etcd_bin: &Path,
        dir: &Path,
        timeout: Duration,
    ) -> Result<Self, StartError> {
        let other = StartError::Other;
        let ports = free_ports(3).map_err(|e| other(e.into()))?;
        let (etcd_client, etcd_peer) = (loopback(ports[0]), loopback(ports[1]));
        let addr = loopback(ports[2]);
        // A fresh start: no data or logs of an earlier attempt.
        let etcd_data = dir.join("etcd-data");
        if etcd_data.exists() {
            std::fs::remove_dir_all(&etcd_data).map_err(|e| other(e.into()))?;
        }
        for log in ["etcd.log", "apiserver.log"] {
            let _ = std::fs::remove_file(dir.join(log));
        }
        let start = Instant::now();

        let mut cmd = Command::new(etcd_bin);
        cmd.arg(format!("--data-dir={}", etcd_data.display()))
            .arg(format!("--listen-client-urls=http://{etcd_client}"))
            .arg(format!("--advertise-client-urls=http://{etcd_client}"))
            .arg(format!("--listen-peer-urls=http://{etcd_peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://{etcd_peer}"))
            .arg(format!("--initial-cluster=default=http://{etcd_peer}"))
            // Throwaway data: durability only costs time.
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn");
        // etcd reads every flag from an ETCD_* variable too.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(name);
            }
        }
        let mut etcd = ChildProcess::spawn("etcd", cmd, &dir.join("etcd.log")).map_err(other)?;

        // The apiserver waits for etcd by itself, so both start at once.
        let cmd = apiserver_command(apiserver_bin, dir, etcd_client, addr);
        let mut apiserver = ChildProcess::spawn("kube-apiserver", cmd, &dir.join("apiserver.log"))
            .map_err(other)?;
        wait_ready(&mut etcd, &mut apiserver, addr, start, timeout).await?;

        let namespace =
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"istio-system"}}"#;
        match curl(addr, "POST", "/api/v1/namespaces", Some(namespace)).await {
            // 409: it exists already.
            Ok((201 | 409, _)) => {}
            Ok((status, body)) => {
                return Err(other(failure(
                    &format!("creating namespace istio-system: {status}: {body}"),
                    &etcd,
                    &apiserver,
                )));
            }
            Err(e) => {
                return Err(other(failure(
                    &format!("creating namespace istio-system: {e:#}"),
                    &etcd,
                    &apiserver,
                )));
            }
        }
        let ready_after = start.elapsed();

        let kubeconfig = dir.join("kubeconfig");
        // The apiserver's self-signed serving certificate, with the CA that signed it: clients
        // verify the server as they would on a real cluster.
        let ca = dir.join("certs").join("apiserver.crt");
        std::fs::write(&kubeconfig, kubeconfig_yaml(addr, &ca))
            .context("writing kubeconfig")
            .map_err(other)?;
        Ok(Self {
            apiserver,
            etcd,
            addr,
            ready_after,
            kubeconfig,
            apiserver_bin: apiserver_bin.to_path_buf(),
            dir: dir.to_path_buf(),
            etcd_client,
        })
    }

    /// Stops the kube-apiserver (SIGTERM, SIGKILL after a grace period) and starts it again on
    /// the same port with the same etcd, so its data survives; returns once `/readyz` answers
    /// `ok`. Clients see their connections, watches included, end and must reconnect.
    pub async fn restart_apiserver(&mut self) -> anyhow::Result<()> {
        self.apiserver.terminate(APISERVER_STOP_GRACE);
        let log = self.apiserver.log_path().to_path_buf();
        let mut attempt = 1;
        loop {
            // Later lines are the new process's.
            std::fs::OpenOptions::new()
                .append(true)
                .open(&log)
                .and_then(|mut f| writeln!(f, "----- htnn test harness: restarting -----"))
                .with_context(|| format!("writing to {}", log.display()))?;
            let cmd =
                apiserver_command(&self.apiserver_bin, &self.dir, self.etcd_client, self.addr);
            self.apiserver = ChildProcess::spawn("kube-apiserver", cmd, &log)?;
            let start = Instant::now();
            match wait_ready(
                &mut self.etcd,
                &mut self.apiserver,
                self.addr,
                start,
                KUBE_READY_TIMEOUT,
            )
            .await
            {
                Ok(()) => return Ok(()),
                // The port is ours, but something may have been handed it while it was free.
                Err(StartError::PortTaken(e)) if attempt < START_ATTEMPTS => {
                    eprintln!("kube: port {} is taken, retrying: {e:#}", self.addr.port());
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(StartError::PortTaken(e) | StartError::Other(e)) => {
                    return Err(e.context("restarting kube-apiserver"));
                }
            }
        }
    }

    /// Applies the CustomResourceDefinitions in `file` and waits until every one is
    /// Established and its resources are served. Server-side, so the apiserver keeps no copy of
    /// each CRD in a last-applied annotation (istio's DestinationRule CRD alone is ~160 KB).
    pub async fn install_crds(&self, kubectl: &Kubectl, file: &Path) -> anyhow::Result<()> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let crds = crd_list_paths(&text).with_context(|| format!("in {}", file.display()))?;
        if crds.is_empty() {
            bail!("{} holds no CustomResourceDefinition", file.display());
        }
        let apply: [&OsStr; 5] = [
            "apply".as_ref(),
            "--server-side".as_ref(),
            "--force-conflicts".as_ref(),
            "-f".as_ref(),
            file.as_os_str(),
        ];
        kubectl.run_ok(&apply).await?;
        let mut wait = vec![
            "wait".to_string(),
            "--for=condition=Established".into(),
            format!("--timeout={}s", CRD_READY_TIMEOUT.as_secs()),
        ];
        wait.extend(crds.iter().map(|(name, _)| format!("crd/{name}")));
        kubectl.run_ok(&wait).await?;
        // Established comes slightly before the resources are served.
        let deadline = Instant::now() + CRD_READY_TIMEOUT;
        let mut waiting = crds;
        loop {
            let mut still = Vec::new();
            let mut last = String::new();
            for (name, path) in waiting {
                match self.request("GET", &path, None).await? {
                    (200, _) => {}
                    (status, body) => {
                        last = format!("{name}: GET {path} answers {status}: {body}");
                        still.push((name, path));
                    }
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} of the CRDs in {} not served after {CRD_READY_TIMEOUT:?}; last: {last}",
                    still.len(),
                    file.display()
                );
            }
            waiting = still;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A kubeconfig for this cluster (bearer [`TOKEN`], the server verified against its own CA).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn apiserver_log(&self) -> &Path {
        self.apiserver.log_path()
    }

    pub fn etcd_log(&self) -> &Path {
        self.etcd.log_path()
    }

    /// `method path` against the apiserver as `admin`: status code and body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        json_body: Option<&str>,
    ) -> anyhow::Result<(u16, String)> {
        curl(self.addr, method, path, json_body).await
    }

    pub fn apiserver_rss_kib(&self) -> Option<u64> {
        self.apiserver.rss_kib()
    }

    pub fn etcd_rss_kib(&self) -> Option<u64> {
        self.etcd.rss_kib()
    }
}

/// The kube-apiserver's command line: `addr`, its state (certificates, keys) under `dir`.
fn apiserver_command(bin: &Path, dir: &Path, etcd_client: SocketAddr, addr: SocketAddr) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--etcd-servers=http://{etcd_client}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={}", addr.port()))
        // No kubernetes Service endpoints pointing at us (there is no node network).
        .arg("--endpoint-reconciler-type=none")
        .arg(format!("--cert-dir={}", dir.join("certs").display()))
        .arg(format!(
            "--service-account-key-file={}",
            dir.join("sa.key").display()
        ))
        .arg(format!(
            "--service-account-signing-key-file={}",
            dir.join("sa.key").display()
        ))
        .arg("--service-account-issuer=https://kubernetes.default.svc")
        .arg("--authorization-mode=AlwaysAllow")
        .arg(format!(
            "--token-auth-file={}",
            dir.join("tokens.csv").display()
        ))
        .arg("--service-cluster-ip-range=10.96.0.0/24")
        .env_remove("KUBECONFIG");
    cmd
}

/// Waits until the apiserver's `/readyz` answers `ok`, `timeout` after `start`.
async fn wait_ready(
    etcd: &mut ChildProcess,
    apiserver: &mut ChildProcess,
    addr: SocketAddr,
    start: Instant,
    timeout: Duration,
) -> Result<(), StartError> {
    loop {
        let exited = [
            etcd.exited()
                .map(|s| ("etcd", s, etcd.log_path().to_path_buf())),
            apiserver
                .exited()
                .map(|s| ("kube-apiserver", s, apiserver.log_path().to_path_buf())),
        ];
        if let Some((name, status, log)) = exited.into_iter().flatten().next() {
            let port_taken = tail_file(&log, LOG_TAIL_BYTES).contains("address already in use");
            let e = failure(
                &format!("{name} exited ({status}) before kube-apiserver was ready"),
                etcd,
                apiserver,
            );
            return Err(if port_taken {
                StartError::PortTaken(e)
            } else {
                StartError::Other(e)
            });
        }
        let last = match curl(addr, "GET", "/readyz", None).await {
            Ok((200, body)) if body.trim() == "ok" => return Ok(()),
            Ok((status, body)) => format!("/readyz answered {status}: {body}"),
            Err(e) => format!("{e:#}"),
        };
        if start.elapsed() > timeout {
            return Err(StartError::Other(failure(
                &format!("kube-apiserver not ready after {timeout:?}; last: {last}"),
                etcd,
                apiserver,
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `what`, with the tails of both logs.
fn failure(what: &str, etcd: &ChildProcess, apiserver: &ChildProcess) -> anyhow::Error {
    anyhow::anyhow!(
        "{what}\n----- kube-apiserver log: {} -----\n{}\n----- etcd log: {} -----\n{}",
        apiserver.log_path().display(),
        apiserver.log_tail(LOG_TAIL_BYTES),
        etcd.log_path().display(),
        etcd.log_tail(LOG_TAIL_BYTES),
    )
}

/// For each CustomResourceDefinition in `yaml` (other documents are skipped): its name and the
/// path that lists its resources (first served version, all namespaces).
fn crd_list_paths(yaml: &str) -> anyhow::Result<Vec<(String, String)>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).context("parsing YAML")?;
    let mut crds = Vec::new();
    for doc in docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
    {
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        let spec = &doc["spec"];
        let version = spec["versions"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["served"] == true))
            .and_then(|v| v["name"].as_str());
        match (
            spec["group"].as_str(),
            version,
            spec["names"]["plural"].as_str(),
        ) {
            (Some(group), Some(version), Some(plural)) if !name.is_empty() => crds.push((
                name.to_string(),
                format!("/apis/{group}/{version}/{plural}?limit=1"),
            )),
            _ => bail!("CRD {name:?} without name, group, a served version or plural"),
        }
    }
    Ok(crds)
}

/// istio's CRDs (`manifests/charts/base/files/crd-all.gen.yaml`) in the `istio.io/istio` Go
/// module at the version istiod is built from: `HTNN_ISTIO_MODULE_VERSION` (the Makefile
/// exports it), else the Makefile's `ISTIO_MODULE_VERSION`. The istiod build leaves the module
/// in the Go module cache; `go mod download` finds it there (or fetches it).
pub fn istio_crds_file() -> anyhow::Result<PathBuf> {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    if let Some(file) = FOUND.get() {
        return Ok(file.clone());
    }
    let version = match std::env::var("HTNN_ISTIO_MODULE_VERSION") {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => {
            let makefile = repo_root().join("Makefile");
            let text = std::fs::read_to_string(&makefile)
                .with_context(|| format!("reading {}", makefile.display()))?;
            makefile_default(&text, "ISTIO_MODULE_VERSION").with_context(|| {
                format!("no `ISTIO_MODULE_VERSION ?= ...` in {}", makefile.display())
            })?
        }
    };
    let dir = go_module_dir("istio.io/istio", &version)?;
    let file = dir.join(ISTIO_CRDS_IN_MODULE);
    if !file.is_file() {
        bail!(
            "istio.io/istio@{version} has no {ISTIO_CRDS_IN_MODULE} (in {})",
            dir.display()
        );
    }
    Ok(FOUND.get_or_init(|| file).clone())
}

/// The value of `var ?= value` in a Makefile.
fn makefile_default(text: &str, var: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once("?=")?;
        (name.trim() == var).then(|| value.trim().to_string())
    })
}

/// Where the Go module `path@version` is unpacked in the module cache, from
/// `go mod download -json`.
fn go_module_dir(path: &str, version: &str) -> anyhow::Result<PathBuf> {
    // Outside any module (and ignoring a -mod=vendor in the user's GOFLAGS).
    let tmp = tempfile::tempdir()?;
    let module = format!("{path}@{version}");
    let out = Command::new("go")
        .args(["mod", "download", "-json", &module])
        .current_dir(tmp.path())
        .env("GOFLAGS", "-mod=mod")
        .stdin(Stdio::null())
        .output()
        .context(
            "running `go mod download` (the go command is required; `make istiod` needs it too)",
        )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let info: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    match info["Dir"].as_str() {
        Some(dir) if out.status.success() => Ok(PathBuf::from(dir)),
        _ => bail!(
            "`go mod download -json {module}` failed ({}): {}{}",
            out.status,
            info["Error"].as_str().unwrap_or(&stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn kubeconfig_yaml(addr: SocketAddr, ca: &Path) -> String {
    let ca = ca.display();
    format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: htnn-test\n  cluster:\n    server: https://{addr}\n    certificate-authority: {ca}\n\
         contexts:\n- name: htnn-test\n  context:\n    cluster: htnn-test\n    user: admin\n\
         current-context: htnn-test\n\
         users:\n- name: admin\n  user:\n    token: {TOKEN}\n"
    )
}

/// A 2048-bit RSA private key (PEM) for signing service account tokens, via `openssl`.
fn generate_rsa_key(path: &Path) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(path)
        .arg("2048")
        .stdin(Stdio::null())
        .output()
        .context("running `openssl genrsa` (the openssl command line tool is required)")?;
    if !out.status.success() {
        bail!(
            "`openssl genrsa` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// One HTTPS request to the apiserver with `curl`: the status code and the body.
async fn curl(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    const MARK: &str = "\n--htnn-status:";
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["--silent", "--show-error", "--insecure"])
        .args(["--max-time", CURL_TIMEOUT_SECS])
        .args(["--request", method])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--write-out", &format!("{MARK}%{{http_code}}")]);
    if let Some(body) = json_body {
        cmd.args(["--header", "Content-Type: application/json"])
            .args(["--data-binary", body]);
    }
    cmd.arg(format!("https://{addr}{path}"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .context("running `curl` (the curl command line tool is required)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "curl {method} https://{addr}{path}: {} ({})",
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status
        );
    }
    let (body, status) = stdout
        .rsplit_once(MARK)
        .with_context(|| format!("curl output without status: {stdout}"))?;
    let status = status
        .trim()
        .parse()
        .with_context(|| format!("curl: bad status {status:?}"))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_names_server_and_token() {
        let text = kubeconfig_yaml(loopback(6443), Path::new("/tmp/ca.crt"));
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(
            doc.pointer("/clusters/0/cluster/server"),
            Some(&serde_json::json!("https://127.0.0.1:6443"))
        );
        assert_eq!(
            doc.pointer("/users/0/user/token"),
            Some(&serde_json::json!(TOKEN))
        );
        assert_eq!(doc["current-context"], "htnn-test");
        assert_eq!(
            doc.pointer("/clusters/0/cluster/certificate-authority"),
            Some(&serde_json::json!("/tmp/ca.crt"))
        );
    }

    #[test]
    fn reads_makefile_defaults() {
        let text = "# ISTIO_MODULE_VERSION ?= no\nISTIO_MODULE_VERSION ?= v0.0.0-1-abc\nX ?= y\n";
        assert_eq!(
            makefile_default(text, "ISTIO_MODULE_VERSION").as_deref(),
            Some("v0.0.0-1-abc")
        );
        assert_eq!(makefile_default(text, "KUBE_VERSION"), None);
        // The real one pins istio.
        let ours = std::fs::read_to_string(repo_root().join("Makefile")).unwrap();
        assert!(makefile_default(&ours, "ISTIO_MODULE_VERSION").is_some());
    }

    #[test]
    fn lists_the_crds_of_a_file() {
        let yaml = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: virtualservices.networking.istio.io}
spec:
  group: networking.istio.io
  names: {kind: VirtualService, plural: virtualservices}
  versions:
  - {name: v1alpha3, served: false}
  - {name: v1, served: true}
"#;
        assert_eq!(
            crd_list_paths(yaml).unwrap(),
            [(
                "virtualservices.networking.istio.io".to_string(),
                "/apis/networking.istio.io/v1/virtualservices?limit=1".to_string()
            )]
        );
        assert!(crd_list_paths("kind: CustomResourceDefinition\nmetadata: {name: x}\n").is_err());
    }
}
