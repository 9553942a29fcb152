//! Host-agnostic plugin API, filter manager and plugins.
//!
//! Used by the Envoy module (which implements [`Host`] over Envoy's C ABI and drives a
//! [`FilterManager`] per stream) and by the control plane (which calls [`validate`] and friends:
//! one truth for plugin config).
//!
//! - [`registry`]: plugin catalogue ([`Plugin`], [`Order`], [`registry::lookup`]).
//! - [`config`]: filter-chain documents ([`FilterChainConfig`]), validation, [`ConfigError`].
//! - [`consumer`]: consumers, the consumer carrier document and the live [`ConsumerStore`].
//! - [`filter`]: the per-request [`Filter`] trait, [`Status`], [`Ctx`], async [`Pending`].
//! - [`callout`]: HTTP callouts through the host ([`Callout`], [`CalloutResult`]).
//! - [`manager`]: the [`FilterManager`] (ordering, buffering, consumer override, panics → 500).
//! - [`host`]: the [`Host`] trait; [`mock::MockHost`] for tests.
//! - [`plugins`]: `demo`, `keyAuth`, `basicAuth`, `limitReq`, `consumerRestriction`, and (with
//!   `HTNN_TEST_PLUGINS=1`, see [`registry::TEST_PLUGINS_ENV`]) `testPanic`, `testBodyHash`,
//!   `testCallout`.
#![forbid(unsafe_code)]

pub mod callout;
pub mod config;
pub mod consumer;
pub mod filter;
pub mod host;
pub mod http;
pub mod manager;
pub mod mock;
pub mod plugins;
pub mod registry;

pub use callout::{
    Callout, CalloutError, CalloutRequest, CalloutResponse, CalloutResult, DEFAULT_CALLOUT_TIMEOUT,
};
pub use config::{
    ConfigError, ConfiguredPlugin, FieldError, FilterChainConfig, validate, validate_consumer_auth,
    validate_consumer_filter, validate_filter_config,
};
pub use consumer::{Consumer, ConsumerCredential, ConsumerIndex, ConsumerStore};
pub use filter::{Ctx, Filter, LocalReply, Pending, PluginState, ReplyBody, Resume, Status};
pub use host::{BodyKind, HeaderMap, Host, LogLevel};
pub use manager::{
    Action, CalloutTask, Completion, Direction, FilterManager, LocalResponse, PendingTask,
};
pub use registry::{Operation, Order, Plugin, PluginConfig, Position};

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    #[test]
    fn thread_safety_contract() {
        // Configs and the consumer index are shared by every worker thread.
        send_sync::<FilterChainConfig>();
        send_sync::<ConsumerStore>();
        send_sync::<ConsumerIndex>();
        send_sync::<Consumer>();
        // Per-request objects stay on one worker but may be moved; pending work crosses threads.
        send::<FilterManager>();
        send::<PendingTask>();
        send::<Completion>();
        send::<CalloutTask>();
    }
}
