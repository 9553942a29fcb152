//! `htnn.selftest` (feature `abi-selftest`, on by default): a diagnostic filter that calls the
//! Envoy callbacks our plugins do not exercise yet and reports the results in headers.
//!
//! Envoy never checks prototypes, so a drifted declaration in [`crate::abi`] is only caught by
//! calling it against the real binary; `tests/dataplane.rs` does that through this filter.
//! Configure it as an HTTP filter with `filter_name: htnn.selftest`; it needs a cluster named
//! `backend` for its HTTP callout. Build production modules with `--no-default-features`.
//!
//! Per request it: adds a request header twice, lists all request headers, round-trips filter
//! state and dynamic metadata, reads the worker index, `source.port` and the route name, makes
//! an HTTP callout (`GET /callout` on `backend`) before letting the request go on, and replaces
//! the request body with `selftest:<body>` (through [`EnvoyHost::set_body`]). On the response it
//! stops the headers, wakes itself through the scheduler from another thread and resumes with
//! `continue_encoding`.

use std::cell::RefCell;

use htnn_plugins::{BodyKind, HeaderMap, Host};

use crate::abi::{AttributeId, BodyStatus, HeadersStatus, MetadataSource, TrailersStatus};
use crate::envoy::{EnvoyFilter, Scheduler};
use crate::host::{BodyScope, EnvoyHost};

pub const FILTER_NAME: &str = "htnn.selftest";

#[derive(Default)]
pub struct SelfTest {
    st: RefCell<St>,
}

#[derive(Default)]
struct St {
    callout_pending: bool,
    /// The request body is complete (or there is none): the callout result may resume it.
    request_complete: bool,
    response_stopped: bool,
    scheduler: Option<Scheduler>,
}

impl SelfTest {
    pub fn request_headers(&self, env: EnvoyFilter, end_of_stream: bool) -> HeadersStatus {
        let mut host = EnvoyHost::new(env, BodyScope::Buffered);
        let rq = HeaderMap::RequestHeaders;
        host.add_header(rq, "x-selftest-added", "a");
        host.add_header(rq, "x-selftest-added", "b");
        let all = host.headers(rq);
        let added = all.iter().filter(|(k, _)| k == "x-selftest-added").count();
        host.set_header(rq, "x-selftest-header-count", &all.len().to_string());
        host.set_header(rq, "x-selftest-saw-added", &added.to_string());

        host.set_filter_state("htnn.selftest", b"fs-value");
        let fs = host
            .filter_state("htnn.selftest")
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        host.set_header(
            rq,
            "x-selftest-filter-state",
            fs.as_deref().unwrap_or("<none>"),
        );

        host.set_dynamic_metadata("htnn.selftest", "k", "md-value");
        let md = env.metadata_string(MetadataSource::Dynamic, "htnn.selftest", "k");
        host.set_header(rq, "x-selftest-metadata", md.as_deref().unwrap_or("<none>"));

        host.set_header(rq, "x-selftest-worker", &env.worker_index().to_string());
        let port = env
            .attribute_int(AttributeId::SourcePort)
            .map_or("<none>".to_owned(), |p| p.to_string());
        host.set_header(rq, "x-selftest-source-port", &port);
        let route = host
            .route_name()
            .map(|r| r.into_owned())
            .unwrap_or_else(|| "<none>".to_owned());
        host.set_header(rq, "x-selftest-route", &route);

        let headers = [
            (":method".to_owned(), b"GET".to_vec()),
            (":path".to_owned(), b"/callout".to_vec()),
            ("host".to_owned(), b"backend".to_vec()),
        ];
        match env.http_callout("backend", &headers, b"", 5000) {
            Ok(_) => {
                let mut st = self.st.borrow_mut();
                st.callout_pending = true;
                st.request_complete = end_of_stream;
                HeadersStatus::StopIteration
            }
            Err(rc) => {
                host.set_header(rq, "x-selftest-callout", &format!("init-error {rc}"));
                HeadersStatus::Continue
            }
        }
    }

    pub fn request_body(&self, env: EnvoyFilter, end_of_stream: bool) -> BodyStatus {
        if !end_of_stream {
            return BodyStatus::StopIterationAndBuffer;
        }
        let mut host = EnvoyHost::new(env, BodyScope::Data(BodyKind::Request));
        let mut body = b"selftest:".to_vec();
        body.extend_from_slice(&host.body(BodyKind::Request));
        host.set_body(BodyKind::Request, &body);
        let mut st = self.st.borrow_mut();
        st.request_complete = true;
        if st.callout_pending {
            BodyStatus::StopIterationAndBuffer
        } else {
            BodyStatus::Continue
        }
    }

    pub fn request_trailers(&self) -> TrailersStatus {
        TrailersStatus::Continue
    }

    pub fn callout_done(
        &self,
        env: EnvoyFilter,
        result: i32,
        headers: &[(String, Vec<u8>)],
        body: &[u8],
    ) {
        let status = headers
            .iter()
            .find(|(k, _)| k == ":status")
            .map_or("<none>".to_owned(), |(_, v)| {
                String::from_utf8_lossy(v).into_owned()
            });
        let mut host = EnvoyHost::new(env, BodyScope::Buffered);
        host.set_header(
            HeaderMap::RequestHeaders,
            "x-selftest-callout",
            &format!("{result} {status} {}", body.len()),
        );
        let resume = {
            let mut st = self.st.borrow_mut();
            st.callout_pending = false;
            st.request_complete
        };
        if resume {
            env.continue_decoding();
        }
    }

    pub fn response_headers(&self, env: EnvoyFilter) -> HeadersStatus {
        let mut host = EnvoyHost::new(env, BodyScope::Buffered);
        host.set_header(HeaderMap::ResponseHeaders, "x-selftest-response", "yes");
        let Some(scheduler) = env.new_scheduler() else {
            host.set_header(
                HeaderMap::ResponseHeaders,
                "x-selftest-resumed",
                "no-scheduler",
            );
            return HeadersStatus::Continue;
        };
        let handle = scheduler.handle();
        {
            let mut st = self.st.borrow_mut();
            st.scheduler = Some(scheduler);
            st.response_stopped = true;
        }
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(10));
            handle.commit(7);
        });
        HeadersStatus::StopIteration
    }

    pub fn response_body(&self) -> BodyStatus {
        if self.st.borrow().response_stopped {
            BodyStatus::StopIterationAndBuffer
        } else {
            BodyStatus::Continue
        }
    }

    pub fn response_trailers(&self) -> TrailersStatus {
        if self.st.borrow().response_stopped {
            TrailersStatus::StopIteration
        } else {
            TrailersStatus::Continue
        }
    }

    pub fn scheduled(&self, env: EnvoyFilter, event_id: u64) {
        let mut host = EnvoyHost::new(env, BodyScope::Buffered);
        host.set_header(
            HeaderMap::ResponseHeaders,
            "x-selftest-resumed",
            &format!("event {event_id}"),
        );
        self.st.borrow_mut().response_stopped = false;
        env.continue_encoding();
    }

    pub fn stream_complete(&self) {
        if let Some(s) = self.st.borrow_mut().scheduler.take() {
            s.delete();
        }
    }
}
