//! Safe wrappers over the per-stream and per-config Envoy callbacks.
//!
//! [`EnvoyFilter`] is a copy of Envoy's per-stream pointer. It may only be used on the stream's
//! worker thread while one of our hooks for that stream is running; the hook layer guarantees that
//! by constructing it from the pointer Envoy passes into each hook and never storing it.
//! Everything read from Envoy is copied before being returned (Envoy buffers only live until the
//! end of the hook or the next setter call).

use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use crate::abi::{
    self, AttributeId, BodyType, EnvoyBuffer, EnvoyHttpHeader, FilterEnvoyPtr, HeaderType,
    MetadataSource, ModuleBuffer, ModuleHttpHeader, SchedulerPtr,
};

#[derive(Clone, Copy)]
pub struct EnvoyFilter {
    raw: FilterEnvoyPtr,
}

impl EnvoyFilter {
    /// # Safety
    /// `raw` must be the filter pointer Envoy passed into the currently running hook.
    pub unsafe fn from_raw(raw: FilterEnvoyPtr) -> Self {
        Self { raw }
    }

    pub fn header(&self, kind: HeaderType, key: &str) -> Option<Vec<u8>> {
        self.header_at(kind, key, 0).map(|(v, _)| v)
    }

    /// Value at `index` of `key` plus the total number of values, copied.
    pub fn header_at(&self, kind: HeaderType, key: &str, index: usize) -> Option<(Vec<u8>, usize)> {
        // SAFETY: copied before any other call into Envoy.
        unsafe { self.header_ref(kind, key, index) }.map(|(v, n)| (v.to_vec(), n))
    }

    /// Value at `index` of `key` plus the total number of values, borrowed from Envoy.
    ///
    /// # Safety
    /// The slice is only valid until the end of the current hook and must not be used after any
    /// header setter call on this stream.
    pub unsafe fn header_ref<'a>(
        &self,
        kind: HeaderType,
        key: &str,
        index: usize,
    ) -> Option<(&'a [u8], usize)> {
        let mut out = EnvoyBuffer::null();
        let mut count = 0usize;
        // SAFETY: valid filter pointer (type invariant); `key` outlives the call.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_get_header(
                self.raw,
                kind,
                ModuleBuffer::new(key.as_bytes()),
                &mut out,
                index,
                &mut count,
            )
        };
        if !found || out.ptr.is_null() {
            return None;
        }
        // SAFETY: Envoy-owned bytes; lifetime contract forwarded to the caller.
        Some((unsafe { out.as_bytes() }, count))
    }

    pub fn header_values(&self, kind: HeaderType, key: &str) -> Vec<Vec<u8>> {
        let Some((first, count)) = self.header_at(kind, key, 0) else {
            return Vec::new();
        };
        let mut values = Vec::with_capacity(count.max(1));
        values.push(first);
        for index in 1..count {
            if let Some((v, _)) = self.header_at(kind, key, index) {
                values.push(v);
            }
        }
        values
    }

    /// All headers in order (keys are lower-case in Envoy's maps).
    pub fn headers(&self, kind: HeaderType) -> Vec<(String, Vec<u8>)> {
        // SAFETY: valid filter pointer.
        let n = unsafe { abi::envoy_dynamic_module_callback_http_get_headers_size(self.raw, kind) };
        if n == 0 {
            return Vec::new();
        }
        let mut raw = vec![EnvoyHttpHeader::null(); n];
        // SAFETY: `raw` has room for the `n` entries Envoy reported.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_get_headers(self.raw, kind, raw.as_mut_ptr())
        };
        if !ok {
            return Vec::new();
        }
        raw.iter()
            .map(|h| {
                // SAFETY: Envoy-owned header bytes, copied before any other call into Envoy.
                let key = unsafe {
                    EnvoyBuffer {
                        ptr: h.key_ptr,
                        length: h.key_length,
                    }
                    .as_bytes()
                };
                let value = unsafe {
                    EnvoyBuffer {
                        ptr: h.value_ptr,
                        length: h.value_length,
                    }
                    .as_bytes()
                };
                (String::from_utf8_lossy(key).into_owned(), value.to_vec())
            })
            .collect()
    }

    pub fn set_header(&self, kind: HeaderType, key: &str, value: &[u8]) -> bool {
        // SAFETY: valid filter pointer; both buffers outlive the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.raw,
                kind,
                ModuleBuffer::new(key.as_bytes()),
                ModuleBuffer::new(value),
            )
        }
    }

    pub fn add_header(&self, kind: HeaderType, key: &str, value: &[u8]) -> bool {
        // SAFETY: as in `set_header`.
        unsafe {
            abi::envoy_dynamic_module_callback_http_add_header(
                self.raw,
                kind,
                ModuleBuffer::new(key.as_bytes()),
                ModuleBuffer::new(value),
            )
        }
    }

    /// Removes every value of `key` (a NULL value in `set_header` removes).
    pub fn remove_header(&self, kind: HeaderType, key: &str) -> bool {
        // SAFETY: valid filter pointer; NULL value is the documented "remove" form.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.raw,
                kind,
                ModuleBuffer::new(key.as_bytes()),
                ModuleBuffer::null(),
            )
        }
    }

    pub fn body_size(&self, kind: BodyType) -> usize {
        // SAFETY: valid filter pointer.
        unsafe { abi::envoy_dynamic_module_callback_http_get_body_size(self.raw, kind) }
    }

    /// A copy of the body buffers `kinds`, concatenated in order (empty if absent). A chunk that
    /// appears in more than one buffer (Envoy may hand out the same slices for the buffered and
    /// the received body) is taken once.
    pub fn body(&self, kinds: &[BodyType]) -> Vec<u8> {
        let mut seen: Vec<*const std::ffi::c_char> = Vec::new();
        let mut body = Vec::new();
        for &kind in kinds {
            // SAFETY: valid filter pointer.
            let n = unsafe {
                abi::envoy_dynamic_module_callback_http_get_body_chunks_size(self.raw, kind)
            };
            if n == 0 {
                continue;
            }
            let mut chunks = vec![EnvoyBuffer::null(); n];
            // SAFETY: `chunks` has room for the `n` slices Envoy reported.
            let ok = unsafe {
                abi::envoy_dynamic_module_callback_http_get_body_chunks(
                    self.raw,
                    kind,
                    chunks.as_mut_ptr(),
                )
            };
            if !ok {
                continue;
            }
            for c in &chunks {
                if c.ptr.is_null() || seen.contains(&c.ptr) {
                    continue;
                }
                seen.push(c.ptr);
                // SAFETY: Envoy-owned slices valid during this hook; copied now.
                body.extend_from_slice(unsafe { c.as_bytes() });
            }
        }
        body
    }

    /// Drains the whole body buffer of `kind`.
    pub fn drain_body(&self, kind: BodyType) -> bool {
        let size = self.body_size(kind);
        // SAFETY: valid filter pointer.
        size == 0
            || unsafe { abi::envoy_dynamic_module_callback_http_drain_body(self.raw, kind, size) }
    }

    /// Appends `data` to the body buffer of `kind`.
    pub fn append_body(&self, kind: BodyType, data: &[u8]) -> bool {
        // SAFETY: valid filter pointer; `data` outlives the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_append_body(
                self.raw,
                kind,
                ModuleBuffer::new(data),
            )
        }
    }

    /// Sends a local reply. May synchronously re-enter Envoy (and end the stream).
    pub fn send_response(
        &self,
        status: u32,
        headers: &[(String, Vec<u8>)],
        body: &[u8],
        details: &str,
    ) {
        let raw_headers: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHttpHeader::new(k.as_bytes(), v))
            .collect();
        // SAFETY: valid filter pointer; header/body/details buffers outlive the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(
                self.raw,
                status,
                raw_headers.as_ptr(),
                raw_headers.len(),
                ModuleBuffer::new(body),
                ModuleBuffer::new(details.as_bytes()),
            )
        }
    }

    pub fn continue_decoding(&self) {
        // SAFETY: valid filter pointer.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_continue_decoding(self.raw) }
    }

    pub fn continue_encoding(&self) {
        // SAFETY: valid filter pointer.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_continue_encoding(self.raw) }
    }

    /// Our own per-route object for this stream's route, or NULL.
    pub fn most_specific_route_config(&self) -> *const c_void {
        // SAFETY: valid filter pointer.
        unsafe { abi::envoy_dynamic_module_callback_get_most_specific_route_config(self.raw) }
    }

    pub fn attribute_string(&self, id: AttributeId) -> Option<String> {
        self.with_attribute(id, |b| String::from_utf8_lossy(b).into_owned())
    }

    /// Runs `f` over a string attribute without copying it. `f` must not call into Envoy (the
    /// bytes are Envoy's and only guaranteed until the next call).
    pub fn with_attribute<R>(&self, id: AttributeId, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let mut out = EnvoyBuffer::null();
        // SAFETY: valid filter pointer.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.raw, id, &mut out,
            )
        };
        if !ok || out.ptr.is_null() {
            return None;
        }
        // SAFETY: Envoy-owned bytes valid during this hook, used only inside `f`.
        Some(f(unsafe { out.as_bytes() }))
    }

    pub fn attribute_int(&self, id: AttributeId) -> Option<u64> {
        let mut out = 0u64;
        // SAFETY: valid filter pointer and out pointer.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_get_attribute_int(self.raw, id, &mut out)
        };
        ok.then_some(out)
    }

    pub fn set_dynamic_metadata_string(&self, namespace: &str, key: &str, value: &str) {
        // SAFETY: valid filter pointer; buffers outlive the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
                self.raw,
                ModuleBuffer::new(namespace.as_bytes()),
                ModuleBuffer::new(key.as_bytes()),
                ModuleBuffer::new(value.as_bytes()),
            )
        }
    }

    pub fn metadata_string(
        &self,
        source: MetadataSource,
        namespace: &str,
        key: &str,
    ) -> Option<String> {
        let mut out = EnvoyBuffer::null();
        // SAFETY: valid filter pointer; result copied right away.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_get_metadata_string(
                self.raw,
                source,
                ModuleBuffer::new(namespace.as_bytes()),
                ModuleBuffer::new(key.as_bytes()),
                &mut out,
            )
        };
        if !ok || out.ptr.is_null() {
            return None;
        }
        // SAFETY: Envoy-owned bytes valid during this hook.
        Some(String::from_utf8_lossy(unsafe { out.as_bytes() }).into_owned())
    }

    pub fn set_filter_state_bytes(&self, key: &str, value: &[u8]) -> bool {
        // SAFETY: valid filter pointer; buffers outlive the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.raw,
                ModuleBuffer::new(key.as_bytes()),
                ModuleBuffer::new(value),
            )
        }
    }

    pub fn filter_state_bytes(&self, key: &str) -> Option<Vec<u8>> {
        let mut out = EnvoyBuffer::null();
        // SAFETY: valid filter pointer; result copied right away.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_get_filter_state_bytes(
                self.raw,
                ModuleBuffer::new(key.as_bytes()),
                &mut out,
            )
        };
        // SAFETY: Envoy-owned bytes valid during this hook.
        (ok && !out.ptr.is_null()).then(|| unsafe { out.as_bytes() }.to_vec())
    }

    /// Starts an HTTP callout to `cluster`. Headers must include `:method`, `:path` and `host`.
    /// On success returns the callout id that `on_http_filter_http_callout_done` will carry.
    pub fn http_callout(
        &self,
        cluster: &str,
        headers: &[(String, Vec<u8>)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, i32> {
        let raw_headers: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHttpHeader::new(k.as_bytes(), v))
            .collect();
        let mut id = 0u64;
        // SAFETY: valid filter pointer; all buffers outlive the call.
        let rc = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_http_callout(
                self.raw,
                &mut id,
                ModuleBuffer::new(cluster.as_bytes()),
                raw_headers.as_ptr(),
                raw_headers.len(),
                ModuleBuffer::new(body),
                timeout_ms,
            )
        };
        if rc == abi::callout_init::SUCCESS {
            Ok(id)
        } else {
            Err(rc)
        }
    }

    /// A new scheduler bound to this stream.
    pub fn new_scheduler(&self) -> Option<Scheduler> {
        // SAFETY: valid filter pointer.
        let raw = unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_new(self.raw) };
        (!raw.is_null()).then(|| Scheduler {
            inner: Arc::new(SchedulerInner {
                raw: Mutex::new(Some(SendPtr(raw))),
            }),
        })
    }

    pub fn increment_counter(&self, id: usize, value: u64) {
        // SAFETY: valid filter pointer; no labels.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_increment_counter(
                self.raw,
                id,
                std::ptr::null(),
                0,
                value,
            );
        }
    }

    pub fn worker_index(&self) -> u32 {
        // SAFETY: valid filter pointer.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_get_worker_index(self.raw) }
    }
}

struct SendPtr(SchedulerPtr);
// SAFETY: Envoy documents `scheduler_commit` as callable from any thread; the pointer is only
// dereferenced by Envoy, under the mutex in `SchedulerInner`.
unsafe impl Send for SendPtr {}

struct SchedulerInner {
    /// `None` once deleted. Commit and delete both hold the lock, so a commit can never race the
    /// deletion (a commit after delete would be a use-after-free inside Envoy).
    raw: Mutex<Option<SendPtr>>,
}

/// Owner of a stream's Envoy scheduler. Clone [`Scheduler::handle`] into background tasks;
/// the owner deletes the scheduler (on the worker) via [`Scheduler::delete`] or on drop.
pub struct Scheduler {
    inner: Arc<SchedulerInner>,
}

/// A thread-safe handle that can wake the stream from any thread.
#[derive(Clone)]
pub struct SchedulerHandle {
    inner: Arc<SchedulerInner>,
}

impl Scheduler {
    pub fn handle(&self) -> SchedulerHandle {
        SchedulerHandle {
            inner: self.inner.clone(),
        }
    }

    pub fn delete(&self) {
        let mut guard = self.inner.raw.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ptr) = guard.take() {
            // SAFETY: the pointer came from `scheduler_new` and is deleted exactly once.
            unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_delete(ptr.0) }
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.delete();
    }
}

impl SchedulerHandle {
    /// Asks Envoy to run `on_http_filter_scheduled(event_id)` on the stream's worker.
    /// Returns false if the scheduler is already gone.
    pub fn commit(&self, event_id: u64) -> bool {
        let guard = self.inner.raw.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(ptr) => {
                // SAFETY: not yet deleted (we hold the lock); commit is thread-safe.
                unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_scheduler_commit(ptr.0, event_id)
                };
                true
            }
            None => false,
        }
    }
}

/// Envoy's filter-config object, only valid inside `on_http_filter_config_new`.
pub struct EnvoyConfig {
    raw: abi::ConfigEnvoyPtr,
}

impl EnvoyConfig {
    /// # Safety
    /// `raw` must be the config pointer passed to the currently running `config_new` hook.
    pub unsafe fn from_raw(raw: abi::ConfigEnvoyPtr) -> Self {
        Self { raw }
    }

    /// Defines a label-less counter; stats are frozen after `config_new` returns.
    pub fn define_counter(&self, name: &str) -> Option<usize> {
        let mut id = 0usize;
        // SAFETY: valid config pointer inside config_new; `name` outlives the call.
        let rc = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                self.raw,
                ModuleBuffer::new(name.as_bytes()),
                std::ptr::null(),
                0,
                &mut id,
            )
        };
        (rc == abi::metrics_result::SUCCESS).then_some(id)
    }
}
