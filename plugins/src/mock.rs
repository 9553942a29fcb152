//! An in-memory [`Host`] and a small Envoy-like driver, for tests of plugins and of the filter
//! manager (here and in other crates).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use crate::callout::{CalloutError, CalloutRequest, CalloutResult};
use crate::host::{BodyKind, HeaderMap, Host, LogLevel};
use crate::manager::{Action, FilterManager, LocalResponse};

/// A [`Host`] backed by plain vectors. Header names are stored lower-case.
#[derive(Debug, Default)]
pub struct MockHost {
    pub request_headers: Vec<(String, String)>,
    pub request_trailers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    pub response_trailers: Vec<(String, String)>,
    /// Body data visible to the current hook (see [`Host::body`]).
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    pub client_address: Option<SocketAddr>,
    pub filter_state: HashMap<String, Vec<u8>>,
    pub dynamic_metadata: Vec<(String, String, String)>,
    pub logs: RefCell<Vec<(LogLevel, String)>>,
}

impl MockHost {
    /// A request with `:method`, `:path`, `:authority` (`example.com`) and `:scheme`.
    pub fn request(method: &str, path: &str) -> Self {
        MockHost {
            request_headers: vec![
                (":method".into(), method.into()),
                (":path".into(), path.into()),
                (":authority".into(), "example.com".into()),
                (":scheme".into(), "http".into()),
            ],
            client_address: Some(SocketAddr::from(([127, 0, 0, 1], 40000))),
            ..MockHost::default()
        }
    }
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.add_header(HeaderMap::RequestHeaders, name, value);
        self
    }
    pub fn with_client(mut self, addr: &str) -> Self {
        self.client_address = Some(addr.parse().expect("socket address"));
        self
    }
    pub fn logs_contain(&self, needle: &str) -> bool {
        self.logs.borrow().iter().any(|(_, m)| m.contains(needle))
    }

    fn map(&self, map: HeaderMap) -> &Vec<(String, String)> {
        match map {
            HeaderMap::RequestHeaders => &self.request_headers,
            HeaderMap::RequestTrailers => &self.request_trailers,
            HeaderMap::ResponseHeaders => &self.response_headers,
            HeaderMap::ResponseTrailers => &self.response_trailers,
        }
    }
    fn map_mut(&mut self, map: HeaderMap) -> &mut Vec<(String, String)> {
        match map {
            HeaderMap::RequestHeaders => &mut self.request_headers,
            HeaderMap::RequestTrailers => &mut self.request_trailers,
            HeaderMap::ResponseHeaders => &mut self.response_headers,
            HeaderMap::ResponseTrailers => &mut self.response_trailers,
        }
    }
}

impl Host for MockHost {
    fn header(&self, map: HeaderMap, name: &str) -> Option<Cow<'_, str>> {
        self.map(map)
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| Cow::Borrowed(v.as_str()))
    }
    fn header_values(&self, map: HeaderMap, name: &str) -> Vec<Cow<'_, str>> {
        self.map(map)
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| Cow::Borrowed(v.as_str()))
            .collect()
    }
    fn headers(&self, map: HeaderMap) -> Vec<(String, String)> {
        self.map(map).clone()
    }
    fn set_header(&mut self, map: HeaderMap, name: &str, value: &str) {
        let m = self.map_mut(map);
        match m.iter().position(|(k, _)| k.eq_ignore_ascii_case(name)) {
            Some(i) => {
                m[i].1 = value.to_owned();
                let mut j = i + 1;
                while j < m.len() {
                    if m[j].0.eq_ignore_ascii_case(name) {
                        m.remove(j);
                    } else {
                        j += 1;
                    }
                }
            }
            None => m.push((name.to_ascii_lowercase(), value.to_owned())),
        }
    }
    fn add_header(&mut self, map: HeaderMap, name: &str, value: &str) {
        self.map_mut(map)
            .push((name.to_ascii_lowercase(), value.to_owned()));
    }
    fn remove_header(&mut self, map: HeaderMap, name: &str) {
        self.map_mut(map)
            .retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
    fn body(&self, kind: BodyKind) -> Cow<'_, [u8]> {
        match kind {
            BodyKind::Request => Cow::Borrowed(&self.request_body),
            BodyKind::Response => Cow::Borrowed(&self.response_body),
        }
    }
    fn set_body(&mut self, kind: BodyKind, data: &[u8]) {
        match kind {
            BodyKind::Request => self.request_body = data.to_vec(),
            BodyKind::Response => self.response_body = data.to_vec(),
        }
    }
    fn client_address(&self) -> Option<SocketAddr> {
        self.client_address
    }
    fn log_enabled(&self, _level: LogLevel) -> bool {
        true
    }
    fn log(&self, level: LogLevel, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }
    fn filter_state(&self, key: &str) -> Option<Cow<'_, [u8]>> {
        self.filter_state
            .get(key)
            .map(|v| Cow::Borrowed(v.as_slice()))
    }
    fn set_filter_state(&mut self, key: &str, value: &[u8]) {
        self.filter_state.insert(key.to_owned(), value.to_vec());
    }
    fn set_dynamic_metadata(&mut self, namespace: &str, key: &str, value: &str) {
        self.dynamic_metadata
            .push((namespace.to_owned(), key.to_owned(), value.to_owned()));
    }
}

/// Runs a future to completion on the current thread (for tests; no runtime needed).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// A response for [`Driver::run`] to play as the upstream.
#[derive(Debug, Clone, Default)]
pub struct UpstreamResponse {
    pub headers: Vec<(String, String)>,
    pub chunks: Vec<Vec<u8>>,
    pub trailers: Vec<(String, String)>,
}

impl UpstreamResponse {
    pub fn ok() -> Self {
        UpstreamResponse {
            headers: vec![(":status".into(), "200".into())],
            ..Default::default()
        }
    }
}

/// What happened to one exchange driven by [`Driver::run`].
#[derive(Debug, Default)]
pub struct Exchange {
    /// The local reply, if a plugin answered.
    pub local_reply: Option<LocalResponse>,
    /// Request headers as forwarded upstream (`None` if never forwarded).
    pub upstream_headers: Option<Vec<(String, String)>>,
    /// Request body bytes forwarded upstream, and in how many pieces.
    pub upstream_body: Vec<u8>,
    pub upstream_body_pieces: usize,
    /// Response headers and body as forwarded downstream.
    pub downstream_headers: Option<Vec<(String, String)>>,
    pub downstream_body: Vec<u8>,
    /// Delays requested by pending tasks.
    pub delays: Vec<Duration>,
    /// HTTP callouts the plugins made, in order.
    pub callouts: Vec<CalloutRequest>,
}

/// Answers the callouts of a [`Driver`] (see [`Driver::with_callouts`]).
pub type CalloutHandler<'a> = Box<dyn FnMut(&CalloutRequest) -> CalloutResult + 'a>;

/// Plays Envoy's part around a [`FilterManager`]: feeds headers, body chunks and trailers,
/// buffers on `Wait`, resolves `Pending` tasks with [`block_on`] and resumes, answers callouts
/// with its callout handler and resumes, forwards data on `Continue`. Not a model of every Envoy corner; enough to test the manager's contract.
pub struct Driver<'a> {
    pub manager: &'a mut FilterManager,
    pub host: &'a mut MockHost,
    pub exchange: Exchange,
    callouts: Option<CalloutHandler<'a>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Req,
    Resp,
}

impl<'a> Driver<'a> {
    pub fn new(manager: &'a mut FilterManager, host: &'a mut MockHost) -> Self {
        Driver {
            manager,
            host,
            exchange: Exchange::default(),
            callouts: None,
        }
    }

    /// Answers callouts with `handler` (without one, every callout fails to start).
    pub fn with_callouts(
        mut self,
        handler: impl FnMut(&CalloutRequest) -> CalloutResult + 'a,
    ) -> Self {
        self.callouts = Some(Box::new(handler));
        self
    }

    /// Sends the request (headers already in the host; `chunks` as body, optional trailers),
    /// then, unless a plugin replied, plays `response`. Calls `on_log` at the end.
    pub fn run(
        mut self,
        chunks: &[&[u8]],
        trailers: &[(&str, &str)],
        response: Option<UpstreamResponse>,
    ) -> Exchange {
        self.direction(
            Dir::Req,
            chunks.iter().map(|c| c.to_vec()).collect(),
            trailers_vec(trailers),
        );
        if self.exchange.local_reply.is_none()
            && let Some(resp) = response
        {
            self.host.response_headers = resp.headers;
            self.direction(Dir::Resp, resp.chunks, resp.trailers);
        }
        self.manager.on_log(self.host);
        self.exchange
    }

    fn direction(&mut self, dir: Dir, chunks: Vec<Vec<u8>>, trailers: Vec<(String, String)>) {
        let no_body = chunks.is_empty() && trailers.is_empty();
        let mut headers_sent = false;
        let mut held: Vec<u8> = Vec::new();
        self.body_mut(dir).clear();
        let a = match dir {
            Dir::Req => self.manager.decode_headers(self.host, no_body),
            Dir::Resp => self.manager.encode_headers(self.host, no_body),
        };
        if !self.settle(dir, a, &mut headers_sent, &mut held) {
            return;
        }
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let end = i + 1 == n && trailers.is_empty();
            // The hook sees what is held plus the new chunk.
            let body = self.body_mut(dir);
            *body = std::mem::take(&mut held);
            body.extend_from_slice(&chunk);
            let a = match dir {
                Dir::Req => self.manager.decode_data(self.host, end),
                Dir::Resp => self.manager.encode_data(self.host, end),
            };
            if !self.settle(dir, a, &mut headers_sent, &mut held) {
                return;
            }
        }
        if !trailers.is_empty() {
            match dir {
                Dir::Req => self.host.request_trailers = trailers,
                Dir::Resp => self.host.response_trailers = trailers,
            }
            *self.body_mut(dir) = std::mem::take(&mut held);
            let a = match dir {
                Dir::Req => self.manager.decode_trailers(self.host),
                Dir::Resp => self.manager.encode_trailers(self.host),
            };
            self.settle(dir, a, &mut headers_sent, &mut held);
        }
    }

    fn body_mut(&mut self, dir: Dir) -> &mut Vec<u8> {
        match dir {
            Dir::Req => &mut self.host.request_body,
            Dir::Resp => &mut self.host.response_body,
        }
    }

    /// Handles an action. Before and after every hook the host body holds every byte not yet
    /// forwarded. Returns false once the exchange is over (local reply).
    fn settle(
        &mut self,
        dir: Dir,
        mut action: Action,
        headers_sent: &mut bool,
        held: &mut Vec<u8>,
    ) -> bool {
        loop {
            match action {
                Action::Continue => {
                    self.forward(dir, headers_sent);
                    return true;
                }
                Action::Wait => {
                    *held = std::mem::take(self.body_mut(dir));
                    return true;
                }
                Action::LocalReply(r) => {
                    self.exchange.local_reply = Some(r);
                    return false;
                }
                Action::Pending(task) => {
                    if let Some(d) = task.delay() {
                        self.exchange.delays.push(d);
                    }
                    let completion = block_on(task.into_future());
                    // The "scheduled" hook: the host body is still what is held.
                    action = self.manager.resume(self.host, completion);
                }
                Action::Callout(task) => {
                    let request = task.request().clone();
                    let result = match self.callouts.as_mut() {
                        Some(handler) => handler(&request),
                        None => Err(CalloutError::StartFailed("no callout handler".to_owned())),
                    };
                    self.exchange.callouts.push(request);
                    action = self.manager.resume(self.host, task.complete(result));
                }
            }
        }
    }

    fn forward(&mut self, dir: Dir, headers_sent: &mut bool) {
        if !*headers_sent {
            *headers_sent = true;
            match dir {
                Dir::Req => {
                    self.exchange.upstream_headers = Some(self.host.request_headers.clone())
                }
                Dir::Resp => {
                    self.exchange.downstream_headers = Some(self.host.response_headers.clone())
                }
            }
        }
        let data = std::mem::take(self.body_mut(dir));
        if data.is_empty() {
            return;
        }
        match dir {
            Dir::Req => {
                self.exchange.upstream_body.extend_from_slice(&data);
                self.exchange.upstream_body_pieces += 1;
            }
            Dir::Resp => self.exchange.downstream_body.extend_from_slice(&data),
        }
    }
}

fn trailers_vec(t: &[(&str, &str)]) -> Vec<(String, String)> {
    t.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
