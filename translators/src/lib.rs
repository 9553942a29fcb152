//! Pure translation from the current objects to what istiod is served.
//!
//! [`translate`] is a deterministic function of its input (sorted maps, no clock, no I/O):
//! - istio objects pass through unchanged, except that the unnamed `http[]` routes of a
//!   VirtualService targeted by a policy are named `<namespace>.<name>` (as HTNN's patched
//!   istiod did) so that an EnvoyFilter can reach them;
//! - FilterPolicies (and HTTPFilterPolicies, and the `htnn.mosn.io/filterpolicy` or legacy
//!   `htnn.mosn.io/httpfilterpolicy` annotation) become one EnvoyFilter per targeted
//!   VirtualService that enables the plugin filter on its routes with the merged, ordered
//!   plugin chain (HTNN's merge rules: scope, then creation time, then namespace/name; the
//!   first policy wins per plugin);
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
/// Legacy annotation holding an embedded HTTPFilterPolicy; read when
/// [`EMBEDDED_ANNOTATION`] is absent, as HTNN does.
pub const LEGACY_EMBEDDED_ANNOTATION: &str = "htnn.mosn.io/httpfilterpolicy";
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
                Some(s) => {
                    for i in vs.indices_of(s) {
                        entry.entry(i).or_default().push((Scope::Rule, pi));
                    }
                }
                None => {
                    for i in 0..vs.http.len() {
                        entry.entry(i).or_default().push((Scope::Route, pi));
                    }
                }
            }
        }
        for sub in &p.spec.sub_policies {
            for i in vs.indices_of(&sub.section_name) {
                entry
                    .entry(i)
                    .or_default()
                    .push((Scope::Rule, usize::MAX - pi));
            }
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
            // For each plugin the first policy in merge order wins; no field-level merge.
            let mut merged: BTreeMap<
                htnn_plugins::registry::OrderKey,
                (&dyn htnn_plugins::Plugin, &Value),
            > = BTreeMap::new();
            for (_, p, filters) in &sorted {
                let mut used = false;
                for (name, entry) in filters.iter() {
                    let plugin = htnn_plugins::registry::lookup(name).expect("validated");
                    let key = htnn_plugins::registry::OrderKey::of(plugin);
                    if let std::collections::btree_map::Entry::Vacant(e) = merged.entry(key) {
                        e.insert((plugin, &entry.config));
                        used = true;
                    }
                }
                // HTNN lists in `htnn.mosn.io/info` only the policies that contributed a
                // plugin somewhere, not those entirely shadowed by higher-priority ones.
                if used {
                    contributors.insert(format!("{}/{}", p.id.namespace, p.id.name));
                }
            }
            let plugins: Vec<Value> = merged
                .values()
                .map(|(plugin, config)| json!({"name": plugin.name(), "config": config}))
                .collect();
            // HTNN's per-route chain carries `namespace` (where consumers are looked up) only
            // when a consumer plugin is configured.
            let mut chain = Map::new();
            if merged
                .values()
                .any(|(plugin, _)| plugin.is_consumer_plugin())
            {
                chain.insert("namespace".into(), json!(vs_id.namespace));
            }
            chain.insert("plugins".into(), Value::Array(plugins));
            let chain = Value::Object(chain);
            for route in vs.envoy_route_names(idx) {
                chains.insert(route, chain.clone());
            }
        }
        // Policies without plugins leave the VirtualService untouched.
        if chains.is_empty() {
            continue;
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

/// Creation time of an object, the merge-order key (see [`time::DEFAULT_CREATE_TIME`]).
fn created(obj: &Object) -> (i64, i32) {
    obj.meta
        .creation_timestamp
        .as_deref()
        .and_then(|t| time::parse_rfc3339(t).ok())
        .unwrap_or(time::DEFAULT_CREATE_TIME)
}

/// Creation time of an embedded policy without `metadata.creationTimestamp`: HTNN leaves it
/// zero, so it sorts before every real object ("highest priority within its scope").
const EMBEDDED_CREATE_TIME: (i64, i32) = (i64::MIN, 0);

/// An embedded policy's spec (target set) and creation time, or why it is unusable.
type Embedded = Result<(Value, (i64, i32)), String>;

/// The policy embedded in a VirtualService, read as HTNN reads it: the
/// [`EMBEDDED_ANNOTATION`], else the legacy [`LEGACY_EMBEDDED_ANNOTATION`] (empty values
/// count as absent). `None` without annotation; otherwise the annotation's name and either
/// the policy spec with its creation time or why it is unusable.
fn embedded_policy(vs: &ObjectRef, obj: &Object) -> Option<(&'static str, Embedded)> {
    let (annotation, raw) = [EMBEDDED_ANNOTATION, LEGACY_EMBEDDED_ANNOTATION]
        .into_iter()
        .find_map(|a| {
            let v = obj.meta.annotations.get(a)?;
            (!v.is_empty()).then_some((a, v))
        })?;
    Some((annotation, parse_embedded(raw, &vs.name)))
}

/// Parses an embedded policy: a whole FilterPolicy object as HTNN expects, or (our extension)
/// just its spec. The target is implied: `targetRef.group`, `kind` and `name` are set to this
/// VirtualService while `sectionName` (and `namespace`, still checked) are kept, as HTNN's
/// `setTargetRef` does. A `metadata.creationTimestamp` in the object is honoured (HTNN: "one
/// can change this behavior by giving a fake CreationTimestamp"); otherwise the policy gets
/// [`EMBEDDED_CREATE_TIME`].
fn parse_embedded(raw: &str, vs_name: &str) -> Embedded {
    let value: Value = serde_json::from_str(raw).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(mut top) = value else {
        return Err("must be a JSON object (a FilterPolicy or its spec)".into());
    };
    let whole = ["apiVersion", "kind", "metadata", "spec"]
        .iter()
        .any(|k| top.contains_key(*k));
    let mut created = EMBEDDED_CREATE_TIME;
    let spec = if whole {
        let ts = top.get("metadata").and_then(|m| m.get("creationTimestamp"));
        if let Some(ts) = ts.filter(|t| !t.is_null()) {
            let s = ts
                .as_str()
                .ok_or("metadata.creationTimestamp: must be an RFC 3339 string")?;
            created = time::parse_rfc3339(s)
                .map_err(|e| format!("metadata.creationTimestamp {s:?}: {e}"))?;
        }
        top.remove("spec").unwrap_or_else(|| json!({}))
    } else {
        Value::Object(top)
    };
    let Value::Object(mut spec) = spec else {
        return Err("spec: must be a JSON object".into());
    };
    let mut target = match spec.remove("targetRef") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(t)) => t,
        Some(_) => return Err("spec.targetRef: must be a JSON object".into()),
    };
    target.insert("group".into(), json!(ISTIO_NETWORKING));
    target.insert("kind".into(), json!("VirtualService"));
    target.insert("name".into(), json!(vs_name));
    spec.insert("targetRef".into(), Value::Object(target));
    Ok((Value::Object(spec), created))
}

/// A policy found in the input, before validation.
struct FoundPolicy<'a> {
    id: ObjectRef,
    obj: &'a Object,
    spec: Value,
    created: (i64, i32),
    /// The annotation an embedded policy comes from.
    embedded: Option<&'static str>,
}

fn collect_policies(
    input: &BTreeMap<ObjectRef, Object>,
    routes: &BTreeMap<ObjectRef, VsRoutes>,
    statuses: &mut BTreeMap<ObjectRef, Status>,
) -> Vec<Policy> {
    let mut found: Vec<FoundPolicy> = Vec::new();
    for (id, obj) in input {
        if id.group == HTNN_GROUP && matches!(id.kind.as_str(), "FilterPolicy" | "HTTPFilterPolicy")
        {
            found.push(FoundPolicy {
                id: id.clone(),
                obj,
                spec: obj.spec_json().clone(),
                created: created(obj),
                embedded: None,
            });
        }
        if id.group == ISTIO_NETWORKING
            && id.kind == "VirtualService"
            && let Some((annotation, parsed)) = embedded_policy(id, obj)
        {
            let pid = ObjectRef {
                group: HTNN_GROUP.into(),
                kind: "FilterPolicy".into(),
                namespace: id.namespace.clone(),
                name: format!("embedded-virtualservice-{}", id.name),
            };
            match parsed {
                Ok((spec, created)) => found.push(FoundPolicy {
                    id: pid,
                    obj,
                    spec,
                    created,
                    embedded: Some(annotation),
                }),
                Err(e) => {
                    let msg = format!("annotation {annotation}: {e}");
                    statuses.insert(pid, Status::invalid(obj.meta.generation, msg));
                }
            }
        }
    }
    let mut policies = Vec::new();
    for FoundPolicy {
        id,
        obj,
        spec,
        created,
        embedded,
    } in found
    {
        let generation = obj.meta.generation;
        let mut spec = match policy::parse(&id.namespace, &spec, embedded.is_some()) {
            Ok(s) => s,
            Err(e) => {
                let e = match embedded {
                    Some(annotation) => format!("annotation {annotation}: {e}"),
                    None => e,
                };
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
        let vs_name = format!("VirtualService {}/{}", target.namespace, target.name);
        let Some(vs) = routes.get(&target) else {
            statuses.insert(
                id,
                Status::target_not_found(generation, format!("{vs_name} not found")),
            );
            continue;
        };
        if let Err(e) = vs.targetable() {
            statuses.insert(id, Status::target_not_found(generation, e));
            continue;
        }
        if let Some(missing) = t.section_name.as_ref().filter(|s| vs.index_of(s).is_none()) {
            statuses.insert(
                id,
                Status::target_not_found(
                    generation,
                    format!("sectionName {missing:?} not found in {vs_name}"),
                ),
            );
            continue;
        }
        if let Some(e) = vs.gateway_problem() {
            statuses.insert(id, Status::target_not_found(generation, e));
            continue;
        }
        if let Some(clash) = vs.route_name_clash(&target, routes) {
            statuses.insert(id, Status::invalid(generation, clash));
            continue;
        }
        // HTNN: "If the specific section name is not found, the FilterPolicy will still be
        // treated as accepted" -- such a subPolicy is dropped; the status says so.
        let mut ignored = Vec::new();
        spec.sub_policies.retain(|sub| {
            let exists = vs.index_of(&sub.section_name).is_some();
            if !exists {
                ignored.push(format!("{:?}", sub.section_name));
            }
            exists
        });
        let mut status = Status::accepted(generation);
        if !ignored.is_empty() {
            status.message = format!(
                "{}; subPolicies ignored, sectionName {} not found in {vs_name}",
                status.message,
                ignored.join(", ")
            );
        }
        statuses.insert(id.clone(), status);
        let order = (created.0, created.1, id.namespace.clone(), id.name.clone());
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
    consumers.sort_by_key(|(id, obj)| (created(obj), (*id).clone()));
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
    // HTNN uses `spec.name` only when non-empty.
    let name = match obj.get("name") {
        None | Some(Value::Null) => id.name.clone(),
        Some(Value::String(s)) if s.is_empty() => id.name.clone(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("spec.name: must be a string".into()),
    };
    // `{config: ...}` entries become bare configs in the carrier; as in policies, a missing
    // `config` means no settings.
    let unwrap = |field: &str| -> Result<Map<String, Value>, String> {
        let mut out = Map::new();
        match obj.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (plugin, entry) in m {
                    let config = entry
                        .as_object()
                        .filter(|e| e.keys().all(|k| k == "config"))
                        .map(|e| e.get("config").cloned().unwrap_or(Value::Null))
                        .ok_or_else(|| {
                            format!("spec.{field}.{plugin}: expected {{config: {{...}}}}")
                        })?;
                    out.insert(plugin.clone(), config);
                }
            }
            Some(_) => return Err(format!("spec.{field}: must be a map")),
        }
        Ok(out)
    };
    let (auth, filters) = (unwrap("auth")?, unwrap("filters")?);
    // Check entry by entry first so that errors name the field (`spec.auth.keyAuth.config.key`).
    if auth.is_empty() {
        return Err("spec.auth: at least one consumer plugin required".into());
    }
    for (plugin, config) in &auth {
        htnn_plugins::validate_consumer_auth(plugin, config)
            .map_err(|e| policy::plugin_error("spec.auth", plugin, e))?;
    }
    for (plugin, config) in &filters {
        htnn_plugins::validate_consumer_filter(plugin, config)
            .map_err(|e| policy::plugin_error("spec.filters", plugin, e))?;
    }
    let entry = json!({"auth": auth, "filters": filters});
    htnn_plugins::Consumer::parse(&id.namespace, &name, &entry)
        .map_err(|e| format!("spec: {e}"))?;
    Ok((name, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec: {selector: {istio: ingressgateway}, servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}\n";

    fn run(yaml: &str) -> Output {
        let input = parse::parse_file(&format!("{GATEWAY}---\n{yaml}"), false)
            .into_iter()
            .map(|r| r.expect("test input parses"))
            .map(|o| (o.id.clone(), o))
            .collect();
        translate(&input, &Options::default())
    }

    fn vs(name: &str, annotations: &str, routes: &[&str]) -> String {
        let http: Vec<String> = routes
            .iter()
            .map(|r| format!("{{name: {r}, route: [{{destination: {{host: b}}}}]}}"))
            .collect();
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: ns, annotations: {{{annotations}}}}}\nspec: {{gateways: [istio-system/gw], hosts: [{name}.example.com], http: [{}]}}\n",
            http.join(", ")
        )
    }

    fn status<'a>(out: &'a Output, kind: &str, name: &str) -> &'a Status {
        out.statuses
            .iter()
            .find(|(id, _)| id.kind == kind && id.name == name)
            .map(|(_, s)| s)
            .unwrap_or_else(|| panic!("no status for {kind} {name}: {:?}", out.statuses))
    }

    /// Route name -> per-route chain, decoded from the generated EnvoyFilter of `vs`.
    fn chains(out: &Output, vs: &str) -> BTreeMap<String, Value> {
        let ef = out
            .objects
            .values()
            .find(|o| o.id.name == format!("htnn-route.ns.{vs}"))
            .unwrap_or_else(|| panic!("no EnvoyFilter for {vs}"));
        ef.spec_json()["configPatches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let route = p["match"]["routeConfiguration"]["vhost"]["route"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let s = p["patch"]["value"]["typed_per_filter_config"]["htnn"]["value"]
                    ["filter_config"]["value"]
                    .as_str()
                    .unwrap();
                (route, serde_json::from_str(s).unwrap())
            })
            .collect()
    }

    fn info(out: &Output, vs: &str) -> String {
        out.objects
            .values()
            .find(|o| o.id.name == format!("htnn-route.ns.{vs}"))
            .unwrap()
            .meta
            .annotations[INFO_ANNOTATION]
            .clone()
    }

    #[test]
    fn embedded_annotation_that_is_not_an_object_is_invalid_not_a_panic() {
        for raw in [
            r#"'["demo"]'"#,
            "'1'",
            r#"'"x"'"#,
            "'null'",
            r#"'{"spec": 5}'"#,
            r#"'{"targetRef": 5}'"#,
        ] {
            let out = run(&vs(
                "v",
                &format!("htnn.mosn.io/filterpolicy: {raw}"),
                &["r"],
            ));
            let s = status(&out, "FilterPolicy", "embedded-virtualservice-v");
            assert_eq!(s.reason, Reason::Invalid, "{raw}: {s:?}");
            assert!(
                s.message
                    .starts_with("annotation htnn.mosn.io/filterpolicy: "),
                "{s:?}"
            );
        }
    }

    #[test]
    fn embedded_policy_keeps_section_name_and_honours_creation_timestamp() {
        let (spec, created) = parse_embedded(
            r#"{"metadata": {"creationTimestamp": "2024-05-01T10:00:00Z"}, "spec": {"targetRef": {"group": "x", "kind": "HTTPRoute", "name": "other", "sectionName": "r"}}}"#,
            "v",
        )
        .unwrap();
        assert_eq!(
            spec["targetRef"],
            json!({"group": ISTIO_NETWORKING, "kind": "VirtualService", "name": "v", "sectionName": "r"})
        );
        assert_eq!(created, (1_714_557_600, 0));
        // Spec-only JSON, and an object without timestamp, get the zero time.
        let (spec, created) = parse_embedded(r#"{"filters": {}}"#, "v").unwrap();
        assert_eq!(created, EMBEDDED_CREATE_TIME);
        assert_eq!(spec["filters"], json!({}));
        assert_eq!(
            parse_embedded(r#"{"kind": "FilterPolicy"}"#, "v")
                .unwrap()
                .1,
            EMBEDDED_CREATE_TIME
        );
    }

    #[test]
    fn legacy_embedded_annotation_is_read_when_the_new_one_is_absent_or_empty() {
        let legacy = r#"htnn.mosn.io/httpfilterpolicy: '{"filters":{"demo":{"config":{"hostName":"x-old"}}}}'"#;
        let out = run(&vs(
            "v",
            &format!("htnn.mosn.io/filterpolicy: '', {legacy}"),
            &["r"],
        ));
        assert_eq!(
            chains(&out, "v")["r"]["plugins"][0]["config"]["hostName"],
            "x-old"
        );
        let both = format!(
            r#"htnn.mosn.io/filterpolicy: '{{"filters":{{"demo":{{"config":{{"hostName":"x-new"}}}}}}}}', {legacy}"#
        );
        let out = run(&vs("v", &both, &["r"]));
        assert_eq!(
            chains(&out, "v")["r"]["plugins"][0]["config"]["hostName"],
            "x-new"
        );
    }

    #[test]
    fn info_lists_contributors_and_namespace_needs_a_consumer_plugin() {
        let policy = |name: &str, section: &str, filters: &str| {
            format!(
                "---\napiVersion: htnn.mosn.io/v1\nkind: FilterPolicy\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{targetRef: {{group: networking.istio.io, kind: VirtualService, name: v{section}}}, filters: {filters}}}\n"
            )
        };
        let yaml = vs("v", "", &["a", "b"])
            + &policy("p1", "", "{demo: {config: {hostName: x-1}}}")
            + &policy("p2", "", "{demo: {config: {hostName: x-2}}}")
            + &policy(
                "p3",
                ", sectionName: b",
                "{keyAuth: {config: {keys: [{name: k}]}}}",
            );
        let out = run(&yaml);
        // p2 is shadowed everywhere by p1 (same scope and time, name order).
        assert_eq!(info(&out, "v"), r#"{"filterpolicies":["ns/p1","ns/p3"]}"#);
        assert!(status(&out, "FilterPolicy", "p2").is_accepted());
        let c = chains(&out, "v");
        assert_eq!(
            c["a"],
            json!({"plugins": [{"name": "demo", "config": {"hostName": "x-1"}}]})
        );
        assert_eq!(c["b"]["namespace"], "ns");
        assert_eq!(c["b"]["plugins"][0]["name"], "keyAuth");
    }

    #[test]
    fn sub_policy_with_unknown_section_is_ignored_and_the_policy_accepted() {
        let yaml = vs("v", "", &["a"])
            + "---\napiVersion: htnn.mosn.io/v1\nkind: FilterPolicy\nmetadata: {name: p, namespace: ns}\nspec:\n  targetRef: {group: networking.istio.io, kind: VirtualService, name: v}\n  subPolicies:\n  - {sectionName: a, filters: {demo: {config: {hostName: x-a}}}}\n  - {sectionName: gone, filters: {demo: {config: {hostName: x-gone}}}}\n";
        let out = run(&yaml);
        let s = status(&out, "FilterPolicy", "p");
        assert!(s.is_accepted(), "{s:?}");
        assert!(
            s.message.contains(r#"sectionName "gone" not found"#),
            "{s:?}"
        );
        assert_eq!(
            chains(&out, "v")["a"]["plugins"][0]["config"]["hostName"],
            "x-a"
        );
    }

    #[test]
    fn policy_without_plugins_touches_nothing() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v, namespace: ns}\nspec: {gateways: [istio-system/gw], hosts: [v.example.com], http: [{route: [{destination: {host: b}}]}]}\n---\napiVersion: htnn.mosn.io/v1\nkind: FilterPolicy\nmetadata: {name: p, namespace: ns}\nspec: {targetRef: {group: networking.istio.io, kind: VirtualService, name: v}}\n";
        let input: BTreeMap<ObjectRef, Object> = parse::parse_file(yaml, false)
            .into_iter()
            .map(|r| r.unwrap())
            .map(|o| (o.id.clone(), o))
            .collect();
        let out = run(yaml);
        assert!(status(&out, "FilterPolicy", "p").is_accepted());
        assert!(
            !out.objects
                .keys()
                .any(|id| id.name.starts_with("htnn-route."))
        );
        // The VirtualService is served as given: its unnamed route stays unnamed.
        let vs_id = input.keys().find(|id| id.kind == "VirtualService").unwrap();
        assert_eq!(out.objects[vs_id], input[vs_id]);
    }

    #[test]
    fn key_order_does_not_change_the_output() {
        let a = vs("v", "", &["r"])
            + "---\napiVersion: htnn.mosn.io/v1\nkind: FilterPolicy\nmetadata: {name: p, namespace: ns}\nspec:\n  targetRef: {group: networking.istio.io, kind: VirtualService, name: v}\n  filters:\n    limitReq: {config: {average: 1, burst: 2, key: 'request.header(\"u\")'}}\n    consumerRestriction: {config: {allow: {rules: [{name: r, methods: [GET]}]}}}\n";
        let b = vs("v", "", &["r"])
            + "---\napiVersion: htnn.mosn.io/v1\nkind: FilterPolicy\nmetadata: {name: p, namespace: ns}\nspec:\n  filters:\n    consumerRestriction: {config: {allow: {rules: [{methods: [GET], name: r}]}}}\n    limitReq: {config: {key: 'request.header(\"u\")', burst: 2, average: 1}}\n  targetRef: {name: v, kind: VirtualService, group: networking.istio.io}\n";
        let (oa, ob) = (run(&a), run(&b));
        assert_eq!(oa.statuses, ob.statuses);
        let generated = |o: &Output| -> Vec<Vec<u8>> {
            o.objects
                .values()
                .filter_map(|o| match &o.spec {
                    Spec::Istio { body, .. } if o.id.kind == "EnvoyFilter" => Some(body.clone()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(generated(&oa), generated(&ob));
    }

    #[test]
    fn vs_without_usable_gateway_is_target_not_found() {
        let policy = "---\napiVersion: htnn.mosn.io/v1\nkind: FilterPolicy\nmetadata: {name: p, namespace: ns}\nspec: {targetRef: {group: networking.istio.io, kind: VirtualService, name: v}, filters: {demo: {config: {hostName: x}}}}\n";
        for (gateways, ok) in [
            ("[mesh]", false),
            ("[]", false),
            ("[gw]", false),
            ("[istio-system/nope, mesh]", false),
            ("[istio-system/gw]", true),
            ("[mesh, gw.istio-system.svc.cluster.local]", true),
        ] {
            let yaml = format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: v, namespace: ns}}\nspec: {{gateways: {gateways}, hosts: [v.example.com], http: [{{name: r, route: [{{destination: {{host: b}}}}]}}]}}\n{policy}"
            );
            let out = run(&yaml);
            let s = status(&out, "FilterPolicy", "p");
            if ok {
                assert!(s.is_accepted(), "{gateways}: {s:?}");
            } else {
                assert_eq!(s.reason, Reason::TargetNotFound, "{gateways}: {s:?}");
                assert!(
                    s.message
                        .starts_with("all gateways are not found or unsupported"),
                    "{s:?}"
                );
            }
        }
    }
    #[test]
    fn section_name_reaches_every_http_entry_of_that_name() {
        // Both entries become Envoy routes named "a": their chains must agree.
        let yaml = vs("v", "", &["a", "a", "b"])
            + "---\napiVersion: htnn.mosn.io/v1\nkind: FilterPolicy\nmetadata: {name: whole, namespace: ns}\nspec: {targetRef: {group: networking.istio.io, kind: VirtualService, name: v}, filters: {demo: {config: {hostName: x}}}}\n"
            + "---\napiVersion: htnn.mosn.io/v1\nkind: FilterPolicy\nmetadata: {name: rule, namespace: ns}\nspec: {targetRef: {group: networking.istio.io, kind: VirtualService, name: v, sectionName: a}, filters: {limitReq: {config: {average: 1}}}}\n";
        let c = chains(&run(&yaml), "v");
        let names: Vec<&str> = c["a"]["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["limitReq", "demo"]);
    }
}
