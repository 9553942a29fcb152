//! Logging through Envoy's log callback (messages appear under Envoy's `dynamic_modules` logger).
//!
//! Formatting happens only when Envoy has the level enabled.

use crate::abi::{self, LogLevel, ModuleBuffer};

pub use crate::abi::LogLevel as Level;

/// Whether Envoy would emit a message at `level`.
pub fn enabled(level: LogLevel) -> bool {
    if cfg!(test) {
        return false;
    }
    // SAFETY: plain call without pointers; callable from any thread.
    unsafe { abi::envoy_dynamic_module_callback_log_enabled(level) }
}

/// Emits `message` at `level` (without checking [`enabled`]).
pub fn write(level: LogLevel, message: &str) {
    if cfg!(test) {
        return;
    }
    // SAFETY: the buffer borrows `message`, alive for the whole call.
    unsafe { abi::envoy_dynamic_module_callback_log(level, ModuleBuffer::new(message.as_bytes())) }
}

/// `envoy_log!(Level::Warn, "x = {}", x)`
#[macro_export]
macro_rules! envoy_log {
    ($level:expr, $($arg:tt)+) => {{
        let level = $level;
        if $crate::log::enabled(level) {
            $crate::log::write(level, &::std::format!($($arg)+));
        }
    }};
}
