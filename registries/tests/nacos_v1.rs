//! The Nacos v1 client against a real rnacos server (a Nacos-compatible server from crates.io).
//!
//! Needs the rnacos binary in `HTNN_RNACOS_BIN` (`make rnacos` builds it, ≈11 min once). The tests
//! fail, not skip, when it is missing.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use htnn_registries::nacos_v1::{Error, Instance, NacosV1Client};

const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "htnn-test-password";

/// One rnacos process on free loopback ports with its data in a temporary directory; killed on
/// drop.
struct Rnacos {
    child: Child,
    http_port: u16,
    open_api_auth: bool,
    dir: tempfile::TempDir,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Rnacos {
    async fn start(open_api_auth: bool) -> Self {
        let bin = match std::env::var_os("HTNN_RNACOS_BIN") {
            Some(bin) if !bin.is_empty() => PathBuf::from(bin),
            _ => panic!(
                "HTNN_RNACOS_BIN is not set: build rnacos with `make rnacos` (or \
                 RNACOS_VERSION=0.8.8 integration/scripts/build-rnacos.sh) and set \
                 HTNN_RNACOS_BIN=$HOME/.cache/htnn/rnacos-0.8.8/bin/rnacos"
            ),
        };
        assert!(
            bin.is_file(),
            "HTNN_RNACOS_BIN={} does not exist; run `make rnacos`",
            bin.display()
        );

        // Hold all three listeners at once so the ports are distinct, then free them for rnacos.
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(listeners);

        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("rnacos.log")).unwrap();
        let child = Command::new(&bin)
            .current_dir(dir.path())
            .env("RNACOS_SDK_HOST", "127.0.0.1")
            .env("RNACOS_HTTP_PORT", ports[0].to_string())
            .env("RNACOS_GRPC_PORT", ports[1].to_string())
            .env("RNACOS_HTTP_CONSOLE_PORT", ports[2].to_string())
            .env("RNACOS_DATA_DIR", dir.path().join("data"))
            .env("RNACOS_ENABLE_OPEN_API_AUTH", open_api_auth.to_string())
            .env("RNACOS_INIT_ADMIN_USERNAME", ADMIN)
            .env("RNACOS_INIT_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = Self {
            child,
            http_port: ports[0],
            open_api_auth,
            dir,
            http: Client::builder(TokioExecutor::new()).build_http(),
        };
        server.wait_ready().await;
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rnacos.log")).unwrap_or_default()
    }

    /// Ready once `/health` (outside the auth filter) says so and, with auth, a login succeeds.
    /// A login sent earlier can hit rnacos's raft state machine before it is wired up, which
    /// panics the actor and leaves every later login failing.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let health = format!("{}/health", self.url());
        let mut healthy = false;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "rnacos exited with {status} during startup; log:\n{}",
                    self.log()
                );
            }
            if !healthy {
                healthy = matches!(self.send(Method::GET, &health, None).await, Ok((200, _)));
            }
            if healthy && (!self.open_api_auth || self.login().await.is_ok()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rnacos not ready after 60 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        form: Option<String>,
    ) -> Result<(u16, String), String> {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .unwrap();
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok((
                status,
                String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            ))
        };
        tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .map_err(|_| format!("{uri} timed out"))?
    }

    async fn login(&self) -> Result<String, String> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("username", ADMIN)
            .append_pair("password", ADMIN_PASSWORD)
            .finish();
        let uri = format!("{}/nacos/v1/auth/login", self.url());
        let (status, body) = self.send(Method::POST, &uri, Some(form)).await?;
        if status != 200 {
            return Err(format!("login: HTTP {status}: {body}"));
        }
        let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        json["accessToken"].as_str().map(str::to_owned).ok_or(body)
    }

    /// Registers a persistent instance through the v1 OpenAPI.
    async fn register(
        &self,
        namespace: &str,
        group: &str,
        service: &str,
        i: &Instance,
        token: Option<&str>,
    ) {
        let metadata = serde_json::to_string(&i.metadata).unwrap();
        let port = i.port.to_string();
        let weight = i.weight.to_string();
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.extend_pairs([
            ("ip", i.ip.as_str()),
            ("port", &port),
            ("serviceName", service),
            ("groupName", group),
            ("namespaceId", namespace),
            ("metadata", &metadata),
            ("weight", &weight),
            ("healthy", if i.healthy { "true" } else { "false" }),
            ("enabled", if i.enabled { "true" } else { "false" }),
            ("ephemeral", "false"),
        ]);
        if let Some(token) = token {
            form.append_pair("accessToken", token);
        }
        let uri = format!("{}/nacos/v1/ns/instance", self.url());
        let (status, body) = self
            .send(Method::POST, &uri, Some(form.finish()))
            .await
            .unwrap();
        assert_eq!(
            status, 200,
            "registering {service} {}:{}: {body}",
            i.ip, i.port
        );
    }
}

impl Drop for Rnacos {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn instance(
    ip: &str,
    port: u16,
    weight: f64,
    enabled: bool,
    metadata: &[(&str, &str)],
) -> Instance {
    Instance {
        ip: ip.to_owned(),
        port,
        weight,
        healthy: true,
        enabled,
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[tokio::test]
async fn services_and_instances_from_rnacos() {
    let server = Rnacos::start(false).await;

    // Five services in one group, listed two per page: three pages, the last one short.
    let group = "htnn-group";
    let names: Vec<String> = (1..=5).map(|i| format!("svc-{i}")).collect();
    for (n, name) in names.iter().enumerate() {
        let i = instance("10.0.0.1", 8000 + n as u16, 1.0, true, &[]);
        server.register("public", group, name, &i, None).await;
    }
    let orders = [
        instance(
            "10.0.1.1",
            8080,
            2.5,
            true,
            &[("protocol", "grpc"), ("version", "v1"), ("dot.key", "a b")],
        ),
        instance("10.0.1.2", 9090, 0.5, false, &[("protocol", "HTTP")]),
    ];
    for i in &orders {
        server
            .register("public", "DEFAULT_GROUP", "orders_api", i, None)
            .await;
    }
    server
        .register(
            "ns-a",
            group,
            "private",
            &instance("10.0.2.1", 80, 1.0, true, &[]),
            None,
        )
        .await;

    for page_size in [2, 5, 1000] {
        let client = NacosV1Client::new(&server.url(), "", None)
            .unwrap()
            .with_page_size(page_size);
        assert_eq!(
            client.services(group).await.unwrap(),
            names,
            "page size {page_size}"
        );
    }
    let client = NacosV1Client::new(&server.url(), "public", None).unwrap();
    assert_eq!(client.services("").await.unwrap(), ["orders_api"]);
    assert!(client.services("no-such-group").await.unwrap().is_empty());

    // instance/list leaves out disabled instances (as Nacos does), so only the first is listed.
    assert_eq!(
        client.instances("orders_api", "").await.unwrap(),
        orders[..1]
    );
    assert_eq!(
        client.instances("svc-3", group).await.unwrap(),
        [instance("10.0.0.1", 8002, 1.0, true, &[])]
    );

    // Namespaces are separate.
    let ns_a = NacosV1Client::new(&server.url(), "ns-a", None).unwrap();
    assert_eq!(ns_a.services(group).await.unwrap(), ["private"]);
    assert_eq!(ns_a.instances("private", group).await.unwrap().len(), 1);
    assert!(ns_a.services("").await.unwrap().is_empty());
    assert!(client.instances("private", group).await.unwrap().is_empty());
}

#[tokio::test]
async fn login_against_rnacos_with_open_api_auth() {
    let server = Rnacos::start(true).await;
    let token = server.login().await.unwrap();
    let i = instance("10.0.3.1", 8443, 3.0, true, &[("protocol", "https")]);
    server
        .register("public", "DEFAULT_GROUP", "secured", &i, Some(&token))
        .await;

    let client = NacosV1Client::new(
        &server.url(),
        "",
        Some((ADMIN.into(), ADMIN_PASSWORD.into())),
    )
    .unwrap();
    assert_eq!(client.services("").await.unwrap(), ["secured"]);
    assert_eq!(client.instances("secured", "").await.unwrap(), [i]);

    let anonymous = NacosV1Client::new(&server.url(), "", None).unwrap();
    let err = anonymous.services("").await.unwrap_err();
    assert!(matches!(err, Error::Status { .. }), "{err}");
    assert!(
        err.to_string().contains("may require authentication"),
        "{err}"
    );

    let wrong =
        NacosV1Client::new(&server.url(), "", Some((ADMIN.into(), "wrong".into()))).unwrap();
    let err = wrong
        .instances("secured", "")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("/v1/auth/login (user \"admin\")"), "{err}");
    assert!(!err.contains("wrong"), "the password leaked: {err}");
}

#[tokio::test]
async fn unknown_service_against_rnacos() {
    let server = Rnacos::start(false).await;
    let client = NacosV1Client::new(&server.url(), "", None).unwrap();
    let result = client.instances("never-registered", "").await;
    // Nacos 2.x answers an empty list; record what rnacos does so a change is noticed.
    assert!(matches!(&result, Ok(v) if v.is_empty()), "{result:?}");
}
