//! A real, empty Kubernetes control plane for istiod: etcd plus kube-apiserver on loopback.
//!
//! istiod cannot start without a Kubernetes client. Its ServiceEntry controller calls
//! `ConfigCluster()` on the multicluster controller, and that controller only exists
//! when there is a kube client (`pilot/pkg/serviceregistry/serviceentry/controller.go`,
//! since istio PR #58951). Without one, istiod panics with a nil pointer dereference
//! (`serviceentry.newController`) before it opens any port. So the harness runs istiod with
//! `--registries=Kubernetes --kubeconfig=<this cluster>`.
//!
//! The cluster is empty: it holds no Services, no istio CRDs, only the namespace
//! `istio-system` (istiod's leader election writes its locks there). istiod sees it as a
//! cluster with no workloads. All istio config still comes only from `htnn serve` over MCP
//! (`meshConfig.configSources`).
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
//! needed for throwaway data) when [`Kube`] is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::process::{ChildProcess, tail_file};
use crate::{free_ports, loopback};

/// The bearer token the apiserver accepts (user `admin`, group `system:masters`).
pub const TOKEN: &str = "htnn-test-token";

/// How long `start` waits for `/readyz` to answer `ok`.
pub const KUBE_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Attempts when a port picked by [`free_ports`] was taken before the child bound it.
const START_ATTEMPTS: usize = 3;
const LOG_TAIL_BYTES: u64 = 8_000;
const CURL_TIMEOUT_SECS: &str = "5";

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
}

/// Why one start attempt failed.
enum StartError {
    /// A child could not bind its port: retry on fresh ports.
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl Kube {
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
        let mut cmd = Command::new(apiserver_bin);
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
        let mut apiserver = ChildProcess::spawn("kube-apiserver", cmd, &dir.join("apiserver.log"))
            .map_err(other)?;

        let failure = |what: String, etcd: &ChildProcess, apiserver: &ChildProcess| {
            anyhow::anyhow!(
                "{what}\n----- kube-apiserver log: {} -----\n{}\n----- etcd log: {} -----\n{}",
                apiserver.log_path().display(),
                apiserver.log_tail(LOG_TAIL_BYTES),
                etcd.log_path().display(),
                etcd.log_tail(LOG_TAIL_BYTES),
            )
        };
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
                    format!("{name} exited ({status}) before kube-apiserver was ready"),
                    &etcd,
                    &apiserver,
                );
                return Err(if port_taken {
                    StartError::PortTaken(e)
                } else {
                    StartError::Other(e)
                });
            }
            let last = match curl(addr, "GET", "/readyz", None).await {
                Ok((200, body)) if body.trim() == "ok" => break,
                Ok((status, body)) => format!("/readyz answered {status}: {body}"),
                Err(e) => format!("{e:#}"),
            };
            if start.elapsed() > timeout {
                return Err(other(failure(
                    format!("kube-apiserver not ready after {timeout:?}; last: {last}"),
                    &etcd,
                    &apiserver,
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let namespace =
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"istio-system"}}"#;
        match curl(addr, "POST", "/api/v1/namespaces", Some(namespace)).await {
            // 409: it exists already.
            Ok((201 | 409, _)) => {}
            Ok((status, body)) => {
                return Err(other(failure(
                    format!("creating namespace istio-system: {status}: {body}"),
                    &etcd,
                    &apiserver,
                )));
            }
            Err(e) => {
                return Err(other(failure(
                    format!("creating namespace istio-system: {e:#}"),
                    &etcd,
                    &apiserver,
                )));
            }
        }
        let ready_after = start.elapsed();

        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(addr))
            .context("writing kubeconfig")
            .map_err(other)?;
        Ok(Self {
            apiserver,
            etcd,
            addr,
            ready_after,
            kubeconfig,
        })
    }

    /// A kubeconfig for this cluster (bearer [`TOKEN`], server certificate not verified).
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

fn kubeconfig_yaml(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: htnn-test\n  cluster:\n    server: https://{addr}\n    insecure-skip-tls-verify: true\n\
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
        let text = kubeconfig_yaml(loopback(6443));
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
    }
}
