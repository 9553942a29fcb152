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

mod consumers;
mod embedded;
pub mod engine;
pub mod envoyfilter;
mod jsontext;
pub mod kinds;
mod merge;
pub mod model;
pub mod parse;
pub mod policy;
pub mod render;
mod routes;
mod small;
pub mod status;
pub mod time;
mod virtualservice;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use engine::{Change, Delta, Translator};
use model::{Object, ObjectRef};
pub use status::{Reason, Status};

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
    /// An HTNN object edited into an `Invalid` one keeps serving its last valid version
    /// (reported `Invalid` all the same): a typo in a policy must not silently drop the
    /// protection it gave. This is what HTNN users get from its validating webhook, which
    /// rejects the bad update and leaves the previous object in place. Makes the output depend
    /// on history, so off for `htnn translate`/`validate`; on in `htnn serve`.
    pub keep_last_valid: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            root_namespace: "istio-system".into(),
            keep_last_valid: false,
        }
    }
}

/// Appended to the status message of an object served in its last valid version.
pub const LAST_VALID_SUFFIX: &str = " (the last valid version keeps serving)";

/// What to serve and what to report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// Every istio object to serve (proxied and generated).
    pub objects: BTreeMap<ObjectRef, Arc<Object>>,
    /// One status per HTNN object (embedded policies appear as
    /// `FilterPolicy <ns>/embedded-virtualservice-<vs>`).
    pub statuses: BTreeMap<ObjectRef, Status>,
}

/// A validated policy, ready to be merged.
#[derive(Debug, PartialEq)]
struct Policy {
    id: ObjectRef,
    /// Sort key: creation time (embedded policies sort first), then namespace/name.
    order: (i64, i32, model::Name, model::Name),
    /// Shared with the parsed policy unless sub-policies had to be dropped.
    spec: Arc<policy::PolicySpec>,
    target: ObjectRef,
}

/// Scope of a contribution: more specific first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Rule,
    Route,
}

/// Translates a whole input from scratch (what [`Translator`] does one change at a time).
pub fn translate(input: &BTreeMap<ObjectRef, Object>, opts: &Options) -> Output {
    let mut t = Translator::new(opts.clone());
    t.apply(input.values().map(|o| Change::Upsert(Arc::new(o.clone()))));
    t.into_output()
}

/// Creation time of an object, the merge-order key (see [`time::DEFAULT_CREATE_TIME`]).
fn created(obj: &Object) -> (i64, i32) {
    obj.meta
        .creation_timestamp
        .as_deref()
        .and_then(|t| time::parse_rfc3339(t).ok())
        .unwrap_or(time::DEFAULT_CREATE_TIME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::{EMBEDDED_CREATE_TIME, parse_embedded};
    use model::Spec;
    use serde_json::{Value, json};

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
        assert_eq!(*out.objects[vs_id], input[vs_id]);
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
