//! What the Kubernetes source knows, without I/O: per watched kind, whether its initial list
//! is done, the last good state of every object, the objects that do not load, and each HTNN
//! object's `Accepted` condition as last seen on the server.
//!
//! Fed the watcher's events one at a time; every event yields the [`Change`]s for the
//! translator. A relist (`Init` … `InitDone`, after a watch gap) removes the objects it did
//! not list, so deletions missed during the gap are not lost.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use crate::model::{Name, Object, ObjectRef};
use crate::source::LoadError;
use htnn_translators::Change;
use htnn_translators::kinds::{HTNN_GROUP, HTNN_KINDS, ISTIO_KINDS};
use htnn_translators::parse::parse_object;

/// One kind we watch, at the one version we watch it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: String,
}

impl WatchedKind {
    /// The CustomResourceDefinition that serves this kind: `<plural>.<group>`.
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }

    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    pub fn is_htnn(&self) -> bool {
        self.group == HTNN_GROUP
    }
}

/// The version istiod reads of each istio kind (istio's CRDs have no conversion webhook, so
/// every served version lists the same objects: watch one).
fn istio_watch_version(kind: &str) -> &'static str {
    match kind {
        "EnvoyFilter" => "v1alpha3",
        "ProxyConfig" => "v1beta1",
        "WasmPlugin" | "TrafficExtension" => "v1alpha1",
        _ => "v1",
    }
}

/// The five HTNN kinds, then every istio kind istiod reads.
pub fn watched_kinds() -> Vec<WatchedKind> {
    let htnn = HTNN_KINDS.iter().map(|kind| WatchedKind {
        group: HTNN_GROUP,
        version: "v1",
        kind,
        plural: plural(kind),
    });
    let istio = ISTIO_KINDS.iter().map(|k| WatchedKind {
        group: k.group,
        version: istio_watch_version(k.kind),
        kind: k.kind,
        plural: plural(k.kind),
    });
    htnn.chain(istio).collect()
}

/// Lower-case plural as the CRDs declare it (`ProxyConfig` → `proxyconfigs`,
/// `Telemetry` → `telemetries`).
fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    match lower.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) => format!("{stem}ies"),
        _ => format!("{lower}s"),
    }
}

/// Where a kind's initial list stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// Its CRD exists; the first list has not completed.
    Pending,
    /// Listed at least once.
    Synced,
    /// No CRD: served as empty until the CRD appears.
    Absent,
}

/// The server's `Accepted` condition of an HTNN object, as a JSON object.
pub type Condition = Value;

#[derive(Debug, Default)]
struct Entry {
    /// Last state that loaded; kept while a later version does not.
    good: Option<Arc<Object>>,
    /// `Accepted` condition on the server (None: none, or unknown after a failed write).
    condition: Option<Condition>,
    generation: i64,
}

#[derive(Debug)]
struct KindState {
    sync: Sync,
    objects: BTreeMap<ObjectRef, Entry>,
    /// During a (re)list: what it listed so far.
    listing: Option<BTreeSet<ObjectRef>>,
}

/// The Kubernetes source's state. `kinds[i]` is indexed like [`watched_kinds`].
pub struct Store {
    kinds: Vec<WatchedKind>,
    states: Vec<KindState>,
    /// Set once the CRD list completed: before it, no kind can be known to be absent.
    crds_listed: bool,
    /// Objects whose current version does not load, kept apart from the entries because the
    /// complete list is handed over after every batch: it must not cost a scan of every object.
    errors: BTreeMap<ObjectRef, LoadError>,
}

impl Store {
    pub fn new(kinds: Vec<WatchedKind>) -> Self {
        let states = kinds
            .iter()
            .map(|_| KindState {
                sync: Sync::Pending,
                objects: BTreeMap::new(),
                listing: None,
            })
            .collect();
        Self {
            kinds,
            states,
            crds_listed: false,
            errors: BTreeMap::new(),
        }
    }

    pub fn kinds(&self) -> &[WatchedKind] {
        &self.kinds
    }

    #[cfg(test)]
    pub fn sync_of(&self, kind: usize) -> Sync {
        self.states[kind].sync
    }

    /// Every kind is listed or known to be absent: the source may be published.
    pub fn synced(&self) -> bool {
        self.crds_listed && self.states.iter().all(|s| s.sync != Sync::Pending)
    }

    /// The CRD list completed; kinds whose CRD it did not contain are absent.
    pub fn crds_listed(&mut self, present: &BTreeSet<String>, out: &mut Vec<Change>) {
        self.crds_listed = true;
        for i in 0..self.kinds.len() {
            if !present.contains(&self.kinds[i].crd_name()) {
                self.set_absent(i, out);
            }
        }
    }

    /// The kind's CRD appeared: its watch starts, and it is pending until listed.
    pub fn set_present(&mut self, kind: usize) {
        let s = &mut self.states[kind];
        if s.sync == Sync::Absent {
            s.sync = Sync::Pending;
        }
    }

    /// The kind's CRD is gone (or never was): its objects are removed.
    pub fn set_absent(&mut self, kind: usize, out: &mut Vec<Change>) {
        let s = &mut self.states[kind];
        s.sync = Sync::Absent;
        s.listing = None;
        for (id, entry) in std::mem::take(&mut s.objects) {
            self.errors.remove(&id);
            if entry.good.is_some() {
                out.push(Change::Delete(id));
            }
        }
    }

    /// A (re)list starts.
    pub fn init(&mut self, kind: usize) {
        self.states[kind].listing = Some(BTreeSet::new());
    }

    /// The (re)list is complete: objects it did not list were deleted meanwhile.
    pub fn init_done(&mut self, kind: usize, out: &mut Vec<Change>) {
        let s = &mut self.states[kind];
        if s.sync == Sync::Absent {
            return;
        }
        s.sync = Sync::Synced;
        let Some(listed) = s.listing.take() else {
            return;
        };
        let gone: Vec<ObjectRef> = s
            .objects
            .keys()
            .filter(|id| !listed.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            self.errors.remove(&id);
            if s.objects.remove(&id).is_some_and(|e| e.good.is_some()) {
                out.push(Change::Delete(id));
            }
        }
    }

    /// An object was listed, added or modified.
    pub fn apply(&mut self, kind: usize, json: Value, out: &mut Vec<Change>) {
        let Some(id) = self.id_of(kind, &json) else {
            return;
        };
        let condition = accepted_condition(&json);
        let generation = json
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let loaded = parse_object(0, json);
        let s = &mut self.states[kind];
        if s.sync == Sync::Absent {
            return;
        }
        if let Some(listing) = &mut s.listing {
            listing.insert(id.clone());
        }
        let entry = s.objects.entry(id.clone()).or_default();
        entry.condition = condition;
        entry.generation = generation;
        match loaded {
            Ok(obj) => {
                self.errors.remove(&id);
                if entry.good.as_deref() != Some(&obj) {
                    let obj = Arc::new(obj);
                    entry.good = Some(obj.clone());
                    out.push(Change::Upsert(obj));
                }
            }
            Err(e) => {
                let error = LoadError {
                    file: "kubernetes".into(),
                    document: None,
                    object: Some(id.to_string()),
                    reason: e.reason,
                };
                self.errors.insert(id, error);
            }
        }
    }

    /// An object was deleted.
    pub fn delete(&mut self, kind: usize, json: &Value, out: &mut Vec<Change>) {
        let Some(id) = self.id_of(kind, json) else {
            return;
        };
        let s = &mut self.states[kind];
        if let Some(listing) = &mut s.listing {
            listing.remove(&id);
        }
        self.errors.remove(&id);
        if s.objects.remove(&id).is_some_and(|e| e.good.is_some()) {
            out.push(Change::Delete(id));
        }
    }

    /// The identity of a watched object of `kind`.
    pub fn id_of(&self, kind: usize, json: &Value) -> Option<ObjectRef> {
        let k = &self.kinds[kind];
        let name = json.pointer("/metadata/name")?.as_str()?;
        let namespace = json
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        Some(ObjectRef {
            group: Name::interned(k.group),
            kind: Name::interned(k.kind),
            namespace: Name::interned(namespace),
            name: name.into(),
        })
    }

    /// Objects that do not load (their last good state, if any, keeps serving).
    pub fn errors(&self) -> Vec<LoadError> {
        self.errors.values().cloned().collect()
    }

    /// Every HTNN object on the server: which kind, its generation, its load error (if it
    /// does not load) and its current `Accepted` condition.
    pub fn htnn_objects(&self) -> impl Iterator<Item = HtnnObject<'_>> {
        self.kinds
            .iter()
            .zip(&self.states)
            .enumerate()
            .filter(|(_, (k, _))| k.is_htnn())
            .flat_map(move |(kind, (_, s))| {
                s.objects.iter().map(move |(id, e)| self.view(kind, id, e))
            })
    }

    /// Looks up one HTNN object (see [`Store::htnn_objects`]).
    pub fn htnn_object(&self, id: &ObjectRef) -> Option<HtnnObject<'_>> {
        let kind = self
            .kinds
            .iter()
            .position(|k| k.is_htnn() && k.group == id.group.as_str() && k.kind == id.kind)?;
        let (id, e) = self.states[kind].objects.get_key_value(id)?;
        Some(self.view(kind, id, e))
    }

    fn view<'a>(&'a self, kind: usize, id: &'a ObjectRef, e: &'a Entry) -> HtnnObject<'a> {
        HtnnObject {
            kind,
            id,
            generation: e.generation,
            load_error: self.errors.get(id).map(|e| e.reason.as_str()),
            condition: e.condition.as_ref(),
        }
    }

    /// Records the condition just written (or, with `None`, that it is unknown because the
    /// write failed), until the watch reports it.
    pub fn set_condition(&mut self, id: &ObjectRef, condition: Option<Condition>) {
        for s in &mut self.states {
            if let Some(e) = s.objects.get_mut(id) {
                e.condition = condition;
                return;
            }
        }
    }

    pub fn object_count(&self) -> usize {
        self.states.iter().map(|s| s.objects.len()).sum()
    }
}

pub struct HtnnObject<'a> {
    pub kind: usize,
    pub id: &'a ObjectRef,
    pub generation: i64,
    pub load_error: Option<&'a str>,
    pub condition: Option<&'a Condition>,
}

/// `status.conditions[type == Accepted]`.
fn accepted_condition(json: &Value) -> Option<Condition> {
    json.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Accepted"))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> (Store, usize, usize) {
        let kinds = watched_kinds();
        let fp = kinds.iter().position(|k| k.kind == "FilterPolicy").unwrap();
        let vs = kinds
            .iter()
            .position(|k| k.kind == "VirtualService")
            .unwrap();
        (Store::new(kinds), fp, vs)
    }

    fn vs(name: &str, host: &str) -> Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "ns", "generation": 1, "uid": "u", "resourceVersion": "7",
                "managedFields": [{"manager": "kubectl"}], "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": "b"}}]}]}})
    }

    fn names(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Upsert(o) => format!("+{}", o.id.name),
                Change::Delete(id) => format!("-{}", id.name),
            })
            .collect()
    }

    #[test]
    fn kinds_are_the_twenty_with_their_crd_names() {
        let kinds = watched_kinds();
        assert_eq!(kinds.len(), 20);
        let crds: BTreeSet<String> = kinds.iter().map(WatchedKind::crd_name).collect();
        for name in [
            "filterpolicies.htnn.mosn.io",
            "httpfilterpolicies.htnn.mosn.io",
            "consumers.htnn.mosn.io",
            "serviceregistries.htnn.mosn.io",
            "dynamicconfigs.htnn.mosn.io",
            "virtualservices.networking.istio.io",
            "proxyconfigs.networking.istio.io",
            "telemetries.telemetry.istio.io",
            "authorizationpolicies.security.istio.io",
            "trafficextensions.extensions.istio.io",
            "wasmplugins.extensions.istio.io",
        ] {
            assert!(crds.contains(name), "{name} in {crds:?}");
        }
        let ef = kinds.iter().find(|k| k.kind == "EnvoyFilter").unwrap();
        assert_eq!(ef.api_version(), "networking.istio.io/v1alpha3");
    }

    #[test]
    fn nothing_is_synced_before_the_crd_list_and_every_kind() {
        let (mut s, fp, vs) = store();
        let mut out = Vec::new();
        assert!(!s.synced());
        let present: BTreeSet<String> = [&s.kinds[fp], &s.kinds[vs]]
            .iter()
            .map(|k| k.crd_name())
            .collect();
        s.crds_listed(&present, &mut out);
        assert!(!s.synced(), "two kinds still listing");
        s.init(fp);
        s.init_done(fp, &mut out);
        assert!(!s.synced());
        s.init(vs);
        s.init_done(vs, &mut out);
        assert!(s.synced());
        assert!(out.is_empty());
        // A CRD that appears later makes its kind pending, without un-publishing the rest.
        let consumer = s.kinds.iter().position(|k| k.kind == "Consumer").unwrap();
        assert_eq!(s.sync_of(consumer), Sync::Absent);
        s.set_present(consumer);
        assert_eq!(s.sync_of(consumer), Sync::Pending);
    }

    #[test]
    fn relist_removes_what_was_deleted_during_the_gap() {
        let (mut s, _, vs) = store();
        let mut out = Vec::new();
        s.init(vs);
        s.apply(vs, super::tests::vs("a", "a"), &mut out);
        s.apply(vs, super::tests::vs("b", "b"), &mut out);
        s.init_done(vs, &mut out);
        assert_eq!(names(&out), ["+a", "+b"]);
        out.clear();
        // Same content again (another resourceVersion, e.g. a status write): no change.
        s.apply(vs, super::tests::vs("a", "a"), &mut out);
        assert!(out.is_empty());
        s.init(vs);
        s.apply(vs, super::tests::vs("b", "b2"), &mut out);
        s.init_done(vs, &mut out);
        assert_eq!(names(&out), ["+b", "-a"]);
    }

    #[test]
    fn a_bad_version_keeps_the_last_good_one_and_reports_the_field() {
        let (mut s, _, vs) = store();
        let mut out = Vec::new();
        s.apply(vs, super::tests::vs("a", "a"), &mut out);
        let mut bad = super::tests::vs("a", "a");
        bad["spec"]["http"][0]["timeoutt"] = json!("5s");
        out.clear();
        s.apply(vs, bad, &mut out);
        assert!(out.is_empty(), "the last good state keeps serving");
        let errors = s.errors();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].reason.contains("timeoutt"), "{errors:?}");
        assert_eq!(errors[0].object.as_deref(), Some("VirtualService ns/a"));
        s.apply(vs, super::tests::vs("a", "a"), &mut out);
        assert!(s.errors().is_empty());
        s.delete(vs, &super::tests::vs("a", "a"), &mut out);
        assert_eq!(names(&out), ["-a"]);
        // An object that goes away takes its error with it: deleted, or its kind gone.
        let mut bad = super::tests::vs("b", "b");
        bad["spec"]["hostss"] = json!([]);
        s.apply(vs, bad.clone(), &mut out);
        assert_eq!(s.errors().len(), 1);
        s.delete(vs, &bad, &mut out);
        assert!(s.errors().is_empty());
        s.apply(vs, bad, &mut out);
        s.set_absent(vs, &mut out);
        assert!(s.errors().is_empty());
    }

    #[test]
    fn conditions_are_tracked_per_htnn_object() {
        let (mut s, fp, _) = store();
        let mut out = Vec::new();
        let policy = json!({"apiVersion": "htnn.mosn.io/v1", "kind": "FilterPolicy",
            "metadata": {"name": "p", "namespace": "ns", "generation": 3},
            "spec": {"targetRef": {"group": "networking.istio.io", "kind": "VirtualService", "name": "vs"},
                "filters": {"demo": {"config": {"hostName": "x"}}}},
            "status": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]}});
        s.apply(fp, policy, &mut out);
        let o: Vec<_> = s.htnn_objects().collect();
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].generation, 3);
        assert_eq!(o[0].condition.unwrap()["reason"], "Accepted");
        let id = o[0].id.clone();
        s.set_condition(&id, None);
        assert!(s.htnn_object(&id).unwrap().condition.is_none());
        s.set_absent(fp, &mut out);
        assert_eq!(names(&out), ["+p", "-p"]);
        assert!(s.htnn_objects().next().is_none());
    }

    #[test]
    fn plurals() {
        assert_eq!(plural("Telemetry"), "telemetries");
        assert_eq!(plural("Gateway"), "gateways");
        assert_eq!(plural("ProxyConfig"), "proxyconfigs");
        assert_eq!(plural("AuthorizationPolicy"), "authorizationpolicies");
    }
}
