//! Hand-written declarations for the Envoy 1.40.0 dynamic-module ABI (`v0.2.0`).
//!
//! Only the types and callbacks this module uses are declared; the exported hooks live in the
//! private `hooks` module. Envoy does not check prototypes: a wrong declaration here is undefined
//! behaviour, not a load error, so every declaration is exercised by `tests/dataplane.rs`
//! (directly or through the `htnn.selftest` filter) against the real Envoy binary.
//!
//! Conventions:
//! - C enums are `int`. Values *we* pass to Envoy or return from hooks use `#[repr(i32)]` enums;
//!   values Envoy passes *to us* arrive as plain `i32` so an unexpected value is never UB.
//! - `EnvoyBuffer` / `EnvoyHttpHeader` point into Envoy memory, valid until the end of the current
//!   hook (or the next setter call). `ModuleBuffer` / `ModuleHttpHeader` point into our memory and
//!   only need to live for the duration of the call.

use std::ffi::{c_char, c_void};

/// ABI version string returned by `envoy_dynamic_module_on_program_init` (NUL-terminated).
/// A mismatch only makes Envoy warn; NULL rejects the module.
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

/// Envoy's filter-config object ("CE"), passed to `config_new` and metric definitions.
pub type ConfigEnvoyPtr = *mut c_void;
/// Our filter-config object ("CM").
pub type ConfigModulePtr = *const c_void;
/// Our per-route config object.
pub type PerRouteConfigModulePtr = *const c_void;
/// Envoy's per-stream filter object ("FE"). Only valid on the stream's worker, inside a hook.
pub type FilterEnvoyPtr = *mut c_void;
/// Our per-stream filter object ("FM").
pub type FilterModulePtr = *const c_void;
/// Envoy's scheduler for one stream; `commit` may be called from any thread.
pub type SchedulerPtr = *mut c_void;

/// Bytes owned by Envoy.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EnvoyBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const fn null() -> Self {
        Self {
            ptr: std::ptr::null(),
            length: 0,
        }
    }

    /// # Safety
    /// `ptr` must be NULL or valid for `length` bytes for the chosen lifetime.
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            &[]
        } else {
            // SAFETY: guaranteed by the caller.
            unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.length) }
        }
    }
}

/// Bytes owned by the module (borrowed for the duration of one callback).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModuleBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn new(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }

    /// A NULL buffer; `http_set_header` with a NULL value removes the header.
    pub const fn null() -> Self {
        Self {
            ptr: std::ptr::null(),
            length: 0,
        }
    }
}

/// A header owned by the module.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModuleHttpHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

impl ModuleHttpHeader {
    pub fn new(key: &[u8], value: &[u8]) -> Self {
        Self {
            key_ptr: key.as_ptr().cast(),
            key_length: key.len(),
            value_ptr: value.as_ptr().cast(),
            value_length: value.len(),
        }
    }
}

/// A header owned by Envoy (same layout as [`ModuleHttpHeader`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EnvoyHttpHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

impl EnvoyHttpHeader {
    pub const fn null() -> Self {
        Self {
            key_ptr: std::ptr::null(),
            key_length: 0,
            value_ptr: std::ptr::null(),
            value_length: 0,
        }
    }
}

#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderType {
    RequestHeader = 0,
    RequestTrailer = 1,
    ResponseHeader = 2,
    ResponseTrailer = 3,
}

#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyType {
    ReceivedRequestBody = 0,
    BufferedRequestBody = 1,
    ReceivedResponseBody = 2,
    BufferedResponseBody = 3,
}

/// Return value of the request/response headers hooks.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadersStatus {
    Continue = 0,
    StopIteration = 1,
    ContinueAndDontEndStream = 2,
    StopAllIterationAndBuffer = 3,
    StopAllIterationAndWatermark = 4,
}

/// Return value of the request/response body hooks.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyStatus {
    Continue = 0,
    StopIterationAndBuffer = 1,
    StopIterationAndWatermark = 2,
    StopIterationNoBuffer = 3,
}

/// Return value of the request/response trailers hooks.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrailersStatus {
    Continue = 0,
    StopIteration = 1,
}

#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
    Off = 6,
}

/// Result of `http_filter_http_callout` (as received: `i32`).
pub mod callout_init {
    pub const SUCCESS: i32 = 0;
    pub const MISSING_REQUIRED_HEADERS: i32 = 1;
    pub const CLUSTER_NOT_FOUND: i32 = 2;
    pub const DUPLICATE_CALLOUT_ID: i32 = 3;
    pub const CANNOT_CREATE_REQUEST: i32 = 4;
}

/// Result passed to `on_http_filter_http_callout_done` (as received: `i32`).
pub mod callout_result {
    pub const SUCCESS: i32 = 0;
    pub const RESET: i32 = 1;
    pub const EXCEED_RESPONSE_BUFFER_LIMIT: i32 = 2;
}

/// Result of metric definition / update callbacks (as received: `i32`).
pub mod metrics_result {
    pub const SUCCESS: i32 = 0;
    pub const METRIC_NOT_FOUND: i32 = 1;
    pub const INVALID_LABELS: i32 = 2;
    pub const FROZEN: i32 = 3;
}

#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataSource {
    Dynamic = 0,
    Route = 1,
    Cluster = 2,
    Host = 3,
    HostLocality = 4,
}

/// CEL attribute ids (`envoy_dynamic_module_type_attribute_id`); only the ones we read.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttributeId {
    RequestPath = 0,
    RequestUrlPath = 1,
    RequestHost = 2,
    RequestMethod = 4,
    RequestId = 9,
    RequestProtocol = 10,
    RequestQuery = 11,
    ResponseCode = 15,
    SourceAddress = 24,
    SourcePort = 25,
    DestinationAddress = 26,
    XdsRouteName = 61,
}

// The callbacks Envoy exports. The `.so` links with these left undefined; Envoy `dlopen`s with
// RTLD_NOW, so every name here must exist in the Envoy binary (checked by the validate test).
unsafe extern "C" {
    // ---- logging -------------------------------------------------------------------------------
    pub fn envoy_dynamic_module_callback_log(level: LogLevel, message: ModuleBuffer);
    pub fn envoy_dynamic_module_callback_log_enabled(level: LogLevel) -> bool;

    // ---- headers -------------------------------------------------------------------------------
    pub fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
        key: ModuleBuffer,
        out: *mut EnvoyBuffer,
        index: usize,
        optional_count: *mut usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
        out: *mut EnvoyHttpHeader,
    ) -> bool;
    /// A NULL `value` removes the header.
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    // ---- body ----------------------------------------------------------------------------------
    pub fn envoy_dynamic_module_callback_http_get_body_size(
        filter: FilterEnvoyPtr,
        body_type: BodyType,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter: FilterEnvoyPtr,
        body_type: BodyType,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: FilterEnvoyPtr,
        body_type: BodyType,
        out: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_append_body(
        filter: FilterEnvoyPtr,
        body_type: BodyType,
        data: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_drain_body(
        filter: FilterEnvoyPtr,
        body_type: BodyType,
        number_of_bytes: usize,
    ) -> bool;

    // ---- local reply / flow control ------------------------------------------------------------
    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoyPtr,
        status_code: u32,
        headers: *const ModuleHttpHeader,
        headers_count: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    pub fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: FilterEnvoyPtr);
    pub fn envoy_dynamic_module_callback_http_filter_continue_encoding(filter: FilterEnvoyPtr);

    // ---- per-route config / attributes ---------------------------------------------------------
    pub fn envoy_dynamic_module_callback_get_most_specific_route_config(
        filter: FilterEnvoyPtr,
    ) -> PerRouteConfigModulePtr;
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: FilterEnvoyPtr,
        id: AttributeId,
        out: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter: FilterEnvoyPtr,
        id: AttributeId,
        out: *mut u64,
    ) -> bool;

    // ---- metadata / filter state ---------------------------------------------------------------
    // Declared without a return value: its result is not relied upon, and ignoring a return value
    // is ABI-safe whichever way the header declares it.
    pub fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
        filter: FilterEnvoyPtr,
        namespace: ModuleBuffer,
        key: ModuleBuffer,
        value: ModuleBuffer,
    );
    pub fn envoy_dynamic_module_callback_http_get_metadata_string(
        filter: FilterEnvoyPtr,
        source: MetadataSource,
        namespace: ModuleBuffer,
        key: ModuleBuffer,
        out: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: ModuleBuffer,
        out: *mut EnvoyBuffer,
    ) -> bool;

    // ---- HTTP callouts -------------------------------------------------------------------------
    /// Returns a `callout_init` value; only on `SUCCESS` will `callout_done` be called.
    pub fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: FilterEnvoyPtr,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *const ModuleHttpHeader,
        headers_count: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> i32;

    // ---- scheduler -----------------------------------------------------------------------------
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_new(
        filter: FilterEnvoyPtr,
    ) -> SchedulerPtr;
    /// Thread-safe; a no-op once the filter is gone.
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: SchedulerPtr,
        event_id: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: SchedulerPtr);

    // ---- metrics (define only inside config_new) -----------------------------------------------
    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_count: usize,
        id_out: *mut usize,
    ) -> i32;
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_count: usize,
        value: u64,
    ) -> i32;

    // ---- misc ----------------------------------------------------------------------------------
    pub fn envoy_dynamic_module_callback_http_filter_get_worker_index(
        filter: FilterEnvoyPtr,
    ) -> u32;
}
