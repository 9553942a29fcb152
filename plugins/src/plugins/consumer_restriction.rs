//! `consumerRestriction` (Authz): allows or denies requests by consumer name and method.
//!
//! Config, exactly one of:
//! - `{"allow": {"rules": [{"name": "<consumer>", "methods": ["GET", ...]}]}}` — only matching
//!   consumers pass (403 otherwise);
//! - `{"deny": {"rules": [...]}}` — matching consumers get 403;
//! - `{"denyIfNoConsumer": true}` — any authenticated consumer passes.
//!
//! A rule matches when the name equals the consumer's and `methods` is empty or contains the
//! request method. A request without a consumer gets 401.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::config::{self, FieldError};
use crate::filter::{Ctx, Filter, LocalReply, Status};
use crate::registry::{Order, Plugin, PluginConfig, Position};

pub struct ConsumerRestriction;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    allow: Option<Rules>,
    deny: Option<Rules>,
    #[serde(default)]
    deny_if_no_consumer: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rules {
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    name: String,
    #[serde(default)]
    methods: Vec<String>,
}

#[derive(Debug)]
enum Mode {
    Allow(Vec<Rule>),
    Deny(Vec<Rule>),
    RequireConsumer,
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn check_rules(field: &str, rules: &Rules) -> Result<(), FieldError> {
    if rules.rules.is_empty() {
        return Err(FieldError::at(
            format!("{field}.rules"),
            "at least one rule required",
        ));
    }
    for (i, r) in rules.rules.iter().enumerate() {
        if r.name.is_empty() {
            return Err(FieldError::at(
                format!("{field}.rules[{i}].name"),
                "must not be empty",
            ));
        }
        for (j, m) in r.methods.iter().enumerate() {
            if !METHODS.contains(&m.as_str()) {
                return Err(FieldError::at(
                    format!("{field}.rules[{i}].methods[{j}]"),
                    format!(
                        "unknown method {m:?} (expected one of {})",
                        METHODS.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl Plugin for ConsumerRestriction {
    fn name(&self) -> &'static str {
        "consumerRestriction"
    }
    fn response_hooks(&self) -> bool {
        false
    }
    fn order(&self) -> Order {
        Order::new(Position::Authz)
    }
    fn parse_config(&self, config: &Value) -> Result<Arc<dyn PluginConfig>, FieldError> {
        let raw: RawConfig = config::from_value(config)?;
        let set = usize::from(raw.allow.is_some())
            + usize::from(raw.deny.is_some())
            + usize::from(raw.deny_if_no_consumer);
        if set != 1 {
            return Err(FieldError::root(
                "exactly one of allow, deny or denyIfNoConsumer must be set",
            ));
        }
        let mode = match (raw.allow, raw.deny) {
            (Some(a), _) => {
                check_rules("allow", &a)?;
                Mode::Allow(a.rules)
            }
            (_, Some(d)) => {
                check_rules("deny", &d)?;
                Mode::Deny(d.rules)
            }
            _ => Mode::RequireConsumer,
        };
        Ok(Arc::new(RestrictionConfig { mode }))
    }
}

#[derive(Debug)]
struct RestrictionConfig {
    mode: Mode,
}

impl PluginConfig for RestrictionConfig {
    fn create_filter(self: Arc<Self>) -> Box<dyn Filter> {
        Box::new(RestrictionFilter(self))
    }
}

struct RestrictionFilter(Arc<RestrictionConfig>);

fn matches(rules: &[Rule], consumer: &str, method: &str) -> bool {
    rules.iter().any(|r| {
        r.name == consumer && (r.methods.is_empty() || r.methods.iter().any(|m| m == method))
    })
}

impl Filter for RestrictionFilter {
    fn decode_headers(&mut self, ctx: &mut Ctx<'_>, _end_stream: bool) -> Status {
        let Some(consumer) = ctx.consumer() else {
            return Status::LocalReply(LocalReply::msg(401, "consumer not found"));
        };
        let method = ctx.method().unwrap_or_default();
        let allowed = match &self.0.mode {
            Mode::Allow(rules) => matches(rules, consumer.name(), &method),
            Mode::Deny(rules) => !matches(rules, consumer.name(), &method),
            Mode::RequireConsumer => true,
        };
        if allowed {
            Status::Continue
        } else {
            Status::LocalReply(LocalReply::msg(403, "consumer is not allowed"))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use crate::mock::{Driver, MockHost};
    use crate::{ConsumerIndex, ConsumerStore, FilterChainConfig, FilterManager};

    fn status(restriction: Value, method: &str, key: Option<&str>) -> u16 {
        let (idx, _) = ConsumerIndex::parse(&json!({"ns": {
            "rick": {"auth": {"keyAuth": {"key": "r"}}},
            "morty": {"auth": {"keyAuth": {"key": "m"}}},
        }}))
        .unwrap();
        let chain = FilterChainConfig::parse(&json!({"namespace": "ns", "plugins": [
            {"name": "keyAuth", "config": {"keys": [{"name": "x-key"}]}},
            {"name": "consumerRestriction", "config": restriction},
        ]}))
        .unwrap();
        let mut m = FilterManager::new(Some(&chain), None, Some(Arc::new(ConsumerStore::new(idx))));
        let mut host = MockHost::request(method, "/");
        if let Some(k) = key {
            host = host.with_header("x-key", k);
        }
        let ex = Driver::new(&mut m, &mut host).run(&[], &[], None);
        ex.local_reply.map_or(200, |r| r.status)
    }

    #[test]
    fn allow_deny_and_require() {
        let allow =
            json!({"allow": {"rules": [{"name": "rick"}, {"name": "morty", "methods": ["GET"]}]}});
        assert_eq!(status(allow.clone(), "POST", Some("r")), 200);
        assert_eq!(status(allow.clone(), "GET", Some("m")), 200);
        assert_eq!(status(allow.clone(), "POST", Some("m")), 403);
        assert_eq!(status(allow, "GET", None), 401);
        let deny = json!({"deny": {"rules": [{"name": "morty", "methods": ["POST"]}]}});
        assert_eq!(status(deny.clone(), "POST", Some("m")), 403);
        assert_eq!(status(deny.clone(), "GET", Some("m")), 200);
        assert_eq!(status(deny.clone(), "POST", Some("r")), 200);
        assert_eq!(status(deny, "GET", None), 401);
        let require = json!({"denyIfNoConsumer": true});
        assert_eq!(status(require.clone(), "GET", Some("r")), 200);
        assert_eq!(status(require, "GET", None), 401);
    }

    #[test]
    fn validation() {
        let err = |v: Value| {
            crate::validate("consumerRestriction", &v)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(json!({})),
            "plugin consumerRestriction: exactly one of allow, deny or denyIfNoConsumer must be set"
        );
        assert_eq!(
            err(json!({"allow": {"rules": [{"name": "a"}]}, "denyIfNoConsumer": true})),
            "plugin consumerRestriction: exactly one of allow, deny or denyIfNoConsumer must be set"
        );
        assert_eq!(
            err(json!({"deny": {"rules": []}})),
            "plugin consumerRestriction: deny.rules: at least one rule required"
        );
        assert!(
            err(json!({"allow": {"rules": [{"name": "a", "methods": ["get"]}]}})).starts_with(
                "plugin consumerRestriction: allow.rules[0].methods[0]: unknown method"
            )
        );
        assert_eq!(
            err(json!({"allow": {"rules": [{"methods": []}]}})),
            "plugin consumerRestriction: allow.rules[0].name: missing field"
        );
    }
}
