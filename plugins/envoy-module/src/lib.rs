//! Envoy dynamic module (`libhtnn.so`) hosting the htnn plugins.
//!
//! Layers, outermost first:
//! - `hooks` (private): the `envoy_dynamic_module_on_*` symbols Envoy resolves; pointer handling
//!   and panic containment only (every hook body runs under `catch_unwind`).
//! - [`abi`]: our own declarations of the Envoy 1.40.0 ABI (`v0.2.0`); [`envoy`]: safe wrappers.
//! - [`config`]: filter / per-route / consumer-carrier configs; [`filter`]: the per-stream state
//!   machine driving the [`htnn_plugins::FilterManager`]; [`host`]: the plugin host over Envoy
//!   callbacks; [`runtime`]: the tokio runtime that drives plugins' pending work.
//! - [`selftest`] (feature `abi-selftest`): a diagnostic filter exercising the callbacks.
//!
//! # Envoy configuration
//!
//! - `dynamic_module_config: {name: htnn, do_not_close: true}` with
//!   `ENVOY_DYNAMIC_MODULES_SEARCH_PATH` pointing at the directory of `libhtnn.so` (or
//!   `module.local.filename`). `do_not_close` is required: the module owns threads.
//! - HTTP filter `filter_name: htnn`: gateway-level chain as `filter_config` (JSON in a
//!   `StringValue`, or a `Struct`/`TypedStruct`); per-route `DynamicModuleFilterPerRoute` with the
//!   same shape under `typed_per_filter_config["<http filter name>"]`. The filter may be
//!   `disabled: true` by default and enabled by a per-route config (tested).
//! - HTTP filter `filter_name: htnn.consumers`: the consumer carrier (see [`config`]).
//!
//! `unsafe` is confined to `abi`, `envoy`, `log` and `hooks`; the workspace denies it elsewhere.

#[allow(unsafe_code)]
pub mod abi;
pub mod config;
#[allow(unsafe_code)]
pub mod envoy;
pub mod filter;
pub mod host;
// Private: its `#[no_mangle]` symbols are exported from the cdylib regardless, and nothing in
// Rust should call them.
#[allow(unsafe_code)]
mod hooks;
#[allow(unsafe_code)]
pub mod log;
pub mod runtime;
#[cfg(feature = "abi-selftest")]
pub mod selftest;

/// Routes panic messages to Envoy's log instead of stderr. The hooks still catch the unwind.
pub(crate) fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let location = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let payload = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log::write(log::Level::Error, &format!("panic{location}: {payload}"));
        }));
    });
}
