//! Pure translation from the current objects to what istiod is served.
//!
//! [`translate`] is a deterministic function of its input (sorted maps, no clock, no I/O):
//! - istio objects pass through unchanged, except that the unnamed `http[]` routes of a
//!   VirtualService targeted by a policy are named `<namespace>.<name>` (as HTNN's patched
//!   istiod did) so that an EnvoyFilter can reach them;
//! - FilterPolicies (and HTTPFilterPolicies, and the `htnn.mosn.io/filterpolicy` annotation)
//!   become one EnvoyFilter per targeted VirtualService that enables the plugin filter on its
//!   routes with the merged, ordered plugin chain;
//! - Consumers become the consumer carrier's ECDS config;
//! - every HTNN object gets a [`Status`].

pub mod envoyfilter;
pub mod kinds;
pub mod model;
pub mod parse;
pub mod policy;
pub mod render;
pub mod status;
pub mod time;
mod virtualservice;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use model::{Meta, Object, ObjectRef, Spec};
pub use status::{Reason, Status};
use virtualservice::VsRoutes;

pub const HTNN_GROUP: &str = "htnn.mosn.io";
pub const ISTIO_NETWORKING: &str = "networking.istio.io";
/// Annotation holding a FilterPolicy embedded in a VirtualService.
pub const EMBEDDED_ANNOTATION: &str = "htnn.mosn.io/filterpolicy";
/// Annotation on generated EnvoyFilters listing the policies that contributed.
pub const INFO_ANNOTATION: &str = "htnn.mosn.io/info";
pub const CREATED_BY_LABEL: &str = "htnn.mosn.io/created-by";

#[derive(Clone, Debug)]
pub struct Options {
    /// istio's `meshConfig.rootNamespace`: generated EnvoyFilters go there so that they apply
    /// to gateways in every namespace.
    pub root_namespace: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            root_namespace: "istio-system".into(),
        }
    }
}

/// What to serve and what to report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// Every istio object to serve (proxied and generated).
    pub objects: BTreeMap<ObjectRef, Object>,
    /// One status per HTNN object (embedded policies appear as
    /// `FilterPolicy <ns>/embedded-virtualservice-<vs>`).
    pub statuses: BTreeMap<ObjectRef, Status>,
}

/// A validated policy, ready to be merged.
struct Policy {
    id: ObjectRef,
    /// Sort key: creation time (embedded policies sort first), then namespace/name.
    order: (i64, i32, String, String),
    spec: policy::PolicySpec,
    target: ObjectRef,
}

/// Scope of a contribution: more specific first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Rule,
    Route,
}

pub fn translate(input: &BTreeMap<ObjectRef, Object>, opts: &Options) -> Output {
    let mut out = Output::default();
    for (id, obj) in input {
        if matches!(obj.spec, Spec::Istio { .. }) {
            out.objects.insert(id.clone(), obj.clone());
        }
    }
    let routes = virtualservice::index(input);
    let policies = collect_policies(input, &routes, &mut out.statuses);

    // (VirtualService, http index) -> contributions in merge order.
    let mut contributions: BTreeMap<ObjectRef, BTreeMap<usize, Vec<(Scope, usize)>>> =
        BTreeMap::new();
    for (pi, p) in policies.iter().enumerate() {
        let vs = &routes[&p.target];
        let section = p
            .spec
            .target_ref
            .as_ref()
            .and_then(|t| t.section_name.clone());
        let entry = contributions.entry(p.target.clone()).or_default();
        if !p.spec.filters.is_empty() {
            match &section {
                Some(s) => entry
                    .entry(vs.index_of(s).expect("checked"))
                    .or_default()
                    .push((Scope::Rule, pi)),
                None => {
                    for i in 0..vs.http.len() {
                        entry.entry(i).or_default().push((Scope::Route, pi));
                    }
                }
            }
        }
        for sub in &p.spec.sub_policies {
            entry
                .entry(vs.index_of(&sub.section_name).expect("checked"))
                .or_default()
                .push((Scope::Rule, usize::MAX - pi));
        }
    }

    for (vs_id, per_route) in &contributions {
        let vs = &routes[vs_id];
        let mut chains: BTreeMap<String, Value> = BTreeMap::new();
        let mut contributors = BTreeSet::new();
        for (&idx, contribs) in per_route {
            let mut sorted: Vec<(Scope, &Policy, &BTreeMap<String, policy::PluginEntry>)> =
                contribs
                    .iter()
                    .map(|&(scope, pi)| {
                        if pi > policies.len() {
                            let p = &policies[usize::MAX - pi];
                            let section = &vs.http[idx].name;
                            let sub = p
                                .spec
                                .sub_policies
                                .iter()
                                .find(|s| Some(&s.section_name) == section.as_ref());
                            (scope, p, &sub.expect("sub-policy of this route").filters)
                        } else {
                            (scope, &policies[pi], &policies[pi].spec.filters)
                        }
                    })
                    .collect();
            sorted.sort_by(|a, b| (a.0, &a.1.order).cmp(&(b.0, &b.1.order)));
            let mut merged: BTreeMap<htnn_plugins::registry::OrderKey, (&str, &Value)> =
                BTreeMap::new();
            let mut seen = BTreeSet::new();
            for (_, p, filters) in &sorted {
                contributors.insert(format!("{}/{}", p.id.namespace, p.id.name));
                for (name, entry) in filters.iter() {
                    if seen.insert(name.as_str()) {
                        let plugin = htnn_plugins::registry::lookup(name).expect("validated");
                        merged.insert(
                            htnn_plugins::registry::OrderKey::of(plugin),
                            (name.as_str(), &entry.config),
                        );
                    }
                }
            }
            let plugins: Vec<Value> = merged
                .values()
                .map(|(name, config)| json!({"name": name, "config": config}))
                .collect();
            let chain = json!({"namespace": vs_id.namespace, "plugins": plugins});
            for route in vs.envoy_route_names(idx) {
                chains.insert(route, chain.clone());
            }
        }
        // Serve the VirtualService with its unnamed routes named.
        if let Some(renamed) = vs.with_route_names(&input[vs_id]) {
            out.objects.insert(vs_id.clone(), renamed);
        }
        let name = format!("htnn-route.{}.{}", vs_id.namespace, vs_id.name);
        let info = json!({"filterpolicies": contributors}).to_string();
        let routes: Vec<(String, Value)> = chains.into_iter().collect();
        insert_generated(
            &mut out,
            opts,
            &name,
            "FilterPolicy",
            Some(info),
            envoyfilter::routes_spec(&routes),
        );
    }

    let consumers = collect_consumers(input, &mut out.statuses);
    insert_generated(
        &mut out,
        opts,
        "htnn-consumers",
        "Consumer",
        None,
        envoyfilter::consumers_spec(&consumers),
    );
    insert_generated(
        &mut out,
        opts,
        "htnn-http-filter",
        "htnn",
        None,
        envoyfilter::base_spec(),
    );

    for (id, obj) in input {
        if id.group == HTNN_GROUP && matches!(id.kind.as_str(), "ServiceRegistry" | "DynamicConfig")
        {
            out.statuses.insert(
                id.clone(),
                Status::invalid(
                    obj.meta.generation,
                    format!("{} is not supported by htnn serve yet", id.kind),
                ),
            );
        }
    }
    out
}

fn insert_generated(
    out: &mut Output,
    opts: &Options,
    name: &str,
    created_by: &str,
    info: Option<String>,
    spec: Value,
) {
    let kind =
        kinds::istio_kind(ISTIO_NETWORKING, "EnvoyFilter").expect("EnvoyFilter is an istio kind");
    // Our own output goes through the same parser as user input: a bug here shows up as a
    // parse error in tests, never as something istiod silently drops.
    let (body, json) = match kind.parse(spec) {
        Ok(v) => v,
        Err(e) => panic!("generated EnvoyFilter {name} does not parse: {e}"),
    };
    let id = ObjectRef {
        group: ISTIO_NETWORKING.into(),
        kind: "EnvoyFilter".into(),
        namespace: opts.root_namespace.clone(),
        name: name.into(),
    };
    let mut meta = Meta {
        generation: 1,
        ..Meta::default()
    };
    meta.labels
        .insert(CREATED_BY_LABEL.into(), created_by.into());
    if let Some(info) = info {
        meta.annotations.insert(INFO_ANNOTATION.into(), info);
    }
    let obj = Object {
        id: id.clone(),
        api_version: "networking.istio.io/v1alpha3".into(),
        meta,
        spec: Spec::Istio {
            proto: kind.proto,
            body,
            json,
        },
    };
    out.objects.insert(id, obj);
}

fn order_key(obj: &Object, embedded: bool) -> (i64, i32) {
    if embedded {
        return (i64::MIN, 0);
    }
    obj.meta
        .creation_timestamp
        .as_deref()
        .and_then(|t| time::parse_rfc3339(t).ok())
        .unwrap_or(time::DEFAULT_CREATE_TIME)
}

fn collect_policies(
    input: &BTreeMap<ObjectRef, Object>,
    routes: &BTreeMap<ObjectRef, VsRoutes>,
    statuses: &mut BTreeMap<ObjectRef, Status>,
) -> Vec<Policy> {
    let mut found: Vec<(ObjectRef, &Object, Value, bool)> = Vec::new();
    for (id, obj) in input {
        if id.group == HTNN_GROUP && matches!(id.kind.as_str(), "FilterPolicy" | "HTTPFilterPolicy")
        {
            found.push((id.clone(), obj, obj.spec_json().clone(), false));
        }
        if id.group == ISTIO_NETWORKING
            && id.kind == "VirtualService"
            && let Some(raw) = obj.meta.annotations.get(EMBEDDED_ANNOTATION)
        {
            {
                let pid = ObjectRef {
                    group: HTNN_GROUP.into(),
                    kind: "FilterPolicy".into(),
                    namespace: id.namespace.clone(),
                    name: format!("embedded-virtualservice-{}", id.name),
                };
                let spec = match serde_json::from_str::<Value>(raw) {
                    // The annotation holds a whole FilterPolicy object or just its spec.
                    Ok(mut v) => match v.get_mut("spec") {
                        Some(s) => s.take(),
                        None => v,
                    },
                    Err(e) => {
                        let msg = format!("annotation {EMBEDDED_ANNOTATION}: invalid JSON: {e}");
                        statuses.insert(pid, Status::invalid(obj.meta.generation, msg));
                        continue;
                    }
                };
                let mut spec = spec;
                spec["targetRef"] =
                    json!({"group": ISTIO_NETWORKING, "kind": "VirtualService", "name": id.name});
                found.push((pid, obj, spec, true));
            }
        }
    }
    let mut policies = Vec::new();
    for (id, obj, spec, embedded) in found {
        let generation = obj.meta.generation;
        let spec = match policy::parse(&id.namespace, &spec, embedded) {
            Ok(s) => s,
            Err(e) => {
                statuses.insert(id, Status::invalid(generation, e));
                continue;
            }
        };
        let t = spec.target_ref.as_ref().expect("validated");
        let target = ObjectRef {
            group: ISTIO_NETWORKING.into(),
            kind: "VirtualService".into(),
            namespace: id.namespace.clone(),
            name: t.name.clone(),
        };
        let Some(vs) = routes.get(&target) else {
            statuses.insert(
                id,
                Status::target_not_found(
                    generation,
                    format!(
                        "VirtualService {}/{} not found",
                        target.namespace, target.name
                    ),
                ),
            );
            continue;
        };
        if let Err(e) = vs.targetable() {
            statuses.insert(id, Status::target_not_found(generation, e));
            continue;
        }
        let sections: Vec<&String> = t
            .section_name
            .iter()
            .chain(spec.sub_policies.iter().map(|s| &s.section_name))
            .collect();
        if let Some(missing) = sections.iter().find(|s| vs.index_of(s).is_none()) {
            statuses.insert(
                id,
                Status::target_not_found(
                    generation,
                    format!(
                        "sectionName {missing:?} not found in VirtualService {}/{}",
                        target.namespace, target.name
                    ),
                ),
            );
            continue;
        }
        if let Some(clash) = vs.route_name_clash(&target, routes) {
            statuses.insert(id, Status::invalid(generation, clash));
            continue;
        }
        let (secs, nanos) = order_key(obj, embedded);
        statuses.insert(id.clone(), Status::accepted(generation));
        let order = (secs, nanos, id.namespace.clone(), id.name.clone());
        policies.push(Policy {
            id,
            order,
            spec,
            target,
        });
    }
    policies
}

/// Builds the consumer carrier document (see `htnn_plugins::consumer`) from Consumer objects.
fn collect_consumers(
    input: &BTreeMap<ObjectRef, Object>,
    statuses: &mut BTreeMap<ObjectRef, Status>,
) -> Value {
    let mut doc: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut consumers: Vec<(&ObjectRef, &Object)> = input
        .iter()
        .filter(|(id, _)| id.group == HTNN_GROUP && id.kind == "Consumer")
        .collect();
    // Of two consumers with the same data-plane name, the older one wins.
    consumers.sort_by_key(|(id, obj)| (order_key(obj, false), (*id).clone()));
    for (id, obj) in consumers {
        let generation = obj.meta.generation;
        match consumer_entry(id, obj.spec_json()) {
            Ok((name, entry)) => {
                let ns = doc.entry(id.namespace.clone()).or_default();
                if ns.contains_key(&name) {
                    statuses.insert(
                        id.clone(),
                        Status::invalid(
                            generation,
                            format!(
                                "duplicate consumer name {name:?} in namespace {}",
                                id.namespace
                            ),
                        ),
                    );
                    continue;
                }
                ns.insert(name, entry);
                statuses.insert(id.clone(), Status::accepted(generation));
            }
            Err(e) => {
                statuses.insert(id.clone(), Status::invalid(generation, e));
            }
        }
    }
    serde_json::to_value(doc).unwrap_or_default()
}

fn consumer_entry(id: &ObjectRef, spec: &Value) -> Result<(String, Value), String> {
    let obj = spec.as_object().ok_or("spec: must be a map")?;
    if let Some(extra) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "auth" | "filters" | "name"))
    {
        return Err(format!("spec.{extra}: unknown field"));
    }
    let name = match obj.get("name") {
        None => id.name.clone(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err("spec.name: must be a non-empty string".into()),
    };
    let unwrap = |field: &str| -> Result<Map<String, Value>, String> {
        let mut out = Map::new();
        match obj.get(field) {
            None => {}
            Some(Value::Object(m)) => {
                for (plugin, entry) in m {
                    let config = entry
                        .as_object()
                        .filter(|e| e.keys().all(|k| k == "config"))
                        .and_then(|e| e.get("config"))
                        .ok_or_else(|| {
                            format!("spec.{field}.{plugin}: expected {{config: {{...}}}}")
                        })?;
                    out.insert(plugin.clone(), config.clone());
                }
            }
            Some(_) => return Err(format!("spec.{field}: must be a map")),
        }
        Ok(out)
    };
    let entry = json!({"auth": unwrap("auth")?, "filters": unwrap("filters")?});
    htnn_plugins::Consumer::parse(&id.namespace, &name, &entry)
        .map_err(|e| format!("spec: {e}"))?;
    Ok((name, entry))
}
