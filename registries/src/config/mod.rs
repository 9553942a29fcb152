//! Registry configs: the `spec.config` of a ServiceRegistry, validated strictly (unknown
//! fields are errors) and with HTNN's defaults filled in.

mod consul;
mod nacos;
mod url;

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

pub use consul::ConsulConfig;
pub use nacos::{NacosConfig, NacosVersion};
pub use url::ServerUrl;

use crate::FieldError;

/// HTNN's default for `serviceRefreshInterval` in both registries.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// A validated config of any registry type. Type-erased so third-party registries bring
/// their own config type through the same [`crate::RegistryType`]; each registry downcasts
/// to the type its validator produced.
#[derive(Clone)]
pub struct Config(Arc<dyn ConfigValue>);

/// What a config type must be: comparable (an unchanged config needs no reload) and
/// printable (for logs and debug views).
pub trait ConfigValue: Any + fmt::Debug + Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn eq_dyn(&self, other: &dyn ConfigValue) -> bool;
}

impl<T: Any + fmt::Debug + PartialEq + Send + Sync> ConfigValue for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn eq_dyn(&self, other: &dyn ConfigValue) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
}

impl Config {
    pub fn new<T: ConfigValue>(value: T) -> Self {
        Self(Arc::new(value))
    }

    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }
}

impl PartialEq for Config {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_dyn(&*other.0)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Walks a config object field by field: each `take_*` consumes a field, and [`Fields::finish`]
/// rejects whatever is left, so a misspelt field is an error instead of a silent default.
/// `null` counts as absent, as a YAML `key:` with no value does in Kubernetes.
pub(crate) struct Fields {
    map: Map<String, Value>,
}

const PREFIX: &str = "config";

pub(crate) fn field(name: &str) -> String {
    format!("{PREFIX}.{name}")
}

impl Fields {
    pub(crate) fn new(config: &Value) -> Result<Self, FieldError> {
        match config {
            Value::Object(map) => Ok(Self { map: map.clone() }),
            Value::Null => Ok(Self { map: Map::new() }),
            other => Err(FieldError::new(
                PREFIX,
                format!("must be an object, got {}", kind(other)),
            )),
        }
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name).filter(|v| !v.is_null())
    }

    pub(crate) fn string(&mut self, name: &str) -> Result<Option<String>, FieldError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(FieldError::new(
                field(name),
                format!("must be a string, got {}", kind(&other)),
            )),
        }
    }

    pub(crate) fn string_list(&mut self, name: &str) -> Result<Option<Vec<String>>, FieldError> {
        let items = match self.take(name) {
            None => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(FieldError::new(
                    field(name),
                    format!("must be a list of strings, got {}", kind(&other)),
                ));
            }
        };
        let mut out: Vec<String> = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let at = format!("{}[{i}]", field(name));
            let Value::String(s) = item else {
                return Err(FieldError::new(
                    at,
                    format!("must be a string, got {}", kind(&item)),
                ));
            };
            if s.is_empty() {
                return Err(FieldError::new(at, "must not be empty"));
            }
            if let Some(j) = out.iter().position(|o| *o == s) {
                return Err(FieldError::new(at, format!("duplicate of {name}[{j}]")));
            }
            out.push(s);
        }
        Ok(Some(out))
    }

    pub(crate) fn server_url(&mut self, name: &str) -> Result<ServerUrl, FieldError> {
        let raw = self
            .string(name)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| FieldError::new(field(name), "required"))?;
        ServerUrl::parse(&raw).map_err(|reason| FieldError::new(field(name), reason))
    }

    /// A Go duration (`30s`, `1m30s`) of at least one second, as HTNN's proto validation
    /// demands: a shorter interval would hammer the registry server.
    pub(crate) fn refresh_interval(&mut self, name: &str) -> Result<Duration, FieldError> {
        let Some(raw) = self.string(name)? else {
            return Ok(DEFAULT_REFRESH_INTERVAL);
        };
        let nanos = htnn_proto::spec::parse_go_duration(&raw)
            .map_err(|reason| FieldError::new(field(name), format!("{raw:?}: {reason}")))?;
        if nanos < 1_000_000_000 {
            return Err(FieldError::new(field(name), "must be at least 1s"));
        }
        Ok(Duration::from_nanos(nanos as u64))
    }

    pub(crate) fn finish(self) -> Result<(), FieldError> {
        match self.map.into_iter().next() {
            None => Ok(()),
            Some((name, _)) => Err(FieldError::new(field(&name), "unknown field")),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs_compare_by_value_across_the_erasure() {
        let a = Config::new(7u32);
        assert_eq!(a, Config::new(7u32));
        assert_ne!(a, Config::new(8u32));
        assert_ne!(a, Config::new(7u64));
        assert_eq!(a.downcast_ref::<u32>(), Some(&7));
    }

    #[test]
    fn refresh_interval_rules() {
        let check = |v: Value| Fields::new(&json!({"i": v})).unwrap().refresh_interval("i");
        assert_eq!(check(json!("1s")), Ok(Duration::from_secs(1)));
        assert_eq!(check(json!("1m30s")), Ok(Duration::from_secs(90)));
        assert_eq!(check(Value::Null), Ok(DEFAULT_REFRESH_INTERVAL));
        for short in ["999ms", "0", "-5s"] {
            assert_eq!(
                check(json!(short)).unwrap_err().to_string(),
                "config.i: must be at least 1s"
            );
        }
        let bad = check(json!("5x")).unwrap_err();
        assert_eq!(bad.field, "config.i");
        assert!(bad.message.starts_with("\"5x\": "), "{bad}");
        assert_eq!(
            check(json!(30)).unwrap_err().to_string(),
            "config.i: must be a string, got a number"
        );
    }

    #[test]
    fn string_lists_name_the_bad_item() {
        let check = |v: Value| Fields::new(&json!({"g": v})).unwrap().string_list("g");
        assert_eq!(
            check(json!(["a", ""])).unwrap_err().to_string(),
            "config.g[1]: must not be empty"
        );
        assert_eq!(
            check(json!(["a", 1])).unwrap_err().to_string(),
            "config.g[1]: must be a string, got a number"
        );
        assert_eq!(
            check(json!(["a", "b", "a"])).unwrap_err().to_string(),
            "config.g[2]: duplicate of g[0]"
        );
        assert_eq!(check(json!("a")).unwrap_err().field, "config.g");
    }

    #[test]
    fn config_must_be_an_object() {
        assert_eq!(
            Fields::new(&json!([1])).err().unwrap().to_string(),
            "config: must be an object, got a list"
        );
        assert!(Fields::new(&Value::Null).unwrap().finish().is_ok());
    }
}
