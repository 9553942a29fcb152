//! The filter manager: runs a request's plugins with HTNN's semantics.
//!
//! - Decode hooks run in plugin order, encode hooks in reverse order, `on_log` in order.
//! - Whole-body buffering ("if one plugin needs the whole body, every plugin sees it"): when
//!   plugin *i* returns `WaitAllData` from its headers hook, the manager holds the stream until
//!   the body is complete, then runs the data/trailers hooks of plugins before *i* over the
//!   buffered body, then plugin *i*'s `decode_request`, then the headers hooks of *i+1…*
//!   (possibly waiting again), and finally the data/trailers hooks of the remaining plugins.
//!   Body data arriving while the headers phase has not finished (a plugin is pending) is held
//!   and delivered once, as one chunk, when the headers phase is done.
//! - Consumer override: once every plugin up to and including the last Authn plugin ran its
//!   `decode_headers`, a consumer set by an auth plugin with `filters` replaces same-named
//!   plugins and adds the others; the rest of the request uses the merged, re-sorted list.
//! - Route and gateway chains are merged per plugin name, the route winning.
//! - A plugin that panics (caught) answers 500 for this request only; the plugin is not called
//!   again for this request.
//!
//! # Host contract (what the Envoy adapter does with an [`Action`])
//!
//! | Action | from a headers hook | from a data hook | from a trailers hook | from [`FilterManager::resume`] |
//! |---|---|---|---|---|
//! | `Continue` | Continue | Continue | Continue | continue decoding/encoding (the direction of the completion) |
//! | `Wait` | StopIteration | StopIterationAndBuffer | StopIteration | nothing |
//! | `LocalReply` | send it, StopIteration | send it, StopIterationAndBuffer | send it, StopIteration | send it |
//! | `Pending` | drive it, StopIteration | drive it, StopIterationAndBuffer | drive it, StopIteration | drive it |
//! | `Callout` | send it, StopIteration | send it, StopIterationAndBuffer | send it, StopIteration | send it |
//!
//! "Drive it": wait [`PendingTask::delay`], await [`PendingTask::into_future`] off the worker
//! thread, then on the stream's worker call [`FilterManager::resume`] with the [`Completion`].
//! "Send it": start the HTTP callout [`CalloutTask::request`], keep the task, and when the
//! callout finished (or could not start) call [`FilterManager::resume`] on the stream's worker
//! with [`CalloutTask::complete`]`(result)`.
//! Encode-side local replies after the response headers were sent cannot be honoured; the host
//! should reset the stream instead.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use crate::callout::{self, Callout, CalloutRequest, CalloutResult};
use crate::config::{ConfiguredPlugin, FilterChainConfig};
use crate::consumer::{Consumer, ConsumerStore};
use crate::filter::{
    BoxFuture, Ctx, Filter, LocalReply, PluginState, ReplyBody, RequestState, Resume, Status,
};
use crate::host::{Host, LogLevel};
use crate::http;
use crate::registry::{OrderKey, Position};

/// Request (decode) or response (encode) path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Decode,
    Encode,
}

/// What the host should do after a manager call (see the module docs for the mapping).
#[derive(Debug)]
pub enum Action {
    /// Let the stream go on.
    Continue,
    /// Stop iteration; hold (buffer) body data. More events or a [`Completion`] will follow.
    Wait,
    /// Answer the request with this response; the manager runs no more plugin hooks except
    /// `on_log`.
    LocalReply(LocalResponse),
    /// Drive this task, then call [`FilterManager::resume`].
    Pending(PendingTask),
    /// Send this HTTP callout, then call [`FilterManager::resume`] with
    /// [`CalloutTask::complete`] (also when it could not be started).
    Callout(CalloutTask),
}

/// A response to send instead of (or in place of) the upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The plugin that replied (also written to dynamic metadata `htnn` /
    /// `local_reply_plugin_name`); usable as response-code details.
    pub plugin: &'static str,
}

/// Asynchronous work of one plugin, handed to the host to drive.
pub struct PendingTask {
    direction: Direction,
    delay: Option<Duration>,
    future: BoxFuture<Resume>,
}

impl PendingTask {
    pub fn direction(&self) -> Direction {
        self.direction
    }
    /// Wait this long before polling the future (a host timer).
    pub fn delay(&self) -> Option<Duration> {
        self.delay
    }
    /// The work itself; `Send + 'static`, safe to run on any thread.
    pub fn into_future(self) -> BoxFuture<Completion> {
        let direction = self.direction;
        let future = self.future;
        Box::pin(async move {
            Completion {
                direction,
                resume: future.await,
            }
        })
    }
}

impl std::fmt::Debug for PendingTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingTask")
            .field("direction", &self.direction)
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

/// An HTTP callout of one plugin, handed to the host to send. Keep it until the callout finished,
/// then resume the manager with [`CalloutTask::complete`].
pub struct CalloutTask {
    direction: Direction,
    callout: Callout,
}

impl CalloutTask {
    pub fn direction(&self) -> Direction {
        self.direction
    }
    /// What to send.
    pub fn request(&self) -> &CalloutRequest {
        &self.callout.request
    }
    /// The completion to pass to [`FilterManager::resume`]: runs the plugin's continuation with
    /// `result` on the stream's worker thread.
    pub fn complete(self, result: CalloutResult) -> Completion {
        Completion {
            direction: self.direction,
            resume: callout::resume_with(self.callout, result),
        }
    }
}

impl std::fmt::Debug for CalloutTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CalloutTask")
            .field("direction", &self.direction)
            .field("request", &self.callout.request)
            .finish_non_exhaustive()
    }
}

/// The result of a [`PendingTask`] (or a [`CalloutTask`]), to be passed to [`FilterManager::resume`] on the stream's
/// worker thread.
pub struct Completion {
    direction: Direction,
    resume: Resume,
}

impl Completion {
    pub fn direction(&self) -> Direction {
        self.direction
    }
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("direction", &self.direction)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Headers(usize, bool),
    Data(usize, bool),
    Trailers(usize),
    Whole(usize),
}

impl Step {
    fn position(self) -> usize {
        match self {
            Step::Headers(p, _) | Step::Data(p, _) | Step::Trailers(p) | Step::Whole(p) => p,
        }
    }
}

enum Next {
    Run(Step),
    Continue,
    Wait,
}

/// Progress of one direction. Positions count in that direction's execution order.
#[derive(Default, Debug)]
struct DirState {
    headers_in: bool,
    headers_end: bool,
    /// Positions below have run their headers hook.
    hdr_next: usize,
    /// Position that returned `WaitAllData` and waits for the whole body.
    wait: Option<usize>,
    /// Positions below consumed the whole body through `*_request` / `*_response` or before it.
    consumed: usize,
    /// Body data is held that positions `data_next..` have not seen yet.
    data_in: bool,
    data_next: usize,
    data_end: bool,
    trailers_in: bool,
    trailers_next: usize,
    pending: Option<Step>,
}

impl DirState {
    fn body_complete(&self) -> bool {
        self.headers_end || self.data_end || self.trailers_in
    }

    fn next(&self, n: usize) -> Next {
        if self.pending.is_some() {
            return Next::Wait;
        }
        if !self.headers_in {
            return Next::Continue;
        }
        if let Some(w) = self.wait {
            if !self.body_complete() {
                return Next::Wait;
            }
            if self.data_in && self.data_next < w {
                return Next::Run(Step::Data(self.data_next, !self.trailers_in));
            }
            if self.trailers_in && self.trailers_next < w {
                return Next::Run(Step::Trailers(self.trailers_next));
            }
            return Next::Run(Step::Whole(w));
        }
        if self.hdr_next < n {
            return Next::Run(Step::Headers(self.hdr_next, self.headers_end));
        }
        if self.data_in && self.data_next < n {
            return Next::Run(Step::Data(
                self.data_next,
                self.data_end && !self.trailers_in,
            ));
        }
        if self.trailers_in && self.trailers_next < n {
            return Next::Run(Step::Trailers(self.trailers_next));
        }
        Next::Continue
    }

    fn complete(&mut self, step: Step, wait_all: bool) {
        match step {
            Step::Headers(p, _) => {
                self.hdr_next = p + 1;
                if wait_all {
                    self.wait = Some(p);
                }
            }
            Step::Data(p, _) => self.data_next = p + 1,
            Step::Trailers(p) => self.trailers_next = p + 1,
            Step::Whole(p) => {
                self.wait = None;
                self.consumed = p + 1;
                self.data_next = self.data_next.max(p + 1);
                self.trailers_next = self.trailers_next.max(p + 1);
            }
        }
    }

    fn on_data(&mut self, end_stream: bool) {
        if !self.data_in {
            self.data_in = true;
            self.data_next = self.consumed;
        }
        self.data_end |= end_stream;
    }

    fn on_trailers(&mut self) {
        self.trailers_in = true;
        self.trailers_next = self.trailers_next.max(self.consumed);
    }
}

struct Slot {
    key: OrderKey,
    filter: Box<dyn Filter>,
    poisoned: bool,
    /// [`crate::Plugin::response_hooks`].
    responds: bool,
}

impl Slot {
    fn new(p: &ConfiguredPlugin) -> Self {
        Slot {
            key: p.key,
            filter: p.config.clone().create_filter(),
            poisoned: false,
            responds: p.plugin.response_hooks(),
        }
    }
}

enum Outcome {
    Status(Status),
    Panicked,
}

/// Runs the plugins of one HTTP stream. Create one per request; cheap (one small allocation
/// per plugin).
pub struct FilterManager {
    slots: Vec<Slot>,
    req: RequestState,
    decode: DirState,
    encode: DirState,
    /// Slot index of the last Authn plugin of the initial chain, until the override ran.
    override_at: Option<usize>,
    /// Some plugin has response hooks; otherwise the response path is skipped.
    responds: bool,
    finished: bool,
    logged: bool,
}

impl FilterManager {
    /// A manager for the merge of `route` and `gateway` chains (route wins per plugin name).
    /// `consumers` is the live consumer index used by consumer plugins.
    pub fn new(
        route: Option<&FilterChainConfig>,
        gateway: Option<&FilterChainConfig>,
        consumers: Option<Arc<ConsumerStore>>,
    ) -> Self {
        let route_plugins = route.map_or(&[][..], |c| c.plugins());
        let gateway_plugins = gateway.map_or(&[][..], |c| c.plugins());
        let mut slots: Vec<Slot> = Vec::with_capacity(route_plugins.len() + gateway_plugins.len());
        slots.extend(route_plugins.iter().map(Slot::new));
        let mut needs_sort = false;
        for p in gateway_plugins {
            if !route_plugins.iter().any(|r| r.name() == p.name()) {
                slots.push(Slot::new(p));
                needs_sort = !route_plugins.is_empty();
            }
        }
        if needs_sort {
            slots.sort_by_key(|s| s.key);
        }
        let namespace = match (route, gateway) {
            (Some(r), _) if !r.namespace().is_empty() => r.namespace_arc().clone(),
            (_, Some(g)) => g.namespace_arc().clone(),
            (Some(r), None) => r.namespace_arc().clone(),
            (None, None) => Arc::from(""),
        };
        let override_at = slots
            .iter()
            .rposition(|s| s.key.position == Position::Authn);
        let responds = slots.iter().any(|s| s.responds);
        FilterManager {
            slots,
            req: RequestState {
                namespace,
                consumers,
                consumer: None,
                plugin_state: PluginState::default(),
            },
            decode: DirState::default(),
            encode: DirState::default(),
            override_at,
            responds,
            finished: false,
            logged: false,
        }
    }

    /// Whether the chain is empty (the host may then skip the manager entirely).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Plugin names in current execution (decode) order.
    pub fn plugin_names(&self) -> Vec<&'static str> {
        self.slots.iter().map(|s| s.key.name).collect()
    }

    /// The consumer set by an auth plugin, if any.
    pub fn consumer(&self) -> Option<&Arc<Consumer>> {
        self.req.consumer.as_ref()
    }

    /// Whether a local reply was produced; later hooks run no plugins (except `on_log`).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    pub fn decode_headers(&mut self, host: &mut dyn Host, end_stream: bool) -> Action {
        self.decode.headers_in = true;
        self.decode.headers_end = end_stream;
        self.drive(Direction::Decode, host)
    }

    pub fn decode_data(&mut self, host: &mut dyn Host, end_stream: bool) -> Action {
        self.decode.on_data(end_stream);
        self.drive(Direction::Decode, host)
    }

    pub fn decode_trailers(&mut self, host: &mut dyn Host) -> Action {
        self.decode.on_trailers();
        self.drive(Direction::Decode, host)
    }

    pub fn encode_headers(&mut self, host: &mut dyn Host, end_stream: bool) -> Action {
        if !self.responds {
            // No plugin has response hooks: the whole response path is a no-op.
            return Action::Continue;
        }
        self.encode.headers_in = true;
        self.encode.headers_end = end_stream;
        self.drive(Direction::Encode, host)
    }

    pub fn encode_data(&mut self, host: &mut dyn Host, end_stream: bool) -> Action {
        if !self.encode.headers_in {
            // The response path was skipped (see `encode_headers`): nothing can run.
            return Action::Continue;
        }
        self.encode.on_data(end_stream);
        self.drive(Direction::Encode, host)
    }

    pub fn encode_trailers(&mut self, host: &mut dyn Host) -> Action {
        if !self.encode.headers_in {
            return Action::Continue;
        }
        self.encode.on_trailers();
        self.drive(Direction::Encode, host)
    }

    /// Continues after a [`PendingTask`] finished. A completion that matches no pending hook
    /// (stale, or the stream already answered) is ignored and yields `Wait` ("do nothing").
    pub fn resume(&mut self, host: &mut dyn Host, completion: Completion) -> Action {
        let dir = completion.direction;
        if self.finished {
            return Action::Wait;
        }
        let Some(step) = self.dir_mut(dir).pending.take() else {
            log(
                host,
                LogLevel::Warn,
                "htnn: completion without a pending plugin, ignored",
            );
            return Action::Wait;
        };
        let resume = completion.resume;
        let outcome = self.call(dir, step, host, |_, ctx| resume.run(ctx));
        if let Some(action) = self.apply(dir, step, outcome, host) {
            return action;
        }
        self.drive(dir, host)
    }

    /// Runs every plugin's `on_log`, in order. Call once at the end of the stream.
    pub fn on_log(&mut self, host: &mut dyn Host) {
        if std::mem::replace(&mut self.logged, true) {
            return;
        }
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if slot.poisoned {
                continue;
            }
            let name = slot.key.name;
            let mut ctx = Ctx::new(host, &mut self.req, name);
            let filter = &mut slot.filter;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| filter.on_log(&mut ctx))) {
                slot.poisoned = true;
                log_panic(host, name, "on_log", &*panic);
            }
        }
    }

    fn dir_mut(&mut self, dir: Direction) -> &mut DirState {
        match dir {
            Direction::Decode => &mut self.decode,
            Direction::Encode => &mut self.encode,
        }
    }

    fn drive(&mut self, dir: Direction, host: &mut dyn Host) -> Action {
        if self.finished {
            return Action::Continue;
        }
        loop {
            if dir == Direction::Decode {
                self.maybe_apply_consumer_filters();
            }
            let n = self.slots.len();
            let step = match self.dir_mut(dir).next(n) {
                Next::Run(step) => step,
                Next::Wait => return Action::Wait,
                Next::Continue => {
                    self.dir_mut(dir).data_in = false;
                    return Action::Continue;
                }
            };
            let outcome = self.call(dir, step, host, |filter, ctx| {
                run_hook(filter, dir, step, ctx)
            });
            if let Some(action) = self.apply(dir, step, outcome, host) {
                return action;
            }
        }
    }

    /// HTNN §6.7: after the last Authn plugin ran its headers hook, merge the consumer's filters.
    fn maybe_apply_consumer_filters(&mut self) {
        let Some(last_authn) = self.override_at else {
            return;
        };
        let d = &self.decode;
        if d.hdr_next <= last_authn || d.wait.is_some() || d.pending.is_some() {
            return;
        }
        self.override_at = None;
        let Some(consumer) = self.req.consumer.clone() else {
            return;
        };
        if consumer.filters().is_empty() {
            return;
        }
        // Everything from hdr_next on has not run any hook yet; consumer filters all sort after
        // Authn, so they belong to this tail.
        let split = self.decode.hdr_next.min(self.slots.len());
        let mut tail = self.slots.split_off(split);
        tail.retain(|s| !consumer.filters().iter().any(|f| f.name() == s.key.name));
        tail.extend(consumer.filters().iter().map(Slot::new));
        tail.sort_by_key(|s| s.key);
        self.slots.append(&mut tail);
        self.responds = self.slots.iter().any(|s| s.responds);
    }

    fn slot_index(&self, dir: Direction, position: usize) -> usize {
        match dir {
            Direction::Decode => position,
            Direction::Encode => self.slots.len() - 1 - position,
        }
    }

    fn call(
        &mut self,
        dir: Direction,
        step: Step,
        host: &mut dyn Host,
        f: impl FnOnce(&mut dyn Filter, &mut Ctx<'_>) -> Status,
    ) -> Outcome {
        let idx = self.slot_index(dir, step.position());
        let slot = &mut self.slots[idx];
        if slot.poisoned {
            return Outcome::Status(Status::Continue);
        }
        let name = slot.key.name;
        let mut ctx = Ctx::new(host, &mut self.req, name);
        let filter = &mut *slot.filter;
        match catch_unwind(AssertUnwindSafe(|| f(filter, &mut ctx))) {
            Ok(status) => Outcome::Status(status),
            Err(panic) => {
                slot.poisoned = true;
                log_panic(host, name, hook_name(dir, step), &*panic);
                Outcome::Panicked
            }
        }
    }

    fn apply(
        &mut self,
        dir: Direction,
        step: Step,
        outcome: Outcome,
        host: &mut dyn Host,
    ) -> Option<Action> {
        let plugin = self.slots[self.slot_index(dir, step.position())].key.name;
        let status = match outcome {
            Outcome::Status(s) => s,
            Outcome::Panicked => {
                self.finished = true;
                return Some(Action::LocalReply(self.render(
                    dir,
                    LocalReply::msg(500, "internal error"),
                    plugin,
                    host,
                )));
            }
        };
        match status {
            Status::Continue => self.dir_mut(dir).complete(step, false),
            Status::WaitAllData => {
                let is_headers = matches!(step, Step::Headers(..));
                if !is_headers {
                    log(
                        host,
                        LogLevel::Warn,
                        "htnn: WaitAllData is only valid from a headers hook; ignored",
                    );
                }
                self.dir_mut(dir).complete(step, is_headers);
            }
            Status::LocalReply(reply) => {
                self.finished = true;
                return Some(Action::LocalReply(self.render(dir, reply, plugin, host)));
            }
            Status::Pending(p) => {
                self.dir_mut(dir).pending = Some(step);
                return Some(Action::Pending(PendingTask {
                    direction: dir,
                    delay: p.delay,
                    future: p.future,
                }));
            }
            Status::Callout(callout) => {
                self.dir_mut(dir).pending = Some(step);
                return Some(Action::Callout(CalloutTask {
                    direction: dir,
                    callout,
                }));
            }
        }
        None
    }

    /// Applies HTNN's body rule and records the replying plugin.
    fn render(
        &self,
        dir: Direction,
        reply: LocalReply,
        plugin: &'static str,
        host: &mut dyn Host,
    ) -> LocalResponse {
        let status = if reply.status == 0 { 200 } else { reply.status };
        let mut headers = reply.headers;
        let body = match reply.body {
            ReplyBody::Empty => Vec::new(),
            ReplyBody::Raw(b) => b,
            ReplyBody::Msg(msg) => {
                let has_ct = headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
                if has_ct {
                    msg.into_bytes()
                } else {
                    let req_ct = host.request_header("content-type");
                    let mut json = req_ct.as_deref().is_none_or(http::is_json_content_type);
                    if dir == Direction::Encode && !json {
                        json = host
                            .response_header("content-type")
                            .as_deref()
                            .is_some_and(http::is_json_content_type);
                    }
                    if json {
                        headers.push(("content-type".to_owned(), "application/json".to_owned()));
                        serde_json::json!({ "msg": msg }).to_string().into_bytes()
                    } else {
                        headers.push(("content-type".to_owned(), "text/plain".to_owned()));
                        msg.into_bytes()
                    }
                }
            }
        };
        host.set_dynamic_metadata("htnn", "local_reply_plugin_name", plugin);
        LocalResponse {
            status,
            headers,
            body,
            plugin,
        }
    }
}

fn run_hook(filter: &mut dyn Filter, dir: Direction, step: Step, ctx: &mut Ctx<'_>) -> Status {
    match (dir, step) {
        (Direction::Decode, Step::Headers(_, end)) => filter.decode_headers(ctx, end),
        (Direction::Decode, Step::Data(_, end)) => filter.decode_data(ctx, end),
        (Direction::Decode, Step::Trailers(_)) => filter.decode_trailers(ctx),
        (Direction::Decode, Step::Whole(_)) => filter.decode_request(ctx),
        (Direction::Encode, Step::Headers(_, end)) => filter.encode_headers(ctx, end),
        (Direction::Encode, Step::Data(_, end)) => filter.encode_data(ctx, end),
        (Direction::Encode, Step::Trailers(_)) => filter.encode_trailers(ctx),
        (Direction::Encode, Step::Whole(_)) => filter.encode_response(ctx),
    }
}

fn hook_name(dir: Direction, step: Step) -> &'static str {
    match (dir, step) {
        (Direction::Decode, Step::Headers(..)) => "decode_headers",
        (Direction::Decode, Step::Data(..)) => "decode_data",
        (Direction::Decode, Step::Trailers(_)) => "decode_trailers",
        (Direction::Decode, Step::Whole(_)) => "decode_request",
        (Direction::Encode, Step::Headers(..)) => "encode_headers",
        (Direction::Encode, Step::Data(..)) => "encode_data",
        (Direction::Encode, Step::Trailers(_)) => "encode_trailers",
        (Direction::Encode, Step::Whole(_)) => "encode_response",
    }
}

fn log(host: &dyn Host, level: LogLevel, msg: &str) {
    if host.log_enabled(level) {
        host.log(level, msg);
    }
}

fn log_panic(host: &dyn Host, plugin: &str, hook: &str, panic: &(dyn Any + Send)) {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload");
    log(
        host,
        LogLevel::Error,
        &format!("htnn plugin {plugin}: panic in {hook}: {what}"),
    );
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};

    use super::*;
    use crate::callout::{CalloutError, CalloutResponse};
    use crate::config::FieldError;
    use crate::filter::{Pending, Resume};
    use crate::host::BodyKind;
    use crate::mock::{Driver, MockHost, UpstreamResponse, block_on};
    use crate::registry::{Order, Plugin, PluginConfig};
    use crate::{ConsumerIndex, ConsumerStore};

    type Log = Arc<Mutex<Vec<String>>>;

    /// A recording test plugin.
    struct Rec {
        name: &'static str,
        order: Order,
        responds: bool,
    }

    impl Plugin for Rec {
        fn name(&self) -> &'static str {
            self.name
        }
        fn order(&self) -> Order {
            self.order
        }
        fn response_hooks(&self) -> bool {
            self.responds
        }
        fn parse_config(&self, _: &Value) -> Result<Arc<dyn PluginConfig>, FieldError> {
            Err(FieldError::root("test plugin"))
        }
    }

    static A: Rec = Rec {
        name: "a",
        order: Order::new(Position::Authz),
        responds: true,
    };
    static B: Rec = Rec {
        name: "b",
        order: Order::new(Position::Traffic),
        responds: true,
    };
    static C: Rec = Rec {
        name: "c",
        order: Order::new(Position::Unspecified),
        responds: true,
    };
    static D: Rec = Rec {
        name: "d",
        order: Order::new(Position::BeforeUpstream),
        responds: true,
    };
    static E: Rec = Rec {
        name: "e",
        order: Order::new(Position::Stats),
        responds: true,
    };
    static FIRST: Rec = Rec {
        name: "z-first",
        order: Order::first(Position::Traffic),
        responds: true,
    };
    static LAST: Rec = Rec {
        name: "0-last",
        order: Order::last(Position::Traffic),
        responds: true,
    };

    #[derive(Default, Clone)]
    struct Script {
        /// Hooks (e.g. "decode_headers") that return WaitAllData.
        wait: &'static [&'static str],
        /// Hook that answers 403 "no".
        reply: Option<&'static str>,
        /// Hook that returns Pending, resolving to Continue (after recording "resumed").
        pending: Option<&'static str>,
        /// Hook that calls out (`GET /first` on cluster `up`); see [`callout_then`].
        callout: Option<&'static str>,
        panic: Option<&'static str>,
    }

    /// Logs `<name>:callout(<status>)`; on `x-panic` panics, on `x-next: <path>` calls out again,
    /// else sets `x-callout: <status>` and continues. A failed callout answers 503.
    fn callout_then(
        log: Log,
        name: &'static str,
    ) -> impl FnOnce(&mut Ctx<'_>, CalloutResult) -> Status + Send + 'static {
        move |ctx, result| match result {
            Ok(resp) => {
                log.lock()
                    .unwrap()
                    .push(format!("{name}:callout({})", resp.status));
                if resp.header("x-panic").is_some() {
                    panic!("boom in callout");
                }
                if let Some(next) = resp.header("x-next") {
                    let req = CalloutRequest::get("up", next);
                    return Callout::new(req, callout_then(log, name)).into();
                }
                ctx.set_request_header("x-callout", &resp.status.to_string());
                Status::Continue
            }
            Err(e) => {
                log.lock().unwrap().push(format!("{name}:callout({e})"));
                Status::LocalReply(LocalReply::msg(503, "callout failed"))
            }
        }
    }

    struct RecConfig {
        name: &'static str,
        log: Log,
        script: Script,
    }

    impl PluginConfig for RecConfig {
        fn create_filter(self: Arc<Self>) -> Box<dyn Filter> {
            Box::new(RecFilter(self))
        }
    }

    struct RecFilter(Arc<RecConfig>);

    impl RecFilter {
        fn hit(&self, ctx: &Ctx<'_>, hook: &'static str, detail: String) -> Status {
            let c = &self.0;
            c.log
                .lock()
                .unwrap()
                .push(format!("{}:{hook}{detail}", c.name));
            assert_eq!(ctx.plugin_name(), c.name);
            if c.script.panic == Some(hook) {
                panic!("boom in {hook}");
            }
            if c.script.reply == Some(hook) {
                return Status::LocalReply(LocalReply::msg(403, "no"));
            }
            if c.script.pending == Some(hook) {
                let log = c.log.clone();
                let name = c.name;
                return Status::Pending(Pending::new(async move {
                    Resume::new(move |ctx| {
                        log.lock().unwrap().push(format!("{name}:resumed"));
                        ctx.set_request_header("x-resumed", name);
                        Status::Continue
                    })
                }));
            }
            if c.script.callout == Some(hook) {
                let req = CalloutRequest::get("up", "/first").with_timeout(Duration::from_secs(1));
                return Callout::new(req, callout_then(c.log.clone(), c.name)).into();
            }
            if c.script.wait.contains(&hook) {
                Status::WaitAllData
            } else {
                Status::Continue
            }
        }
    }

    fn body(ctx: &Ctx<'_>, kind: BodyKind, end: bool) -> String {
        format!(
            "({}{})",
            String::from_utf8_lossy(&ctx.body(kind)),
            if end { ",end" } else { "" }
        )
    }

    impl Filter for RecFilter {
        fn decode_headers(&mut self, ctx: &mut Ctx<'_>, end: bool) -> Status {
            self.hit(
                ctx,
                "decode_headers",
                if end { "(end)".into() } else { String::new() },
            )
        }
        fn decode_data(&mut self, ctx: &mut Ctx<'_>, end: bool) -> Status {
            let d = body(ctx, BodyKind::Request, end);
            self.hit(ctx, "decode_data", d)
        }
        fn decode_trailers(&mut self, ctx: &mut Ctx<'_>) -> Status {
            self.hit(ctx, "decode_trailers", String::new())
        }
        fn decode_request(&mut self, ctx: &mut Ctx<'_>) -> Status {
            let d = body(ctx, BodyKind::Request, false);
            self.hit(ctx, "decode_request", d)
        }
        fn encode_headers(&mut self, ctx: &mut Ctx<'_>, _end: bool) -> Status {
            self.hit(ctx, "encode_headers", String::new())
        }
        fn encode_data(&mut self, ctx: &mut Ctx<'_>, end: bool) -> Status {
            let d = body(ctx, BodyKind::Response, end);
            self.hit(ctx, "encode_data", d)
        }
        fn encode_trailers(&mut self, ctx: &mut Ctx<'_>) -> Status {
            self.hit(ctx, "encode_trailers", String::new())
        }
        fn encode_response(&mut self, ctx: &mut Ctx<'_>) -> Status {
            let d = body(ctx, BodyKind::Response, false);
            self.hit(ctx, "encode_response", d)
        }
        fn on_log(&mut self, ctx: &mut Ctx<'_>) {
            self.hit(ctx, "on_log", String::new());
        }
    }

    fn chain(log: &Log, plugins: &[(&'static Rec, Script)]) -> FilterChainConfig {
        let ps = plugins
            .iter()
            .map(|(p, script)| ConfiguredPlugin {
                key: OrderKey::of(*p),
                plugin: *p,
                config: Arc::new(RecConfig {
                    name: p.name,
                    log: log.clone(),
                    script: script.clone(),
                }),
            })
            .collect();
        FilterChainConfig::from_plugins("ns", ps)
    }

    fn s() -> Script {
        Script::default()
    }

    fn take(log: &Log) -> Vec<String> {
        std::mem::take(&mut *log.lock().unwrap())
    }

    fn resp(chunks: &[&[u8]]) -> Option<UpstreamResponse> {
        let mut r = UpstreamResponse::ok();
        r.chunks = chunks.iter().map(|c| c.to_vec()).collect();
        Some(r)
    }

    #[test]
    fn decode_in_order_encode_reversed_log_in_order() {
        let log = Log::default();
        let c = chain(
            &log,
            &[
                (&E, s()),
                (&C, s()),
                (&A, s()),
                (&LAST, s()),
                (&B, s()),
                (&FIRST, s()),
            ],
        );
        let mut m = FilterManager::new(Some(&c), None, None);
        assert_eq!(m.plugin_names(), ["a", "z-first", "b", "0-last", "c", "e"]);
        let mut host = MockHost::request("GET", "/");
        Driver::new(&mut m, &mut host).run(&[], &[], resp(&[]));
        let got = take(&log);
        let names = |hook: &str| -> Vec<String> {
            got.iter()
                .filter(|l| l.contains(hook))
                .map(|l| l.split(':').next().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            names("decode_headers"),
            ["a", "z-first", "b", "0-last", "c", "e"]
        );
        assert_eq!(
            names("encode_headers"),
            ["e", "c", "0-last", "b", "z-first", "a"]
        );
        assert_eq!(names("on_log"), ["a", "z-first", "b", "0-last", "c", "e"]);
        assert!(got.contains(&"a:decode_headers(end)".to_owned()));
    }

    static REQ_ONLY: Rec = Rec {
        name: "req-only",
        order: Order::new(Position::Authz),
        responds: false,
    };

    #[test]
    fn response_path_is_skipped_only_when_no_plugin_has_response_hooks() {
        let hooks = |got: &[String]| -> Vec<String> {
            got.iter()
                .filter(|l| l.contains(":encode_"))
                .cloned()
                .collect()
        };
        // Alone, a request-only plugin sees no response hook.
        let log = Log::default();
        let c = chain(&log, &[(&REQ_ONLY, s())]);
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("GET", "/");
        let ex = Driver::new(&mut m, &mut host).run(&[], &[], resp(&[b"r1"]));
        assert_eq!(ex.downstream_body, b"r1");
        let got = take(&log);
        assert!(hooks(&got).is_empty(), "{got:?}");
        assert!(got.contains(&"req-only:decode_headers(end)".to_owned()));
        assert!(got.contains(&"req-only:on_log".to_owned()));

        // Next to a plugin with response hooks, every plugin's hooks run as usual.
        let c = chain(&log, &[(&REQ_ONLY, s()), (&B, s())]);
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("GET", "/");
        Driver::new(&mut m, &mut host).run(&[], &[], resp(&[b"r1"]));
        let got = take(&log);
        assert_eq!(
            hooks(&got),
            [
                "b:encode_headers",
                "req-only:encode_headers",
                "b:encode_data(r1,end)",
                "req-only:encode_data(r1,end)"
            ],
            "{got:?}"
        );
    }

    #[test]
    fn streaming_without_wait() {
        let log = Log::default();
        let c = chain(&log, &[(&A, s()), (&B, s())]);
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("POST", "/");
        let ex = Driver::new(&mut m, &mut host).run(&[b"12", b"34"], &[], resp(&[b"r1", b"r2"]));
        let got = take(&log);
        assert_eq!(
            got[..6],
            [
                "a:decode_headers",
                "b:decode_headers",
                "a:decode_data(12)",
                "b:decode_data(12)",
                "a:decode_data(34,end)",
                "b:decode_data(34,end)"
            ]
        );
        assert_eq!(
            got[6..12],
            [
                "b:encode_headers",
                "a:encode_headers",
                "b:encode_data(r1)",
                "a:encode_data(r1)",
                "b:encode_data(r2,end)",
                "a:encode_data(r2,end)"
            ]
        );
        assert_eq!(ex.upstream_body, b"1234");
        assert_eq!(ex.upstream_body_pieces, 2);
        assert_eq!(ex.downstream_body, b"r1r2");
    }

    #[test]
    fn whole_body_is_seen_by_every_plugin() {
        let log = Log::default();
        let wait = Script {
            wait: &["decode_headers", "encode_headers"],
            ..s()
        };
        let c = chain(&log, &[(&A, s()), (&B, wait), (&C, s())]);
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("POST", "/");
        let ex =
            Driver::new(&mut m, &mut host).run(&[b"12", b"34", b"5"], &[], resp(&[b"x", b"y"]));
        assert_eq!(
            take(&log),
            [
                "a:decode_headers",
                "b:decode_headers",
                "a:decode_data(12345,end)",
                "b:decode_request(12345)",
                "c:decode_headers",
                "c:decode_data(12345,end)",
                "c:encode_headers",
                "b:encode_headers",
                "c:encode_data(xy,end)",
                "b:encode_response(xy)",
                "a:encode_headers",
                "a:encode_data(xy,end)",
                "a:on_log",
                "b:on_log",
                "c:on_log",
            ]
        );
        assert_eq!(ex.upstream_body, b"12345");
        assert_eq!(ex.upstream_body_pieces, 1);
        assert_eq!(ex.downstream_body, b"xy");
    }

    #[test]
    fn two_waits_and_trailers() {
        let log = Log::default();
        let wait = Script {
            wait: &["decode_headers"],
            ..s()
        };
        let c = chain(
            &log,
            &[
                (&A, s()),
                (&B, wait.clone()),
                (&C, s()),
                (&D, wait),
                (&E, s()),
            ],
        );
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("POST", "/");
        let ex = Driver::new(&mut m, &mut host).run(&[b"ab", b"c"], &[("t", "1")], None);
        assert_eq!(
            take(&log),
            [
                "a:decode_headers",
                "b:decode_headers",
                "a:decode_data(abc)",
                "a:decode_trailers",
                "b:decode_request(abc)",
                "c:decode_headers",
                "d:decode_headers",
                "c:decode_data(abc)",
                "c:decode_trailers",
                "d:decode_request(abc)",
                "e:decode_headers",
                "e:decode_data(abc)",
                "e:decode_trailers",
                "a:on_log",
                "b:on_log",
                "c:on_log",
                "d:on_log",
                "e:on_log",
            ]
        );
        assert_eq!(ex.upstream_body, b"abc");
    }

    #[test]
    fn wait_with_headers_only_request() {
        let log = Log::default();
        let wait = Script {
            wait: &["decode_headers"],
            ..s()
        };
        let c = chain(&log, &[(&A, s()), (&B, wait), (&C, s())]);
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("GET", "/");
        let ex = Driver::new(&mut m, &mut host).run(&[], &[], None);
        assert_eq!(
            take(&log)[..4],
            [
                "a:decode_headers(end)",
                "b:decode_headers(end)",
                "b:decode_request()",
                "c:decode_headers(end)"
            ]
        );
        assert!(ex.upstream_headers.is_some());
    }

    #[test]
    fn wait_from_data_hook_is_ignored() {
        let log = Log::default();
        let c = chain(
            &log,
            &[
                (
                    &A,
                    Script {
                        wait: &["decode_data"],
                        ..s()
                    },
                ),
                (&B, s()),
            ],
        );
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("POST", "/");
        let ex = Driver::new(&mut m, &mut host).run(&[b"x"], &[], None);
        assert_eq!(ex.upstream_body, b"x");
        assert!(host.logs_contain("WaitAllData is only valid"));
    }

    #[test]
    fn local_reply_stops_chain_and_renders_json() {
        let log = Log::default();
        let c = chain(
            &log,
            &[
                (&A, s()),
                (
                    &B,
                    Script {
                        reply: Some("decode_headers"),
                        ..s()
                    },
                ),
                (&C, s()),
            ],
        );
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("GET", "/");
        let ex = Driver::new(&mut m, &mut host).run(&[], &[], resp(&[]));
        let r = ex.local_reply.unwrap();
        assert_eq!(r.status, 403);
        assert_eq!(r.body, br#"{"msg":"no"}"#);
        assert_eq!(
            r.headers,
            [("content-type".to_owned(), "application/json".to_owned())]
        );
        assert_eq!(r.plugin, "b");
        assert_eq!(
            host.dynamic_metadata,
            [("htnn".into(), "local_reply_plugin_name".into(), "b".into())]
        );
        assert!(m.is_finished());
        assert_eq!(
            take(&log),
            [
                "a:decode_headers(end)",
                "b:decode_headers(end)",
                "a:on_log",
                "b:on_log",
                "c:on_log"
            ]
        );
        // Later events run nothing.
        assert!(matches!(
            m.encode_headers(&mut host, true),
            Action::Continue
        ));
        assert!(take(&log).is_empty());

        // A non-JSON request gets plain text; a JSON one gets JSON.
        for (ct, json) in [("text/plain", false), ("application/json", true)] {
            let mut m = FilterManager::new(Some(&c), None, None);
            let mut host = MockHost::request("POST", "/").with_header("content-type", ct);
            let r = Driver::new(&mut m, &mut host)
                .run(&[], &[], None)
                .local_reply
                .unwrap();
            assert_eq!(
                r.body,
                if json { &br#"{"msg":"no"}"#[..] } else { b"no" },
                "{ct}"
            );
        }
    }

    #[test]
    fn reply_rendering_rules() {
        let m = FilterManager::new(None, None, None);
        let mut host = MockHost::request("GET", "/");
        let r = m.render(
            Direction::Decode,
            LocalReply::msg(0, "x").with_header("Content-Type", "text/html"),
            "p",
            &mut host,
        );
        assert_eq!(
            (r.status, r.body.as_slice(), r.headers.len()),
            (200, &b"x"[..], 1)
        );
        let r = m.render(Direction::Decode, LocalReply::new(401), "p", &mut host);
        assert!(r.body.is_empty() && r.headers.is_empty());
        let mut host = MockHost::request("GET", "/").with_header("content-type", "text/plain");
        host.response_headers
            .push(("content-type".into(), "application/json".into()));
        let r = m.render(
            Direction::Encode,
            LocalReply::msg(500, "e\"q"),
            "p",
            &mut host,
        );
        assert_eq!(r.body, br#"{"msg":"e\"q"}"#);
    }

    #[test]
    fn encode_local_reply() {
        let log = Log::default();
        let c = chain(
            &log,
            &[
                (&A, s()),
                (
                    &B,
                    Script {
                        reply: Some("encode_headers"),
                        ..s()
                    },
                ),
            ],
        );
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("GET", "/");
        let ex = Driver::new(&mut m, &mut host).run(&[], &[], resp(&[b"x"]));
        assert_eq!(ex.local_reply.unwrap().status, 403);
        let got = take(&log);
        assert!(got.contains(&"b:encode_headers".to_owned()));
        assert!(!got.contains(&"a:encode_headers".to_owned()));
    }

    #[test]
    fn panic_becomes_500_for_this_request_only() {
        let log = Log::default();
        let c = chain(
            &log,
            &[
                (
                    &A,
                    Script {
                        panic: Some("decode_headers"),
                        ..s()
                    },
                ),
                (&B, s()),
            ],
        );
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("GET", "/");
        let ex = Driver::new(&mut m, &mut host).run(&[], &[], resp(&[]));
        let r = ex.local_reply.unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.plugin),
            (500, &br#"{"msg":"internal error"}"#[..], "a")
        );
        assert!(
            host.logs_contain("htnn plugin a: panic in decode_headers: boom in decode_headers")
        );
        // The panicking plugin is not called again (no on_log), the others are.
        assert_eq!(take(&log), ["a:decode_headers(end)", "b:on_log"]);

        // A panic in on_log is contained too.
        let c = chain(
            &log,
            &[
                (
                    &A,
                    Script {
                        panic: Some("on_log"),
                        ..s()
                    },
                ),
                (&B, s()),
            ],
        );
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("GET", "/");
        let ex = Driver::new(&mut m, &mut host).run(&[], &[], resp(&[]));
        assert!(ex.local_reply.is_none());
        assert!(take(&log).contains(&"b:on_log".to_owned()));
    }

    #[test]
    fn registered_test_panic_plugin() {
        let c = FilterChainConfig::parse(&json!({"plugins": [{"name": "testPanic", "config": {}}, {"name": "demo", "config": {"hostName": "x"}}]})).unwrap();
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("GET", "/");
        assert_eq!(
            Driver::new(&mut m, &mut host)
                .run(&[], &[], None)
                .local_reply
                .unwrap()
                .status,
            500
        );
        let d = FilterChainConfig::parse(
            &json!({"plugins": [{"name": "demo", "config": {"hostName": "x"}}]}),
        )
        .unwrap();
        let mut m = FilterManager::new(Some(&d), None, None);
        let mut host = MockHost::request("GET", "/");
        assert!(
            Driver::new(&mut m, &mut host)
                .run(&[], &[], None)
                .local_reply
                .is_none()
        );
    }

    #[test]
    fn pending_resumes_the_chain() {
        let log = Log::default();
        let c = chain(
            &log,
            &[
                (&A, s()),
                (
                    &B,
                    Script {
                        pending: Some("decode_headers"),
                        ..s()
                    },
                ),
                (&C, s()),
            ],
        );
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("POST", "/");
        let ex = Driver::new(&mut m, &mut host).run(&[b"ab"], &[], None);
        let got = take(&log);
        assert_eq!(
            got[..5],
            [
                "a:decode_headers",
                "b:decode_headers",
                "b:resumed",
                "c:decode_headers",
                "a:decode_data(ab,end)"
            ]
        );
        assert!(
            ex.upstream_headers
                .unwrap()
                .contains(&("x-resumed".into(), "b".into()))
        );
        assert_eq!(ex.upstream_body, b"ab");
    }

    #[test]
    fn data_arriving_while_pending_is_held_then_delivered_once() {
        let log = Log::default();
        let c = chain(
            &log,
            &[
                (
                    &A,
                    Script {
                        pending: Some("decode_headers"),
                        ..s()
                    },
                ),
                (&B, s()),
            ],
        );
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("POST", "/");
        let Action::Pending(task) = m.decode_headers(&mut host, false) else {
            panic!()
        };
        assert_eq!(task.direction(), Direction::Decode);
        host.request_body = b"12".to_vec();
        assert!(matches!(m.decode_data(&mut host, false), Action::Wait));
        host.request_body = b"1234".to_vec();
        assert!(matches!(m.decode_data(&mut host, false), Action::Wait));
        let completion = block_on(task.into_future());
        assert_eq!(completion.direction(), Direction::Decode);
        assert!(matches!(m.resume(&mut host, completion), Action::Continue));
        host.request_body = b"5".to_vec();
        assert!(matches!(m.decode_data(&mut host, true), Action::Continue));
        assert_eq!(
            take(&log),
            [
                "a:decode_headers",
                "a:resumed",
                "b:decode_headers",
                "a:decode_data(1234)",
                "b:decode_data(1234)",
                "a:decode_data(5,end)",
                "b:decode_data(5,end)"
            ]
        );
    }

    #[test]
    fn pending_on_encode_and_stale_completion() {
        let log = Log::default();
        let c = chain(
            &log,
            &[
                (&A, s()),
                (
                    &B,
                    Script {
                        pending: Some("encode_headers"),
                        ..s()
                    },
                ),
            ],
        );
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("GET", "/");
        assert!(matches!(
            m.decode_headers(&mut host, true),
            Action::Continue
        ));
        let Action::Pending(task) = m.encode_headers(&mut host, true) else {
            panic!()
        };
        assert_eq!(task.direction(), Direction::Encode);
        assert_eq!(task.delay(), None);
        let completion = block_on(task.into_future());
        assert!(matches!(m.resume(&mut host, completion), Action::Continue));
        assert_eq!(
            take(&log)[2..],
            ["b:encode_headers", "b:resumed", "a:encode_headers"]
        );

        // A completion when nothing is pending does nothing.
        let stale = block_on(
            PendingTask {
                direction: Direction::Encode,
                delay: None,
                future: Box::pin(async { Resume::with(Status::Continue) }),
            }
            .into_future(),
        );
        assert!(matches!(m.resume(&mut host, stale), Action::Wait));
        assert!(host.logs_contain("completion without a pending plugin"));
    }

    #[test]
    fn pending_after_delay() {
        let p = Pending::after(Duration::from_millis(7), Resume::with(Status::Continue));
        let task = PendingTask {
            direction: Direction::Decode,
            delay: p.delay,
            future: p.future,
        };
        assert_eq!(task.delay(), Some(Duration::from_millis(7)));
    }

    fn answer(status: u16, headers: &[(&str, &str)]) -> CalloutResult {
        Ok(CalloutResponse {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: b"ignored".to_vec(),
        })
    }

    fn callout_chain(log: &Log, hook: &'static str) -> FilterChainConfig {
        chain(
            log,
            &[
                (
                    &A,
                    Script {
                        callout: Some(hook),
                        ..s()
                    },
                ),
                (&B, s()),
            ],
        )
    }

    #[test]
    fn callout_resumes_the_chain_with_the_response() {
        let log = Log::default();
        let c = callout_chain(&log, "decode_headers");
        // By hand: the host gets the request, holds the body meanwhile, resumes with the result.
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("POST", "/");
        let Action::Callout(task) = m.decode_headers(&mut host, false) else {
            panic!()
        };
        assert_eq!(task.direction(), Direction::Decode);
        let req = task.request();
        assert_eq!(
            (req.cluster.as_str(), req.timeout, req.body.is_empty()),
            ("up", Duration::from_secs(1), true)
        );
        assert_eq!(
            req.headers,
            [
                (":method".to_owned(), "GET".to_owned()),
                (":path".to_owned(), "/first".to_owned()),
                ("host".to_owned(), "up".to_owned())
            ]
        );
        assert!(req.has_required_headers());
        host.request_body = b"12".to_vec();
        assert!(matches!(m.decode_data(&mut host, true), Action::Wait));
        let completion = task.complete(answer(200, &[]));
        assert_eq!(completion.direction(), Direction::Decode);
        assert!(matches!(m.resume(&mut host, completion), Action::Continue));
        assert_eq!(
            take(&log),
            [
                "a:decode_headers",
                "a:callout(200)",
                "b:decode_headers",
                "a:decode_data(12,end)",
                "b:decode_data(12,end)"
            ]
        );
        assert_eq!(host.request_header("x-callout").as_deref(), Some("200"));

        // Through the driver.
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("POST", "/");
        let ex = Driver::new(&mut m, &mut host)
            .with_callouts(|_| answer(201, &[]))
            .run(&[b"a", b"b"], &[], resp(&[]));
        assert!(ex.local_reply.is_none());
        assert_eq!(ex.callouts.len(), 1);
        assert_eq!(ex.upstream_body, b"ab");
        assert!(
            ex.upstream_headers
                .unwrap()
                .contains(&("x-callout".into(), "201".into()))
        );
    }

    #[test]
    fn failed_callout_lets_the_plugin_decide() {
        let log = Log::default();
        let c = callout_chain(&log, "decode_headers");
        for err in [
            CalloutError::Reset,
            CalloutError::ExceedResponseBufferLimit,
            CalloutError::StartFailed("no cluster".into()),
        ] {
            let mut m = FilterManager::new(Some(&c), None, None);
            let mut host = MockHost::request("GET", "/");
            let ex = Driver::new(&mut m, &mut host)
                .with_callouts(|_| Err(err.clone()))
                .run(&[], &[], resp(&[]));
            let r = ex.local_reply.unwrap();
            assert_eq!(
                (r.status, r.body.as_slice(), r.plugin),
                (503, &br#"{"msg":"callout failed"}"#[..], "a")
            );
            let got = take(&log);
            assert_eq!(
                got[..2],
                [
                    "a:decode_headers(end)".to_owned(),
                    format!("a:callout({err})")
                ]
            );
            assert!(!got.contains(&"b:decode_headers(end)".to_owned()));
        }
        // Without a handler the mock fails to start the callout.
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("GET", "/");
        let ex = Driver::new(&mut m, &mut host).run(&[], &[], None);
        assert_eq!(ex.local_reply.unwrap().status, 503);
        assert!(take(&log).contains(&"a:callout(callout not started: no callout handler)".into()));
    }

    #[test]
    fn panic_in_callout_continuation_answers_500() {
        let log = Log::default();
        let c = callout_chain(&log, "decode_headers");
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("GET", "/");
        let ex = Driver::new(&mut m, &mut host)
            .with_callouts(|_| answer(200, &[("x-panic", "1")]))
            .run(&[], &[], resp(&[]));
        let r = ex.local_reply.unwrap();
        assert_eq!((r.status, r.plugin), (500, "a"));
        assert!(host.logs_contain("htnn plugin a: panic in decode_headers: boom in callout"));
        // The panicking plugin is not called again.
        assert_eq!(
            take(&log),
            ["a:decode_headers(end)", "a:callout(200)", "b:on_log"]
        );
    }

    #[test]
    fn callout_continuation_may_call_out_again() {
        let log = Log::default();
        let c = callout_chain(&log, "decode_headers");
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("GET", "/");
        let ex = Driver::new(&mut m, &mut host)
            .with_callouts(|req| {
                if req.headers.iter().any(|(_, v)| v == "/first") {
                    answer(200, &[("x-next", "/second")])
                } else {
                    answer(202, &[])
                }
            })
            .run(&[], &[], resp(&[]));
        assert_eq!(ex.callouts.len(), 2);
        assert!(
            ex.callouts[1]
                .headers
                .contains(&(":path".into(), "/second".into()))
        );
        assert!(
            ex.upstream_headers
                .unwrap()
                .contains(&("x-callout".into(), "202".into()))
        );
        assert_eq!(
            take(&log)[..4],
            [
                "a:decode_headers(end)",
                "a:callout(200)",
                "a:callout(202)",
                "b:decode_headers(end)"
            ]
        );
    }

    #[test]
    fn callout_on_encode_and_stale_completion() {
        let log = Log::default();
        let c = callout_chain(&log, "encode_headers");
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("GET", "/");
        assert!(matches!(
            m.decode_headers(&mut host, true),
            Action::Continue
        ));
        let Action::Callout(task) = m.encode_headers(&mut host, true) else {
            panic!()
        };
        assert_eq!(task.direction(), Direction::Encode);
        assert!(matches!(
            m.resume(&mut host, task.complete(answer(200, &[]))),
            Action::Continue
        ));
        assert_eq!(
            take(&log)[2..],
            ["b:encode_headers", "a:encode_headers", "a:callout(200)"]
        );

        // A callout that completes after the stream was answered is ignored.
        let c = chain(
            &log,
            &[
                (
                    &A,
                    Script {
                        callout: Some("decode_headers"),
                        ..s()
                    },
                ),
                (
                    &B,
                    Script {
                        reply: Some("encode_headers"),
                        ..s()
                    },
                ),
            ],
        );
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("GET", "/");
        let Action::Callout(task) = m.decode_headers(&mut host, true) else {
            panic!()
        };
        // The response arrives anyway (e.g. upstream answered early) and B replies.
        assert!(matches!(
            m.encode_headers(&mut host, true),
            Action::LocalReply(_)
        ));
        take(&log);
        assert!(matches!(
            m.resume(&mut host, task.complete(answer(200, &[]))),
            Action::Wait
        ));
        assert!(take(&log).is_empty());
    }

    fn consumers(doc: Value) -> Arc<ConsumerStore> {
        let (idx, problems) = ConsumerIndex::parse(&doc).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        Arc::new(ConsumerStore::new(idx))
    }

    #[test]
    fn consumer_filters_override_route_plugins() {
        let store = consumers(json!({"ns": {
            "rick": {"auth": {"keyAuth": {"key": "r"}}, "filters": {
                "demo": {"hostName": "x-consumer"},
                "limitReq": {"average": 1, "period": "3600s"}
            }},
            "morty": {"auth": {"keyAuth": {"key": "m"}}},
        }}));
        let route = FilterChainConfig::parse(&json!({"namespace": "ns", "plugins": [
            {"name": "keyAuth", "config": {"keys": [{"name": "x-key"}]}},
            {"name": "demo", "config": {"hostName": "x-route"}},
        ]}))
        .unwrap();
        let run = |key: &str| {
            let mut m = FilterManager::new(Some(&route), None, Some(store.clone()));
            let mut host = MockHost::request("GET", "/")
                .with_header("x-key", key)
                .with_client("10.1.1.1:1");
            let ex = Driver::new(&mut m, &mut host).run(&[], &[], None);
            (ex, m.plugin_names())
        };
        let (ex, names) = run("r");
        assert_eq!(names, ["keyAuth", "limitReq", "demo"]);
        let h = ex.upstream_headers.unwrap();
        assert!(
            h.contains(&("x-consumer".into(), "hello, rick".into())),
            "{h:?}"
        );
        assert!(!h.iter().any(|(k, _)| k == "x-route"));
        // The consumer-level limitReq applies to rick only.
        assert_eq!(run("r").0.local_reply.unwrap().status, 429);
        let (ex, names) = run("m");
        assert_eq!(names, ["keyAuth", "demo"]);
        assert!(
            ex.upstream_headers
                .unwrap()
                .contains(&("x-route".into(), "hello, morty".into()))
        );
        assert!(run("m").0.local_reply.is_none());
    }

    #[test]
    fn gateway_and_route_configs_merge_route_wins() {
        let route = FilterChainConfig::parse(&json!({"namespace": "ns", "plugins": [
            {"name": "demo", "config": {"hostName": "x-route"}},
        ]}))
        .unwrap();
        let gateway = FilterChainConfig::parse(&json!({"namespace": "gw", "plugins": [
            {"name": "demo", "config": {"hostName": "x-gateway"}},
            {"name": "limitReq", "config": {"average": 100}},
        ]}))
        .unwrap();
        let mut m = FilterManager::new(Some(&route), Some(&gateway), None);
        assert_eq!(m.plugin_names(), ["limitReq", "demo"]);
        assert_eq!(&*m.req.namespace, "ns");
        let mut host = MockHost::request("GET", "/");
        let h = Driver::new(&mut m, &mut host)
            .run(&[], &[], None)
            .upstream_headers
            .unwrap();
        assert!(h.iter().any(|(k, _)| k == "x-route"));
        assert!(!h.iter().any(|(k, _)| k == "x-gateway"));

        let m = FilterManager::new(None, Some(&gateway), None);
        assert_eq!(m.plugin_names(), ["limitReq", "demo"]);
        assert_eq!(&*m.req.namespace, "gw");
        let m = FilterManager::new(None, None, None);
        assert!(m.is_empty());
    }

    #[test]
    fn invalid_plugin_config_placeholder_answers_500() {
        let (c, problems) =
            FilterChainConfig::parse_lenient(&json!({"plugins": [{"name": "demo", "config": {}}]}))
                .unwrap();
        assert_eq!(problems.len(), 1);
        let mut m = FilterManager::new(Some(&c), None, None);
        let mut host = MockHost::request("GET", "/");
        let r = Driver::new(&mut m, &mut host)
            .run(&[], &[], None)
            .local_reply
            .unwrap();
        assert_eq!(r.status, 500);
        assert!(host.logs_contain("invalid config: plugin demo: hostName: missing field"));
    }

    #[test]
    fn plugin_state_is_per_request() {
        let mut req = RequestState {
            namespace: Arc::from(""),
            consumers: None,
            consumer: None,
            plugin_state: PluginState::default(),
        };
        let mut host = MockHost::request("GET", "/");
        let mut ctx = Ctx::new(&mut host, &mut req, "p");
        ctx.plugin_state_mut().set("ns", "k", 5u32);
        ctx.plugin_state_mut().set("ns", "k", 6u32);
        assert_eq!(ctx.plugin_state().get::<u32>("ns", "k"), Some(&6));
        assert_eq!(ctx.plugin_state().get::<String>("ns", "k"), None);
        ctx.plugin_state_mut().remove("ns", "k");
        assert_eq!(ctx.plugin_state().get::<u32>("ns", "k"), None);
        assert!(ctx.lookup_consumer("keyAuth", "x").is_none());
    }
}
