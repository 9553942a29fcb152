//! `limitReq` (Traffic): local token-bucket rate limit per key.
//!
//! Config: `{"average": <u32 > 0>, "period": "1s", "burst": <u32>, "key": "<expr>"}`.
//! Tokens refill at `average / period` (period defaults to 1s); the bucket holds `burst` tokens
//! (default 1; 0 means the default, as in proto3). A request takes one token. When the bucket
//! is empty the request would have to wait for the next token: if that wait is at most the
//! maximum delay (half the refill interval, or 500 ms when fewer than one token per second),
//! the request is delayed that long; otherwise it gets 429.
//!
//! `key` selects the bucket: absent → the client IP; `request.header("<name>")` → that request
//! header, falling back to the client IP when it is missing or empty. (HTNN's `key` is a CEL
//! expression; only this subset is supported and anything else is rejected at validation.)
//! Consumer-level `limitReq` configs are separate configs, hence separate buckets per consumer.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::config::{self, FieldError, ProtoDuration};
use crate::filter::{Ctx, Filter, LocalReply, Pending, Resume, Status};
use crate::registry::{Order, Plugin, PluginConfig, Position};

pub struct LimitReq;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    average: u32,
    #[serde(default)]
    period: Option<ProtoDuration>,
    #[serde(default)]
    burst: u32,
    #[serde(default)]
    key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeySource {
    ClientIp,
    Header(String),
}

/// Parses the supported `key` expressions.
fn parse_key(expr: &str) -> Option<KeySource> {
    let e = expr.trim();
    if e.is_empty() {
        return Some(KeySource::ClientIp);
    }
    let inner = e.strip_prefix("request.header(")?.strip_suffix(')')?.trim();
    let name = inner
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))?;
    super::demo::is_header_name(name).then(|| KeySource::Header(name.to_ascii_lowercase()))
}

const SHARDS: usize = 16;
const MAX_KEYS_PER_SHARD: usize = 4096;

struct LimitReqConfig {
    key: KeySource,
    limiter: Limiter,
}

/// What a request is limited by. Client IPs are kept as addresses: no formatting or allocation
/// on the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum BucketKey<'a> {
    Ip(IpAddr),
    Str(&'a str),
}

/// The buckets of one shard. Two maps so that a lookup borrows the request's key and only a new
/// key is copied.
#[derive(Default)]
struct Shard {
    by_ip: HashMap<IpAddr, Bucket>,
    by_str: HashMap<String, Bucket>,
}

impl Shard {
    fn len(&self) -> usize {
        self.by_ip.len() + self.by_str.len()
    }
}

/// The token buckets of one config, sharded to keep lock contention between workers low.
struct Limiter {
    /// Tokens per second.
    rate: f64,
    burst: f64,
    max_delay: Duration,
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Decision {
    Allow,
    Delay(Duration),
    Reject,
}

impl Limiter {
    fn new(average: u32, period: Duration, burst: u32) -> Self {
        let rate = f64::from(average) / period.as_secs_f64();
        let max_delay = if rate >= 1.0 {
            Duration::from_secs_f64(0.5 / rate)
        } else {
            Duration::from_millis(500)
        };
        Limiter {
            rate,
            burst: f64::from(burst),
            max_delay,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    #[cfg(test)]
    fn take_str(&self, key: &str, now: Instant) -> Decision {
        self.take(BucketKey::Str(key), now)
    }

    fn take(&self, key: BucketKey<'_>, now: Instant) -> Decision {
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        // A poisoned lock only means another thread panicked mid-update; the map is still usable.
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        // Known key (the common case): one lookup, no allocation.
        let known = match key {
            BucketKey::Ip(ip) => shard.by_ip.get_mut(&ip),
            BucketKey::Str(s) => shard.by_str.get_mut(s),
        };
        if let Some(bucket) = known {
            return self.take_from(bucket, now);
        }
        if shard.len() >= MAX_KEYS_PER_SHARD {
            // Forget buckets that are full again: they behave exactly like new ones.
            shard
                .by_ip
                .retain(|_, b| self.refilled(b, now) < self.burst);
            shard
                .by_str
                .retain(|_, b| self.refilled(b, now) < self.burst);
            if shard.len() >= MAX_KEYS_PER_SHARD {
                shard.by_ip.clear();
                shard.by_str.clear();
            }
        }
        let new = Bucket {
            tokens: self.burst,
            last: now,
        };
        let bucket = match key {
            BucketKey::Ip(ip) => shard.by_ip.entry(ip).or_insert(new),
            BucketKey::Str(s) => shard.by_str.entry(s.to_owned()).or_insert(new),
        };
        self.take_from(bucket, now)
    }

    fn take_from(&self, bucket: &mut Bucket, now: Instant) -> Decision {
        bucket.tokens = self.refilled(bucket, now);
        bucket.last = now.max(bucket.last);
        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            return Decision::Allow;
        }
        let wait = Duration::from_secs_f64(-bucket.tokens / self.rate);
        if wait <= self.max_delay {
            Decision::Delay(wait)
        } else {
            bucket.tokens += 1.0;
            Decision::Reject
        }
    }

    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        (b.tokens + elapsed * self.rate).min(self.burst)
    }
}

impl Plugin for LimitReq {
    fn name(&self) -> &'static str {
        "limitReq"
    }
    fn response_hooks(&self) -> bool {
        false
    }
    fn order(&self) -> Order {
        Order::new(Position::Traffic)
    }
    fn parse_config(&self, config: &Value) -> Result<Arc<dyn PluginConfig>, FieldError> {
        let raw: RawConfig = config::from_value(config)?;
        if raw.average == 0 {
            return Err(FieldError::at("average", "must be greater than 0"));
        }
        let period = raw.period.map_or(Duration::ZERO, |p| p.0);
        let period = if period.is_zero() {
            Duration::from_secs(1)
        } else {
            period
        };
        let burst = if raw.burst == 0 { 1 } else { raw.burst };
        let key = match raw.key.as_deref() {
            None => KeySource::ClientIp,
            Some(expr) => parse_key(expr).ok_or_else(|| {
                FieldError::at(
                    "key",
                    "unsupported expression (supported: request.header(\"<name>\"))",
                )
            })?,
        };
        Ok(Arc::new(LimitReqConfig {
            key,
            limiter: Limiter::new(raw.average, period, burst),
        }))
    }
}

impl PluginConfig for LimitReqConfig {
    fn create_filter(self: Arc<Self>) -> Box<dyn Filter> {
        Box::new(LimitReqFilter(self))
    }
}

struct LimitReqFilter(Arc<LimitReqConfig>);

impl Filter for LimitReqFilter {
    fn decode_headers(&mut self, ctx: &mut Ctx<'_>, _end_stream: bool) -> Status {
        let from_header = match &self.0.key {
            KeySource::Header(name) => ctx.request_header(name).filter(|v| !v.is_empty()),
            KeySource::ClientIp => None,
        };
        let key = match &from_header {
            Some(v) => BucketKey::Str(v),
            None => match ctx.client_address() {
                Some(a) => BucketKey::Ip(a.ip()),
                None => BucketKey::Str(""),
            },
        };
        match self.0.limiter.take(key, Instant::now()) {
            Decision::Allow => Status::Continue,
            Decision::Delay(d) => {
                Status::Pending(Pending::after(d, Resume::with(Status::Continue)))
            }
            Decision::Reject => Status::LocalReply(LocalReply::msg(429, "too many requests")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{Driver, MockHost};
    use crate::{FilterChainConfig, FilterManager};
    use serde_json::json;

    #[test]
    fn bucket_allows_burst_then_delays_or_rejects() {
        let t0 = Instant::now();
        // 10/s, burst 2: interval 100 ms, max delay 50 ms.
        let l = Limiter::new(10, Duration::from_secs(1), 2);
        assert_eq!(l.take_str("a", t0), Decision::Allow);
        assert_eq!(l.take_str("a", t0), Decision::Allow);
        assert_eq!(l.take_str("a", t0), Decision::Reject);
        assert_eq!(l.take_str("b", t0), Decision::Allow);
        // 60 ms later 0.6 tokens: the next one is 40 ms away → delayed.
        match l.take_str("a", t0 + Duration::from_millis(60)) {
            Decision::Delay(d) => assert!((d.as_secs_f64() - 0.04).abs() < 1e-6, "{d:?}"),
            other => panic!("{other:?}"),
        }
        // The delayed request consumed the token.
        assert_eq!(
            l.take_str("a", t0 + Duration::from_millis(60)),
            Decision::Reject
        );
        assert_eq!(
            l.take_str("a", t0 + Duration::from_millis(400)),
            Decision::Allow
        );
    }

    #[test]
    fn slow_rate_uses_500ms_max_delay() {
        let t0 = Instant::now();
        let l = Limiter::new(1, Duration::from_secs(2), 1);
        assert_eq!(l.max_delay, Duration::from_millis(500));
        assert_eq!(l.take_str("a", t0), Decision::Allow);
        assert_eq!(
            l.take_str("a", t0 + Duration::from_millis(1000)),
            Decision::Reject
        );
        assert!(matches!(
            l.take_str("a", t0 + Duration::from_millis(1600)),
            Decision::Delay(_)
        ));
    }

    #[test]
    fn eviction_keeps_memory_bounded() {
        let t0 = Instant::now();
        let l = Limiter::new(1000, Duration::from_secs(1), 1);
        for i in 0..(SHARDS * MAX_KEYS_PER_SHARD * 2) {
            l.take_str(&i.to_string(), t0 + Duration::from_secs(1));
            let ip = IpAddr::from(u32::try_from(i).unwrap().to_be_bytes());
            l.take(BucketKey::Ip(ip), t0 + Duration::from_secs(1));
        }
        let total: usize = l.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= SHARDS * MAX_KEYS_PER_SHARD);
    }

    #[test]
    fn key_expressions() {
        assert_eq!(
            parse_key(r#"request.header("X-Key")"#),
            Some(KeySource::Header("x-key".into()))
        );
        assert_eq!(
            parse_key("request.header('x')"),
            Some(KeySource::Header("x".into()))
        );
        assert_eq!(parse_key("source.address()"), None);
        assert_eq!(
            crate::validate("limitReq", &json!({"average": 1, "key": "foo"}))
                .unwrap_err()
                .to_string(),
            "plugin limitReq: key: unsupported expression (supported: request.header(\"<name>\"))"
        );
        assert_eq!(
            crate::validate("limitReq", &json!({"average": 0}))
                .unwrap_err()
                .to_string(),
            "plugin limitReq: average: must be greater than 0"
        );
        assert!(
            crate::validate("limitReq", &json!({"average": 1, "period": "1x"}))
                .unwrap_err()
                .to_string()
                .starts_with("plugin limitReq: period: invalid duration")
        );
        assert!(
            crate::validate(
                "limitReq",
                &json!({"average": 5, "period": "60s", "burst": 3})
            )
            .is_ok()
        );
    }

    fn status(chain: &FilterChainConfig, host: MockHost) -> (u16, Vec<Duration>) {
        let mut host = host;
        let mut m = FilterManager::new(Some(chain), None, None);
        let ex = Driver::new(&mut m, &mut host).run(&[], &[], None);
        (ex.local_reply.map_or(200, |r| r.status), ex.delays)
    }

    #[test]
    fn limits_per_client_ip_and_header() {
        // One per hour: the second request would wait ~1h, far over the 500 ms max delay.
        let chain = FilterChainConfig::parse(&json!({"plugins": [{"name": "limitReq", "config": {"average": 1, "period": "3600s"}}]})).unwrap();
        assert_eq!(
            status(
                &chain,
                MockHost::request("GET", "/").with_client("10.0.0.1:1")
            )
            .0,
            200
        );
        let (code, _) = status(
            &chain,
            MockHost::request("GET", "/").with_client("10.0.0.1:2"),
        );
        assert_eq!(code, 429);
        assert_eq!(
            status(
                &chain,
                MockHost::request("GET", "/").with_client("10.0.0.2:1")
            )
            .0,
            200
        );

        let chain = FilterChainConfig::parse(&json!({"plugins": [{"name": "limitReq", "config": {"average": 1, "period": "3600s", "key": "request.header(\"x-user\")"}}]})).unwrap();
        let req = |user: &str| {
            MockHost::request("GET", "/")
                .with_client("10.0.0.9:1")
                .with_header("x-user", user)
        };
        assert_eq!(status(&chain, req("a")).0, 200);
        assert_eq!(status(&chain, req("a")).0, 429);
        assert_eq!(status(&chain, req("b")).0, 200);
        // Missing header falls back to the client IP.
        assert_eq!(
            status(
                &chain,
                MockHost::request("GET", "/").with_client("10.0.0.9:1")
            )
            .0,
            200
        );
    }
}
