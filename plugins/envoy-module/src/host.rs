//! [`htnn_plugins::Host`] over Envoy's callbacks for one stream, valid for one hook invocation.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use htnn_plugins::host::{BodyKind, HeaderMap, Host, LogLevel};

use crate::abi::{AttributeId, BodyType, HeaderType};
use crate::envoy::EnvoyFilter;
use crate::log::{self, Level};

/// The hook the host is used in, as far as body access is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyScope {
    /// Not in a data hook: only Envoy's buffered body is visible.
    Buffered,
    /// Inside the request (or response) data hook: buffered body + the received chunk.
    Data(BodyKind),
}

pub struct EnvoyHost {
    env: EnvoyFilter,
    scope: BodyScope,
}

impl EnvoyHost {
    pub fn new(env: EnvoyFilter, scope: BodyScope) -> Self {
        EnvoyHost { env, scope }
    }

    /// The Envoy buffers making up [`Host::body`] for `kind` in this scope, in order.
    fn body_types(&self, kind: BodyKind) -> &'static [BodyType] {
        match (kind, self.scope) {
            (BodyKind::Request, BodyScope::Data(BodyKind::Request)) => {
                &[BodyType::BufferedRequestBody, BodyType::ReceivedRequestBody]
            }
            (BodyKind::Request, _) => &[BodyType::BufferedRequestBody],
            (BodyKind::Response, BodyScope::Data(BodyKind::Response)) => &[
                BodyType::BufferedResponseBody,
                BodyType::ReceivedResponseBody,
            ],
            (BodyKind::Response, _) => &[BodyType::BufferedResponseBody],
        }
    }
}

fn header_type(map: HeaderMap) -> HeaderType {
    match map {
        HeaderMap::RequestHeaders => HeaderType::RequestHeader,
        HeaderMap::RequestTrailers => HeaderType::RequestTrailer,
        HeaderMap::ResponseHeaders => HeaderType::ResponseHeader,
        HeaderMap::ResponseTrailers => HeaderType::ResponseTrailer,
    }
}

fn level(l: LogLevel) -> Level {
    match l {
        LogLevel::Trace => Level::Trace,
        LogLevel::Debug => Level::Debug,
        LogLevel::Info => Level::Info,
        LogLevel::Warn => Level::Warn,
        LogLevel::Error => Level::Error,
    }
}

fn text(bytes: Vec<u8>) -> Cow<'static, str> {
    match String::from_utf8(bytes) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// `ip:port` (or `[ip6]:port`) → the socket address; a bare IP (no port) → `Err(ip)`.
fn parse_address(bytes: &[u8]) -> Option<Result<SocketAddr, IpAddr>> {
    let addr = std::str::from_utf8(bytes).ok()?;
    // Fast path for the usual IPv4 `a.b.c.d:port`.
    if let Some((ip, port)) = addr.rsplit_once(':')
        && let (Ok(ip), Ok(port)) = (ip.parse::<Ipv4Addr>(), port.parse::<u16>())
    {
        return Some(Ok(SocketAddr::new(IpAddr::V4(ip), port)));
    }
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Some(Ok(sa));
    }
    addr.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
        .map(Err)
}

impl Host for EnvoyHost {
    fn header(&self, map: HeaderMap, name: &str) -> Option<Cow<'_, str>> {
        self.env.header(header_type(map), name).map(text)
    }

    fn header_values(&self, map: HeaderMap, name: &str) -> Vec<Cow<'_, str>> {
        let kind = header_type(map);
        let Some((first, count)) = self.env.header_at(kind, name, 0) else {
            return Vec::new();
        };
        let mut values = Vec::with_capacity(count.max(1));
        values.push(text(first));
        for index in 1..count {
            if let Some((v, _)) = self.env.header_at(kind, name, index) {
                values.push(text(v));
            }
        }
        values
    }

    fn headers(&self, map: HeaderMap) -> Vec<(String, String)> {
        self.env
            .headers(header_type(map))
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect()
    }

    fn set_header(&mut self, map: HeaderMap, name: &str, value: &str) {
        self.env
            .set_header(header_type(map), name, value.as_bytes());
    }

    fn add_header(&mut self, map: HeaderMap, name: &str, value: &str) {
        self.env
            .add_header(header_type(map), name, value.as_bytes());
    }

    fn remove_header(&mut self, map: HeaderMap, name: &str) {
        self.env.remove_header(header_type(map), name);
    }

    fn body(&self, kind: BodyKind) -> Cow<'_, [u8]> {
        Cow::Owned(self.env.body(self.body_types(kind)))
    }

    fn set_body(&mut self, kind: BodyKind, data: &[u8]) {
        let types = self.body_types(kind);
        for &t in types {
            self.env.drain_body(t);
        }
        // In a data hook the new bytes go out with the current chunk; otherwise they replace
        // what Envoy holds buffered.
        let target = *types.last().unwrap_or(&BodyType::BufferedRequestBody);
        if !self.env.append_body(target, data) {
            log::write(
                Level::Warn,
                "could not replace the body: Envoy has no such buffer",
            );
        }
        // Keep a declared length truthful. Whole-body plugins run while the headers are still
        // held; if they already left, this has no effect.
        let headers = match kind {
            BodyKind::Request => HeaderType::RequestHeader,
            BodyKind::Response => HeaderType::ResponseHeader,
        };
        if self.env.header(headers, "content-length").is_some() {
            self.env
                .set_header(headers, "content-length", data.len().to_string().as_bytes());
        }
    }

    fn client_address(&self) -> Option<SocketAddr> {
        // Parsed in place: no copy of Envoy's string (this runs on every limitReq request).
        let parsed = self
            .env
            .with_attribute(AttributeId::SourceAddress, parse_address)??;
        let ip = match parsed {
            Ok(sa) => return Some(sa),
            Err(ip) => ip,
        };
        let port = self.env.attribute_int(AttributeId::SourcePort).unwrap_or(0);
        Some(SocketAddr::new(ip, u16::try_from(port).unwrap_or(0)))
    }

    fn log_enabled(&self, l: LogLevel) -> bool {
        log::enabled(level(l))
    }

    fn log(&self, l: LogLevel, message: &str) {
        log::write(level(l), message);
    }

    fn filter_state(&self, key: &str) -> Option<Cow<'_, [u8]>> {
        self.env.filter_state_bytes(key).map(Cow::Owned)
    }

    fn set_filter_state(&mut self, key: &str, value: &[u8]) {
        self.env.set_filter_state_bytes(key, value);
    }

    fn set_dynamic_metadata(&mut self, namespace: &str, key: &str, value: &str) {
        self.env.set_dynamic_metadata_string(namespace, key, value);
    }

    fn route_name(&self) -> Option<Cow<'_, str>> {
        self.env
            .attribute_string(AttributeId::XdsRouteName)
            .map(Cow::Owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envoy_source_addresses() {
        let sa = |s: &str| Some(Ok(s.parse::<SocketAddr>().unwrap()));
        assert_eq!(parse_address(b"10.1.2.3:4567"), sa("10.1.2.3:4567"));
        assert_eq!(parse_address(b"[::1]:80"), sa("[::1]:80"));
        assert_eq!(
            parse_address(b"[fe80::1]"),
            Some(Err("fe80::1".parse().unwrap()))
        );
        assert_eq!(
            parse_address(b"10.1.2.3"),
            Some(Err("10.1.2.3".parse().unwrap()))
        );
        assert_eq!(parse_address(b"10.1.2.3:99999"), None);
        assert_eq!(parse_address(b"pipe:/x"), None);
        assert_eq!(parse_address(b"\xff"), None);
    }
}
