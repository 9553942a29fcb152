//! Per-stream state: drives an [`htnn_plugins::FilterManager`] from Envoy's hooks and maps its
//! [`Action`]s onto Envoy statuses (the table in `htnn_plugins::manager`'s docs).
//!
//! Re-entrancy: calls that may re-enter Envoy's filter chain (`send_response`,
//! `continue_decoding/encoding`) are made only after the state borrow is released; a hook that
//! finds the state already borrowed (re-entered) passes the stream through.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use htnn_plugins::{
    Action, CalloutError, CalloutResponse, CalloutResult, CalloutTask, Completion, Direction,
    FilterManager, LocalResponse, PendingTask,
};

use crate::abi::{self, BodyStatus, HeadersStatus, TrailersStatus};
use crate::config::{FilterConfig, MainConfig, Metrics, RouteConfig, consumer_store};
use crate::envoy::{EnvoyFilter, Scheduler};
use crate::envoy_log;
use crate::host::{BodyScope, EnvoyHost};
use crate::log::Level;
use crate::runtime;

/// The outcome of one of our hooks, before mapping to a typed Envoy status.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    Continue,
    /// Stop iteration; on data hooks keep (buffer) the body.
    Stop,
    /// Stop iteration; on data hooks the body is not needed (a local reply was sent).
    StopNoBuffer,
}

impl Verdict {
    pub fn headers(self) -> HeadersStatus {
        match self {
            Verdict::Continue => HeadersStatus::Continue,
            Verdict::Stop | Verdict::StopNoBuffer => HeadersStatus::StopIteration,
        }
    }
    pub fn body(self) -> BodyStatus {
        match self {
            Verdict::Continue => BodyStatus::Continue,
            Verdict::Stop => BodyStatus::StopIterationAndBuffer,
            Verdict::StopNoBuffer => BodyStatus::StopIterationNoBuffer,
        }
    }
    pub fn trailers(self) -> TrailersStatus {
        match self {
            Verdict::Continue => TrailersStatus::Continue,
            Verdict::Stop | Verdict::StopNoBuffer => TrailersStatus::StopIteration,
        }
    }
}

/// Completed async work waiting for `on_http_filter_scheduled`, keyed by event id. `Err` carries
/// the panic message of a task that panicked.
type Completions = Arc<Mutex<HashMap<u64, Result<Completion, String>>>>;

/// Our object behind Envoy's per-stream pointer.
pub struct HttpFilter {
    config: Arc<FilterConfig>,
    state: RefCell<State>,
    /// Created by the first async task of the stream (most streams have none).
    completions: OnceCell<Completions>,
    /// Plugin HTTP callouts in flight. Separate from `state`: Envoy may report a callout done
    /// while we are starting it (inline failure), i.e. while a hook runs.
    callouts: RefCell<Callouts>,
    #[cfg(feature = "abi-selftest")]
    selftest: Option<crate::selftest::SelfTest>,
}

#[derive(Default)]
struct Callouts {
    /// By Envoy's callout id.
    in_flight: HashMap<u64, CalloutTask>,
    /// `http_callout` is running: a completion for an id we do not know yet lands in `early`.
    starting: bool,
    early: Vec<(u64, CalloutResult)>,
}

#[derive(Default)]
struct State {
    /// Created on request headers (the route is known then). `None`: pass through.
    manager: Option<FilterManager>,
    /// A local reply was sent, or an internal error happened: stop driving plugins.
    done: bool,
    scheduler: Option<Scheduler>,
    next_event: u64,
    /// Response headers went downstream; an encode-side reply can no longer replace them.
    response_headers_sent: bool,
}

impl HttpFilter {
    pub fn new(config: Arc<FilterConfig>) -> Self {
        HttpFilter {
            #[cfg(feature = "abi-selftest")]
            selftest: matches!(*config, FilterConfig::SelfTest).then(Default::default),
            config,
            state: RefCell::default(),
            completions: OnceCell::new(),
            callouts: RefCell::default(),
        }
    }

    fn main(&self) -> Option<&MainConfig> {
        match &*self.config {
            FilterConfig::Main(m) => Some(m),
            _ => None,
        }
    }

    fn metrics(&self) -> Metrics {
        self.main().map(|m| m.metrics).unwrap_or_default()
    }

    // ---- hooks ---------------------------------------------------------------------------------

    pub fn on_request_headers(&self, env: EnvoyFilter, end_of_stream: bool) -> HeadersStatus {
        #[cfg(feature = "abi-selftest")]
        if let Some(t) = &self.selftest {
            return t.request_headers(env, end_of_stream);
        }
        let Some(main) = self.main() else {
            return HeadersStatus::Continue;
        };
        {
            let Ok(mut st) = self.state.try_borrow_mut() else {
                return HeadersStatus::Continue;
            };
            let route = route_config(env);
            let gateway = main.gateway.as_ref();
            if route.is_none() && gateway.is_none() {
                return HeadersStatus::Continue;
            }
            let manager =
                FilterManager::new(route.map(|r| &r.chain), gateway, Some(consumer_store()));
            if manager.is_empty() {
                return HeadersStatus::Continue;
            }
            if let Some(id) = main.metrics.requests {
                env.increment_counter(id, 1);
            }
            st.manager = Some(manager);
        }
        self.step(env, BodyScope::Buffered, |m, h| {
            m.decode_headers(h, end_of_stream)
        })
        .headers()
    }

    pub fn on_request_body(&self, env: EnvoyFilter, end_of_stream: bool) -> BodyStatus {
        #[cfg(feature = "abi-selftest")]
        if let Some(t) = &self.selftest {
            return t.request_body(env, end_of_stream);
        }
        let scope = BodyScope::Data(htnn_plugins::BodyKind::Request);
        self.step(env, scope, |m, h| m.decode_data(h, end_of_stream))
            .body()
    }

    pub fn on_request_trailers(&self, env: EnvoyFilter) -> TrailersStatus {
        #[cfg(feature = "abi-selftest")]
        if let Some(t) = &self.selftest {
            return t.request_trailers();
        }
        self.step(env, BodyScope::Buffered, |m, h| m.decode_trailers(h))
            .trailers()
    }

    pub fn on_response_headers(&self, env: EnvoyFilter, end_of_stream: bool) -> HeadersStatus {
        #[cfg(feature = "abi-selftest")]
        if let Some(t) = &self.selftest {
            return t.response_headers(env);
        }
        let v = self.step(env, BodyScope::Buffered, |m, h| {
            m.encode_headers(h, end_of_stream)
        });
        if v == Verdict::Continue
            && let Ok(mut st) = self.state.try_borrow_mut()
        {
            st.response_headers_sent = true;
        }
        v.headers()
    }

    pub fn on_response_body(&self, env: EnvoyFilter, end_of_stream: bool) -> BodyStatus {
        #[cfg(feature = "abi-selftest")]
        if let Some(t) = &self.selftest {
            return t.response_body();
        }
        let scope = BodyScope::Data(htnn_plugins::BodyKind::Response);
        self.step(env, scope, |m, h| m.encode_data(h, end_of_stream))
            .body()
    }

    pub fn on_response_trailers(&self, env: EnvoyFilter) -> TrailersStatus {
        #[cfg(feature = "abi-selftest")]
        if let Some(t) = &self.selftest {
            return t.response_trailers();
        }
        self.step(env, BodyScope::Buffered, |m, h| m.encode_trailers(h))
            .trailers()
    }

    pub fn on_stream_complete(&self, env: EnvoyFilter) {
        #[cfg(feature = "abi-selftest")]
        if let Some(t) = &self.selftest {
            return t.stream_complete();
        }
        let Ok(mut st) = self.state.try_borrow_mut() else {
            return;
        };
        if let Some(m) = st.manager.as_mut() {
            m.on_log(&mut EnvoyHost::new(env, BodyScope::Buffered));
        }
        // No more events will be delivered; release the scheduler while the stream still exists.
        if let Some(s) = st.scheduler.take() {
            s.delete();
        }
    }

    pub fn on_scheduled(&self, env: EnvoyFilter, event_id: u64) {
        #[cfg(feature = "abi-selftest")]
        if let Some(t) = &self.selftest {
            return t.scheduled(env, event_id);
        }
        let completion = self.completions.get().and_then(|c| {
            c.lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&event_id)
        });
        let completion = match completion {
            None => return,
            Some(Ok(c)) => c,
            Some(Err(panic)) => {
                envoy_log!(Level::Error, "htnn: async plugin task panicked: {panic}");
                self.count_panic(env);
                let direction = {
                    let Ok(mut st) = self.state.try_borrow_mut() else {
                        return;
                    };
                    if st.done {
                        return;
                    }
                    st.done = true;
                    // The manager still waits on the lost completion; answer for it.
                    Direction::Decode
                };
                self.send_internal_error(env, direction);
                return;
            }
        };
        let direction = completion.direction();
        let v = self.step(env, BodyScope::Buffered, move |m, h| {
            m.resume(h, completion)
        });
        if v == Verdict::Continue {
            match direction {
                Direction::Decode => env.continue_decoding(),
                Direction::Encode => env.continue_encoding(),
            }
        }
    }

    pub fn on_callout_done(
        &self,
        env: EnvoyFilter,
        callout_id: u64,
        result: i32,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    ) {
        #[cfg(feature = "abi-selftest")]
        if let Some(t) = &self.selftest {
            return t.callout_done(env, result, &headers, &body);
        }
        let result = callout_result(result, headers, body);
        let task = {
            let Ok(mut c) = self.callouts.try_borrow_mut() else {
                return;
            };
            match c.in_flight.remove(&callout_id) {
                Some(task) => task,
                None if c.starting => {
                    // Completed inline, before `http_callout` returned its id.
                    c.early.push((callout_id, result));
                    return;
                }
                None => {
                    envoy_log!(
                        Level::Debug,
                        "htnn: unexpected callout completion {callout_id}"
                    );
                    return;
                }
            }
        };
        if self.state.try_borrow().map_or(true, |st| st.done) {
            // The stream was answered meanwhile (or we are re-entered): nothing to resume.
            return;
        }
        let direction = task.direction();
        let v = self.step(env, BodyScope::Buffered, move |m, h| {
            m.resume(h, task.complete(result))
        });
        if v == Verdict::Continue {
            match direction {
                Direction::Decode => env.continue_decoding(),
                Direction::Encode => env.continue_encoding(),
            }
        }
    }

    /// Fallback after a panic in one of our hooks: answer 500 on the request path (if possible),
    /// let the response through otherwise, and stop driving plugins for this stream.
    pub fn fail(&self, env: EnvoyFilter, direction: Direction) -> Verdict {
        self.count_panic(env);
        let already_done = match self.state.try_borrow_mut() {
            Ok(mut st) => std::mem::replace(&mut st.done, true),
            // The panic unwound while the state was borrowed; the RefCell is released by now,
            // so this only happens on re-entrancy. Pass through.
            Err(_) => true,
        };
        if direction == Direction::Encode || already_done {
            return Verdict::Continue;
        }
        self.send_internal_error(env, direction);
        Verdict::StopNoBuffer
    }

    /// Fallback after a panic in `scheduled` / `callout_done`: the stream is stopped and waits
    /// for us, so it must get an answer.
    pub fn fail_resumed(&self, env: EnvoyFilter) {
        self.count_panic(env);
        if let Ok(mut st) = self.state.try_borrow_mut()
            && std::mem::replace(&mut st.done, true)
        {
            return;
        }
        self.send_internal_error(env, Direction::Decode);
    }

    // ---- helpers -------------------------------------------------------------------------------

    /// Runs one manager call and applies its action. The state borrow ends before any call that
    /// may re-enter Envoy's filter chain.
    fn step(
        &self,
        env: EnvoyFilter,
        scope: BodyScope,
        f: impl FnOnce(&mut FilterManager, &mut EnvoyHost) -> Action,
    ) -> Verdict {
        let Some(mut action) = self.run_manager(env, scope, f) else {
            return Verdict::Continue;
        };
        loop {
            return match action {
                Action::Continue => Verdict::Continue,
                Action::Wait => Verdict::Stop,
                Action::LocalReply(reply) => {
                    self.send_local_reply(env, &reply);
                    Verdict::StopNoBuffer
                }
                Action::Pending(task) => {
                    if let Err(e) = self.spawn(env, task) {
                        envoy_log!(Level::Error, "htnn: cannot run async plugin work: {e}");
                        if let Ok(mut st) = self.state.try_borrow_mut() {
                            st.done = true;
                        }
                        self.send_internal_error(env, Direction::Decode);
                        return Verdict::StopNoBuffer;
                    }
                    Verdict::Stop
                }
                Action::Callout(task) => match self.start_callout(env, task) {
                    None => Verdict::Stop,
                    // Failed to start, or finished inline: resume right here.
                    Some(completion) => {
                        match self.run_manager(env, scope, move |m, h| m.resume(h, completion)) {
                            Some(next) => {
                                action = next;
                                continue;
                            }
                            None => Verdict::Continue,
                        }
                    }
                },
            };
        }
    }

    /// One manager call. `None`: nothing to drive (no manager, done, or re-entered).
    fn run_manager(
        &self,
        env: EnvoyFilter,
        scope: BodyScope,
        f: impl FnOnce(&mut FilterManager, &mut EnvoyHost) -> Action,
    ) -> Option<Action> {
        let mut st = self.state.try_borrow_mut().ok()?;
        if st.done {
            return None;
        }
        let manager = st.manager.as_mut()?;
        let mut host = EnvoyHost::new(env, scope);
        let action = f(manager, &mut host);
        if matches!(action, Action::LocalReply(_)) {
            st.done = true;
        }
        Some(action)
    }

    /// Starts a plugin's HTTP callout. `None`: in flight, `on_callout_done` will resume it.
    /// `Some`: it could not start or already finished; resume with this completion now.
    fn start_callout(&self, env: EnvoyFilter, task: CalloutTask) -> Option<Completion> {
        let req = task.request();
        let headers: Vec<(String, Vec<u8>)> = req
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
            .collect();
        let timeout_ms = u64::try_from(req.timeout.as_millis()).unwrap_or(u64::MAX);
        let Ok(mut c) = self.callouts.try_borrow_mut() else {
            let err = CalloutError::StartFailed("re-entered".to_owned());
            return Some(task.complete(Err(err)));
        };
        c.starting = true;
        drop(c);
        let started = env.http_callout(&req.cluster, &headers, &req.body, timeout_ms);
        let mut c = self.callouts.borrow_mut();
        c.starting = false;
        let early = std::mem::take(&mut c.early);
        match started {
            Ok(id) => {
                if let Some((_, result)) = early.into_iter().find(|(e, _)| *e == id) {
                    return Some(task.complete(result));
                }
                c.in_flight.insert(id, task);
                None
            }
            Err(rc) => {
                let why = callout_init_error(rc);
                envoy_log!(
                    Level::Warn,
                    "htnn: cannot start callout to cluster {}: {why}",
                    req.cluster
                );
                Some(task.complete(Err(CalloutError::StartFailed(why))))
            }
        }
    }

    /// Hands a pending plugin task to the module runtime; its completion comes back through
    /// the stream's scheduler as `on_http_filter_scheduled(event_id)`.
    fn spawn(&self, env: EnvoyFilter, task: PendingTask) -> Result<(), String> {
        let (handle, event_id) = {
            let mut st = self
                .state
                .try_borrow_mut()
                .map_err(|_| "re-entered".to_owned())?;
            if st.scheduler.is_none() {
                st.scheduler = Some(env.new_scheduler().ok_or("Envoy returned no scheduler")?);
            }
            let handle = st
                .scheduler
                .as_ref()
                .map(Scheduler::handle)
                .ok_or("no scheduler")?;
            st.next_event += 1;
            (handle, st.next_event)
        };
        let completions = self.completions.get_or_init(Completions::default).clone();
        runtime::spawn(task, move |result| {
            completions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(event_id, result);
            handle.commit(event_id);
        })
    }

    fn send_local_reply(&self, env: EnvoyFilter, reply: &LocalResponse) {
        if let Some(id) = self.metrics().local_replies {
            env.increment_counter(id, 1);
        }
        if self
            .state
            .try_borrow()
            .is_ok_and(|st| st.response_headers_sent)
        {
            envoy_log!(
                Level::Warn,
                "htnn: plugin {} replied {} after the response started; Envoy will reset the stream",
                reply.plugin,
                reply.status
            );
        }
        let headers: Vec<(String, Vec<u8>)> = reply
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
            .collect();
        let details = format!("htnn_{}", reply.plugin);
        env.send_response(u32::from(reply.status), &headers, &reply.body, &details);
    }

    fn send_internal_error(&self, env: EnvoyFilter, _direction: Direction) {
        let headers = vec![("content-type".to_owned(), b"application/json".to_vec())];
        env.send_response(
            500,
            &headers,
            br#"{"msg":"internal error"}"#,
            "htnn_internal_error",
        );
    }

    fn count_panic(&self, env: EnvoyFilter) {
        if let Some(id) = self.metrics().panics {
            env.increment_counter(id, 1);
        }
    }
}

/// Envoy's callout result, headers and body as a [`CalloutResult`].
fn callout_result(result: i32, headers: Vec<(String, Vec<u8>)>, body: Vec<u8>) -> CalloutResult {
    match result {
        abi::callout_result::SUCCESS => {
            let headers: Vec<(String, String)> = headers
                .into_iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect();
            let status = headers
                .iter()
                .find(|(k, _)| k == ":status")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            Ok(CalloutResponse {
                status,
                headers,
                body,
            })
        }
        abi::callout_result::EXCEED_RESPONSE_BUFFER_LIMIT => {
            Err(CalloutError::ExceedResponseBufferLimit)
        }
        _ => Err(CalloutError::Reset),
    }
}

fn callout_init_error(rc: i32) -> String {
    match rc {
        abi::callout_init::MISSING_REQUIRED_HEADERS => "missing required headers".to_owned(),
        abi::callout_init::CLUSTER_NOT_FOUND => "cluster not found".to_owned(),
        abi::callout_init::DUPLICATE_CALLOUT_ID => "duplicate callout id".to_owned(),
        abi::callout_init::CANNOT_CREATE_REQUEST => "cannot create request".to_owned(),
        other => format!("error {other}"),
    }
}

fn route_config<'a>(env: EnvoyFilter) -> Option<&'a RouteConfig> {
    // The pointer is one we produced in `per_route_config_new`; the dereference (and why it is
    // sound) lives in the hooks module with the other pointer conversions.
    crate::hooks::route_config_ref(env.most_specific_route_config())
}
