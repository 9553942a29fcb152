//! A small client for the Nacos 1.x naming OpenAPI over HTTP: the services of a group (all pages)
//! and the instances of one service, with optional username/password login.
//!
//! Only the reads the Nacos registry needs are implemented:
//! `GET {ctx}/v1/ns/service/list`, `GET {ctx}/v1/ns/instance/list` and `POST {ctx}/v1/auth/login`,
//! where `{ctx}` is the server URL's path, or `/nacos` when it has none. The access token goes in
//! the `accessToken` query parameter. Plain `http` only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

pub const DEFAULT_PORT: u16 = 8848;
pub const DEFAULT_NAMESPACE: &str = "public";
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";
/// The page size HTNN uses for the service list.
pub const DEFAULT_PAGE_SIZE: u32 = 1000;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

const DEFAULT_CONTEXT_PATH: &str = "/nacos";
const MAX_BODY_BYTES: usize = 16 << 20;
/// How much of an unexpected response body an error message quotes.
const BODY_EXCERPT_CHARS: usize = 300;
/// Used when the login response has no usable `tokenTtl`.
const FALLBACK_TOKEN_TTL: Duration = Duration::from_secs(60);

/// One instance of a service, as `instance/list` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub ip: String,
    pub port: u16,
    pub weight: f64,
    pub healthy: bool,
    pub enabled: bool,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid Nacos server URL {url:?}: {reason}")]
    InvalidServerUrl { url: String, reason: String },
    /// The request could not be sent or its response not read (connection refused, reset, ...).
    #[error("{request} failed: {reason}")]
    Transport { request: String, reason: String },
    #[error("{request} timed out after {after:?}")]
    Timeout { request: String, after: Duration },
    #[error("{request} returned HTTP {status}: {body}{hint}")]
    Status {
        request: String,
        status: StatusCode,
        body: String,
        hint: &'static str,
    },
    #[error("{request} returned an unexpected body ({reason}): {body}")]
    Decode {
        request: String,
        reason: String,
        body: String,
    },
}

/// A Nacos 1.x naming client bound to one server and namespace. Cheap to share behind an `Arc`;
/// concurrent calls share one login.
pub struct NacosV1Client {
    http: Client<HttpConnector, Full<Bytes>>,
    /// `http://host:port` followed by the context path, without a trailing slash.
    base: String,
    namespace: String,
    credentials: Option<Credentials>,
    token: Mutex<Option<Token>>,
    page_size: u32,
    timeout: Duration,
}

struct Credentials {
    username: String,
    password: String,
}

struct Token {
    value: String,
    refresh_at: Instant,
}

impl fmt::Debug for NacosV1Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NacosV1Client")
            .field("base", &self.base)
            .field("namespace", &self.namespace)
            .field("username", &self.credentials.as_ref().map(|c| &c.username))
            .field("page_size", &self.page_size)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl NacosV1Client {
    /// `server_url` is `http://host[:port][/context-path]` (port 8848 and context path `/nacos` by
    /// default); an empty `namespace` means `public`. With `auth`, every request carries a token
    /// from `auth/login`, renewed before its TTL runs out and once more on HTTP 403.
    pub fn new(
        server_url: &str,
        namespace: &str,
        auth: Option<(String, String)>,
    ) -> Result<Self, Error> {
        let base = base_url(server_url)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(DEFAULT_TIMEOUT));
        Ok(Self {
            http: Client::builder(TokioExecutor::new()).build(connector),
            base,
            namespace: non_empty_or(namespace, DEFAULT_NAMESPACE).to_owned(),
            credentials: auth.map(|(username, password)| Credentials { username, password }),
            token: Mutex::new(None),
            page_size: DEFAULT_PAGE_SIZE,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Services per `service/list` page (default 1000); tests use small pages.
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// Deadline for each HTTP exchange, response body included (default 5 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// All service names of `group` (empty means `DEFAULT_GROUP`), every page, sorted and
    /// de-duplicated (pages can overlap when services change while paging).
    pub async fn services(&self, group: &str) -> Result<Vec<String>, Error> {
        let group = non_empty_or(group, DEFAULT_GROUP);
        let page_size = self.page_size.to_string();
        let mut names = BTreeSet::new();
        let mut fetched = 0usize;
        for page_no in 1u64.. {
            let page_no_s = page_no.to_string();
            let what = format!(
                "GET {}/v1/ns/service/list (namespace {:?}, group {group:?}, page {page_no})",
                self.base, self.namespace
            );
            let page: ServicePage = self
                .get_json(
                    "/v1/ns/service/list",
                    &[
                        ("pageNo", &page_no_s),
                        ("pageSize", &page_size),
                        ("groupName", group),
                        ("namespaceId", &self.namespace),
                    ],
                    &what,
                )
                .await?;
            let doms = page.doms.unwrap_or_default();
            let n = doms.len();
            fetched += n;
            names.extend(doms);
            // A short page is the last one; `count` (the total) also ends it, which guards
            // against a server that ignores pageNo and repeats a full page forever.
            if n < self.page_size as usize || fetched >= page.count {
                break;
            }
        }
        Ok(names.into_iter().collect())
    }

    /// All instances of `service` in `group` (empty means `DEFAULT_GROUP`), healthy or not.
    pub async fn instances(&self, service: &str, group: &str) -> Result<Vec<Instance>, Error> {
        let group = non_empty_or(group, DEFAULT_GROUP);
        let what = format!(
            "GET {}/v1/ns/instance/list (namespace {:?}, group {group:?}, service {service:?})",
            self.base, self.namespace
        );
        let list: InstanceList = self
            .get_json(
                "/v1/ns/instance/list",
                &[
                    ("serviceName", service),
                    ("groupName", group),
                    ("namespaceId", &self.namespace),
                    ("healthyOnly", "false"),
                ],
                &what,
            )
            .await?;
        Ok(list
            .hosts
            .unwrap_or_default()
            .into_iter()
            .map(|h| Instance {
                ip: h.ip,
                port: h.port,
                weight: h.weight,
                healthy: h.healthy,
                enabled: h.enabled,
                metadata: h.metadata.unwrap_or_default(),
            })
            .collect())
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<T, Error> {
        let mut renewed = false;
        loop {
            let token = self.token().await?;
            let mut qs = form_urlencoded::Serializer::new(String::new());
            qs.extend_pairs(query);
            if let Some(token) = &token {
                qs.append_pair("accessToken", token);
            }
            let uri = format!("{}{path}?{}", self.base, qs.finish());
            let request = Request::builder()
                .method(Method::GET)
                .uri(uri)
                .header(header::ACCEPT, "application/json")
                .body(Full::default())
                .map_err(|e| transport(what, &e))?;
            let (status, body) = self.exchange(request, what).await?;
            // Nacos answers 403 for an expired or revoked token as well as for a missing
            // permission; one fresh login tells them apart.
            if status == StatusCode::FORBIDDEN && token.is_some() && !renewed {
                renewed = true;
                self.forget_token(token.as_deref()).await;
                continue;
            }
            if !status.is_success() {
                let hint = match (status, &self.credentials) {
                    (StatusCode::FORBIDDEN, None) => {
                        " (the server may require authentication: configure a username and password)"
                    }
                    (StatusCode::FORBIDDEN, Some(_)) => {
                        " (a fresh login did not help: check the user's permissions on the namespace)"
                    }
                    _ => "",
                };
                return Err(status_error(what, status, &body, hint));
            }
            return decode(what, &body);
        }
    }

    /// The current access token, logging in first when there is none or it is due for renewal.
    /// The lock is held across the login so concurrent callers share it.
    async fn token(&self) -> Result<Option<String>, Error> {
        let Some(credentials) = &self.credentials else {
            return Ok(None);
        };
        let mut slot = self.token.lock().await;
        if let Some(token) = slot.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(Some(token.value.clone()));
        }
        let token = self.login(credentials).await?;
        let value = token.value.clone();
        *slot = Some(token);
        Ok(Some(value))
    }

    /// Drops the stored token if it is still the one that was rejected (another caller may have
    /// renewed it meanwhile).
    async fn forget_token(&self, rejected: Option<&str>) {
        let mut slot = self.token.lock().await;
        if slot.as_ref().map(|t| t.value.as_str()) == rejected {
            *slot = None;
        }
    }

    async fn login(&self, credentials: &Credentials) -> Result<Token, Error> {
        let what = format!(
            "POST {}/v1/auth/login (user {:?})",
            self.base, credentials.username
        );
        // Credentials go in the form body, never in the URL, so they stay out of access logs.
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("username", &credentials.username)
            .append_pair("password", &credentials.password)
            .finish();
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/v1/auth/login", self.base))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| transport(&what, &e))?;
        let started = Instant::now();
        let (status, body) = self.exchange(request, &what).await?;
        if !status.is_success() {
            let hint = if matches!(status, StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED) {
                " (check the username and password)"
            } else {
                ""
            };
            return Err(status_error(&what, status, &body, hint));
        }
        let login: LoginResponse = decode(&what, &body)?;
        let value = login
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| decode_error(&what, "no accessToken", &body))?;
        let ttl = match login.token_ttl {
            Some(secs) if secs > 0 => Duration::from_secs(secs as u64),
            _ => FALLBACK_TOKEN_TTL,
        };
        // Renew at 80% of the TTL, counted from when the login was sent.
        Ok(Token {
            value,
            refresh_at: started + ttl.mul_f64(0.8),
        })
    }

    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
        what: &str,
    ) -> Result<(StatusCode, Bytes), Error> {
        let round_trip = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| transport(what, &e))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| transport(what, &*e))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, round_trip)
            .await
            .map_err(|_| Error::Timeout {
                request: what.to_owned(),
                after: self.timeout,
            })?
    }
}

#[derive(Deserialize)]
struct ServicePage {
    #[serde(default)]
    count: usize,
    doms: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct InstanceList {
    hosts: Option<Vec<RawInstance>>,
}

#[derive(Deserialize)]
struct RawInstance {
    ip: String,
    port: u16,
    #[serde(default = "default_weight")]
    weight: f64,
    #[serde(default = "yes")]
    healthy: bool,
    #[serde(default = "yes")]
    enabled: bool,
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoginResponse {
    access_token: Option<String>,
    token_ttl: Option<i64>,
}

fn default_weight() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

fn non_empty_or<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() { default } else { value }
}

/// `http://host:port/context` from the configured server URL.
fn base_url(server_url: &str) -> Result<String, Error> {
    let invalid = |reason: &str| Error::InvalidServerUrl {
        url: server_url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = server_url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(invalid(&format!(
                "scheme {other:?} is not supported, use http"
            )));
        }
        None => return Err(invalid("no scheme, expected http://host[:port]")),
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("no host"))?;
    if uri.query().is_some() {
        return Err(invalid("a query string is not allowed"));
    }
    let port = uri.port_u16().unwrap_or(DEFAULT_PORT);
    let context = match uri.path().trim_end_matches('/') {
        "" => DEFAULT_CONTEXT_PATH,
        path => path,
    };
    Ok(format!("http://{host}:{port}{context}"))
}

fn decode<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| decode_error(what, &e.to_string(), body))
}

fn decode_error(what: &str, reason: &str, body: &[u8]) -> Error {
    Error::Decode {
        request: what.to_owned(),
        reason: reason.to_owned(),
        body: excerpt(body),
    }
}

fn status_error(what: &str, status: StatusCode, body: &[u8], hint: &'static str) -> Error {
    Error::Status {
        request: what.to_owned(),
        status,
        body: excerpt(body),
        hint,
    }
}

/// A transport error with its whole source chain: hyper's own message ("client error (Connect)")
/// hides the cause one or two levels down.
fn transport(what: &str, error: &(dyn std::error::Error + 'static)) -> Error {
    let mut reason = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    Error::Transport {
        request: what.to_owned(),
        reason,
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "<empty body>".to_owned();
    }
    match text.char_indices().nth(BODY_EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex as StdMutex};

    use hyper::Response;
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    /// A request as the fake server saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        method: Method,
        path: String,
        query: BTreeMap<String, String>,
        body: String,
    }

    type Handler = dyn Fn(&Seen) -> (StatusCode, String, Duration) + Send + Sync;

    /// A tiny HTTP/1 server on 127.0.0.1:0 answering with `handler` and recording every request.
    struct FakeNacos {
        addr: SocketAddr,
        seen: Arc<StdMutex<Vec<Seen>>>,
    }

    impl FakeNacos {
        async fn start(
            handler: impl Fn(&Seen) -> (StatusCode, String, Duration) + Send + Sync + 'static,
        ) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let seen = Arc::new(StdMutex::new(Vec::new()));
            let handler: Arc<Handler> = Arc::new(handler);
            let log = seen.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let handler = handler.clone();
                    let log = log.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req: Request<Incoming>| {
                            let handler = handler.clone();
                            let log = log.clone();
                            async move {
                                let method = req.method().clone();
                                let path = req.uri().path().to_owned();
                                let query = form_urlencoded::parse(
                                    req.uri().query().unwrap_or("").as_bytes(),
                                )
                                .into_owned()
                                .collect();
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let seen = Seen {
                                    method,
                                    path,
                                    query,
                                    body: String::from_utf8_lossy(&body).into_owned(),
                                };
                                log.lock().unwrap().push(seen.clone());
                                let (status, body, delay) = handler(&seen);
                                tokio::time::sleep(delay).await;
                                let mut response = Response::new(Full::new(Bytes::from(body)));
                                *response.status_mut() = status;
                                Ok::<_, Infallible>(response)
                            }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            Self { addr, seen }
        }

        fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    fn ok(body: impl Into<String>) -> (StatusCode, String, Duration) {
        (StatusCode::OK, body.into(), Duration::ZERO)
    }

    fn q<'a>(seen: &'a Seen, key: &str) -> &'a str {
        seen.query
            .get(key)
            .map(String::as_str)
            .unwrap_or("<missing>")
    }

    #[test]
    fn server_url_defaults_and_rejections() {
        assert_eq!(
            base_url("http://10.0.0.1").unwrap(),
            "http://10.0.0.1:8848/nacos"
        );
        assert_eq!(
            base_url("http://nacos:80/").unwrap(),
            "http://nacos:80/nacos"
        );
        assert_eq!(
            base_url("http://nacos/custom/nacos/").unwrap(),
            "http://nacos:8848/custom/nacos"
        );
        assert_eq!(
            base_url("http://[::1]:18848").unwrap(),
            "http://[::1]:18848/nacos"
        );
        for bad in [
            "https://nacos",
            "nacos:8848",
            "http://",
            "http://nacos?x=1",
            "not a url",
        ] {
            let err = base_url(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidServerUrl { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn services_reads_every_page() {
        let all: Vec<String> = (0..2500).map(|i| format!("svc-{i:04}")).collect();
        let served = all.clone();
        let server = FakeNacos::start(move |seen| {
            let page: usize = q(seen, "pageNo").parse().unwrap();
            let size: usize = q(seen, "pageSize").parse().unwrap();
            let doms: Vec<&String> = served.iter().skip((page - 1) * size).take(size).collect();
            ok(serde_json::json!({ "count": served.len(), "doms": doms }).to_string())
        })
        .await;
        let client = NacosV1Client::new(&server.url(), "", None).unwrap();
        assert_eq!(client.services("").await.unwrap(), all);

        let seen = server.seen();
        assert_eq!(seen.len(), 3);
        for (i, s) in seen.iter().enumerate() {
            assert_eq!(s.method, Method::GET);
            assert_eq!(s.path, "/nacos/v1/ns/service/list");
            assert_eq!(q(s, "pageNo"), (i + 1).to_string());
            assert_eq!(q(s, "pageSize"), "1000");
            assert_eq!(q(s, "groupName"), "DEFAULT_GROUP");
            assert_eq!(q(s, "namespaceId"), "public");
            assert!(!s.query.contains_key("accessToken"));
        }
    }

    #[tokio::test]
    async fn services_stops_on_count_and_tolerates_null_doms() {
        // A server that ignores pageNo would loop forever without the count check.
        let server = FakeNacos::start(|seen| match q(seen, "groupName") {
            "empty" => ok(r#"{"count":0,"doms":null}"#),
            _ => ok(r#"{"count":2,"doms":["b","a"]}"#),
        })
        .await;
        let client = NacosV1Client::new(&server.url(), "ns-1", None)
            .unwrap()
            .with_page_size(2);
        assert_eq!(client.services("g").await.unwrap(), ["a", "b"]);
        assert!(client.services("empty").await.unwrap().is_empty());
        assert_eq!(server.seen().len(), 2);
        assert_eq!(q(&server.seen()[0], "namespaceId"), "ns-1");
    }

    #[tokio::test]
    async fn instances_are_parsed_with_defaults() {
        let server = FakeNacos::start(|_| {
            ok(r#"{"name":"G@@svc","hosts":[
                {"ip":"10.0.0.1","port":8080,"weight":2.5,"healthy":false,"enabled":true,
                 "metadata":{"protocol":"grpc","zone":"a"},"instanceId":"x","ephemeral":false},
                {"ip":"10.0.0.2","port":80}
            ]}"#)
        })
        .await;
        let client = NacosV1Client::new(&server.url(), "public", None).unwrap();
        let instances = client.instances("svc", "G").await.unwrap();
        assert_eq!(
            instances,
            [
                Instance {
                    ip: "10.0.0.1".into(),
                    port: 8080,
                    weight: 2.5,
                    healthy: false,
                    enabled: true,
                    metadata: [("protocol", "grpc"), ("zone", "a")]
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .into(),
                },
                Instance {
                    ip: "10.0.0.2".into(),
                    port: 80,
                    weight: 1.0,
                    healthy: true,
                    enabled: true,
                    metadata: BTreeMap::new(),
                },
            ]
        );
        let seen = &server.seen()[0];
        assert_eq!(seen.path, "/nacos/v1/ns/instance/list");
        assert_eq!(q(seen, "serviceName"), "svc");
        assert_eq!(q(seen, "groupName"), "G");
        assert_eq!(q(seen, "healthyOnly"), "false");
    }

    #[tokio::test]
    async fn login_token_is_sent_and_renewed_after_403() {
        let logins = Arc::new(StdMutex::new(0u32));
        let counter = logins.clone();
        let server = FakeNacos::start(move |seen| {
            if seen.path == "/nacos/v1/auth/login" {
                let mut n = counter.lock().unwrap();
                *n += 1;
                return ok(format!(
                    r#"{{"accessToken":"t{n}","tokenTtl":18000,"globalAdmin":true}}"#
                ));
            }
            // The first token is "expired" as soon as it is used.
            match q(seen, "accessToken") {
                "t1" => (
                    StatusCode::FORBIDDEN,
                    "token expired!".into(),
                    Duration::ZERO,
                ),
                _ => ok(r#"{"count":1,"doms":["svc"]}"#),
            }
        })
        .await;
        let client = NacosV1Client::new(
            &server.url(),
            "",
            Some(("nacos".into(), "p&ss word".into())),
        )
        .unwrap();
        assert_eq!(client.services("").await.unwrap(), ["svc"]);
        assert_eq!(client.services("").await.unwrap(), ["svc"]);
        assert_eq!(*logins.lock().unwrap(), 2);

        let seen = server.seen();
        let login = &seen[0];
        assert_eq!(login.method, Method::POST);
        let form: BTreeMap<String, String> = form_urlencoded::parse(login.body.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(form["username"], "nacos");
        assert_eq!(form["password"], "p&ss word");
        assert!(login.query.is_empty(), "credentials must not be in the URL");
        let tokens: Vec<&str> = seen
            .iter()
            .filter(|s| s.path != "/nacos/v1/auth/login")
            .map(|s| q(s, "accessToken"))
            .collect();
        assert_eq!(tokens, ["t1", "t2", "t2"]);
    }

    #[tokio::test]
    async fn persistent_403_and_failed_login_are_reported() {
        let server = FakeNacos::start(|seen| {
            if seen.path == "/nacos/v1/auth/login" {
                return match seen.body.contains("password=right") {
                    true => ok(r#"{"accessToken":"tok","tokenTtl":18000}"#),
                    false => (
                        StatusCode::FORBIDDEN,
                        "unknown user!".into(),
                        Duration::ZERO,
                    ),
                };
            }
            (
                StatusCode::FORBIDDEN,
                "no permission".into(),
                Duration::ZERO,
            )
        })
        .await;

        let client =
            NacosV1Client::new(&server.url(), "", Some(("u".into(), "wrong".into()))).unwrap();
        let err = client.services("").await.unwrap_err().to_string();
        assert!(
            err.contains("/v1/auth/login (user \"u\") returned HTTP 403"),
            "{err}"
        );
        assert!(
            err.contains("unknown user!") && err.contains("check the username"),
            "{err}"
        );
        assert!(!err.contains("wrong"), "the password leaked: {err}");

        let client =
            NacosV1Client::new(&server.url(), "", Some(("u".into(), "right".into()))).unwrap();
        let err = client.instances("svc", "").await.unwrap_err().to_string();
        assert!(
            err.contains("instance/list") && err.contains("service \"svc\""),
            "{err}"
        );
        assert!(
            err.contains("403") && err.contains("a fresh login did not help"),
            "{err}"
        );

        let client = NacosV1Client::new(&server.url(), "", None).unwrap();
        let err = client.services("").await.unwrap_err().to_string();
        assert!(err.contains("may require authentication"), "{err}");
    }

    #[tokio::test]
    async fn errors_name_the_request() {
        let server = FakeNacos::start(|seen| match q(seen, "groupName") {
            "slow" => (StatusCode::OK, "{}".into(), Duration::from_secs(5)),
            "broken" => ok("<html>gateway</html>"),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "boom".into(),
                Duration::ZERO,
            ),
        })
        .await;
        let client = NacosV1Client::new(&server.url(), "", None)
            .unwrap()
            .with_timeout(Duration::from_millis(200));

        let err = client.services("slow").await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("group \"slow\", page 1) timed out"),
            "{err}"
        );

        let err = client.services("broken").await.unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err}");
        assert!(err.to_string().contains("<html>gateway</html>"), "{err}");

        let err = client.instances("svc", "x").await.unwrap_err().to_string();
        assert!(
            err.contains("returned HTTP 500 Internal Server Error: boom"),
            "{err}"
        );

        // Nothing listens on a just-closed port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = NacosV1Client::new(&format!("http://127.0.0.1:{port}"), "", None).unwrap();
        let err = client.services("").await.unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err}");
        assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
    }
}
