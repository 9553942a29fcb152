//! `kubectl` against a test cluster ([`Kube`](crate::kube::Kube)).
//!
//! The binary is `HTNN_KUBECTL_BIN` (built at the pinned Kubernetes version by
//! `integration/scripts/build-kube.sh`, `make kube`), else `kubectl` on `PATH`. Every command
//! runs with the cluster's kubeconfig, no user preferences (`KUBERC=off`) and a discovery cache
//! beside the kubeconfig, so tests share nothing with `~/.kube` or with each other. Commands
//! time out ([`KUBECTL_TIMEOUT`]); a failed one is an error that carries the command line, its
//! stdout and its stderr.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;

/// How long one `kubectl` command may take.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

/// `kubectl` for one cluster.
#[derive(Clone, Debug)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    timeout: Duration,
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

impl Kubectl {
    /// `bin` with `kubeconfig`.
    pub fn new(bin: impl Into<PathBuf>, kubeconfig: &Path) -> Self {
        Self {
            bin: bin.into(),
            kubeconfig: kubeconfig.to_path_buf(),
            timeout: KUBECTL_TIMEOUT,
        }
    }

    /// `HTNN_KUBECTL_BIN` (which must exist when set), else `kubectl` on `PATH`.
    pub fn from_env(kubeconfig: &Path) -> anyhow::Result<Self> {
        const HINT: &str = "build it with `make kube` (the Makefile sets HTNN_KUBECTL_BIN) or \
                            point HTNN_KUBECTL_BIN at a kubectl";
        let bin = if std::env::var_os("HTNN_KUBECTL_BIN").is_some() {
            let bin = crate::path_from_env("HTNN_KUBECTL_BIN", "kubectl");
            if !bin.is_file() {
                bail!("HTNN_KUBECTL_BIN={} does not exist: {HINT}", bin.display());
            }
            bin
        } else {
            find_on_path("kubectl").with_context(|| {
                format!("HTNN_KUBECTL_BIN is not set and there is no kubectl on PATH: {HINT}")
            })?
        };
        Ok(Self::new(bin, kubeconfig))
    }

    /// The same, with another per-command timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs `kubectl <args>`. A command that ran and failed is `Ok` with its status; `Err` is
    /// for one that could not start or timed out.
    pub async fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> anyhow::Result<Output> {
        self.run_with_stdin(args, None).await
    }

    /// Runs `kubectl <args>` with `input` on its stdin (for `-f -`).
    pub async fn run_with_stdin<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        input: Option<&str>,
    ) -> anyhow::Result<Output> {
        let line = CommandLine(args.iter().map(|a| a.as_ref().to_owned()).collect());
        let cache = self
            .kubeconfig
            .parent()
            .unwrap_or(Path::new("."))
            .join("kubectl-cache");
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .env_remove("KUBECONFIG")
            .env("KUBERC", "off")
            .env("KUBECACHEDIR", cache)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A timed-out command is killed when its future is dropped.
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({line})", self.bin.display()))?;
        let stdin = child.stdin.take();
        let feed = async move {
            if let (Some(mut stdin), Some(input)) = (stdin, input) {
                // kubectl reads all of stdin before it answers; a write error shows as its
                // failure (reported with its stderr) rather than as ours.
                let _ = stdin.write_all(input.as_bytes()).await;
            }
        };
        let run = async { tokio::join!(feed, child.wait_with_output()).1 };
        let out = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| anyhow::anyhow!("{line}: no answer after {:?}", self.timeout))?
            .with_context(|| format!("waiting for {line}"))?;
        Ok(Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs `kubectl <args>` and returns its stdout; a non-zero exit is an error.
    pub async fn run_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> anyhow::Result<String> {
        self.checked(args, None).await
    }

    /// `kubectl apply -f <path>` (a file or a directory of manifests); its stdout.
    pub async fn apply_file(&self, path: &Path) -> anyhow::Result<String> {
        let f = path.as_os_str();
        self.checked(&[OsStr::new("apply"), OsStr::new("-f"), f], None)
            .await
    }

    /// `kubectl apply -f -` of `yaml`; its stdout.
    pub async fn apply_stdin(&self, yaml: &str) -> anyhow::Result<String> {
        self.checked(&["apply", "-f", "-"], Some(yaml)).await
    }

    /// `kubectl delete -f -` of `yaml` (the objects it names); its stdout.
    pub async fn delete_stdin(&self, yaml: &str) -> anyhow::Result<String> {
        self.checked(&["delete", "-f", "-"], Some(yaml)).await
    }

    /// `kubectl delete <kind> <name> --namespace <namespace>` (kubectl ignores the namespace
    /// for a cluster-scoped kind); its stdout. kubectl waits until the object is gone, which
    /// never happens for one held by a finalizer: a test cluster has no controllers (a
    /// namespace, for one, stays `Terminating`).
    pub async fn delete(&self, kind: &str, namespace: &str, name: &str) -> anyhow::Result<String> {
        self.checked(&["delete", kind, name, "--namespace", namespace], None)
            .await
    }

    /// `kubectl get <args> -o json`, parsed.
    pub async fn get_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend(["--output", "json"]);
        let stdout = self.checked(&all, None).await?;
        serde_json::from_str(&stdout)
            .with_context(|| format!("kubectl {}: output is not JSON:\n{stdout}", all.join(" ")))
    }

    async fn checked<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        input: Option<&str>,
    ) -> anyhow::Result<String> {
        let out = self.run_with_stdin(args, input).await?;
        if !out.success() {
            let line = CommandLine(args.iter().map(|a| a.as_ref().to_owned()).collect());
            bail!(
                "{line} failed ({})\n----- stdout -----\n{}\n----- stderr -----\n{}",
                out.status,
                out.stdout.trim_end(),
                out.stderr.trim_end()
            );
        }
        Ok(out.stdout)
    }
}

/// `kubectl a b c`, for messages.
struct CommandLine(Vec<OsString>);

impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("kubectl")?;
        for a in &self.0 {
            write!(f, " {}", a.to_string_lossy())?;
        }
        Ok(())
    }
}

/// The first executable file called `name` in a `PATH` directory.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_reads_like_a_shell_line() {
        let line = CommandLine(vec!["get".into(), "vs".into(), "-A".into()]);
        assert_eq!(line.to_string(), "kubectl get vs -A");
    }

    #[test]
    fn finds_sh_on_path() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("htnn-surely-not-a-command").is_none());
    }

    /// An executable `kubectl` shell script in `dir`. Written by a child `sh`, so no thread of
    /// this process holds it open for writing while another test forks (`ETXTBSY` on exec).
    fn fake_kubectl(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("kubectl");
        let status = std::process::Command::new("sh")
            .args([
                "-c",
                r#"printf '#!/bin/sh\n%s\n' "$1" >"$2" && chmod +x "$2""#,
                "sh",
            ])
            .arg(body)
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        path
    }

    #[tokio::test]
    async fn failures_carry_stdout_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let fake = fake_kubectl(dir.path(), "cat >/dev/null; echo out; echo err >&2; exit 3");
        let k = Kubectl::new(&fake, &dir.path().join("kubeconfig"));
        let e = k.apply_stdin("kind: X").await.unwrap_err().to_string();
        assert!(e.starts_with("kubectl apply -f - failed"), "{e}");
        assert!(e.contains("\nout\n") && e.ends_with("\nerr"), "{e}");
        let out = k.run(&["version"]).await.unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, "out\n");
    }

    #[tokio::test]
    async fn passes_stdin_and_the_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let fake = fake_kubectl(dir.path(), r#"echo "$@"; cat"#);
        let k = Kubectl::new(&fake, Path::new("/k/config"));
        let out = k
            .run_with_stdin(&["apply", "-f", "-"], Some("kind: X\n"))
            .await
            .unwrap();
        assert_eq!(out.stdout, "--kubeconfig=/k/config apply -f -\nkind: X\n");
    }

    #[tokio::test]
    async fn commands_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let fake = fake_kubectl(dir.path(), "exec sleep 30");
        let k = Kubectl::new(&fake, &dir.path().join("kubeconfig"))
            .with_timeout(Duration::from_millis(200));
        let e = k.run(&["get", "pods"]).await.unwrap_err().to_string();
        assert!(e.contains("kubectl get pods: no answer after"), "{e}");
    }
}
