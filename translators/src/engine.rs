//! The incremental translator: an index of the current objects, updated one change at a time,
//! that re-translates only what a change affects.
//!
//! What depends on what:
//! - a policy's status and contribution depend on the policy, its target VirtualService's
//!   routes, the Gateways that VirtualService names, and the route names other gateway-bound
//!   VirtualServices use (the clash check, see [`RouteIndex`]);
//! - a VirtualService's generated EnvoyFilter (and its served form, with unnamed routes named)
//!   depends on its routes and the policies contributing to it;
//! - the consumer carrier depends on every Consumer.
//!
//! A change marks the VirtualServices it touches, their policies are re-evaluated, and the
//! VirtualServices whose contributions or routes changed are regenerated. The result equals a
//! translation from scratch of the same objects ([`crate::translate`] is exactly that), which
//! the property test in `tests/incremental.rs` checks after every step of random sequences.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::json;

use crate::consumers::{self, ConsumerState};
use crate::embedded::{self, EMBEDDED_CREATE_TIME};
use crate::model::{Meta, Name, Object, ObjectRef, Spec};
use crate::policy::{self, PolicySpec};
use crate::routes::RouteIndex;
use crate::small::VecMap;
use crate::virtualservice::VsRoutes;
use crate::{
    CREATED_BY_LABEL, HTNN_GROUP, INFO_ANNOTATION, ISTIO_NETWORKING, LAST_VALID_SUFFIX, Options,
    Output, Policy, Reason, Status, envoyfilter, jsontext, kinds, merge,
};

/// One change to the input.
#[derive(Clone, Debug)]
pub enum Change {
    /// An object was added or replaced.
    Upsert(Arc<Object>),
    Delete(ObjectRef),
}

/// What changed in the [`Output`] since the last [`Translator::take_delta`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delta {
    /// Served objects added, replaced or removed.
    pub objects: BTreeSet<ObjectRef>,
    /// Statuses added, changed or removed.
    pub statuses: BTreeSet<ObjectRef>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.statuses.is_empty()
    }
}

/// Policies are listed real ones first (by id), then embedded ones (by VirtualService): the
/// order ties in merge order keep.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PolicyKey {
    embedded: bool,
    /// The status id: the policy's own, or `FilterPolicy <ns>/embedded-virtualservice-<vs>`.
    id: ObjectRef,
}

/// One version of a policy, parsed on its own.
#[derive(Clone)]
struct PolicyVersion {
    /// The FilterPolicy, or the VirtualService an embedded policy comes from.
    obj: Arc<Object>,
    created: (i64, i32),
    /// The spec and the VirtualService it targets, or why it is invalid.
    parsed: Result<(Arc<PolicySpec>, ObjectRef), String>,
}

impl PolicyVersion {
    fn target(&self) -> Option<&ObjectRef> {
        self.parsed.as_ref().ok().map(|(_, t)| t)
    }
}

struct PolicyState {
    current: PolicyVersion,
    /// The last version that was not `Invalid` (with [`Options::keep_last_valid`]).
    last_valid: Option<PolicyVersion>,
    /// The VirtualServices this policy is listed under in `by_target` (one or two).
    indexed: Vec<ObjectRef>,
    /// Where and what it contributes now.
    contribution: Option<(ObjectRef, Arc<Policy>)>,
}

/// The VirtualService a policy of namespace `ns` targets.
fn target_of(ns: &str, spec: &PolicySpec) -> Option<ObjectRef> {
    let t = spec.target_ref.as_ref()?;
    Some(ObjectRef {
        group: Name::interned(ISTIO_NETWORKING),
        kind: Name::interned("VirtualService"),
        namespace: Name::interned(ns),
        name: t.name.as_str().into(),
    })
}

fn with_target(ns: &str, spec: PolicySpec) -> Result<(Arc<PolicySpec>, ObjectRef), String> {
    let target = target_of(ns, &spec).ok_or("spec.targetRef: required")?;
    Ok((Arc::new(spec), target))
}

fn policy_version(obj: &Arc<Object>) -> PolicyVersion {
    let ns = &obj.id.namespace;
    PolicyVersion {
        created: crate::created(obj),
        parsed: policy::parse(ns, &obj.spec_json(), false).and_then(|s| with_target(ns, s)),
        obj: obj.clone(),
    }
}

fn embedded_id(vs: &ObjectRef) -> ObjectRef {
    ObjectRef {
        group: Name::interned(HTNN_GROUP),
        kind: Name::interned("FilterPolicy"),
        namespace: vs.namespace.clone(),
        name: format!("embedded-virtualservice-{}", vs.name).into(),
    }
}

fn embedded_version(vs: &Arc<Object>) -> Option<PolicyVersion> {
    let (annotation, parsed) = embedded::embedded_policy(&vs.id, vs)?;
    let ns = &vs.id.namespace;
    let (parsed, created) = match parsed {
        Ok((spec, created)) => (
            policy::parse(ns, &spec, true)
                .map_err(|e| format!("annotation {annotation}: {e}"))
                .and_then(|s| with_target(ns, s)),
            created,
        ),
        Err(e) => (
            Err(format!("annotation {annotation}: {e}")),
            EMBEDDED_CREATE_TIME,
        ),
    };
    Some(PolicyVersion {
        obj: vs.clone(),
        created,
        parsed,
    })
}

fn envoy_filter_kind() -> &'static kinds::IstioKind {
    kinds::istio_kind(ISTIO_NETWORKING, "EnvoyFilter").expect("EnvoyFilter is an istio kind")
}

/// The work one [`Translator::apply`] collects before doing it.
#[derive(Default)]
struct Work {
    /// VirtualServices whose routes or context changed: their policies are re-evaluated and
    /// they are regenerated.
    vs: BTreeSet<ObjectRef>,
    policies: BTreeSet<PolicyKey>,
    /// VirtualServices to regenerate.
    regen: BTreeSet<ObjectRef>,
    /// Namespaces whose consumers changed.
    consumers: BTreeSet<String>,
}

pub struct Translator {
    opts: Options,
    input: BTreeMap<ObjectRef, Arc<Object>>,
    out: Output,
    /// Served objects we generate; they win over input objects with the same id.
    generated: BTreeSet<ObjectRef>,
    /// Existing istio Gateways, `ns/name`.
    gateways: BTreeSet<String>,
    vs: BTreeMap<ObjectRef, VsRoutes>,
    /// `ns/name` of a Gateway -> VirtualServices naming it.
    vs_by_gateway: BTreeMap<String, BTreeSet<ObjectRef>>,
    routes: RouteIndex,
    policies: BTreeMap<PolicyKey, PolicyState>,
    /// VirtualService -> policies targeting it (in their current or last valid version).
    by_target: BTreeMap<ObjectRef, VecMap<PolicyKey, ()>>,
    /// VirtualService -> the accepted policies contributing to it.
    contributions: BTreeMap<ObjectRef, VecMap<PolicyKey, Arc<Policy>>>,
    /// Namespace -> its consumers.
    consumers: BTreeMap<String, BTreeMap<ObjectRef, ConsumerState>>,
    consumers_last_valid: BTreeMap<String, BTreeMap<ObjectRef, ConsumerState>>,
    /// Namespace -> its part of the carrier document.
    consumer_docs: BTreeMap<String, String>,
    delta: Delta,
}

impl Translator {
    /// A translator with no input: serves only the static EnvoyFilters.
    pub fn new(opts: Options) -> Self {
        let mut t = Self {
            opts,
            input: BTreeMap::new(),
            out: Output::default(),
            generated: BTreeSet::new(),
            gateways: BTreeSet::new(),
            vs: BTreeMap::new(),
            vs_by_gateway: BTreeMap::new(),
            routes: RouteIndex::default(),
            policies: BTreeMap::new(),
            by_target: BTreeMap::new(),
            contributions: BTreeMap::new(),
            consumers: BTreeMap::new(),
            consumers_last_valid: BTreeMap::new(),
            consumer_docs: BTreeMap::new(),
            delta: Delta::default(),
        };
        let base = t.generated_object("htnn-http-filter", "htnn", None, envoyfilter::base_spec());
        t.set_generated(base);
        t.regenerate_consumers(BTreeSet::new());
        t
    }

    pub fn output(&self) -> &Output {
        &self.out
    }

    pub fn into_output(self) -> Output {
        self.out
    }

    /// The current input objects.
    pub fn input(&self) -> &BTreeMap<ObjectRef, Arc<Object>> {
        &self.input
    }

    /// What changed in the output since the last call.
    pub fn take_delta(&mut self) -> Delta {
        std::mem::take(&mut self.delta)
    }

    /// Applies a batch of changes. An upsert of an object equal to the current one changes
    /// nothing and costs one comparison.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = Change>) {
        let mut work = Work::default();
        for change in changes {
            self.record(change, &mut work);
        }
        for vs in &work.vs {
            if let Some(keys) = self.by_target.get(vs) {
                work.policies.extend(keys.keys().cloned());
            }
        }
        work.regen.extend(work.vs.iter().cloned());
        for key in std::mem::take(&mut work.policies) {
            self.evaluate(&key, &mut work.regen);
        }
        for vs in std::mem::take(&mut work.regen) {
            self.regenerate(&vs);
        }
        if !work.consumers.is_empty() {
            self.regenerate_consumers(work.consumers);
        }
    }

    /// Updates the input and the indexes for one change and notes what it affects.
    fn record(&mut self, change: Change, work: &mut Work) {
        let (id, new) = match change {
            Change::Upsert(obj) => {
                if self
                    .input
                    .get(&obj.id)
                    .is_some_and(|old| Arc::ptr_eq(old, &obj) || **old == *obj)
                {
                    return;
                }
                (obj.id.clone(), Some(obj))
            }
            Change::Delete(id) => (id, None),
        };
        let old = match &new {
            Some(obj) => self.input.insert(id.clone(), obj.clone()),
            None => self.input.remove(&id),
        };
        if old.is_none() && new.is_none() {
            return;
        }
        if id.group == HTNN_GROUP {
            match id.kind.as_str() {
                "FilterPolicy" | "HTTPFilterPolicy" => {
                    let key = PolicyKey {
                        embedded: false,
                        id: id.clone(),
                    };
                    self.update_policy(key, new.as_ref().map(policy_version), work);
                }
                "Consumer" => {
                    let ns = id.namespace.to_string();
                    match new {
                        Some(obj) => {
                            let c = ConsumerState::new(obj);
                            self.consumers.entry(ns.clone()).or_default().insert(id, c);
                        }
                        None => {
                            if let Some(m) = self.consumers.get_mut(&ns) {
                                m.remove(&id);
                            }
                            self.remove_status(&id);
                        }
                    }
                    work.consumers.insert(ns);
                }
                _ => match new {
                    // ServiceRegistry and DynamicConfig.
                    Some(obj) => {
                        let s = Status::invalid(
                            obj.meta.generation,
                            format!("{} is not supported by htnn serve yet", id.kind),
                        );
                        self.set_status(&id, s);
                    }
                    None => self.remove_status(&id),
                },
            }
            return;
        }
        if id.group == ISTIO_NETWORKING && id.kind == "VirtualService" {
            self.reindex_vs(&id, new.as_deref(), work);
            let key = PolicyKey {
                embedded: true,
                id: embedded_id(&id),
            };
            self.update_policy(key, new.as_ref().and_then(embedded_version), work);
            return;
        }
        if id.group == ISTIO_NETWORKING && id.kind == "Gateway" && old.is_none() != new.is_none() {
            let gw = format!("{}/{}", id.namespace, id.name);
            if new.is_some() {
                self.gateways.insert(gw.clone());
            } else {
                self.gateways.remove(&gw);
            }
            let users: Vec<ObjectRef> = self
                .vs_by_gateway
                .get(&gw)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            for vs in users {
                let obj = self.input.get(&vs).cloned();
                self.reindex_vs(&vs, obj.as_deref(), work);
            }
        }
        self.pass_through(&id);
    }

    /// Recomputes what the index holds of VirtualService `id` (`obj`, or gone).
    fn reindex_vs(&mut self, id: &ObjectRef, obj: Option<&Object>, work: &mut Work) {
        if let Some(old) = self.vs.remove(id) {
            self.routes.remove(id, &old);
            work.vs.extend(self.routes.affected_by(&old));
            for (gw, _) in &old.gateways {
                if let Some(set) = self.vs_by_gateway.get_mut(gw) {
                    set.remove(id);
                    if set.is_empty() {
                        self.vs_by_gateway.remove(gw);
                    }
                }
            }
        }
        if let Some(obj) = obj {
            let gateways = &self.gateways;
            let routes = VsRoutes::of(id, obj, |ns, name| {
                gateways.contains(&format!("{ns}/{name}"))
            });
            for (gw, _) in &routes.gateways {
                self.vs_by_gateway
                    .entry(gw.clone())
                    .or_default()
                    .insert(id.clone());
            }
            self.routes.insert(id, &routes);
            work.vs.extend(self.routes.affected_by(&routes));
            self.vs.insert(id.clone(), routes);
        }
        work.vs.insert(id.clone());
    }

    /// Replaces (or with `None` removes) the current version of a policy.
    fn update_policy(&mut self, key: PolicyKey, version: Option<PolicyVersion>, work: &mut Work) {
        match version {
            None => {
                let Some(state) = self.policies.remove(&key) else {
                    return;
                };
                for vs in &state.indexed {
                    self.unindex_policy(vs, &key);
                }
                if let Some((vs, _)) = state.contribution {
                    self.remove_contribution(&vs, &key);
                    work.regen.insert(vs);
                }
                self.remove_status(&key.id);
            }
            Some(version) => {
                match self.policies.get_mut(&key) {
                    Some(state) => state.current = version,
                    None => {
                        let state = PolicyState {
                            current: version,
                            last_valid: None,
                            indexed: Vec::new(),
                            contribution: None,
                        };
                        self.policies.insert(key.clone(), state);
                    }
                }
                self.index_policy(&key);
                work.policies.insert(key);
            }
        }
    }

    /// Lists a policy in `by_target` under its current and last valid targets.
    fn index_policy(&mut self, key: &PolicyKey) {
        let state = self.policies.get_mut(key).expect("indexed policy exists");
        let mut wanted: Vec<ObjectRef> = [
            state.current.target(),
            state.last_valid.as_ref().and_then(PolicyVersion::target),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        wanted.dedup();
        let gone: Vec<ObjectRef> = state
            .indexed
            .iter()
            .filter(|t| !wanted.contains(t))
            .cloned()
            .collect();
        let new: Vec<ObjectRef> = wanted
            .iter()
            .filter(|t| !state.indexed.contains(t))
            .cloned()
            .collect();
        state.indexed = wanted;
        for vs in gone {
            self.unindex_policy(&vs, key);
        }
        for vs in new {
            self.by_target
                .entry(vs)
                .or_default()
                .insert(key.clone(), ());
        }
    }

    fn unindex_policy(&mut self, vs: &ObjectRef, key: &PolicyKey) {
        if let Some(set) = self.by_target.get_mut(vs) {
            set.remove(key);
            if set.is_empty() {
                self.by_target.remove(vs);
            }
        }
    }

    fn remove_contribution(&mut self, vs: &ObjectRef, key: &PolicyKey) {
        if let Some(c) = self.contributions.get_mut(vs) {
            c.remove(key);
            if c.is_empty() {
                self.contributions.remove(vs);
            }
        }
    }

    /// Re-evaluates a policy against the current index: its status and contribution. The
    /// VirtualServices whose contributions changed are added to `regen`.
    fn evaluate(&mut self, key: &PolicyKey, regen: &mut BTreeSet<ObjectRef>) {
        let Some(mut state) = self.policies.remove(key) else {
            return;
        };
        let (mut status, mut contribution) = self.check(&key.id, &state.current);
        if self.opts.keep_last_valid && !key.embedded {
            if status.reason == Reason::Invalid {
                if let Some(lv) = state
                    .last_valid
                    .as_ref()
                    .filter(|lv| lv.obj != state.current.obj)
                {
                    contribution = self.check(&key.id, lv).1;
                    status.message.push_str(LAST_VALID_SUFFIX);
                }
            } else {
                state.last_valid = Some(state.current.clone());
            }
        }
        let contribution = contribution.map(|p| (p.target.clone(), Arc::new(p)));
        let changed = state.contribution != contribution;
        let old = std::mem::replace(&mut state.contribution, contribution.clone());
        self.policies.insert(key.clone(), state);
        self.index_policy(key);
        if changed {
            if let Some((vs, _)) = old {
                self.remove_contribution(&vs, key);
                regen.insert(vs);
            }
            if let Some((vs, p)) = contribution {
                self.contributions
                    .entry(vs.clone())
                    .or_default()
                    .insert(key.clone(), p);
                regen.insert(vs);
            }
        }
        self.set_status(&key.id, status);
    }

    /// HTNN's validation of a policy against its target: the status, and the policy to merge
    /// when accepted.
    fn check(&self, id: &ObjectRef, v: &PolicyVersion) -> (Status, Option<Policy>) {
        let generation = v.obj.meta.generation;
        let (mut spec, target) = match &v.parsed {
            Ok((spec, target)) => (spec.clone(), target.clone()),
            Err(e) => return (Status::invalid(generation, e.clone()), None),
        };
        let vs_name = format!("VirtualService {}/{}", target.namespace, target.name);
        let not_found = |msg: String| (Status::target_not_found(generation, msg), None);
        let Some(vs) = self.vs.get(&target) else {
            return not_found(format!("{vs_name} not found"));
        };
        if let Err(e) = vs.targetable() {
            return not_found(e);
        }
        let section = spec
            .target_ref
            .as_ref()
            .and_then(|t| t.section_name.as_ref());
        if let Some(missing) = section.filter(|s| vs.index_of(s).is_none()) {
            return not_found(format!("sectionName {missing:?} not found in {vs_name}"));
        }
        if let Some(e) = vs.gateway_problem() {
            return not_found(e);
        }
        if let Some(clash) = self.routes.clash(&target, vs, &self.vs) {
            return (Status::invalid(generation, clash), None);
        }
        // HTNN: "If the specific section name is not found, the FilterPolicy will still be
        // treated as accepted" -- such a subPolicy is dropped; the status says so.
        let ignored: Vec<String> = spec
            .sub_policies
            .iter()
            .filter(|sub| vs.index_of(&sub.section_name).is_none())
            .map(|sub| format!("{:?}", sub.section_name))
            .collect();
        let mut status = Status::accepted(generation);
        if !ignored.is_empty() {
            Arc::make_mut(&mut spec)
                .sub_policies
                .retain(|sub| vs.index_of(&sub.section_name).is_some());
            status.message = format!(
                "{}; subPolicies ignored, sectionName {} not found in {vs_name}",
                status.message,
                ignored.join(", ")
            );
        }
        let order = (
            v.created.0,
            v.created.1,
            id.namespace.clone(),
            id.name.clone(),
        );
        let policy = Policy {
            id: id.clone(),
            order,
            spec,
            target,
        };
        (status, Some(policy))
    }

    /// Recomputes what VirtualService `vs_id` is served as, and its EnvoyFilter.
    fn regenerate(&mut self, vs_id: &ObjectRef) {
        let ef_name = format!("htnn-route.{}.{}", vs_id.namespace, vs_id.name);
        let merged = match (self.vs.get(vs_id), self.contributions.get(vs_id)) {
            (Some(routes), Some(contribs)) => {
                let policies: Vec<&Policy> = contribs.values().map(|p| &**p).collect();
                Some(merge::merge(routes, &vs_id.namespace, &policies))
            }
            _ => None,
        };
        let input = self.input.get(vs_id).cloned();
        // Policies without plugins leave the VirtualService untouched.
        match merged.filter(|m| !m.chains.is_empty()) {
            Some(m) => {
                let info = json!({"filterpolicies": m.contributors}).to_string();
                let ef = self.generated_from_body(
                    &ef_name,
                    "FilterPolicy",
                    Some(info),
                    envoyfilter::routes_body(&m.chains),
                );
                self.set_generated(ef);
                // Serve the VirtualService with its unnamed routes named.
                if let Some(obj) = input {
                    let served = self.vs[vs_id].with_route_names(&obj).map_or(obj, Arc::new);
                    self.set_output(served);
                }
            }
            None => {
                self.remove_generated(&self.ef_id(&ef_name));
                match input {
                    Some(obj) => self.set_output(obj),
                    None => self.remove_output(vs_id),
                }
            }
        }
    }

    /// Recomputes the consumers of `namespaces`, then the carrier from every namespace's part.
    fn regenerate_consumers(&mut self, namespaces: BTreeSet<String>) {
        for ns in namespaces {
            let empty = BTreeMap::new();
            let consumers = self.consumers.get(&ns).unwrap_or(&empty);
            let last_valid = self
                .opts
                .keep_last_valid
                .then(|| self.consumers_last_valid.entry(ns.clone()).or_default());
            let (doc, statuses) = consumers::namespace_doc(consumers, last_valid);
            if consumers.is_empty() {
                self.consumers.remove(&ns);
                self.consumers_last_valid.remove(&ns);
            }
            match doc {
                Some(doc) => self.consumer_docs.insert(ns, doc),
                None => self.consumer_docs.remove(&ns),
            };
            for (id, status) in statuses {
                self.set_status(&id, status);
            }
        }
        let doc = jsontext::object(
            self.consumer_docs
                .iter()
                .map(|(ns, doc)| (jsontext::quoted(ns), doc)),
        );
        let ef = self.generated_object(
            "htnn-consumers",
            "Consumer",
            None,
            envoyfilter::consumers_spec(doc),
        );
        self.set_generated(ef);
    }

    fn ef_id(&self, name: &str) -> ObjectRef {
        ObjectRef {
            group: Name::interned(ISTIO_NETWORKING),
            kind: Name::interned("EnvoyFilter"),
            namespace: Name::interned(&self.opts.root_namespace),
            name: name.into(),
        }
    }

    fn generated_object(
        &self,
        name: &str,
        created_by: &str,
        info: Option<String>,
        spec: serde_json::Value,
    ) -> Object {
        // Our own output goes through the same parser as user input: a bug here shows up as
        // a parse error in tests, never as something istiod silently drops.
        let body = match envoy_filter_kind().parse(spec) {
            Ok(v) => v,
            Err(e) => panic!("generated EnvoyFilter {name} does not parse: {e}"),
        };
        self.generated_from_body(name, created_by, info, body)
    }

    /// A generated EnvoyFilter whose spec is already encoded.
    fn generated_from_body(
        &self,
        name: &str,
        created_by: &str,
        info: Option<String>,
        body: Vec<u8>,
    ) -> Object {
        let mut meta = Meta {
            generation: 1,
            ..Meta::default()
        };
        meta.labels
            .insert(CREATED_BY_LABEL.into(), created_by.into());
        if let Some(info) = info {
            meta.annotations.insert(INFO_ANNOTATION.into(), info);
        }
        Object {
            id: self.ef_id(name),
            api_version: "networking.istio.io/v1alpha3".into(),
            meta,
            spec: Spec::Istio {
                proto: envoy_filter_kind().proto,
                body,
            },
        }
    }

    /// Serves an input istio object as it is, unless we generate one with the same id.
    fn pass_through(&mut self, id: &ObjectRef) {
        if self.generated.contains(id) {
            return;
        }
        match self.input.get(id).cloned() {
            Some(obj) => self.set_output(obj),
            None => self.remove_output(id),
        }
    }

    fn set_generated(&mut self, obj: Object) {
        self.generated.insert(obj.id.clone());
        self.set_output(Arc::new(obj));
    }

    fn remove_generated(&mut self, id: &ObjectRef) {
        if self.generated.remove(id) {
            self.pass_through(id);
        }
    }

    fn set_output(&mut self, obj: Arc<Object>) {
        if self.out.objects.get(&obj.id) != Some(&obj) {
            self.delta.objects.insert(obj.id.clone());
            self.out.objects.insert(obj.id.clone(), obj);
        }
    }

    fn remove_output(&mut self, id: &ObjectRef) {
        if self.out.objects.remove(id).is_some() {
            self.delta.objects.insert(id.clone());
        }
    }

    fn set_status(&mut self, id: &ObjectRef, status: Status) {
        if self.out.statuses.get(id) != Some(&status) {
            self.delta.statuses.insert(id.clone());
            self.out.statuses.insert(id.clone(), status);
        }
    }

    fn remove_status(&mut self, id: &ObjectRef) {
        if self.out.statuses.remove(id).is_some() {
            self.delta.statuses.insert(id.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec: {selector: {istio: ingressgateway}, servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec: {gateways: [istio-system/gw], hosts: [a], http: [{name: r, route: [{destination: {host: a}}]}]}
";

    fn object(yaml: &str) -> Arc<Object> {
        Arc::new(crate::parse::parse_file(yaml, false).remove(0).unwrap())
    }

    fn policy(average: &str) -> Change {
        Change::Upsert(object(&format!(
            "apiVersion: htnn.mosn.io/v1\nkind: FilterPolicy\nmetadata: {{name: p}}\nspec:\n  targetRef: {{group: networking.istio.io, kind: VirtualService, name: vs}}\n  filters: {{limitReq: {{config: {{average: {average}}}}}}}\n"
        )))
    }

    fn consumer(key: &str) -> Change {
        Change::Upsert(object(&format!(
            "apiVersion: htnn.mosn.io/v1\nkind: Consumer\nmetadata: {{name: c}}\nspec: {{auth: {{keyAuth: {{config: {{key: {key}}}}}}}}}\n"
        )))
    }

    fn served(t: &Translator, name: &str) -> Option<String> {
        t.output()
            .objects
            .iter()
            .find(|(id, _)| id.name == name)
            .map(|(_, o)| o.spec_json().to_string())
    }

    fn status<'a>(t: &'a Translator, kind: &str) -> &'a Status {
        t.output()
            .statuses
            .iter()
            .find(|(id, _)| id.kind == kind)
            .unwrap()
            .1
    }

    fn translator() -> Translator {
        let mut t = Translator::new(Options {
            keep_last_valid: true,
            ..Options::default()
        });
        let base: Vec<Change> = crate::parse::parse_file(BASE, false)
            .into_iter()
            .map(|o| Change::Upsert(Arc::new(o.unwrap())))
            .collect();
        t.apply(base);
        t
    }

    #[test]
    fn an_invalid_edit_keeps_the_last_valid_version_serving() {
        let mut t = translator();
        t.apply([policy("5")]);
        let good = served(&t, "htnn-route.default.vs").expect("policy served");
        assert!(good.contains(r#"\"average\":5"#), "{good}");

        t.apply([policy("lots")]);
        assert_eq!(served(&t, "htnn-route.default.vs"), Some(good));
        let s = status(&t, "FilterPolicy");
        assert_eq!(s.reason, Reason::Invalid);
        assert!(s.message.ends_with(LAST_VALID_SUFFIX), "{}", s.message);

        t.apply([policy("7")]);
        assert!(
            served(&t, "htnn-route.default.vs")
                .unwrap()
                .contains(r#"\"average\":7"#)
        );
        assert!(status(&t, "FilterPolicy").is_accepted());

        // Once deleted, a policy is forgotten: re-adding it invalid serves nothing.
        let id = t
            .input()
            .keys()
            .find(|id| id.kind == "FilterPolicy")
            .unwrap()
            .clone();
        t.apply([Change::Delete(id)]);
        t.apply([policy("lots")]);
        assert_eq!(served(&t, "htnn-route.default.vs"), None);
        assert!(
            !status(&t, "FilterPolicy")
                .message
                .ends_with(LAST_VALID_SUFFIX)
        );
    }

    #[test]
    fn an_invalid_consumer_edit_keeps_the_last_valid_consumer() {
        let mut t = translator();
        t.apply([consumer("k1")]);
        let good = served(&t, "htnn-consumers").unwrap();
        assert!(good.contains("k1"), "{good}");
        t.apply([consumer("{a: b}")]);
        assert_eq!(served(&t, "htnn-consumers"), Some(good));
        let s = status(&t, "Consumer");
        assert_eq!(s.reason, Reason::Invalid);
        assert!(s.message.ends_with(LAST_VALID_SUFFIX), "{}", s.message);
        t.apply([consumer("k2")]);
        assert!(served(&t, "htnn-consumers").unwrap().contains("k2"));
        assert!(status(&t, "Consumer").is_accepted());
    }

    #[test]
    fn a_change_touches_only_what_it_affects() {
        let mut t = translator();
        t.apply([policy("5")]);
        t.take_delta();
        t.apply([policy("6")]);
        let d = t.take_delta();
        let names: Vec<&str> = d.objects.iter().map(|id| id.name.as_str()).collect();
        assert_eq!(names, ["htnn-route.default.vs"]);
        assert!(d.statuses.is_empty(), "{d:?}");
        // The same object again changes nothing.
        t.apply([policy("6")]);
        assert!(t.take_delta().is_empty());
    }
}
