//! The event hooks Envoy resolves in `libhtnn.so` (`envoy_dynamic_module_on_*`).
//!
//! Every hook body runs inside [`guard`]: a panic never unwinds into Envoy (that would abort the
//! process). On a panic the hook logs through Envoy and returns a safe value: NULL for
//! constructors (Envoy rejects the config / closes the stream), a 500 local reply on the request
//! path, Continue elsewhere. Pointer ⇄ object conversion happens only here.

use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::abi::{
    self, BodyStatus, ConfigEnvoyPtr, ConfigModulePtr, EnvoyBuffer, EnvoyHttpHeader,
    FilterEnvoyPtr, FilterModulePtr, HeadersStatus, PerRouteConfigModulePtr, TrailersStatus,
};
use crate::config::{FilterConfig, RouteConfig};
use crate::envoy::{EnvoyConfig, EnvoyFilter};
use crate::envoy_log;
use crate::filter::HttpFilter;
use crate::log::Level;
use htnn_plugins::Direction;

/// Runs `f`, turning a panic into `fallback()` plus an error log.
fn guard<R>(hook: &str, fallback: impl FnOnce() -> R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = panic_message(&payload);
            // Logging itself must not unwind either.
            let _ = catch_unwind(AssertUnwindSafe(|| {
                envoy_log!(Level::Error, "panic in {hook}: {msg}");
            }));
            match catch_unwind(AssertUnwindSafe(fallback)) {
                Ok(r) => r,
                // The fallback only builds values or sends a local reply; if even that panics we
                // still must not unwind. Abort is the only sound exit left.
                Err(_) => std::process::abort(),
            }
        }
    }
}

pub(crate) fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// # Safety
/// Envoy-owned bytes valid for the duration of the hook.
unsafe fn bytes<'a>(buf: EnvoyBuffer) -> &'a [u8] {
    // SAFETY: forwarded from the caller.
    unsafe { buf.as_bytes() }
}

/// The per-stream pointer of filters whose streams pass through untouched (the consumer
/// carrier): no allocation per stream, and every hook returns at once. Only its address is used.
static PASS_THROUGH: u8 = 0;

fn pass_through() -> FilterModulePtr {
    (&raw const PASS_THROUGH).cast()
}

fn is_pass_through(fm: FilterModulePtr) -> bool {
    std::ptr::eq(fm, pass_through())
}

/// # Safety
/// `fm` must be a pointer returned by `on_http_filter_new` (not [`pass_through`]) and not yet
/// destroyed.
unsafe fn filter<'a>(fm: FilterModulePtr) -> &'a HttpFilter {
    // SAFETY: forwarded from the caller; Envoy passes back exactly what we returned.
    unsafe { &*fm.cast::<HttpFilter>() }
}

/// Our per-route object behind a pointer from `get_most_specific_route_config`.
pub(crate) fn route_config_ref<'a>(ptr: PerRouteConfigModulePtr) -> Option<&'a RouteConfig> {
    // SAFETY: Envoy only hands back pointers we returned from `per_route_config_new` (an
    // `Arc<RouteConfig>`), and the route (holding that config) stays alive while the stream that
    // matched it runs; callers use the reference only within the current hook.
    (!ptr.is_null()).then(|| unsafe { &*ptr.cast::<RouteConfig>() })
}

// ---- program / config --------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    guard("program_init", std::ptr::null, || {
        crate::install_panic_hook();
        abi::ABI_VERSION.as_ptr().cast()
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ConfigModulePtr {
    guard("http_filter_config_new", std::ptr::null, || {
        // SAFETY: Envoy buffers valid for this hook; `config_envoy` is the live config object.
        let (name, config, envoy) = unsafe {
            (
                bytes(name),
                bytes(config),
                EnvoyConfig::from_raw(config_envoy),
            )
        };
        let name = String::from_utf8_lossy(name);
        match FilterConfig::new(&name, config, &envoy) {
            Ok(cfg) => Arc::into_raw(Arc::new(cfg)).cast(),
            Err(e) => {
                envoy_log!(Level::Error, "rejecting filter config {name:?}: {e}");
                std::ptr::null()
            }
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: ConfigModulePtr) {
    guard(
        "http_filter_config_destroy",
        || (),
        || {
            if !config.is_null() {
                // SAFETY: produced by Arc::into_raw in config_new; Envoy destroys it once.
                drop(unsafe { Arc::from_raw(config.cast::<FilterConfig>()) });
            }
        },
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> PerRouteConfigModulePtr {
    guard("http_filter_per_route_config_new", std::ptr::null, || {
        // SAFETY: Envoy buffers valid for this hook.
        let (name, config) = unsafe { (bytes(name), bytes(config)) };
        let name = String::from_utf8_lossy(name);
        match RouteConfig::parse(&name, config) {
            Ok(cfg) => Arc::into_raw(Arc::new(cfg)).cast(),
            Err(e) => {
                envoy_log!(Level::Error, "rejecting per-route config {name:?}: {e}");
                std::ptr::null()
            }
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    config: PerRouteConfigModulePtr,
) {
    guard(
        "http_filter_per_route_config_destroy",
        || (),
        || {
            if !config.is_null() {
                // SAFETY: produced by Arc::into_raw in per_route_config_new; destroyed once.
                drop(unsafe { Arc::from_raw(config.cast::<RouteConfig>()) });
            }
        },
    )
}

// ---- stream lifecycle --------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ConfigModulePtr,
    _filter_envoy: FilterEnvoyPtr,
) -> FilterModulePtr {
    guard("http_filter_new", std::ptr::null, || {
        if config.is_null() {
            return std::ptr::null();
        }
        // SAFETY: `config` came from config_new (an `Arc<FilterConfig>` Envoy keeps alive while
        // streams exist).
        let shared = unsafe { &*config.cast::<FilterConfig>() };
        if matches!(shared, FilterConfig::Consumers(_)) {
            return pass_through();
        }
        // SAFETY: as above; the stream takes its own reference.
        let config = unsafe {
            Arc::increment_strong_count(config.cast::<FilterConfig>());
            Arc::from_raw(config.cast::<FilterConfig>())
        };
        Box::into_raw(Box::new(HttpFilter::new(config))).cast()
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(fm: FilterModulePtr) {
    guard(
        "http_filter_destroy",
        || (),
        || {
            if !fm.is_null() && !is_pass_through(fm) {
                // SAFETY: produced by Box::into_raw in filter_new; Envoy destroys it exactly once,
                // after the stream is gone (no Envoy callbacks may be used from Drop).
                drop(unsafe { Box::from_raw(fm.cast_mut().cast::<HttpFilter>()) });
            }
        },
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    fe: FilterEnvoyPtr,
    fm: FilterModulePtr,
) {
    if is_pass_through(fm) {
        return;
    }
    guard(
        "http_filter_stream_complete",
        || (),
        || {
            // SAFETY: pointers passed by Envoy for this live stream.
            let (env, f) = unsafe { (EnvoyFilter::from_raw(fe), filter(fm)) };
            f.on_stream_complete(env);
        },
    )
}

// ---- request path ------------------------------------------------------------------------------

/// One exported stream hook: pass-through filters return at once; otherwise the call goes to
/// the stream's filter inside [`guard`], with `$fail` as the answer after a panic.
macro_rules! stream_hook {
    ($export:ident, $name:literal, $status:ident, $dir:ident, $fail:ident, $method:ident $(, $eos:ident)?) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn $export(fe: FilterEnvoyPtr, fm: FilterModulePtr $(, $eos: bool)?) -> $status {
            if is_pass_through(fm) {
                return $status::Continue;
            }
            // SAFETY: pointers passed by Envoy for this live stream.
            let (env, f) = unsafe { (EnvoyFilter::from_raw(fe), filter(fm)) };
            guard($name, || f.fail(env, Direction::$dir).$fail(), || f.$method(env $(, $eos)?))
        }
    };
}

stream_hook!(
    envoy_dynamic_module_on_http_filter_request_headers,
    "http_filter_request_headers",
    HeadersStatus,
    Decode,
    headers,
    on_request_headers,
    end_of_stream
);
stream_hook!(
    envoy_dynamic_module_on_http_filter_request_body,
    "http_filter_request_body",
    BodyStatus,
    Decode,
    body,
    on_request_body,
    end_of_stream
);
stream_hook!(
    envoy_dynamic_module_on_http_filter_request_trailers,
    "http_filter_request_trailers",
    TrailersStatus,
    Decode,
    trailers,
    on_request_trailers
);

// ---- response path -----------------------------------------------------------------------------

stream_hook!(
    envoy_dynamic_module_on_http_filter_response_headers,
    "http_filter_response_headers",
    HeadersStatus,
    Encode,
    headers,
    on_response_headers,
    end_of_stream
);
stream_hook!(
    envoy_dynamic_module_on_http_filter_response_body,
    "http_filter_response_body",
    BodyStatus,
    Encode,
    body,
    on_response_body,
    end_of_stream
);
stream_hook!(
    envoy_dynamic_module_on_http_filter_response_trailers,
    "http_filter_response_trailers",
    TrailersStatus,
    Encode,
    trailers,
    on_response_trailers
);

// ---- async resume ------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    fe: FilterEnvoyPtr,
    fm: FilterModulePtr,
    event_id: u64,
) {
    if is_pass_through(fm) {
        return;
    }
    // SAFETY: pointers passed by Envoy for this live stream.
    let (env, f) = unsafe { (EnvoyFilter::from_raw(fe), filter(fm)) };
    guard(
        "http_filter_scheduled",
        || f.fail_resumed(env),
        || f.on_scheduled(env, event_id),
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    fe: FilterEnvoyPtr,
    fm: FilterModulePtr,
    callout_id: u64,
    result: i32,
    headers: *const EnvoyHttpHeader,
    headers_count: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_count: usize,
) {
    if is_pass_through(fm) {
        return;
    }
    // SAFETY: pointers passed by Envoy for this live stream.
    let (env, f) = unsafe { (EnvoyFilter::from_raw(fe), filter(fm)) };
    guard(
        "http_filter_http_callout_done",
        || f.fail_resumed(env),
        || {
            // Copy the response out: the arrays are valid only during this hook and may be NULL.
            let mut response_headers = Vec::new();
            if !headers.is_null() {
                // SAFETY: Envoy passes `headers_count` valid entries.
                for h in unsafe { std::slice::from_raw_parts(headers, headers_count) } {
                    // SAFETY: Envoy-owned bytes valid during this hook.
                    let (k, v) = unsafe {
                        (
                            bytes(EnvoyBuffer {
                                ptr: h.key_ptr,
                                length: h.key_length,
                            }),
                            bytes(EnvoyBuffer {
                                ptr: h.value_ptr,
                                length: h.value_length,
                            }),
                        )
                    };
                    response_headers.push((String::from_utf8_lossy(k).into_owned(), v.to_vec()));
                }
            }
            let mut body = Vec::new();
            if !body_chunks.is_null() {
                // SAFETY: Envoy passes `body_chunks_count` valid chunks.
                for c in unsafe { std::slice::from_raw_parts(body_chunks, body_chunks_count) } {
                    // SAFETY: Envoy-owned bytes valid during this hook.
                    body.extend_from_slice(unsafe { bytes(*c) });
                }
            }
            f.on_callout_done(env, callout_id, result, response_headers, body);
        },
    )
}

// ---- mandatory hooks we do not use -------------------------------------------------------------
// Envoy refuses the module if any of these is missing. We start no streaming callouts and do not
// react to watermarks, so they are empty (an empty body cannot panic).

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
    _stream_id: u64,
    _headers: *const EnvoyHttpHeader,
    _headers_count: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
    _stream_id: u64,
    _trailers: *const EnvoyHttpHeader,
    _trailers_count: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
    _stream_id: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
    _stream_id: u64,
    _reason: i32,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _fe: FilterEnvoyPtr,
    _fm: FilterModulePtr,
) {
}
