//! `testCallout` (test only): on `decode_headers`, `GET <path>` on `<cluster>` through the host's
//! HTTP callout; on a 2xx answer it sets request header `x-callout-result` to the answer's
//! `x-callout-answer` header (or its status when the header is missing) and continues; on a
//! failed callout or a non-2xx answer it replies 503 `{"msg":"callout failed"}`.
//! Config: `{"cluster": "...", "path": "/..."}`.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::callout::{Callout, CalloutRequest, CalloutResult};
use crate::config::{self, FieldError};
use crate::filter::{Ctx, Filter, LocalReply, Status};
use crate::host::{HeaderMap, LogLevel};
use crate::registry::{Plugin, PluginConfig};

pub struct TestCallout;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCalloutConfig {
    cluster: String,
    path: String,
}

impl Plugin for TestCallout {
    fn name(&self) -> &'static str {
        "testCallout"
    }
    fn response_hooks(&self) -> bool {
        false
    }
    fn parse_config(&self, config: &Value) -> Result<Arc<dyn PluginConfig>, FieldError> {
        let c: TestCalloutConfig = config::from_value(config)?;
        if c.cluster.is_empty() {
            return Err(FieldError::at("cluster", "must not be empty"));
        }
        if !c.path.starts_with('/') {
            return Err(FieldError::at("path", "must start with '/'"));
        }
        Ok(Arc::new(c))
    }
}

impl PluginConfig for TestCalloutConfig {
    fn create_filter(self: Arc<Self>) -> Box<dyn Filter> {
        Box::new(CalloutFilter { config: self })
    }
}

struct CalloutFilter {
    config: Arc<TestCalloutConfig>,
}

impl Filter for CalloutFilter {
    fn decode_headers(&mut self, _ctx: &mut Ctx<'_>, _end_stream: bool) -> Status {
        let request = CalloutRequest::get(self.config.cluster.clone(), self.config.path.clone());
        Callout::new(request, on_answer).into()
    }
}

fn on_answer(ctx: &mut Ctx<'_>, result: CalloutResult) -> Status {
    match result {
        Ok(resp) if (200..300).contains(&resp.status) => {
            let value = resp
                .header("x-callout-answer")
                .map_or_else(|| resp.status.to_string(), str::to_owned);
            ctx.set_header(HeaderMap::RequestHeaders, "x-callout-result", &value);
            Status::Continue
        }
        Ok(resp) => {
            ctx.log(
                LogLevel::Info,
                format_args!("callout answered {}", resp.status),
            );
            Status::LocalReply(LocalReply::msg(503, "callout failed"))
        }
        Err(e) => {
            ctx.log(LogLevel::Info, format_args!("{e}"));
            Status::LocalReply(LocalReply::msg(503, "callout failed"))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::callout::{CalloutError, CalloutResponse};
    use crate::mock::{Driver, MockHost};
    use crate::{FilterChainConfig, FilterManager};

    fn chain() -> FilterChainConfig {
        FilterChainConfig::parse(&json!({"plugins": [
            {"name": "testCallout", "config": {"cluster": "auth", "path": "/answer"}}
        ]}))
        .unwrap()
    }

    #[test]
    fn config_is_checked() {
        let p = TestCallout;
        assert!(
            p.parse_config(&json!({"cluster": "c", "path": "/x"}))
                .is_ok()
        );
        assert!(
            p.parse_config(&json!({"cluster": "", "path": "/x"}))
                .is_err()
        );
        assert!(
            p.parse_config(&json!({"cluster": "c", "path": "x"}))
                .is_err()
        );
        assert!(p.parse_config(&json!({"cluster": "c"})).is_err());
    }

    #[test]
    fn copies_the_answer_or_fails_with_503() {
        let c = chain();
        let run = |result: CalloutResult| {
            let mut m = FilterManager::new(Some(&c), None, None);
            let mut host = MockHost::request("GET", "/");
            Driver::new(&mut m, &mut host)
                .with_callouts(move |_| result.clone())
                .run(&[], &[], None)
        };
        let ok = |status, headers: &[(&str, &str)]| {
            Ok(CalloutResponse {
                status,
                headers: headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                body: Vec::new(),
            })
        };
        let ex = run(ok(200, &[("x-callout-answer", "42")]));
        let req = &ex.callouts[0];
        assert_eq!(req.cluster, "auth");
        assert!(req.has_required_headers());
        assert!(req.headers.contains(&(":path".into(), "/answer".into())));
        assert!(
            ex.upstream_headers
                .unwrap()
                .contains(&("x-callout-result".into(), "42".into()))
        );
        let ex = run(ok(204, &[]));
        assert!(
            ex.upstream_headers
                .unwrap()
                .contains(&("x-callout-result".into(), "204".into()))
        );
        for result in [ok(503, &[]), Err(CalloutError::Reset)] {
            let r = run(result).local_reply.unwrap();
            assert_eq!(
                (r.status, r.body.as_slice()),
                (503, &br#"{"msg":"callout failed"}"#[..])
            );
        }
    }
}
