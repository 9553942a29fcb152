//! `demo`: adds request header `<hostName>: hello, <guest>` where the guest is the Envoy filter
//! state `guest_name`, else the consumer's name, else `guest`. (HTNN greets an unknown caller
//! with an empty name, `hello, `, which HTTP turns into `hello,`; a name reads better.)
//!
//! The header is added (appended), as HTNN's `headers.Add`: replacing would make Envoy look the
//! name up first, which for a non-inline header builds the header map's lookup index.
//!
//! Config: `{"hostName": "<header name>"}` (required, a valid header name).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::config::{self, FieldError};
use crate::filter::{Ctx, Filter, Status};
use crate::host::HeaderMap;
use crate::registry::{Plugin, PluginConfig};

pub struct Demo;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DemoConfig {
    host_name: String,
}

impl Plugin for Demo {
    fn name(&self) -> &'static str {
        "demo"
    }
    fn response_hooks(&self) -> bool {
        false
    }
    fn parse_config(&self, config: &Value) -> Result<Arc<dyn PluginConfig>, FieldError> {
        let mut c: DemoConfig = config::from_value(config)?;
        if !is_header_name(&c.host_name) {
            return Err(FieldError::at(
                "hostName",
                "must be a valid, non-empty HTTP header name",
            ));
        }
        c.host_name.make_ascii_lowercase();
        Ok(Arc::new(c))
    }
}

/// RFC 9110 token characters.
pub(crate) fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl PluginConfig for DemoConfig {
    fn create_filter(self: Arc<Self>) -> Box<dyn Filter> {
        Box::new(DemoFilter(self))
    }
}

struct DemoFilter(Arc<DemoConfig>);

impl Filter for DemoFilter {
    fn decode_headers(&mut self, ctx: &mut Ctx<'_>, _end_stream: bool) -> Status {
        const HELLO: &str = "hello, ";
        const NOBODY: &str = "guest";
        let state = ctx.filter_state("guest_name").map(|g| {
            String::from_utf8(g.into_owned())
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        });
        let consumer = match state {
            None => ctx.consumer().cloned(),
            Some(_) => None,
        };
        let guest = state
            .as_deref()
            .or(consumer.as_ref().map(|c| c.name()))
            .filter(|g| !g.is_empty())
            .unwrap_or(NOBODY);
        // The value is built on the stack when it fits (it nearly always does).
        let mut buf = [0u8; 96];
        let owned;
        let value = if HELLO.len() + guest.len() <= buf.len() {
            let n = HELLO.len() + guest.len();
            buf[..HELLO.len()].copy_from_slice(HELLO.as_bytes());
            buf[HELLO.len()..n].copy_from_slice(guest.as_bytes());
            std::str::from_utf8(&buf[..n]).unwrap_or(HELLO)
        } else {
            owned = format!("{HELLO}{guest}");
            owned.as_str()
        };
        ctx.add_header(HeaderMap::RequestHeaders, &self.0.host_name, value);
        Status::Continue
    }
}

#[cfg(test)]
mod tests {
    use crate::mock::{Driver, MockHost};
    use crate::{FilterChainConfig, FilterManager};
    use serde_json::json;

    #[test]
    fn adds_greeting_header() {
        let chain = FilterChainConfig::parse(
            &json!({"plugins": [{"name": "demo", "config": {"hostName": "X-Host"}}]}),
        )
        .unwrap();
        let mut host = MockHost::request("GET", "/");
        host.filter_state
            .insert("guest_name".into(), b"rick".to_vec());
        let mut m = FilterManager::new(Some(&chain), None, None);
        let ex = Driver::new(&mut m, &mut host).run(&[], &[], None);
        let h = ex.upstream_headers.unwrap();
        assert!(
            h.contains(&("x-host".into(), "hello, rick".into())),
            "{h:?}"
        );

        let mut host = MockHost::request("GET", "/");
        let mut m = FilterManager::new(Some(&chain), None, None);
        let ex = Driver::new(&mut m, &mut host).run(&[], &[], None);
        let h = ex.upstream_headers.unwrap();
        assert!(
            h.contains(&("x-host".into(), "hello, guest".into())),
            "{h:?}"
        );

        // An empty name is no name.
        let mut host = MockHost::request("GET", "/");
        host.filter_state.insert("guest_name".into(), Vec::new());
        let mut m = FilterManager::new(Some(&chain), None, None);
        let ex = Driver::new(&mut m, &mut host).run(&[], &[], None);
        let h = ex.upstream_headers.unwrap();
        assert!(
            h.contains(&("x-host".into(), "hello, guest".into())),
            "{h:?}"
        );
    }

    #[test]
    fn long_names_are_greeted_whole() {
        let chain = FilterChainConfig::parse(
            &json!({"plugins": [{"name": "demo", "config": {"hostName": "x-host"}}]}),
        )
        .unwrap();
        let name = "r".repeat(200);
        let mut host = MockHost::request("GET", "/");
        host.filter_state
            .insert("guest_name".into(), name.clone().into_bytes());
        let mut m = FilterManager::new(Some(&chain), None, None);
        let ex = Driver::new(&mut m, &mut host).run(&[], &[], None);
        let h = ex.upstream_headers.unwrap();
        assert!(
            h.contains(&("x-host".into(), format!("hello, {name}"))),
            "{h:?}"
        );
    }

    #[test]
    fn appends_like_htnn_headers_add() {
        let chain = FilterChainConfig::parse(
            &json!({"plugins": [{"name": "demo", "config": {"hostName": "x-host"}}]}),
        )
        .unwrap();
        let mut host = MockHost::request("GET", "/").with_header("x-host", "client");
        let mut m = FilterManager::new(Some(&chain), None, None);
        let ex = Driver::new(&mut m, &mut host).run(&[], &[], None);
        let h = ex.upstream_headers.unwrap();
        let values: Vec<&str> = h
            .iter()
            .filter(|(k, _)| k == "x-host")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(values, ["client", "hello, guest"], "{h:?}");
    }

    #[test]
    fn validates_host_name() {
        assert_eq!(
            crate::validate("demo", &json!({"hostName": "a b"}))
                .unwrap_err()
                .to_string(),
            "plugin demo: hostName: must be a valid, non-empty HTTP header name"
        );
        assert!(crate::validate("demo", &json!({"hostName": "x", "extra": 1})).is_err());
    }
}
