//! HTTPS for the webhook: rustls with a certificate re-read from disk when its files change
//! (cert-manager and kubelet's secret volumes rotate them in place), and an accept loop that
//! serves each connection over HTTP/1.1.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How often a handshake may re-read the files. Reading two small files on a handshake now
/// and then costs less than a watcher task, and cannot miss a change the way a watcher on a
/// replaced symlink can.
const RECHECK: Duration = Duration::from_secs(1);
/// Bounds what a client that connects and stays silent can hold.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Also closes idle keep-alive connections (depending on the hyper version): harmless, the
/// apiserver's client reconnects, and a request never waits for headers that long.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the certificate in `cert`/`key`, reloading it when the files' contents change. A
/// pair that does not load is logged and the previous certificate kept.
pub(super) struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<Loaded>,
}

struct Loaded {
    key: Arc<CertifiedKey>,
    /// The contents last looked at (loaded or not): an unchanged bad pair is reported once.
    files: (Vec<u8>, Vec<u8>),
    checked: Instant,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    pub(super) fn new(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> anyhow::Result<Self> {
        let files = read_pair(cert, key)?;
        let certified = certified_key(cert, key, &files, &provider)?;
        Ok(Self {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            provider,
            state: Mutex::new(Loaded {
                key: Arc::new(certified),
                files,
                checked: Instant::now(),
            }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() < RECHECK {
            return state.key.clone();
        }
        state.checked = Instant::now();
        let files = match read_pair(&self.cert_path, &self.key_path) {
            Ok(f) => f,
            // Mid-rotation a file can be missing for a moment: keep serving.
            Err(e) => {
                tracing::warn!(error = %e, "webhook certificate not re-read; keeping the current one");
                return state.key.clone();
            }
        };
        if files == state.files {
            return state.key.clone();
        }
        match certified_key(&self.cert_path, &self.key_path, &files, &self.provider) {
            Ok(k) => {
                tracing::info!(cert = %self.cert_path.display(), "webhook certificate reloaded");
                state.key = Arc::new(k);
            }
            // Also when only one of the two files was rewritten so far: the next change
            // (the other file) retries.
            Err(e) => {
                tracing::error!(error = %e, "new webhook certificate rejected; keeping the current one")
            }
        }
        state.files = files;
        state.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read_pair(cert: &Path, key: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| anyhow!("cannot read the webhook {what} {}: {e}", p.display()))
    };
    Ok((read(cert, "certificate")?, read(key, "key")?))
}

fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    (cert, key): &(Vec<u8>, Vec<u8>),
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{}: invalid PEM certificate: {e}", cert_path.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{}: no PEM CERTIFICATE block", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| anyhow!("{}: no usable PEM private key: {e}", key_path.display()))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| anyhow!("{} with {}: {e}", key_path.display(), cert_path.display()))
}

/// TLS 1.2 and 1.3, ALPN `http/1.1` (the apiserver offers h2 too; one protocol is enough).
pub(super) fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    // Explicit rather than the process default: nothing else has to install one first.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = ReloadingCert::new(cert, key, provider.clone())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts connections until `shutdown`; each one is handshaken and served in its own task,
/// so a client that fails (or stalls) affects only itself.
pub(super) async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(config);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "webhook TLS handshake timed out");
                    return;
                }
            };
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "webhook connection failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::process::Command;

    use super::super::WebhookServer;
    use super::*;

    /// A self-signed certificate for 127.0.0.1 in `<dir>/<name>.{crt,key}`.
    async fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (crt, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=htnn",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .output()
            .await
            .expect("the openssl command line tool is required");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (crt, key)
    }

    /// POSTs a deny-worthy review with curl trusting `ca`: the response, or curl's error.
    async fn post(addr: SocketAddr, ca: &Path) -> Result<serde_json::Value, String> {
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "operation": "CREATE", "name": "c", "namespace": "ns",
                "kind": {"group": "htnn.mosn.io", "version": "v1", "kind": "Consumer"},
                "resource": {"group": "htnn.mosn.io", "version": "v1", "resource": "consumers"},
                "userInfo": {},
                "object": {"apiVersion": "htnn.mosn.io/v1", "kind": "Consumer",
                    "metadata": {"name": "c", "namespace": "ns"}, "spec": {}, "extra": 1},
            },
        });
        let out = Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--fail",
                "--max-time",
                "5",
                "--cacert",
            ])
            .arg(ca)
            .args([
                "--header",
                "Content-Type: application/json",
                "--data-binary",
            ])
            .arg(review.to_string())
            .arg(format!("https://{addr}/validate?timeout=10s"))
            .output()
            .await
            .expect("the curl command line tool is required");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_reviews_and_picks_up_a_rotated_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = self_signed(dir.path(), "tls").await;
        let old_ca = dir.path().join("old-ca.crt");
        std::fs::copy(&crt, &old_ca).unwrap();

        let missing = dir.path().join("missing.key");
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let e = WebhookServer::bind(any, &crt, &missing)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");

        let server = WebhookServer::bind(any, &crt, &key).await.unwrap();
        let addr = server.local_addr().unwrap();
        let denials = server.denials();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));

        // A client that refuses our certificate costs only its own connection.
        let system_cas = Path::new("/etc/ssl/certs/ca-certificates.crt");
        if system_cas.exists() {
            assert!(post(addr, system_cas).await.is_err());
        }
        let v = post(addr, &old_ca).await.unwrap();
        assert_eq!(v["response"]["uid"], "u-1");
        assert_eq!(v["response"]["allowed"], false);
        let msg = v["response"]["status"]["message"].as_str().unwrap();
        assert!(msg.contains("\"extra\""), "{msg}");
        assert_eq!(denials.get(), 1);

        // Rotate: new files renamed into place, as a secret volume update does.
        let (new_crt, new_key) = self_signed(dir.path(), "next").await;
        let new_ca = dir.path().join("new-ca.crt");
        std::fs::copy(&new_crt, &new_ca).unwrap();
        std::fs::rename(&new_key, &key).unwrap();
        std::fs::rename(&new_crt, &crt).unwrap();
        let deadline = Instant::now() + RECHECK * 5;
        while post(addr, &new_ca).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the new certificate is not served"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let refused = post(addr, &old_ca).await.unwrap_err();
        assert!(refused.contains("certificate"), "{refused}");

        // A broken pair is not loaded: the last good certificate keeps serving.
        std::fs::write(&crt, "not a certificate").unwrap();
        tokio::time::sleep(RECHECK + Duration::from_millis(200)).await;
        assert!(post(addr, &new_ca).await.is_ok());
        // Still checked afterwards (the error was for that content only).
        assert!(post(addr, &new_ca).await.is_ok());

        stop.send(()).unwrap();
        task.await.unwrap();
    }
}
