//! `demo`: adds request header `<hostName>: hello, <guest>` where the guest is the Envoy filter
//! state `guest_name`, else the consumer's name, else empty.
//!
//! Config: `{"hostName": "<header name>"}` (required, a valid header name).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::config::{self, FieldError};
use crate::filter::{Ctx, Filter, Status};
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
        let guest = match ctx.filter_state("guest_name") {
            Some(g) => String::from_utf8_lossy(&g).into_owned(),
            None => ctx
                .consumer()
                .map(|c| c.name().to_owned())
                .unwrap_or_default(),
        };
        let value = format!("hello, {guest}");
        ctx.set_request_header(&self.0.host_name, &value);
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
        assert!(
            ex.upstream_headers
                .unwrap()
                .contains(&("x-host".into(), "hello, ".into()))
        );
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
