//! Plugin config parsing and validation, shared by the control plane (validation) and the data
//! plane (parsing once at config time): one truth for plugin config.
//!
//! The filter-chain document is HTNN's per-route JSON:
//! `{"namespace": "<ns>", "plugins": [{"name": "<plugin>", "config": {...}}, ...]}`.
//! `namespace` is optional (only needed when a consumer plugin is configured); `config` may be
//! omitted or null for plugins without settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::filter::{Ctx, Filter, LocalReply, Status};
use crate::host::LogLevel;
use crate::registry::{self, OrderKey, Plugin, PluginConfig, Position};

/// A problem at one place of a JSON document: a dotted/indexed `path` (`keys[0].name`, empty
/// for the root) and a `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

impl FieldError {
    pub fn at(path: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            reason: reason.into(),
        }
    }
    pub fn root(reason: impl Into<String>) -> Self {
        FieldError::at(String::new(), reason)
    }
    /// The same error, located under `prefix` (`prefix.path`).
    pub fn under(self, prefix: &str) -> Self {
        FieldError {
            path: join_path(prefix, &self.path),
            reason: self.reason,
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

impl std::error::Error for FieldError {}

/// Why a config was rejected. `Display` reads like `plugin keyAuth: keys[0].name: missing field`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown plugin {0}")]
    UnknownPlugin(String),
    #[error("plugin {plugin}: {error}")]
    Plugin { plugin: String, error: FieldError },
    /// The surrounding document (filter chain, consumer carrier) is malformed.
    #[error("{0}")]
    Document(FieldError),
    #[error("consumer {namespace}/{name}: {error}")]
    Consumer {
        namespace: String,
        name: String,
        error: Box<ConfigError>,
    },
}

fn join_path(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// Deserializes `value` into `T`, reporting the failing field's path. Plugin config structs
/// use `#[serde(deny_unknown_fields)]` and lowerCamel names, like proto3 JSON.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let msg = e.inner().to_string();
        // serde reports a missing or unknown field at its parent; point at the field itself.
        if let Some(field) = backticked(&msg, "missing field `") {
            return FieldError::at(join_path(&path, field), "missing field");
        }
        if let Some(field) = backticked(&msg, "unknown field `") {
            let rest = msg.split_once("`, ").map_or("", |(_, r)| r);
            let reason = if rest.is_empty() {
                "unknown field".to_owned()
            } else {
                format!("unknown field, {rest}")
            };
            // serde_path_to_error already points at an unknown field; older versions did not.
            let at_field = path == field || path.ends_with(&format!(".{field}"));
            let path = if at_field {
                path
            } else {
                join_path(&path, field)
            };
            return FieldError::at(path, reason);
        }
        FieldError::at(path, msg)
    })
}

fn backticked<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    msg.strip_prefix(prefix)?.split('`').next()
}

/// A proto3-JSON `google.protobuf.Duration` (`"1.5s"`); `ms`, `m` and `h` suffixes are also
/// accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProtoDuration(pub Duration);

impl<'de> Deserialize<'de> for ProtoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(ProtoDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `"1s"`, `"0.5s"`, `"100ms"`, `"2m"`, `"1h"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. \"1s\", \"0.5s\", \"100ms\")");
    let (num, unit_secs) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        return Err(bad());
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let v: f64 = num.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(v * unit_secs).map_err(|_| bad())
}

/// One plugin of a chain: its descriptor, sort key and parsed config.
#[derive(Clone)]
pub struct ConfiguredPlugin {
    pub key: OrderKey,
    pub plugin: &'static dyn Plugin,
    pub config: Arc<dyn PluginConfig>,
}

impl ConfiguredPlugin {
    pub fn name(&self) -> &'static str {
        self.key.name
    }
}

impl fmt::Debug for ConfiguredPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfiguredPlugin")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Parses one plugin's route/gateway-level config.
pub fn parse_plugin(name: &str, config: &Value) -> Result<ConfiguredPlugin, ConfigError> {
    let plugin =
        registry::lookup(name).ok_or_else(|| ConfigError::UnknownPlugin(name.to_owned()))?;
    let config = plugin
        .parse_config(normalize(config))
        .map_err(|error| ConfigError::Plugin {
            plugin: name.to_owned(),
            error,
        })?;
    Ok(ConfiguredPlugin {
        key: OrderKey::of(plugin),
        plugin,
        config,
    })
}

static EMPTY_OBJECT: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| Value::Object(serde_json::Map::new()));

/// A missing/null config means "no settings".
fn normalize(config: &Value) -> &Value {
    if config.is_null() {
        &EMPTY_OBJECT
    } else {
        config
    }
}

/// Validates a route/gateway-level plugin config (what the control plane calls).
pub fn validate(plugin_name: &str, config: &Value) -> Result<(), ConfigError> {
    parse_plugin(plugin_name, config).map(drop)
}

/// Validates a Consumer's `auth.<plugin>` config: the plugin must be a consumer plugin.
pub fn validate_consumer_auth(plugin_name: &str, config: &Value) -> Result<(), ConfigError> {
    let plugin = registry::lookup(plugin_name)
        .ok_or_else(|| ConfigError::UnknownPlugin(plugin_name.to_owned()))?;
    let err = |error| ConfigError::Plugin {
        plugin: plugin_name.to_owned(),
        error,
    };
    if !plugin.is_consumer_plugin() {
        return Err(err(FieldError::root("not a consumer plugin")));
    }
    plugin
        .parse_consumer_config(normalize(config))
        .map(drop)
        .map_err(err)
}

/// Validates a Consumer's `filters.<plugin>` config: the plugin must run after Authn.
pub fn validate_consumer_filter(plugin_name: &str, config: &Value) -> Result<(), ConfigError> {
    let p = parse_plugin(plugin_name, config)?;
    check_consumer_filter(&p)
}

pub(crate) fn check_consumer_filter(p: &ConfiguredPlugin) -> Result<(), ConfigError> {
    if p.key.position <= Position::Authn {
        return Err(ConfigError::Plugin {
            plugin: p.name().to_owned(),
            error: FieldError::root("cannot be used as a consumer filter (runs before Authz)"),
        });
    }
    Ok(())
}

/// Validates a whole filter-chain document.
pub fn validate_filter_config(doc: &Value) -> Result<(), ConfigError> {
    FilterChainConfig::parse(doc).map(drop)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChain {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    plugins: Vec<RawPlugin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    name: String,
    #[serde(default)]
    config: Value,
}

/// A parsed filter chain (route- or gateway-level), sorted by plugin order. Immutable; share it
/// with `Arc`.
#[derive(Clone, Default, Debug)]
pub struct FilterChainConfig {
    namespace: Arc<str>,
    plugins: Vec<ConfiguredPlugin>,
}

impl FilterChainConfig {
    /// Strict parse: any unknown plugin, invalid plugin config or duplicate plugin is an error.
    pub fn parse(doc: &Value) -> Result<Self, ConfigError> {
        let raw: RawChain = from_value(doc).map_err(ConfigError::Document)?;
        let mut plugins = Vec::with_capacity(raw.plugins.len());
        for (i, p) in raw.plugins.iter().enumerate() {
            if plugins
                .iter()
                .any(|q: &ConfiguredPlugin| q.name() == p.name)
            {
                return Err(ConfigError::Document(FieldError::at(
                    format!("plugins[{i}].name"),
                    format!("duplicate plugin {}", p.name),
                )));
            }
            plugins.push(parse_plugin(&p.name, &p.config)?);
        }
        Ok(Self::from_plugins(&raw.namespace, plugins))
    }

    /// Data-plane parse, HTNN-style: unknown plugins are dropped, a plugin whose config is
    /// invalid is replaced by a placeholder that answers 500 to every request, duplicates keep
    /// the first entry. Only a malformed document is an error. Returns the problems found.
    pub fn parse_lenient(doc: &Value) -> Result<(Self, Vec<ConfigError>), ConfigError> {
        let raw: RawChain = from_value(doc).map_err(ConfigError::Document)?;
        let mut plugins: Vec<ConfiguredPlugin> = Vec::with_capacity(raw.plugins.len());
        let mut problems = Vec::new();
        for (i, p) in raw.plugins.iter().enumerate() {
            if plugins.iter().any(|q| q.name() == p.name) {
                problems.push(ConfigError::Document(FieldError::at(
                    format!("plugins[{i}].name"),
                    format!("duplicate plugin {}", p.name),
                )));
                continue;
            }
            match parse_plugin(&p.name, &p.config) {
                Ok(c) => plugins.push(c),
                Err(e) => {
                    if let Some(plugin) = registry::lookup(&p.name) {
                        plugins.push(ConfiguredPlugin {
                            key: OrderKey::of(plugin),
                            plugin,
                            config: Arc::new(InvalidConfig {
                                error: e.to_string(),
                            }),
                        });
                    }
                    problems.push(e);
                }
            }
        }
        Ok((Self::from_plugins(&raw.namespace, plugins), problems))
    }

    /// Parses JSON bytes strictly.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ConfigError> {
        let doc: Value = serde_json::from_slice(bytes)
            .map_err(|e| ConfigError::Document(FieldError::root(format!("invalid JSON: {e}"))))?;
        Self::parse(&doc)
    }

    /// Builds a chain from already parsed plugins (sorted here).
    pub fn from_plugins(namespace: &str, mut plugins: Vec<ConfiguredPlugin>) -> Self {
        plugins.sort_by_key(|p| p.key);
        FilterChainConfig {
            namespace: Arc::from(namespace),
            plugins,
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    pub(crate) fn namespace_arc(&self) -> &Arc<str> {
        &self.namespace
    }
    /// Plugins in execution order.
    pub fn plugins(&self) -> &[ConfiguredPlugin] {
        &self.plugins
    }
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }
}

/// Placeholder for a plugin whose config failed to parse on the data plane: fails closed.
struct InvalidConfig {
    error: String,
}

impl PluginConfig for InvalidConfig {
    fn create_filter(self: Arc<Self>) -> Box<dyn Filter> {
        Box::new(InvalidFilter(self))
    }
}

struct InvalidFilter(Arc<InvalidConfig>);

impl Filter for InvalidFilter {
    fn decode_headers(&mut self, ctx: &mut Ctx<'_>, _end_stream: bool) -> Status {
        ctx.log(
            LogLevel::Error,
            format_args!("invalid config: {}", self.0.error),
        );
        Status::LocalReply(LocalReply::msg(500, "internal error"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_paths() {
        let e = validate("keyAuth", &json!({"keys": [{"source": "HEADER"}]})).unwrap_err();
        assert_eq!(e.to_string(), "plugin keyAuth: keys[0].name: missing field");
        let e = validate(
            "keyAuth",
            &json!({"keys": [{"name": "a", "sauce": "HEADER"}]}),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("plugin keyAuth: keys[0].sauce: unknown field"),
            "{e}"
        );
        let e = validate(
            "keyAuth",
            &json!({"keys": [{"name": "a", "source": "COOKIE"}]}),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("plugin keyAuth: keys[0].source: unknown variant"),
            "{e}"
        );
        let e = validate("nope", &json!({})).unwrap_err();
        assert_eq!(e, ConfigError::UnknownPlugin("nope".into()));
        assert_eq!(e.to_string(), "unknown plugin nope");
        let e = validate("limitReq", &json!({"average": "x"})).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("plugin limitReq: average: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("1").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn chain_parse_sorts_and_rejects() {
        let doc = json!({"namespace": "ns", "plugins": [
            {"name": "limitReq", "config": {"average": 1}},
            {"name": "demo", "config": {"hostName": "x"}},
            {"name": "keyAuth", "config": {"keys": [{"name": "k"}]}},
        ]});
        let c = FilterChainConfig::parse(&doc).unwrap();
        let names: Vec<_> = c.plugins().iter().map(|p| p.name()).collect();
        assert_eq!(names, ["keyAuth", "limitReq", "demo"]);
        assert_eq!(c.namespace(), "ns");

        let dup = json!({"plugins": [{"name": "demo", "config": {"hostName": "x"}}, {"name": "demo", "config": {"hostName": "y"}}]});
        assert_eq!(
            FilterChainConfig::parse(&dup).unwrap_err().to_string(),
            "plugins[1].name: duplicate plugin demo"
        );
        let bad = json!({"plugins": [{"name": "demo"}]});
        assert_eq!(
            FilterChainConfig::parse(&bad).unwrap_err().to_string(),
            "plugin demo: hostName: missing field"
        );
        let shape = json!({"plugins": {}});
        assert!(
            FilterChainConfig::parse(&shape)
                .unwrap_err()
                .to_string()
                .starts_with("plugins: invalid type")
        );
        assert!(FilterChainConfig::from_slice(b"{").is_err());
        assert!(FilterChainConfig::from_slice(b"{}").unwrap().is_empty());
    }

    #[test]
    fn lenient_parse_keeps_placeholder_and_drops_unknown() {
        let doc = json!({"plugins": [
            {"name": "nope", "config": {}},
            {"name": "demo", "config": {}},
            {"name": "limitReq", "config": {"average": 2}},
        ]});
        let (c, problems) = FilterChainConfig::parse_lenient(&doc).unwrap();
        let names: Vec<_> = c.plugins().iter().map(|p| p.name()).collect();
        assert_eq!(names, ["limitReq", "demo"]);
        assert_eq!(problems.len(), 2);
    }

    #[test]
    fn consumer_validation() {
        assert!(validate_consumer_auth("keyAuth", &json!({"key": "k"})).is_ok());
        assert_eq!(
            validate_consumer_auth("keyAuth", &json!({}))
                .unwrap_err()
                .to_string(),
            "plugin keyAuth: key: missing field"
        );
        assert_eq!(
            validate_consumer_auth("demo", &json!({}))
                .unwrap_err()
                .to_string(),
            "plugin demo: not a consumer plugin"
        );
        assert!(validate_consumer_filter("limitReq", &json!({"average": 1})).is_ok());
        assert!(validate_consumer_filter("keyAuth", &json!({"keys": [{"name": "k"}]})).is_err());
    }
}
