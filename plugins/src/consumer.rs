//! Consumers: who a request comes from, found by a consumer plugin (keyAuth, basicAuth) through
//! the consumer index.
//!
//! # Consumer carrier document
//!
//! All consumers of all namespaces travel in one JSON document (the data plane receives it as a
//! filter config and swaps the index atomically):
//!
//! ```json
//! {
//!   "<namespace>": {
//!     "<consumerName>": {
//!       "auth":    { "keyAuth": { "key": "rick" } },
//!       "filters": { "limitReq": { "average": 1 }, "demo": { "hostName": "x" } }
//!     }
//!   }
//! }
//! ```
//!
//! - `auth` (required, at least one entry): consumer-plugin name → that plugin's consumer config
//!   (not wrapped in `{"config": ...}`).
//! - `filters` (optional): plugin name → plugin config; only plugins that run after Authn.
//!   They replace same-named route plugins for this consumer's requests (HTNN §6.7).
//! - The consumer name is the data-plane name (`spec.name`, default `metadata.name`).
//!
//! The index maps namespace → plugin → index key (keyAuth: `key`, basicAuth: `username`) →
//! consumer. A consumer only matches routes of its own namespace. An invalid consumer is left
//! out (reported, never fatal for the others); a duplicate index key keeps the consumer whose name
//! sorts first and is reported.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{self, ConfigError, ConfiguredPlugin, FieldError};
use crate::registry;

/// A consumer's credential for one consumer plugin: the index key and the plugin's parsed
/// consumer config.
#[derive(Clone)]
pub struct ConsumerCredential {
    pub key: String,
    pub config: Arc<dyn Any + Send + Sync>,
}

impl ConsumerCredential {
    pub fn new<T: Any + Send + Sync>(key: impl Into<String>, config: T) -> Self {
        ConsumerCredential {
            key: key.into(),
            config: Arc::new(config),
        }
    }
}

impl fmt::Debug for ConsumerCredential {
    // Never print credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConsumerCredential(..)")
    }
}

/// One consumer.
#[derive(Debug)]
pub struct Consumer {
    namespace: String,
    name: String,
    auth: Vec<(&'static str, ConsumerCredential)>,
    filters: Vec<ConfiguredPlugin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsumer {
    auth: Map<String, Value>,
    #[serde(default)]
    filters: Map<String, Value>,
}

impl Consumer {
    /// Parses one consumer spec `{"auth": {...}, "filters": {...}}`.
    pub fn parse(namespace: &str, name: &str, spec: &Value) -> Result<Consumer, ConfigError> {
        let raw: RawConsumer = config::from_value(spec).map_err(ConfigError::Document)?;
        if raw.auth.is_empty() {
            return Err(ConfigError::Document(FieldError::at(
                "auth",
                "at least one consumer plugin required",
            )));
        }
        let mut auth = Vec::with_capacity(raw.auth.len());
        for (plugin_name, cfg) in &raw.auth {
            config::validate_consumer_auth(plugin_name, cfg)?;
            let plugin = registry::lookup(plugin_name).expect("validated above");
            let cred = plugin
                .parse_consumer_config(cfg)
                .map_err(|error| ConfigError::Plugin {
                    plugin: plugin_name.clone(),
                    error,
                })?;
            auth.push((plugin.name(), cred));
        }
        let mut filters = Vec::with_capacity(raw.filters.len());
        for (plugin_name, cfg) in &raw.filters {
            let p = config::parse_plugin(plugin_name, cfg)?;
            config::check_consumer_filter(&p)?;
            filters.push(p);
        }
        filters.sort_by_key(|p| p.key);
        Ok(Consumer {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            auth,
            filters,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    /// The credential for consumer plugin `plugin`.
    pub fn credential(&self, plugin: &str) -> Option<&ConsumerCredential> {
        self.auth.iter().find(|(p, _)| *p == plugin).map(|(_, c)| c)
    }
    /// The parsed consumer config of `plugin`, if it has type `T`.
    pub fn auth_config<T: Any>(&self, plugin: &str) -> Option<&T> {
        self.credential(plugin)?.config.downcast_ref::<T>()
    }
    /// Plugins this consumer adds or overrides, sorted by plugin order.
    pub fn filters(&self) -> &[ConfiguredPlugin] {
        &self.filters
    }
}

type ByKey = HashMap<String, Arc<Consumer>>;

/// namespace → plugin → index key → consumer. Immutable; replaced as a whole. The few consumer
/// plugins of a namespace sit in a small vector (a scan is cheaper than hashing their name).
#[derive(Default, Debug)]
pub struct ConsumerIndex {
    by_namespace: HashMap<String, Vec<(&'static str, ByKey)>>,
    count: usize,
}

impl ConsumerIndex {
    /// Parses the carrier document (see the module docs). Invalid consumers and duplicate keys
    /// are left out and returned as problems; only a malformed document is an error.
    pub fn parse(doc: &Value) -> Result<(ConsumerIndex, Vec<ConfigError>), ConfigError> {
        let namespaces = doc.as_object().ok_or_else(|| {
            ConfigError::Document(FieldError::root("expected an object of namespaces"))
        })?;
        let mut index = ConsumerIndex::default();
        let mut problems = Vec::new();
        let mut ns_names: Vec<&String> = namespaces.keys().collect();
        ns_names.sort();
        for ns in ns_names {
            let consumers = namespaces[ns].as_object().ok_or_else(|| {
                ConfigError::Document(FieldError::at(
                    ns.clone(),
                    "expected an object of consumers",
                ))
            })?;
            let mut names: Vec<&String> = consumers.keys().collect();
            names.sort();
            for name in names {
                match Consumer::parse(ns, name, &consumers[name]) {
                    Ok(c) => index.insert(Arc::new(c), &mut problems),
                    Err(e) => problems.push(ConfigError::Consumer {
                        namespace: ns.clone(),
                        name: name.clone(),
                        error: Box::new(e),
                    }),
                }
            }
        }
        Ok((index, problems))
    }

    /// Strict variant for the control plane: any problem is an error.
    pub fn validate(doc: &Value) -> Result<(), ConfigError> {
        let (_, mut problems) = Self::parse(doc)?;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.swap_remove(0))
        }
    }

    fn insert(&mut self, consumer: Arc<Consumer>, problems: &mut Vec<ConfigError>) {
        let ns = self
            .by_namespace
            .entry(consumer.namespace.clone())
            .or_default();
        for (plugin, cred) in &consumer.auth {
            let at = match ns.iter().position(|(p, _)| p == plugin) {
                Some(at) => at,
                None => {
                    ns.push((plugin, ByKey::default()));
                    ns.len() - 1
                }
            };
            let by_key = &mut ns[at].1;
            if let Some(existing) = by_key.get(&cred.key) {
                problems.push(ConfigError::Consumer {
                    namespace: consumer.namespace.clone(),
                    name: consumer.name.clone(),
                    error: Box::new(ConfigError::Plugin {
                        plugin: (*plugin).to_owned(),
                        error: FieldError::root(format!(
                            "duplicate credential, already used by consumer {}",
                            existing.name
                        )),
                    }),
                });
                continue;
            }
            by_key.insert(cred.key.clone(), consumer.clone());
        }
        self.count += 1;
    }

    pub fn lookup(&self, namespace: &str, plugin: &str, key: &str) -> Option<&Arc<Consumer>> {
        self.by_namespace
            .get(namespace)?
            .iter()
            .find(|(p, _)| *p == plugin)?
            .1
            .get(key)
    }

    /// Number of consumers indexed.
    pub fn len(&self) -> usize {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// The live consumer index, swapped atomically when a new carrier document arrives; readers
/// on worker threads never block.
#[derive(Default)]
pub struct ConsumerStore {
    current: ArcSwap<ConsumerIndex>,
}

impl ConsumerStore {
    pub fn new(index: ConsumerIndex) -> Self {
        ConsumerStore {
            current: ArcSwap::from_pointee(index),
        }
    }
    pub fn store(&self, index: ConsumerIndex) {
        self.current.store(Arc::new(index));
    }
    pub fn load(&self) -> Arc<ConsumerIndex> {
        self.current.load_full()
    }
    pub fn lookup(&self, namespace: &str, plugin: &str, key: &str) -> Option<Arc<Consumer>> {
        self.current.load().lookup(namespace, plugin, key).cloned()
    }
}

impl fmt::Debug for ConsumerStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerStore")
            .field("consumers", &self.current.load().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_index_and_lookup() {
        let doc = json!({
            "ns1": {
                "rick": {"auth": {"keyAuth": {"key": "k-rick"}}, "filters": {"limitReq": {"average": 1}}},
                "morty": {"auth": {"keyAuth": {"key": "k-morty"}, "basicAuth": {"username": "m", "password": "p"}}},
                "dup": {"auth": {"keyAuth": {"key": "k-rick"}}},
                "bad": {"auth": {"keyAuth": {}}},
                "bad2": {"auth": {}},
                "bad3": {"auth": {"keyAuth": {"key": "x"}}, "filters": {"keyAuth": {"keys": [{"name": "a"}]}}},
            },
            "ns2": {"rick": {"auth": {"keyAuth": {"key": "k-rick"}}}}
        });
        let (index, problems) = ConsumerIndex::parse(&doc).unwrap();
        let msgs: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert!(
            msgs.contains(&"consumer ns1/bad: plugin keyAuth: key: missing field".to_owned()),
            "{msgs:?}"
        );
        assert!(msgs.iter().any(|m| m.starts_with("consumer ns1/rick: plugin keyAuth: duplicate credential, already used by consumer dup")), "{msgs:?}");
        // "dup" sorts before "rick", so it owns the key.
        assert_eq!(
            index.lookup("ns1", "keyAuth", "k-rick").unwrap().name(),
            "dup"
        );
        assert_eq!(
            index.lookup("ns1", "basicAuth", "m").unwrap().name(),
            "morty"
        );
        assert_eq!(
            index
                .lookup("ns2", "keyAuth", "k-rick")
                .unwrap()
                .namespace(),
            "ns2"
        );
        assert!(index.lookup("ns3", "keyAuth", "k-rick").is_none());
        let rick = index.lookup("ns2", "keyAuth", "k-rick").unwrap();
        assert!(rick.filters().is_empty());
        assert!(ConsumerIndex::validate(&doc).is_err());
        assert!(ConsumerIndex::parse(&json!([])).is_err());

        let store = ConsumerStore::default();
        assert!(store.lookup("ns1", "keyAuth", "k-morty").is_none());
        store.store(index);
        assert_eq!(
            store.lookup("ns1", "keyAuth", "k-morty").unwrap().name(),
            "morty"
        );
        assert_eq!(
            format!(
                "{:?}",
                store
                    .lookup("ns1", "keyAuth", "k-morty")
                    .unwrap()
                    .credential("keyAuth")
                    .unwrap()
            ),
            "ConsumerCredential(..)"
        );
    }
}
