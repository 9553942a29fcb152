//! Status written back to HTNN objects: their `Accepted` condition, by server-side apply of
//! the status subresource with one field manager.
//!
//! A write happens only when the desired condition differs from the one on the server
//! (ignoring `lastTransitionTime`), so reconciling never writes, and re-applying an identical
//! status would not change `resourceVersion` anyway: no echo loop.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::store::{Condition, WatchedKind};
use crate::model::ObjectRef;
use htnn_translators::{Reason, Status};

pub const FIELD_MANAGER: &str = "htnn";
/// metav1.Condition's limit on `message`.
const MAX_MESSAGE: usize = 32768;
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const CONCURRENT_WRITES: usize = 16;

/// The condition to put on the server for `status`. `previous` is the one there now: its
/// `lastTransitionTime` is kept unless the condition's status flips.
pub fn desired(status: &Status, previous: Option<&Condition>, now: &str) -> Condition {
    let (state, reason) = match status.reason {
        Reason::Accepted => ("True", "Accepted"),
        Reason::Invalid => ("False", "Invalid"),
        Reason::TargetNotFound => ("False", "TargetNotFound"),
    };
    let mut message = status.message.clone();
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE - 3;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    let since = previous
        .filter(|p| p.get("status").and_then(Value::as_str) == Some(state))
        .and_then(|p| p.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .unwrap_or(now);
    json!({
        "type": "Accepted",
        "status": state,
        "reason": reason,
        "message": message,
        "observedGeneration": status.observed_generation,
        "lastTransitionTime": since,
    })
}

/// Whether two conditions say the same, whenever they said it.
pub fn same(a: &Condition, b: &Condition) -> bool {
    let strip = |c: &Condition| {
        let mut c = c.clone();
        if let Some(m) = c.as_object_mut() {
            m.remove("lastTransitionTime");
        }
        c
    };
    strip(a) == strip(b)
}

/// Now, as RFC 3339 in seconds (what metav1.Time keeps).
pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now().to_string())
}

/// One status write.
#[derive(Debug)]
pub struct Write {
    pub id: ObjectRef,
    pub kind: WatchedKind,
    pub condition: Condition,
}

/// Writes statuses as they come, the latest per object, a few at a time. Reports each write
/// that failed (other than for an object deleted meanwhile), so that the caller forgets
/// what it assumed the server holds and tries again.
pub async fn writer(
    client: kube::Client,
    mut writes: mpsc::UnboundedReceiver<Write>,
    failed: mpsc::UnboundedSender<ObjectRef>,
) {
    let mut queue: BTreeMap<ObjectRef, Write> = BTreeMap::new();
    let mut inflight = FuturesUnordered::new();
    let (mut written, mut since_log) = (0u64, std::time::Instant::now());
    loop {
        while inflight.len() < CONCURRENT_WRITES
            && let Some((_, w)) = queue.pop_first()
        {
            inflight.push(write(client.clone(), w));
        }
        tokio::select! {
            w = writes.recv() => match w {
                Some(w) => { queue.insert(w.id.clone(), w); }
                None => return,
            },
            Some((id, result)) = inflight.next(), if !inflight.is_empty() => match result {
                Ok(()) => {
                    written += 1;
                    if inflight.is_empty() && queue.is_empty() && since_log.elapsed() > Duration::from_secs(1) {
                        info!(written, "statuses written");
                        (written, since_log) = (0, std::time::Instant::now());
                    }
                }
                Err(e) => {
                    warn!(object = %id, error = %e, "status write failed; will retry");
                    let _ = failed.send(id);
                }
            },
        }
    }
}

async fn write(client: kube::Client, w: Write) -> (ObjectRef, anyhow::Result<()>) {
    let Write {
        id,
        kind,
        condition,
    } = w;
    let gvk = GroupVersionKind::gvk(kind.group, kind.version, kind.kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, &kind.plural);
    let api: Api<DynamicObject> = Api::namespaced_with(client, &id.namespace, &ar);
    let body = json!({
        "apiVersion": kind.api_version(),
        "kind": kind.kind,
        "status": {"conditions": [condition]},
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let result = tokio::time::timeout(
        WRITE_TIMEOUT,
        api.patch_status(&id.name, &params, &Patch::Apply(body)),
    )
    .await;
    let result = match result {
        Err(_) => Err(anyhow::anyhow!("timed out after {WRITE_TIMEOUT:?}")),
        Ok(Ok(_)) => {
            debug!(object = %id, "status written");
            Ok(())
        }
        // Deleted meanwhile: nothing to write.
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => Ok(()),
        Ok(Err(e)) => Err(e.into()),
    };
    (id, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let accepted = Status::accepted(2);
        let first = desired(&accepted, None, "2026-01-01T00:00:00Z");
        assert_eq!(first["status"], "True");
        assert_eq!(first["observedGeneration"], 2);
        // Same status later: the original transition time stays, and nothing is to write.
        let again = desired(&accepted, Some(&first), "2026-01-02T00:00:00Z");
        assert_eq!(again["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert!(same(&first, &again));
        // A new generation is a change to write, still without a transition.
        let next = desired(&Status::accepted(3), Some(&first), "2026-01-02T00:00:00Z");
        assert!(!same(&first, &next));
        assert_eq!(next["lastTransitionTime"], "2026-01-01T00:00:00Z");
        let invalid = desired(
            &Status::invalid(3, "spec.filters.limitReq.config.average: must be > 0"),
            Some(&next),
            "2026-01-03T00:00:00Z",
        );
        assert_eq!(invalid["status"], "False");
        assert_eq!(invalid["reason"], "Invalid");
        assert_eq!(invalid["lastTransitionTime"], "2026-01-03T00:00:00Z");
        let missing = desired(&Status::target_not_found(1, "x"), None, "t");
        assert_eq!(missing["reason"], "TargetNotFound");
    }

    #[test]
    fn long_messages_are_cut_to_the_api_limit() {
        let c = desired(&Status::invalid(1, "é".repeat(40_000)), None, "t");
        let m = c["message"].as_str().unwrap();
        assert!(m.len() <= MAX_MESSAGE && m.ends_with("..."), "{}", m.len());
    }

    #[test]
    fn now_is_whole_seconds_utc() {
        let now = now_rfc3339();
        assert!(now.ends_with('Z') && !now.contains('.'), "{now}");
    }
}
