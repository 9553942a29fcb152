//! Test certificates for the admission webhook, made with the `openssl` command line tool
//! (the harness has no TLS or base64 crate of its own).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// A self-signed serving certificate and its key.
pub struct SelfSigned {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl SelfSigned {
    /// A certificate for `IP:127.0.0.1` (the apiserver refuses CN-only ones), valid one day,
    /// written as `<name>.crt` and `<name>.key` in `dir`.
    pub fn generate(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=htnn-webhook",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdin(Stdio::null())
            .output()
            .context("running `openssl req` (the openssl command line tool is required)")?;
        if !out.status.success() {
            bail!("openssl req: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(Self { cert, key })
    }

    /// The certificate, base64-encoded, as a webhook configuration's `caBundle` wants it.
    pub fn ca_bundle(&self) -> anyhow::Result<String> {
        let out = Command::new("openssl")
            .args(["base64", "-A", "-in"])
            .arg(&self.cert)
            .stdin(Stdio::null())
            .output()
            .context("running `openssl base64`")?;
        if !out.status.success() {
            bail!("openssl base64: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }
}
