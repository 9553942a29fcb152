//! `basicAuth` (Authn, consumer plugin): authenticates a consumer with HTTP Basic credentials.
//!
//! Route config: `{}`. Consumer config: `{"username": "...", "password": "..."}` (both
//! non-empty; the username is the index key and must not contain `:`).
//!
//! No `Authorization` header → the request continues without a consumer (as `keyAuth`).
//! A malformed header, an unknown user or a wrong password → 401 with
//! `WWW-Authenticate: Basic realm="htnn"`. On success the header is removed and the consumer
//! set. Passwords are compared in constant time and never logged.

use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use crate::config::{self, FieldError};
use crate::consumer::ConsumerCredential;
use crate::filter::{Ctx, Filter, LocalReply, Status};
use crate::http::constant_time_eq;
use crate::registry::{Order, Plugin, PluginConfig, Position};

pub struct BasicAuth;

pub const NAME: &str = "basicAuth";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicAuthConfig {}

/// A consumer's basicAuth config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConsumer {
    username: String,
    password: String,
}

impl Plugin for BasicAuth {
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
        let c: BasicAuthConfig = config::from_value(config)?;
        Ok(Arc::new(c))
    }
    fn parse_consumer_config(&self, config: &Value) -> Result<ConsumerCredential, FieldError> {
        let c: BasicAuthConsumer = config::from_value(config)?;
        if c.username.is_empty() || c.username.contains(':') {
            return Err(FieldError::at(
                "username",
                "must be non-empty and must not contain ':'",
            ));
        }
        if c.password.is_empty() {
            return Err(FieldError::at("password", "must not be empty"));
        }
        Ok(ConsumerCredential::new(c.username.clone(), c))
    }
}

impl PluginConfig for BasicAuthConfig {
    fn create_filter(self: Arc<Self>) -> Box<dyn Filter> {
        Box::new(BasicAuthFilter)
    }
}

struct BasicAuthFilter;

fn unauthorized(msg: &str) -> Status {
    Status::LocalReply(
        LocalReply::msg(401, msg).with_header("www-authenticate", "Basic realm=\"htnn\""),
    )
}

/// `(user, password)` from an `Authorization: Basic ...` value.
fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

impl Filter for BasicAuthFilter {
    fn decode_headers(&mut self, ctx: &mut Ctx<'_>, _end_stream: bool) -> Status {
        let Some(value) = ctx.request_header("authorization") else {
            return Status::Continue;
        };
        let Some((user, password)) = parse_basic(&value) else {
            return unauthorized("invalid authorization header");
        };
        let consumer = ctx.lookup_consumer(NAME, &user);
        let expected = consumer
            .as_ref()
            .and_then(|c| c.auth_config::<BasicAuthConsumer>(NAME));
        // Compare against something even for an unknown user, so timing says little about
        // which usernames exist.
        let ok = match expected {
            Some(cfg) => constant_time_eq(cfg.password.as_bytes(), password.as_bytes()),
            None => {
                let _ = constant_time_eq(password.as_bytes(), password.as_bytes());
                false
            }
        };
        match (ok, consumer) {
            (true, Some(consumer)) => {
                ctx.remove_request_header("authorization");
                ctx.set_consumer(consumer);
                Status::Continue
            }
            _ => unauthorized("invalid username or password"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use base64::Engine;
    use serde_json::json;

    use crate::mock::{Driver, MockHost};
    use crate::{ConsumerIndex, ConsumerStore, FilterChainConfig, FilterManager};

    fn basic(user: &str, pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    }

    fn run(host: &mut MockHost) -> (crate::mock::Exchange, Option<String>) {
        let (idx, _) = ConsumerIndex::parse(&json!({"ns": {"rick": {"auth": {"basicAuth": {"username": "rick", "password": "s3cret:x"}}}}})).unwrap();
        let chain = FilterChainConfig::parse(
            &json!({"namespace": "ns", "plugins": [{"name": "basicAuth", "config": {}}]}),
        )
        .unwrap();
        let mut m = FilterManager::new(Some(&chain), None, Some(Arc::new(ConsumerStore::new(idx))));
        let ex = Driver::new(&mut m, host).run(&[], &[], None);
        (ex, m.consumer().map(|c| c.name().to_owned()))
    }

    #[test]
    fn good_credentials() {
        let mut host =
            MockHost::request("GET", "/").with_header("authorization", &basic("rick", "s3cret:x"));
        let (ex, consumer) = run(&mut host);
        assert_eq!(consumer.as_deref(), Some("rick"));
        assert!(
            !ex.upstream_headers
                .unwrap()
                .iter()
                .any(|(k, _)| k == "authorization")
        );
    }

    #[test]
    fn bad_credentials_get_challenge() {
        for v in [
            basic("rick", "wrong"),
            basic("nobody", "s3cret:x"),
            "Basic !!!".into(),
            "Bearer x".into(),
            "Basic".into(),
        ] {
            let mut host = MockHost::request("GET", "/").with_header("authorization", &v);
            let (ex, consumer) = run(&mut host);
            let r = ex.local_reply.expect("401");
            assert_eq!(r.status, 401, "{v}");
            assert!(
                r.headers
                    .contains(&("www-authenticate".into(), "Basic realm=\"htnn\"".into()))
            );
            assert!(consumer.is_none());
            assert!(!host.logs_contain("s3cret"));
        }
    }

    #[test]
    fn no_credentials_continue() {
        let mut host = MockHost::request("GET", "/");
        let (ex, consumer) = run(&mut host);
        assert!(ex.local_reply.is_none() && consumer.is_none());
    }

    #[test]
    fn consumer_validation() {
        assert!(
            crate::validate_consumer_auth(
                "basicAuth",
                &json!({"username": "a:b", "password": "p"})
            )
            .is_err()
        );
        assert!(
            crate::validate_consumer_auth("basicAuth", &json!({"username": "a", "password": ""}))
                .is_err()
        );
        assert!(crate::validate("basicAuth", &json!({"realm": "x"})).is_err());
        assert!(crate::validate("basicAuth", &json!(null)).is_ok());
    }
}
