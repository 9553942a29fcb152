//! The plugin catalogue: what a plugin is ([`Plugin`]), where it runs ([`Order`]) and the
//! registry of every plugin this crate knows.

use std::sync::Arc;

use serde_json::Value;

use crate::config::FieldError;
use crate::consumer::ConsumerCredential;
use crate::filter::Filter;
use crate::plugins;

/// Where a plugin runs in the chain (HTNN's order positions for in-chain plugins, ascending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Position {
    Access = 3,
    Authn = 4,
    Authz = 5,
    Traffic = 6,
    Transform = 7,
    Unspecified = 8,
    BeforeUpstream = 9,
    Stats = 10,
}

/// Placement within a [`Position`]; ties are broken by plugin name (byte order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    InsertFirst = -1,
    Nop = 0,
    InsertLast = 1,
}

/// A plugin's place in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Order {
    pub position: Position,
    pub operation: Operation,
}

impl Order {
    pub const fn new(position: Position) -> Self {
        Order {
            position,
            operation: Operation::Nop,
        }
    }
    pub const fn first(position: Position) -> Self {
        Order {
            position,
            operation: Operation::InsertFirst,
        }
    }
    pub const fn last(position: Position) -> Self {
        Order {
            position,
            operation: Operation::InsertLast,
        }
    }
}

impl Default for Order {
    fn default() -> Self {
        Order::new(Position::Unspecified)
    }
}

/// Total order of plugins in a chain: position, then operation, then name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderKey {
    pub position: Position,
    pub operation: Operation,
    pub name: &'static str,
}

impl OrderKey {
    pub fn of(plugin: &dyn Plugin) -> Self {
        let o = plugin.order();
        OrderKey {
            position: o.position,
            operation: o.operation,
            name: plugin.name(),
        }
    }
}

/// A plugin type: its metadata and its config parser. Implementations are zero-sized statics
/// listed in [`all`].
pub trait Plugin: Send + Sync + 'static {
    /// camelCase name used in configs (`keyAuth`).
    fn name(&self) -> &'static str;
    fn order(&self) -> Order {
        Order::default()
    }
    /// Consumer plugins authenticate a consumer; Consumers carry their config under `auth`.
    fn is_consumer_plugin(&self) -> bool {
        false
    }
    /// Whether this plugin's [`Filter`] overrides any response hook (`encode_*`). A plugin that
    /// only acts on the request returns `false`: when no plugin of a chain needs the response,
    /// the filter manager skips the response path altogether. (HTNN's Go filter manager finds
    /// this out by reflection; here the plugin says so.)
    fn response_hooks(&self) -> bool {
        true
    }
    /// Parses and validates a route/gateway-level config. Called once per config, on the
    /// control plane to validate and on the data plane at config time.
    fn parse_config(&self, config: &Value) -> Result<Arc<dyn PluginConfig>, FieldError>;
    /// Parses a Consumer's `auth.<plugin>` config (consumer plugins only).
    fn parse_consumer_config(&self, _config: &Value) -> Result<ConsumerCredential, FieldError> {
        Err(FieldError::root("not a consumer plugin"))
    }
}

/// A parsed, validated plugin config. Shared across worker threads; creates one cheap
/// [`Filter`] per request.
pub trait PluginConfig: Send + Sync + 'static {
    fn create_filter(self: Arc<Self>) -> Box<dyn Filter>;
}

/// Every registered plugin.
pub fn all() -> &'static [&'static dyn Plugin] {
    plugins::ALL
}

/// Environment variable that registers the test-only plugins (`testPanic`, `testBodyHash`,
/// `testCallout`) when set to `1`. Read once per process: data-plane tests set it for Envoy; in production it
/// is unset, so neither the control plane nor the module accepts those plugins.
pub const TEST_PLUGINS_ENV: &str = "HTNN_TEST_PLUGINS";

fn test_plugins_enabled() -> bool {
    static ENABLED: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| std::env::var(TEST_PLUGINS_ENV).is_ok_and(|v| v == "1"));
    cfg!(test) || *ENABLED
}

/// The plugin named `name`, if registered.
pub fn lookup(name: &str) -> Option<&'static dyn Plugin> {
    let test_only = if test_plugins_enabled() {
        plugins::TEST_ONLY
    } else {
        &[]
    };
    plugins::ALL
        .iter()
        .chain(test_only)
        .copied()
        .find(|p| p.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_consumer_plugins_are_authn() {
        let mut names: Vec<_> = all().iter().map(|p| p.name()).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len());
        for p in all() {
            if p.is_consumer_plugin() {
                assert_eq!(p.order().position, Position::Authn, "{}", p.name());
            }
        }
    }

    #[test]
    fn order_key_sorts_position_operation_name() {
        let k = |position, operation, name| OrderKey {
            position,
            operation,
            name,
        };
        let mut v = [
            k(Position::Traffic, Operation::Nop, "b"),
            k(Position::Authn, Operation::InsertLast, "a"),
            k(Position::Traffic, Operation::Nop, "a"),
            k(Position::Authn, Operation::Nop, "z"),
            k(Position::Traffic, Operation::InsertFirst, "z"),
        ];
        v.sort();
        let names: Vec<_> = v.iter().map(|k| (k.position, k.name)).collect();
        assert_eq!(
            names,
            vec![
                (Position::Authn, "z"),
                (Position::Authn, "a"),
                (Position::Traffic, "z"),
                (Position::Traffic, "a"),
                (Position::Traffic, "b"),
            ]
        );
        assert_eq!(lookup("keyAuth").map(|p| p.name()), Some("keyAuth"));
        assert!(lookup("nope").is_none());
    }
}
