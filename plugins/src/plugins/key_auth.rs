//! `keyAuth` (Authn, consumer plugin): authenticates a consumer by a key sent in a header or a
//! query parameter.
//!
//! Route config: `{"keys": [{"name": "<header or query name>", "source": "HEADER" | "QUERY"}]}`
//! (at least one key; `source` defaults to `HEADER`). Consumer config: `{"key": "<secret>"}`.
//!
//! Keys are tried in order; the first one present decides: several values → 401, unknown key →
//! 401, known key → the credential is removed from the request and the consumer is set. No key
//! at all → the request continues without a consumer (HTNN ≥ #773; combine with
//! `consumerRestriction` to require one).

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::config::{self, FieldError};
use crate::consumer::ConsumerCredential;
use crate::filter::{Ctx, Filter, LocalReply, Status};
use crate::host::HeaderMap;
use crate::http::constant_time_eq;
use crate::registry::{Order, Plugin, PluginConfig, Position};

pub struct KeyAuth;

pub const NAME: &str = "keyAuth";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyAuthConfig {
    keys: Vec<Key>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Key {
    name: String,
    #[serde(default)]
    source: Source,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
enum Source {
    #[default]
    Header,
    Query,
}

/// A consumer's keyAuth config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthConsumer {
    key: String,
}

impl Plugin for KeyAuth {
    fn name(&self) -> &'static str {
        NAME
    }
    fn response_hooks(&self) -> bool {
        false
    }
    fn order(&self) -> Order {
        Order::new(Position::Authn)
    }
    fn is_consumer_plugin(&self) -> bool {
        true
    }
    fn parse_config(&self, config: &Value) -> Result<Arc<dyn PluginConfig>, FieldError> {
        let mut c: KeyAuthConfig = config::from_value(config)?;
        if c.keys.is_empty() {
            return Err(FieldError::at("keys", "at least one key required"));
        }
        for (i, k) in c.keys.iter_mut().enumerate() {
            if k.name.is_empty() {
                return Err(FieldError::at(
                    format!("keys[{i}].name"),
                    "must not be empty",
                ));
            }
            if k.source == Source::Header {
                if !super::demo::is_header_name(&k.name) {
                    return Err(FieldError::at(
                        format!("keys[{i}].name"),
                        "not a valid header name",
                    ));
                }
                k.name.make_ascii_lowercase();
            }
        }
        Ok(Arc::new(c))
    }
    fn parse_consumer_config(&self, config: &Value) -> Result<ConsumerCredential, FieldError> {
        let c: KeyAuthConsumer = config::from_value(config)?;
        if c.key.is_empty() {
            return Err(FieldError::at("key", "must not be empty"));
        }
        Ok(ConsumerCredential::new(c.key.clone(), c))
    }
}

impl PluginConfig for KeyAuthConfig {
    fn create_filter(self: Arc<Self>) -> Box<dyn Filter> {
        Box::new(KeyAuthFilter(self))
    }
}

struct KeyAuthFilter(Arc<KeyAuthConfig>);

impl Filter for KeyAuthFilter {
    fn decode_headers(&mut self, ctx: &mut Ctx<'_>, _end_stream: bool) -> Status {
        for key in &self.0.keys {
            let presented: String = {
                let mut values: Vec<Cow<'_, str>> = match key.source {
                    Source::Header => ctx.header_values(HeaderMap::RequestHeaders, &key.name),
                    Source::Query => ctx
                        .query_values(&key.name)
                        .into_iter()
                        .map(Cow::Owned)
                        .collect(),
                };
                match values.len() {
                    0 => continue,
                    1 => values.swap_remove(0).into_owned(),
                    _ => return Status::LocalReply(LocalReply::msg(401, "duplicate key found")),
                }
            };
            let consumer = ctx.lookup_consumer(NAME, &presented);
            let valid = consumer
                .as_ref()
                .and_then(|c| c.auth_config::<KeyAuthConsumer>(NAME))
                .is_some_and(|cfg| constant_time_eq(cfg.key.as_bytes(), presented.as_bytes()));
            let (true, Some(consumer)) = (valid, consumer) else {
                return Status::LocalReply(LocalReply::msg(401, "invalid key"));
            };
            match key.source {
                Source::Header => ctx.remove_request_header(&key.name),
                Source::Query => ctx.remove_query_param(&key.name),
            }
            ctx.set_consumer(consumer);
            return Status::Continue;
        }
        Status::Continue
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use crate::mock::{Driver, Exchange, MockHost};
    use crate::{ConsumerIndex, ConsumerStore, FilterChainConfig, FilterManager};

    fn store() -> Arc<ConsumerStore> {
        let (idx, problems) = ConsumerIndex::parse(&json!({
            "ns": {"rick": {"auth": {"keyAuth": {"key": "rick-key"}}}},
            "other": {"morty": {"auth": {"keyAuth": {"key": "morty-key"}}}},
        }))
        .unwrap();
        assert!(problems.is_empty());
        Arc::new(ConsumerStore::new(idx))
    }

    fn run(host: &mut MockHost) -> (Exchange, Option<String>) {
        let chain = FilterChainConfig::parse(
            &json!({"namespace": "ns", "plugins": [{"name": "keyAuth", "config": {"keys": [
                {"name": "Authorization"}, {"name": "ak", "source": "QUERY"}
            ]}}]}),
        )
        .unwrap();
        let mut m = FilterManager::new(Some(&chain), None, Some(store()));
        let ex = Driver::new(&mut m, host).run(&[], &[], None);
        (ex, m.consumer().map(|c| c.name().to_owned()))
    }

    #[test]
    fn header_key_sets_consumer_and_is_stripped() {
        let mut host = MockHost::request("GET", "/").with_header("authorization", "rick-key");
        let (ex, consumer) = run(&mut host);
        assert_eq!(consumer.as_deref(), Some("rick"));
        let h = ex.upstream_headers.unwrap();
        assert!(!h.iter().any(|(k, _)| k == "authorization"));
    }

    #[test]
    fn query_key_sets_consumer_and_is_stripped() {
        let mut host = MockHost::request("GET", "/p?x=1&ak=rick-key&y=2");
        let (ex, consumer) = run(&mut host);
        assert_eq!(consumer.as_deref(), Some("rick"));
        let h = ex.upstream_headers.unwrap();
        assert!(h.contains(&(":path".into(), "/p?x=1&y=2".into())), "{h:?}");
    }

    #[test]
    fn unknown_duplicate_or_other_namespace_key_is_401() {
        for host in [
            MockHost::request("GET", "/").with_header("authorization", "nope"),
            MockHost::request("GET", "/").with_header("authorization", "morty-key"),
            MockHost::request("GET", "/?ak=a&ak=rick-key"),
            // The first key present decides, even if a later one would match.
            MockHost::request("GET", "/?ak=rick-key").with_header("authorization", "nope"),
        ] {
            let mut host = host;
            let (ex, consumer) = run(&mut host);
            let r = ex.local_reply.expect("401");
            assert_eq!(r.status, 401);
            assert!(
                r.body.starts_with(b"{\"msg\":"),
                "{:?}",
                String::from_utf8_lossy(&r.body)
            );
            assert!(consumer.is_none());
            assert!(!host.logs_contain("rick-key") && !host.logs_contain("morty-key"));
        }
    }

    #[test]
    fn missing_key_continues_without_consumer() {
        let mut host = MockHost::request("GET", "/");
        let (ex, consumer) = run(&mut host);
        assert!(ex.local_reply.is_none());
        assert!(consumer.is_none());
    }

    #[test]
    fn config_validation() {
        assert_eq!(
            crate::validate("keyAuth", &json!({"keys": []}))
                .unwrap_err()
                .to_string(),
            "plugin keyAuth: keys: at least one key required"
        );
        assert_eq!(
            crate::validate("keyAuth", &json!({"keys": [{"name": ""}]}))
                .unwrap_err()
                .to_string(),
            "plugin keyAuth: keys[0].name: must not be empty"
        );
        assert!(
            crate::validate(
                "keyAuth",
                &json!({"keys": [{"name": "a", "source": "QUERY"}]})
            )
            .is_ok()
        );
        assert_eq!(
            crate::validate_consumer_auth("keyAuth", &json!({"key": ""}))
                .unwrap_err()
                .to_string(),
            "plugin keyAuth: key: must not be empty"
        );
    }
}
