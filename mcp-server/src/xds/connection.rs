//! One ADS stream as a sans-IO state machine: requests and snapshots in, responses and events
//! out. No runtime, no I/O; [`super::server`] moves bytes and turns events into logs/metrics.
//!
//! istiod's MCP client has a few sharp edges this encodes (istio-mcp.md §3, §7, §8):
//! - every initial request carries a timestamp `response_nonce`, so the *first request for a
//!   type on a stream* is a subscription whatever its nonce;
//! - each response is the full state of its type and an empty one deletes everything, so
//!   nothing is answered before the first snapshot exists;
//! - the answer must echo the requested type URL (its version differs between istio releases).
//!
//! A change that spans several types is pushed in stages ([`snapshot::push_stage`]: services,
//! then EnvoyFilters, then routes when adding; the reverse when removing). The next stage waits
//! until istiod has ACKed the previous one and then a short settle time: istiod stores the
//! responses of one stream in order, but its config store notifies each kind from its own
//! goroutine, so without the pause a push triggered by the new route could be computed before
//! istiod has seen the policy the route needs.

use std::time::Duration;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use serde::Serialize;

use crate::snapshot::{self, Snapshot, TypeKey, TypeSnapshot};

/// What happened while handling an input, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The stream's node id was seen for the first time, or changed.
    Node { node_id: String },
    /// First request for a type on this stream. `queued` when no snapshot exists yet.
    Subscribed {
        type_url: String,
        request_nonce: String,
        queued: bool,
    },
    /// A response was produced (one per element of [`Output::responses`]).
    Sent {
        type_url: String,
        version: String,
        nonce: String,
        resources: usize,
    },
    Acked {
        type_url: String,
        version: String,
        nonce: String,
    },
    /// The client rejected our response `nonce`; it keeps `client_version`.
    Nacked {
        type_url: String,
        rejected_version: String,
        client_version: String,
        nonce: String,
        code: i32,
        message: String,
    },
    /// istiod did not answer a stage in time; the next stages are pushed anyway.
    AckTimeout { type_urls: Vec<String> },
    /// A request that is neither a subscription nor the answer to our latest response.
    Ignored {
        type_url: String,
        nonce: String,
        reason: IgnoreReason,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgnoreReason {
    /// The nonce is not the latest one sent for the type (an ACK overtaken by a newer
    /// response, or a repeated request while the subscription waits for the first snapshot).
    StaleNonce,
    /// SotW ADS requires a type URL on every request.
    MissingTypeUrl,
}

/// Responses to send, in order, and what happened.
#[derive(Debug, Default)]
pub struct Output {
    pub responses: Vec<DiscoveryResponse>,
    pub events: Vec<Event>,
    /// (Re)arm the connection's single timer: call [`Connection::on_timer`] after this delay.
    /// A timer that fires when nothing waits for it is harmless.
    pub timer: Option<Duration>,
}

impl Output {
    fn extend(&mut self, other: Output) {
        self.responses.extend(other.responses);
        self.events.extend(other.events);
        self.timer = other.timer.or(self.timer);
    }
}

/// Timing of staged pushes.
#[derive(Clone, Copy, Debug)]
pub struct PushTiming {
    /// Pause between istiod's ACK of one stage and the push of the next.
    pub settle: Duration,
    /// How long a stage may stay un-ACKed before the next one is pushed anyway.
    pub ack_timeout: Duration,
}

impl Default for PushTiming {
    fn default() -> Self {
        Self {
            settle: Duration::from_millis(100),
            ack_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Settle,
    AckTimeout,
}

/// Read-only view of a connection, for `/debug/connections`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConnectionStatus {
    /// Remote address, when known.
    pub peer: Option<String>,
    pub node_id: Option<String>,
    /// By requested type URL.
    pub types: BTreeMap<String, TypeStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TypeStatus {
    /// `None` while waiting for the first snapshot.
    pub sent_version: Option<String>,
    pub sent_nonce: Option<String>,
    pub acked_version: Option<String>,
    pub acked_nonce: Option<String>,
    /// A response was sent and neither ACKed nor NACKed yet.
    pub pending: bool,
    pub nacks: u64,
    pub last_nack: Option<String>,
}

#[derive(Debug)]
struct TypeState {
    /// `None` for type URLs that are not `group/version/Kind`; those are answered empty.
    key: Option<TypeKey>,
    status: TypeStatus,
    /// What istiod was last sent for this type.
    sent: Option<Arc<TypeSnapshot>>,
}

/// The state of one ADS stream.
#[derive(Debug, Default)]
pub struct Connection {
    peer: Option<String>,
    node_id: Option<String>,
    snapshot: Option<Arc<Snapshot>>,
    types: BTreeMap<String, TypeState>,
    last_nonce: u64,
    timing: PushTiming,
    /// Types of the stage pushed last that istiod has not answered yet.
    gate: BTreeSet<String>,
    timer: Option<Timer>,
}

impl Connection {
    pub fn new(peer: Option<String>) -> Self {
        Self::with_timing(peer, PushTiming::default())
    }

    pub fn with_timing(peer: Option<String>, timing: PushTiming) -> Self {
        Self {
            peer,
            timing,
            ..Self::default()
        }
    }

    pub fn node_id(&self) -> Option<&str> {
        self.node_id.as_deref()
    }

    pub fn status(&self) -> ConnectionStatus {
        ConnectionStatus {
            peer: self.peer.clone(),
            node_id: self.node_id.clone(),
            types: self
                .types
                .iter()
                .map(|(url, t)| (url.clone(), t.status.clone()))
                .collect(),
        }
    }

    /// Handles one request from the client.
    pub fn on_request(&mut self, req: DiscoveryRequest) -> Output {
        let mut out = Output::default();
        if let Some(node) = &req.node
            && !node.id.is_empty()
            && self.node_id.as_deref() != Some(node.id.as_str())
        {
            self.node_id = Some(node.id.clone());
            out.events.push(Event::Node {
                node_id: node.id.clone(),
            });
        }

        let DiscoveryRequest {
            type_url,
            response_nonce,
            version_info,
            error_detail,
            ..
        } = req;
        if type_url.is_empty() {
            out.events.push(Event::Ignored {
                type_url,
                nonce: response_nonce,
                reason: IgnoreReason::MissingTypeUrl,
            });
            return out;
        }

        let Some(state) = self.types.get_mut(&type_url) else {
            // A subscription, whatever the nonce: istiod stamps its initial requests with a
            // timestamp nonce (istio-mcp.md §3.2).
            let key = TypeKey::from_type_url(&type_url);
            self.types.insert(
                type_url.clone(),
                TypeState {
                    key,
                    status: TypeStatus::default(),
                    sent: None,
                },
            );
            out.events.push(Event::Subscribed {
                type_url: type_url.clone(),
                request_nonce: response_nonce,
                queued: self.snapshot.is_none(),
            });
            if let Some(snapshot) = self.snapshot.clone() {
                out.extend(self.respond(&type_url, &snapshot));
            }
            return out;
        };

        let status = &mut state.status;
        if status.sent_nonce.as_deref() != Some(response_nonce.as_str()) {
            out.events.push(Event::Ignored {
                type_url,
                nonce: response_nonce,
                reason: IgnoreReason::StaleNonce,
            });
            return out;
        }
        status.pending = false;
        let sent_version = status.sent_version.clone().unwrap_or_default();
        match error_detail {
            Some(err) => {
                status.nacks += 1;
                status.last_nack = Some(err.message.clone());
                out.events.push(Event::Nacked {
                    type_url: type_url.clone(),
                    rejected_version: sent_version,
                    client_version: version_info,
                    nonce: response_nonce,
                    code: err.code,
                    message: err.message,
                });
            }
            None => {
                // What the matching nonce acknowledges is what we sent with it; istiod echoes
                // the same string in version_info anyway.
                status.acked_version = Some(sent_version.clone());
                status.acked_nonce = Some(response_nonce.clone());
                out.events.push(Event::Acked {
                    type_url: type_url.clone(),
                    version: sent_version,
                    nonce: response_nonce,
                });
            }
        }
        if self.gate.remove(&type_url) && self.gate.is_empty() {
            self.timer = None;
            if !self.next_stage().is_empty() {
                self.timer = Some(Timer::Settle);
                out.timer = Some(self.timing.settle);
            }
        }
        out
    }

    /// The connection's timer fired.
    pub fn on_timer(&mut self) -> Output {
        match self.timer.take() {
            Some(Timer::Settle) => self.advance(),
            Some(Timer::AckTimeout) if !self.gate.is_empty() => {
                let type_urls = std::mem::take(&mut self.gate).into_iter().collect();
                let mut out = Output {
                    events: vec![Event::AckTimeout { type_urls }],
                    ..Output::default()
                };
                out.extend(self.advance());
                out
            }
            other => {
                self.timer = other;
                Output::default()
            }
        }
    }

    /// Takes a new snapshot: answers subscriptions queued until now and pushes the first
    /// stage of what changed (see the module docs); later stages follow [`Self::on_request`]
    /// ACKs and [`Self::on_timer`].
    pub fn on_snapshot(&mut self, new: Arc<Snapshot>) -> Output {
        self.snapshot = Some(new);
        self.advance()
    }

    /// The subscribed types that differ from what istiod was sent, and belong to the earliest
    /// stage of that difference.
    fn next_stage(&self) -> Vec<String> {
        let Some(snapshot) = &self.snapshot else {
            return Vec::new();
        };
        let mut changed: Vec<((u8, u8), &String)> = self
            .types
            .iter()
            .filter_map(|(url, t)| {
                let new = type_snapshot(snapshot, t);
                let stage = match (&t.sent, &t.key) {
                    (Some(sent), _) if sent.version == new.version => return None,
                    (Some(sent), Some(key)) => snapshot::push_stage(key, sent, &new),
                    // Queued subscriptions count as additions.
                    (None, Some(key)) => (0, key.push_rank()),
                    (_, None) => (0, 0),
                };
                Some((stage, url))
            })
            .collect();
        changed.sort();
        let Some(first) = changed.first().map(|(stage, _)| *stage) else {
            return Vec::new();
        };
        changed
            .into_iter()
            .take_while(|(stage, _)| *stage == first)
            .map(|(_, url)| url.clone())
            .collect()
    }

    /// Pushes the next stage unless one is still waiting for istiod.
    fn advance(&mut self) -> Output {
        let mut out = Output::default();
        if !self.gate.is_empty() || self.timer == Some(Timer::Settle) {
            return out;
        }
        let Some(snapshot) = self.snapshot.clone() else {
            return out;
        };
        let stage = self.next_stage();
        if stage.is_empty() {
            return out;
        }
        for type_url in &stage {
            out.extend(self.respond(type_url, &snapshot));
        }
        self.gate = stage.into_iter().collect();
        self.timer = Some(Timer::AckTimeout);
        out.timer = Some(self.timing.ack_timeout);
        out
    }

    fn respond(&mut self, type_url: &str, snapshot: &Snapshot) -> Output {
        let Some(state) = self.types.get_mut(type_url) else {
            return Output::default();
        };
        let ts = type_snapshot(snapshot, state);
        self.last_nonce += 1;
        let nonce = self.last_nonce.to_string();
        state.status.sent_version = Some(ts.version.clone());
        state.sent = Some(ts.clone());
        state.status.sent_nonce = Some(nonce.clone());
        state.status.pending = true;
        let response = DiscoveryResponse {
            version_info: ts.version.clone(),
            resources: ts.anys(),
            type_url: type_url.to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        Output {
            responses: vec![response],
            events: vec![Event::Sent {
                type_url: type_url.to_string(),
                version: ts.version.clone(),
                nonce,
                resources: ts.resources.len(),
            }],
            timer: None,
        }
    }
}

fn type_snapshot(snapshot: &Snapshot, state: &TypeState) -> Arc<TypeSnapshot> {
    match &state.key {
        Some(key) => snapshot.get(key),
        None => snapshot::EMPTY.clone(),
    }
}

/// The metrics label of a requested type URL: `group/Kind`, or `unknown` (bounded cardinality).
pub fn type_label(type_url: &str) -> String {
    TypeKey::from_type_url(type_url).map_or_else(|| "unknown".to_string(), |k| k.to_string())
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::google::protobuf::Any;
    use envoy_types::pb::google::rpc::Status;

    use super::*;
    use crate::snapshot::ServedResource;

    const VS: &str = "networking.istio.io/v1/VirtualService";
    const EF: &str = "networking.istio.io/v1alpha3/EnvoyFilter";
    const SE: &str = "networking.istio.io/v1/ServiceEntry";
    const MESH: &str = "core/v1alpha1/MeshConfig";
    const TS_NONCE: &str = "2026-08-22 10:00:00.000000001 +0000 UTC m=+0.012";

    fn res(name: &str, version: &str) -> ServedResource {
        ServedResource {
            name: name.to_string(),
            version: version.to_string(),
            resource: Any {
                type_url: "type.googleapis.com/istio.mcp.v1alpha1.Resource".to_string(),
                value: format!("{name}@{version}").into_bytes(),
            },
        }
    }

    fn snap(types: &[(&str, &[(&str, &str)])]) -> Arc<Snapshot> {
        let mut s = Snapshot::default();
        for (url, resources) in types {
            let key = TypeKey::from_type_url(url).unwrap();
            let resources = resources.iter().map(|(n, v)| res(n, v)).collect();
            s.types.insert(key, Arc::new(TypeSnapshot::new(resources)));
        }
        Arc::new(s)
    }

    fn req(type_url: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.to_string(),
            response_nonce: nonce.to_string(),
            node: Some(Node {
                id: "sidecar~10.0.0.1~istiod-0.istio-system~istio-system.svc.cluster.local".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ack(resp: &DiscoveryResponse) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: resp.version_info.clone(),
            ..req(&resp.type_url, &resp.nonce)
        }
    }

    fn nack(resp: &DiscoveryResponse, msg: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            error_detail: Some(Status {
                code: 3,
                message: msg.to_string(),
                details: vec![],
            }),
            ..req(&resp.type_url, &resp.nonce)
        }
    }

    fn urls(out: &Output) -> Vec<&str> {
        out.responses.iter().map(|r| r.type_url.as_str()).collect()
    }

    #[test]
    fn subscription_with_timestamp_nonce_after_snapshot_is_answered() {
        let s = snap(&[(VS, &[("default/a", "1"), ("default/b", "2")])]);
        let mut c = Connection::new(None);
        assert!(c.on_snapshot(s.clone()).responses.is_empty());
        let out = c.on_request(req(VS, TS_NONCE));
        assert_eq!(out.responses.len(), 1);
        let r = &out.responses[0];
        assert_eq!(r.type_url, VS);
        assert_eq!(
            r.version_info,
            s.get(&TypeKey::new("networking.istio.io", "VirtualService"))
                .version
        );
        assert_eq!(r.resources.len(), 2);
        assert_eq!(
            r.resources[0].type_url,
            "type.googleapis.com/istio.mcp.v1alpha1.Resource"
        );
        assert!(!r.nonce.is_empty());
        assert!(matches!(
            &out.events[..],
            [
                Event::Node { .. },
                Event::Subscribed { queued: false, .. },
                Event::Sent { resources: 2, .. }
            ]
        ));
        assert_eq!(
            c.node_id(),
            Some("sidecar~10.0.0.1~istiod-0.istio-system~istio-system.svc.cluster.local")
        );
        let st = &c.status().types[VS];
        assert!(st.pending);
        assert_eq!(st.sent_version.as_deref(), Some(r.version_info.as_str()));
        assert_eq!(st.acked_version, None);
    }

    #[test]
    fn subscription_before_snapshot_is_queued_then_answered_in_safe_order() {
        let mut c = Connection::new(None);
        for url in [MESH, VS, EF, SE] {
            let out = c.on_request(req(url, TS_NONCE));
            assert!(
                out.responses.is_empty(),
                "answered {url} before the snapshot"
            );
            assert!(
                out.events
                    .iter()
                    .any(|e| matches!(e, Event::Subscribed { queued: true, .. }))
            );
        }
        // A repeated request while queued is not a second subscription.
        let out = c.on_request(req(VS, "another timestamp"));
        assert!(out.responses.is_empty());
        assert!(matches!(
            out.events[..],
            [Event::Ignored {
                reason: IgnoreReason::StaleNonce,
                ..
            }]
        ));
        assert_eq!(c.status().types[VS].sent_version, None);

        let mut out = c.on_snapshot(snap(&[
            (VS, &[("default/a", "1")]),
            (EF, &[("istio-system/f", "1")]),
        ]));
        // One stage at a time: each waits for the ACK of the previous one, then the settle
        // time. MeshConfig is a well-formed type we hold nothing for: ranked like any other.
        let mut sent = Vec::new();
        let mut nonces = BTreeSet::new();
        for expected in [SE, EF, MESH, VS] {
            assert_eq!(urls(&out), vec![expected]);
            assert_eq!(out.timer, Some(PushTiming::default().ack_timeout));
            let r = out.responses.remove(0);
            nonces.insert(r.nonce.clone());
            let acked = c.on_request(ack(&r));
            assert!(acked.responses.is_empty());
            if expected != VS {
                assert_eq!(acked.timer, Some(PushTiming::default().settle));
                out = c.on_timer();
            } else {
                assert_eq!(acked.timer, None, "nothing left to push");
            }
            sent.push(r);
        }
        assert_eq!(nonces.len(), 4, "nonces must be unique");
        assert!(sent[0].resources.is_empty());
        assert!(sent[2].resources.is_empty());
        assert_eq!(sent[3].resources.len(), 1);
        assert!(
            c.on_timer().responses.is_empty(),
            "a stray timer sends nothing"
        );
    }

    #[test]
    fn ack_records_version_and_clears_pending() {
        let mut c = Connection::new(None);
        c.on_snapshot(snap(&[(VS, &[("default/a", "1")])]));
        let r = c.on_request(req(VS, TS_NONCE)).responses.remove(0);
        let out = c.on_request(ack(&r));
        assert!(out.responses.is_empty());
        assert_eq!(
            out.events,
            vec![Event::Acked {
                type_url: VS.into(),
                version: r.version_info.clone(),
                nonce: r.nonce.clone()
            }]
        );
        let st = &c.status().types[VS];
        assert!(!st.pending);
        assert_eq!(st.acked_version.as_deref(), Some(r.version_info.as_str()));
        assert_eq!(st.acked_nonce.as_deref(), Some(r.nonce.as_str()));
    }

    #[test]
    fn nack_is_reported_and_counted() {
        let mut c = Connection::new(None);
        c.on_snapshot(snap(&[(VS, &[("default/a", "1")])]));
        let r = c.on_request(req(VS, TS_NONCE)).responses.remove(0);
        let out = c.on_request(nack(&r, "bad route"));
        assert!(out.responses.is_empty());
        match &out.events[..] {
            [
                Event::Nacked {
                    type_url,
                    rejected_version,
                    nonce,
                    message,
                    code,
                    ..
                },
            ] => {
                assert_eq!(type_url, VS);
                assert_eq!(rejected_version, &r.version_info);
                assert_eq!(nonce, &r.nonce);
                assert_eq!(message, "bad route");
                assert_eq!(*code, 3);
            }
            other => panic!("unexpected events {other:?}"),
        }
        let st = &c.status().types[VS];
        assert_eq!(st.nacks, 1);
        assert_eq!(st.last_nack.as_deref(), Some("bad route"));
        assert_eq!(st.acked_version, None);
        assert!(!st.pending);
    }

    #[test]
    fn stale_nonce_is_ignored() {
        let mut c = Connection::new(None);
        c.on_snapshot(snap(&[(VS, &[("default/a", "1")])]));
        let first = c.on_request(req(VS, TS_NONCE)).responses.remove(0);
        let second = c
            .on_snapshot(snap(&[(VS, &[("default/a", "2")])]))
            .responses
            .remove(0);
        assert_ne!(first.nonce, second.nonce);

        // The ACK of the overtaken response changes nothing.
        let out = c.on_request(ack(&first));
        assert!(out.responses.is_empty());
        assert!(matches!(
            out.events[..],
            [Event::Ignored {
                reason: IgnoreReason::StaleNonce,
                ..
            }]
        ));
        let st = &c.status().types[VS];
        assert!(st.pending);
        assert_eq!(st.acked_version, None);
        // Neither does a NACK with a stale nonce, nor an unknown nonce.
        assert!(c.on_request(nack(&first, "late")).responses.is_empty());
        assert!(c.on_request(req(VS, "bogus")).responses.is_empty());
        assert_eq!(c.status().types[VS].nacks, 0);

        c.on_request(ack(&second));
        assert_eq!(
            c.status().types[VS].acked_version.as_deref(),
            Some(second.version_info.as_str())
        );
    }

    #[test]
    fn reconnect_gets_full_state() {
        let s = snap(&[
            (VS, &[("default/a", "1"), ("default/b", "1")]),
            (SE, &[("default/s", "1")]),
        ]);
        let mut c = Connection::new(None);
        c.on_snapshot(s.clone());
        for url in [VS, SE] {
            let r = c.on_request(req(url, TS_NONCE)).responses.remove(0);
            c.on_request(ack(&r));
        }
        // A new stream (istiod reconnecting) re-sends its initial requests with timestamp nonces.
        let mut c2 = Connection::new(None);
        c2.on_snapshot(s);
        let vs = c2
            .on_request(req(VS, "2026-08-22 10:05:00 +0000 UTC"))
            .responses;
        let se = c2
            .on_request(req(SE, "2026-08-22 10:05:00 +0000 UTC"))
            .responses;
        assert_eq!(vs[0].resources.len(), 2);
        assert_eq!(se[0].resources.len(), 1);
        assert_eq!(
            vs[0].version_info,
            c.status().types[VS].acked_version.clone().unwrap()
        );
    }

    #[test]
    fn unknown_and_empty_types_get_empty_answers() {
        let mut c = Connection::new(None);
        c.on_snapshot(snap(&[(VS, &[("default/a", "1")]), (SE, &[])]));
        for url in [
            MESH,
            SE,
            "security.istio.io/v1/AuthorizationPolicy",
            "not-a-type-url",
        ] {
            let out = c.on_request(req(url, TS_NONCE));
            assert_eq!(out.responses.len(), 1, "{url}");
            let r = &out.responses[0];
            assert_eq!(r.type_url, url);
            assert!(r.resources.is_empty());
            assert_eq!(r.version_info, snapshot::EMPTY.version);
        }
        let out = c.on_request(req("", TS_NONCE));
        assert!(out.responses.is_empty());
        assert!(matches!(
            out.events[..],
            [Event::Ignored {
                reason: IgnoreReason::MissingTypeUrl,
                ..
            }]
        ));
    }

    #[test]
    fn snapshot_change_pushes_changed_types_in_safe_order() {
        let mut c = Connection::new(None);
        c.on_snapshot(snap(&[
            (VS, &[("default/a", "1")]),
            (EF, &[("istio-system/f", "1")]),
            (SE, &[("default/s", "1")]),
        ]));
        for url in [VS, EF, SE, MESH] {
            let r = c.on_request(req(url, TS_NONCE)).responses.remove(0);
            c.on_request(ack(&r));
        }

        // Adding a route and its policy: the policy first; the route after its ACK + settle.
        let out = c.on_snapshot(snap(&[
            (VS, &[("default/a", "1"), ("default/b", "1")]),
            (EF, &[("istio-system/f", "2")]),
            (SE, &[("default/s", "1")]),
        ]));
        assert_eq!(urls(&out), vec![EF]);
        let out = c.on_request(ack(&out.responses[0]));
        assert!(out.responses.is_empty());
        assert!(out.timer.is_some());
        let out = c.on_timer();
        assert_eq!(urls(&out), vec![VS]);
        c.on_request(ack(&out.responses[0]));

        // Removing them: route first, then its policy, then the service.
        let mut out = c.on_snapshot(snap(&[(VS, &[("default/a", "1")])]));
        for expected in [VS, EF, SE] {
            assert_eq!(urls(&out), vec![expected]);
            let r = &out.responses[0];
            assert_eq!(
                c.status().types[r.type_url.as_str()].sent_nonce.as_deref(),
                Some(r.nonce.as_str())
            );
            if expected != VS {
                assert!(r.resources.is_empty());
            }
            c.on_request(ack(r));
            out = c.on_timer();
        }
        assert!(out.responses.is_empty());
    }

    #[test]
    fn a_stage_waits_for_its_ack_and_newer_snapshots_join_the_queue() {
        let mut c = Connection::new(None);
        c.on_snapshot(snap(&[(VS, &[]), (EF, &[])]));
        for url in [VS, EF] {
            let r = c.on_request(req(url, TS_NONCE)).responses.remove(0);
            c.on_request(ack(&r));
        }
        let ef = c
            .on_snapshot(snap(&[
                (VS, &[("default/a", "1")]),
                (EF, &[("istio-system/f", "1")]),
            ]))
            .responses
            .remove(0);
        assert_eq!(ef.type_url, EF);
        // While the EnvoyFilter is not ACKed, newer snapshots push nothing.
        let newer = snap(&[
            (VS, &[("default/a", "2")]),
            (EF, &[("istio-system/f", "1")]),
        ]);
        assert!(c.on_snapshot(newer).responses.is_empty());
        c.on_request(ack(&ef));
        let vs = c.on_timer();
        assert_eq!(urls(&vs), vec![VS]);
        assert!(vs.responses[0].version_info != snapshot::EMPTY.version);
    }

    #[test]
    fn a_stage_without_ack_is_released_by_the_timeout() {
        let mut c = Connection::new(None);
        c.on_snapshot(snap(&[(VS, &[]), (EF, &[])]));
        for url in [VS, EF] {
            let r = c.on_request(req(url, TS_NONCE)).responses.remove(0);
            c.on_request(ack(&r));
        }
        let out = c.on_snapshot(snap(&[
            (VS, &[("default/a", "1")]),
            (EF, &[("istio-system/f", "1")]),
        ]));
        assert_eq!(urls(&out), vec![EF]);
        let out = c.on_timer();
        assert_eq!(
            out.events[0],
            Event::AckTimeout {
                type_urls: vec![EF.to_string()]
            }
        );
        assert_eq!(urls(&out), vec![VS]);
    }

    #[test]
    fn unchanged_snapshot_is_not_resent() {
        let s = snap(&[(VS, &[("default/a", "1")]), (SE, &[("default/s", "1")])]);
        let mut c = Connection::new(None);
        c.on_snapshot(s.clone());
        c.on_request(req(VS, TS_NONCE));
        c.on_request(req(MESH, TS_NONCE));
        assert!(c.on_snapshot(s).responses.is_empty());
        // A new snapshot with equal content: same versions, nothing to send.
        let equal = snap(&[(VS, &[("default/a", "1")]), (SE, &[("default/s", "1")])]);
        assert!(c.on_snapshot(equal).responses.is_empty());
        let again = snap(&[(VS, &[("default/a", "1")]), (SE, &[("default/s", "2")])]);
        assert!(
            c.on_snapshot(again).responses.is_empty(),
            "SE changed but is not subscribed"
        );
    }

    #[test]
    fn unsubscribed_types_are_never_pushed() {
        let mut c = Connection::new(None);
        c.on_snapshot(snap(&[(VS, &[("default/a", "1")])]));
        c.on_request(req(SE, TS_NONCE));
        let out = c.on_snapshot(snap(&[(VS, &[("default/a", "2")])]));
        assert!(out.responses.is_empty());
    }

    #[test]
    fn type_label_is_bounded() {
        assert_eq!(type_label(VS), "networking.istio.io/VirtualService");
        assert_eq!(type_label("garbage"), "unknown");
    }
}
