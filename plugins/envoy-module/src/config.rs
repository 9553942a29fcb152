//! Filter configs as Envoy hands them to us (`filter_name` + `filter_config` bytes).
//!
//! - `htnn` ([`MAIN_FILTER`]): the plugin filter. Its filter config is the gateway-level chain,
//!   HTNN's JSON `{"namespace": ..., "plugins": [...]}` (may be empty). Per-route configs have the
//!   same shape; route plugins win over same-named gateway plugins.
//! - `htnn.consumers` ([`CONSUMER_FILTER`]): the consumer carrier. Its config holds every
//!   consumer of every namespace ([`htnn_plugins::consumer`] documents the shape); creating it
//!   swaps the process-wide [`consumer_store`] atomically. Its streams pass through without any
//!   per-stream state. It may (and, for speed, should) be configured `disabled: true`: Envoy still
//!   hands a disabled-by-default filter its config but then creates no per-stream instance.
//!
//! The bytes arrive as JSON whether the xDS config used `google.protobuf.StringValue` (raw
//! bytes), `google.protobuf.Struct` or `xds.type.v3.TypedStruct` (Envoy serialises both to JSON).
//! Plugin configs are parsed once here, leniently as HTNN's data plane does: an unknown plugin is
//! dropped and an invalid one answers 500, both logged; only a malformed document is rejected.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use htnn_plugins::{ConfigError, ConsumerIndex, ConsumerStore, FilterChainConfig};
use serde_json::Value;

use crate::envoy::EnvoyConfig;
use crate::envoy_log;
use crate::log::Level;

/// `filter_name` of the plugin filter.
pub const MAIN_FILTER: &str = "htnn";
/// `filter_name` of the consumer carrier filter.
pub const CONSUMER_FILTER: &str = "htnn.consumers";

static CONSUMERS: LazyLock<Arc<ConsumerStore>> =
    LazyLock::new(|| Arc::new(ConsumerStore::default()));
/// Carrier configs alive in Envoy, oldest first. Several can coexist (one per listener, or old
/// and new during an update); the newest one's index is installed in [`CONSUMERS`].
static LIVE_CARRIERS: Mutex<Vec<LiveCarrier>> = Mutex::new(Vec::new());
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

struct LiveCarrier {
    generation: u64,
    /// Kept to rebuild the index if a newer carrier goes away first.
    doc: Option<Value>,
}

/// The live consumer index shared by every stream of the process.
pub fn consumer_store() -> Arc<ConsumerStore> {
    CONSUMERS.clone()
}

/// Error from parsing a filter or per-route config.
#[derive(Debug)]
pub struct Rejected(pub String);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ConfigError> for Rejected {
    fn from(e: ConfigError) -> Self {
        Rejected(e.to_string())
    }
}

/// Our object behind Envoy's filter-config pointer.
pub enum FilterConfig {
    Main(MainConfig),
    Consumers(ConsumersConfig),
    /// The diagnostic filter of [`crate::selftest`].
    #[cfg(feature = "abi-selftest")]
    SelfTest,
}

pub struct MainConfig {
    /// Gateway-level chain; `None` when empty.
    pub gateway: Option<FilterChainConfig>,
    pub metrics: Metrics,
}

pub struct ConsumersConfig {
    generation: u64,
}

/// Counter ids, defined at config time (Envoy freezes stat definitions after `config_new`).
/// Stat names are `<metrics_namespace>.<name>` (default namespace `dynamicmodulescustom`).
#[derive(Default, Debug, Clone, Copy)]
pub struct Metrics {
    /// Streams that ran at least one plugin.
    pub requests: Option<usize>,
    /// Local replies sent on behalf of a plugin.
    pub local_replies: Option<usize>,
    /// Panics caught at the FFI boundary or in a plugin.
    pub panics: Option<usize>,
}

impl Metrics {
    fn define(envoy: &EnvoyConfig) -> Self {
        Metrics {
            requests: envoy.define_counter("htnn_requests_total"),
            local_replies: envoy.define_counter("htnn_local_replies_total"),
            panics: envoy.define_counter("htnn_panics_total"),
        }
    }
}

impl FilterConfig {
    pub fn new(name: &str, config: &[u8], envoy: &EnvoyConfig) -> Result<Self, Rejected> {
        match name {
            MAIN_FILTER => Ok(FilterConfig::Main(MainConfig {
                gateway: parse_chain("filter", config)?.filter(|c| !c.is_empty()),
                metrics: Metrics::define(envoy),
            })),
            CONSUMER_FILTER => Ok(FilterConfig::Consumers(install_consumers(config)?)),
            #[cfg(feature = "abi-selftest")]
            crate::selftest::FILTER_NAME => Ok(FilterConfig::SelfTest),
            other => Err(Rejected(format!(
                "unknown filter_name {other:?} (expected {MAIN_FILTER:?} or {CONSUMER_FILTER:?})"
            ))),
        }
    }
}

impl Drop for ConsumersConfig {
    fn drop(&mut self) {
        let mut live = LIVE_CARRIERS.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pos) = live.iter().position(|c| c.generation == self.generation) else {
            return;
        };
        let was_installed = pos + 1 == live.len();
        live.remove(pos);
        if !was_installed {
            return;
        }
        // The installed carrier went away: fall back to the newest remaining one (e.g. another
        // listener's copy), or to no consumers at all.
        let index = match live.last().and_then(|c| c.doc.as_ref()) {
            Some(doc) => ConsumerIndex::parse(doc)
                .map(|(index, _)| index)
                .unwrap_or_default(),
            None => ConsumerIndex::default(),
        };
        CONSUMERS.store(index);
    }
}

fn parse_json(what: &str, bytes: &[u8]) -> Result<Option<Value>, Rejected> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| Rejected(format!("{what} config is not valid JSON: {e}")))
}

/// Parses a chain document leniently, logging dropped or failing plugins.
fn parse_chain(what: &str, bytes: &[u8]) -> Result<Option<FilterChainConfig>, Rejected> {
    let Some(doc) = parse_json(what, bytes)? else {
        return Ok(None);
    };
    let (chain, problems) = FilterChainConfig::parse_lenient(&doc)?;
    for p in problems {
        envoy_log!(Level::Error, "htnn: {what} config: {p}");
    }
    Ok(Some(chain))
}

fn install_consumers(bytes: &[u8]) -> Result<ConsumersConfig, Rejected> {
    let doc = parse_json("consumer", bytes)?;
    let index = match &doc {
        None => ConsumerIndex::default(),
        Some(doc) => {
            let (index, problems) = ConsumerIndex::parse(doc)?;
            for p in problems {
                envoy_log!(Level::Error, "htnn: consumer config: {p}");
            }
            index
        }
    };
    let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
    envoy_log!(
        Level::Info,
        "htnn: installing {} consumers (generation {generation})",
        index.len()
    );
    let mut live = LIVE_CARRIERS.lock().unwrap_or_else(|e| e.into_inner());
    CONSUMERS.store(index);
    live.push(LiveCarrier { generation, doc });
    Ok(ConsumersConfig { generation })
}

/// Our object behind Envoy's per-route config pointer.
pub struct RouteConfig {
    pub chain: FilterChainConfig,
}

impl RouteConfig {
    pub fn parse(_name: &str, config: &[u8]) -> Result<Self, Rejected> {
        Ok(RouteConfig {
            chain: parse_chain("per-route", config)?.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_config_parses_leniently_and_rejects_bad_documents() {
        let c = RouteConfig::parse(
            "htnn",
            br#"{"namespace":"ns","plugins":[{"name":"nope"},{"name":"keyAuth","config":{"keys":[{"name":"k"}]}}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.chain
                .plugins()
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>(),
            ["keyAuth"]
        );
        assert_eq!(c.chain.namespace(), "ns");
        assert!(RouteConfig::parse("htnn", b"").unwrap().chain.is_empty());
        assert!(RouteConfig::parse("htnn", b"{").is_err());
        assert!(RouteConfig::parse("htnn", br#"{"plugins":{}}"#).is_err());
    }

    #[test]
    fn consumer_generations() {
        let a = install_consumers(br#"{"ns":{"rick":{"auth":{"keyAuth":{"key":"k1"}}}}}"#).unwrap();
        assert!(consumer_store().lookup("ns", "keyAuth", "k1").is_some());
        let b =
            install_consumers(br#"{"ns":{"morty":{"auth":{"keyAuth":{"key":"k2"}}}}}"#).unwrap();
        assert!(consumer_store().lookup("ns", "keyAuth", "k1").is_none());
        drop(a); // an older carrier going away must not clear the newer one
        assert!(consumer_store().lookup("ns", "keyAuth", "k2").is_some());
        let c = install_consumers(br#"{"ns":{"rick":{"auth":{"keyAuth":{"key":"k3"}}}}}"#).unwrap();
        drop(c); // the installed carrier goes away: the newest remaining one is reinstalled
        assert!(consumer_store().lookup("ns", "keyAuth", "k2").is_some());
        assert!(consumer_store().lookup("ns", "keyAuth", "k3").is_none());
        drop(b);
        assert!(consumer_store().lookup("ns", "keyAuth", "k2").is_none());
        assert!(install_consumers(b"[]").is_err());
    }
}
