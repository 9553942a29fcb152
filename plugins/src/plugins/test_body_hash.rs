//! `testBodyHash` (test only): a whole-body plugin. It asks for the whole request body
//! (`WaitAllData`) and, in `decode_request`, sets request headers `x-htnn-body-sha256` (hex) and
//! `x-htnn-body-length`.
//!
//! Config: `{"echo": bool, "response": bool}` (both default false).
//! - `echo`: answer locally with status 200 and the request body instead (same headers on the
//!   response).
//! - `response`: also hash the whole response body (`encode_response`) into response headers of
//!   the same names.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{self, FieldError};
use crate::filter::{Ctx, Filter, LocalReply, Status};
use crate::host::BodyKind;
use crate::registry::{Plugin, PluginConfig};

pub struct TestBodyHash;

pub const SHA_HEADER: &str = "x-htnn-body-sha256";
pub const LEN_HEADER: &str = "x-htnn-body-length";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBodyHashConfig {
    #[serde(default)]
    echo: bool,
    #[serde(default)]
    response: bool,
}

impl Plugin for TestBodyHash {
    fn name(&self) -> &'static str {
        "testBodyHash"
    }
    fn parse_config(&self, config: &Value) -> Result<Arc<dyn PluginConfig>, FieldError> {
        let c: TestBodyHashConfig = config::from_value(config)?;
        Ok(Arc::new(c))
    }
}

impl PluginConfig for TestBodyHashConfig {
    fn create_filter(self: Arc<Self>) -> Box<dyn Filter> {
        Box::new(BodyHashFilter(self))
    }
}

struct BodyHashFilter(Arc<TestBodyHashConfig>);

pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

impl Filter for BodyHashFilter {
    fn decode_headers(&mut self, _ctx: &mut Ctx<'_>, _end_stream: bool) -> Status {
        Status::WaitAllData
    }

    fn decode_request(&mut self, ctx: &mut Ctx<'_>) -> Status {
        let (hash, len) = {
            let body = ctx.body(BodyKind::Request);
            (sha256_hex(&body), body.len().to_string())
        };
        if self.0.echo {
            let body = ctx.body(BodyKind::Request).into_owned();
            return Status::LocalReply(
                LocalReply::raw(200, body)
                    .with_header(SHA_HEADER, hash)
                    .with_header(LEN_HEADER, len)
                    .with_header("content-type", "application/octet-stream"),
            );
        }
        ctx.set_request_header(SHA_HEADER, &hash);
        ctx.set_request_header(LEN_HEADER, &len);
        Status::Continue
    }

    fn encode_headers(&mut self, _ctx: &mut Ctx<'_>, _end_stream: bool) -> Status {
        if self.0.response {
            Status::WaitAllData
        } else {
            Status::Continue
        }
    }

    fn encode_response(&mut self, ctx: &mut Ctx<'_>) -> Status {
        let (hash, len) = {
            let body = ctx.body(BodyKind::Response);
            (sha256_hex(&body), body.len().to_string())
        };
        ctx.set_response_header(SHA_HEADER, &hash);
        ctx.set_response_header(LEN_HEADER, &len);
        Status::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{Driver, MockHost, UpstreamResponse};
    use crate::{FilterChainConfig, FilterManager};
    use serde_json::json;

    #[test]
    fn hashes_one_mebibyte_in_chunks() {
        let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<&[u8]> = body.chunks(64 * 1024).collect();
        let chain = FilterChainConfig::parse(
            &json!({"plugins": [{"name": "testBodyHash", "config": {"response": true}}]}),
        )
        .unwrap();
        let mut m = FilterManager::new(Some(&chain), None, None);
        let mut host = MockHost::request("POST", "/upload");
        let mut resp = UpstreamResponse::ok();
        resp.chunks = vec![b"hello ".to_vec(), b"world".to_vec()];
        let ex = Driver::new(&mut m, &mut host).run(&chunks, &[], Some(resp));
        let h = ex.upstream_headers.unwrap();
        assert!(h.contains(&(SHA_HEADER.into(), sha256_hex(&body))));
        assert!(h.contains(&(LEN_HEADER.into(), "1048576".into())));
        assert_eq!(ex.upstream_body, body);
        assert_eq!(ex.upstream_body_pieces, 1);
        let d = ex.downstream_headers.unwrap();
        assert!(d.contains(&(SHA_HEADER.into(), sha256_hex(b"hello world"))));
        assert_eq!(ex.downstream_body, b"hello world");
    }

    #[test]
    fn echo_replies_with_body() {
        let chain = FilterChainConfig::parse(
            &json!({"plugins": [{"name": "testBodyHash", "config": {"echo": true}}]}),
        )
        .unwrap();
        let mut m = FilterManager::new(Some(&chain), None, None);
        let mut host = MockHost::request("POST", "/");
        let ex = Driver::new(&mut m, &mut host).run(&[b"ab", b"c"], &[], None);
        let r = ex.local_reply.unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.plugin),
            (200, &b"abc"[..], "testBodyHash")
        );
        assert!(ex.upstream_headers.is_none());
    }

    #[test]
    fn empty_body_still_gets_decode_request() {
        let chain =
            FilterChainConfig::parse(&json!({"plugins": [{"name": "testBodyHash", "config": {}}]}))
                .unwrap();
        let mut m = FilterManager::new(Some(&chain), None, None);
        let mut host = MockHost::request("GET", "/");
        let ex = Driver::new(&mut m, &mut host).run(&[], &[], None);
        assert!(
            ex.upstream_headers
                .unwrap()
                .contains(&(LEN_HEADER.into(), "0".into()))
        );
    }
}
