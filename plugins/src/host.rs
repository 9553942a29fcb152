//! What a plugin may ask of the proxy hosting it.
//!
//! The Envoy module implements [`Host`] over Envoy's C ABI; [`crate::mock::MockHost`] implements it
//! in memory for tests. Plugins never see the host directly: they get a [`crate::Ctx`], which
//! derefs to `dyn Host` and adds the per-request state owned by the filter manager (consumer,
//! plugin state).

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;

use crate::http;

/// One of the four header maps of a stream. Pseudo-headers (`:path`, `:method`, `:authority`,
/// `:scheme`, `:status`) live in the request/response header maps, as in Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderMap {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
}

/// Which body a body accessor refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyKind {
    Request,
    Response,
}

/// Log severity, mapped by the host onto its own levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// The proxy side of one HTTP stream.
///
/// Header names are case-insensitive; implementations may expect lower-case names (all names
/// used by this crate are lower-case). Values returned by getters may borrow from the host and
/// are valid while `self` is borrowed (for Envoy: until the end of the current hook or the next
/// setter call, which the borrow checker enforces through `&mut self`).
///
/// Body contract: [`Host::body`] returns the body data the current hook is looking at and that
/// has not been passed on yet — the data the host holds buffered for this filter plus the chunk
/// of the current data hook, if any. In a `*_data` hook that is the current chunk (plus anything
/// held back earlier); in `decode_request` / `encode_response` it is the whole body.
pub trait Host {
    /// First value of header `name` in `map`.
    fn header(&self, map: HeaderMap, name: &str) -> Option<Cow<'_, str>>;
    /// All values of header `name` in `map`, in order.
    fn header_values(&self, map: HeaderMap, name: &str) -> Vec<Cow<'_, str>>;
    /// Every header of `map`, in order (slow path: allocates).
    fn headers(&self, map: HeaderMap) -> Vec<(String, String)>;
    /// Replaces all values of `name` with `value`.
    fn set_header(&mut self, map: HeaderMap, name: &str, value: &str);
    /// Appends a value of `name`.
    fn add_header(&mut self, map: HeaderMap, name: &str, value: &str);
    /// Removes all values of `name`.
    fn remove_header(&mut self, map: HeaderMap, name: &str);

    /// The body data visible to the current hook (see the trait docs).
    fn body(&self, kind: BodyKind) -> Cow<'_, [u8]>;
    /// Replaces the body data visible to the current hook with `data`.
    fn set_body(&mut self, kind: BodyKind, data: &[u8]);

    /// Address of the downstream peer (Envoy attribute `source.address`).
    fn client_address(&self) -> Option<SocketAddr>;

    /// Whether a message at `level` would be logged; lets callers skip formatting.
    fn log_enabled(&self, level: LogLevel) -> bool;
    /// Writes one log line. Never pass credentials here.
    fn log(&self, level: LogLevel, message: &str);

    /// Envoy filter state (bytes) under `key`, if the host has such a thing.
    fn filter_state(&self, _key: &str) -> Option<Cow<'_, [u8]>> {
        None
    }
    /// Sets Envoy filter state (bytes). Hosts without filter state ignore it.
    fn set_filter_state(&mut self, _key: &str, _value: &[u8]) {}
    /// Sets a string in the stream's dynamic metadata (`namespace` / `key`).
    fn set_dynamic_metadata(&mut self, _namespace: &str, _key: &str, _value: &str) {}
    /// Name of the matched route, if known.
    fn route_name(&self) -> Option<Cow<'_, str>> {
        None
    }

    // ---- provided conveniences -------------------------------------------------------------

    fn request_header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.header(HeaderMap::RequestHeaders, name)
    }
    fn set_request_header(&mut self, name: &str, value: &str) {
        self.set_header(HeaderMap::RequestHeaders, name, value);
    }
    fn remove_request_header(&mut self, name: &str) {
        self.remove_header(HeaderMap::RequestHeaders, name);
    }
    fn response_header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.header(HeaderMap::ResponseHeaders, name)
    }
    fn set_response_header(&mut self, name: &str, value: &str) {
        self.set_header(HeaderMap::ResponseHeaders, name, value);
    }
    fn remove_response_header(&mut self, name: &str) {
        self.remove_header(HeaderMap::ResponseHeaders, name);
    }
    /// `:method`.
    fn method(&self) -> Option<Cow<'_, str>> {
        self.request_header(":method")
    }
    /// `:path` as sent, query string included.
    fn path(&self) -> Option<Cow<'_, str>> {
        self.request_header(":path")
    }
    /// `:path` without the query string.
    fn url_path(&self) -> Option<String> {
        self.path().map(|p| http::split_path(&p).0.to_owned())
    }
    /// Raw query string (without `?`), if any.
    fn query(&self) -> Option<String> {
        self.path()
            .and_then(|p| http::split_path(&p).1.map(str::to_owned))
    }
    /// Every decoded value of query parameter `name`.
    fn query_values(&self, name: &str) -> Vec<String> {
        match self.path() {
            Some(p) => http::query_values(http::split_path(&p).1.unwrap_or(""), name),
            None => Vec::new(),
        }
    }
    /// Removes every occurrence of query parameter `name` from `:path`.
    fn remove_query_param(&mut self, name: &str) {
        let Some(path) = self.path() else { return };
        if let Some(new_path) = http::remove_query_param(&path, name) {
            self.set_request_header(":path", &new_path);
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        })
    }
}
