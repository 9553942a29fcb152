//! The htnn.mosn.io/v1 CustomResourceDefinitions, generated from Rust types.
//!
//! The schemas follow HTNN's own CRDs (mosn/htnn's helm chart, v0.5.0 and main) field by
//! field, so that objects users already have apply unchanged: the same names, required fields,
//! patterns and lengths, free-form plugin `config`, and `status.conditions` as a list-map keyed
//! by `type`. Compared with HTNN's, only the descriptions differ (and HTNN lists the implicit
//! `apiVersion`, `kind` and `metadata`, which the apiserver validates anyway).
//! Additions, which HTNN does not have and which change no stored object: short names, the
//! category `htnn`, and the printer columns `Accepted`, `Reason` and `Age`.
//!
//! Short names: `fp` (FilterPolicy), `hfp` (HTTPFilterPolicy), `htnnconsumer`, `htnnsr`
//! (ServiceRegistry) and `htnndc` (DynamicConfig). The last three are prefixed because the
//! plain abbreviations are taken or likely to be (`dc` is OpenShift's DeploymentConfig, and
//! "consumer" is a kind in several gateways); none clashes with a Kubernetes or istio short
//! name (`vs`, `gw`, `dr`, `se`, `we`, `wg`, `pa`, `ra`, `ap`, ...).
//!
//! Two things kube-derive generates differently from HTNN are fixed in [`all`]: the root
//! `required: [spec]` (HTNN's `spec` is optional) and `nullable: true` on every `Option`
//! (HTNN's schemas have none: a `null` is pruned rather than stored).
//!
//! Note for readers of objects: the generated root structs have a non-optional `spec`, so an
//! object created without `spec` (valid under this schema) does not deserialize into them.

use std::collections::BTreeMap;
use std::process::ExitCode;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// DNS-1123 subdomain (gateway-api `SectionName`, HTNN's `subPolicies[].sectionName`).
const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// gateway-api `Group`: empty (the core group) or a DNS subdomain.
const GROUP: &str = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// gateway-api `Kind`.
const KIND: &str = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$";
/// DNS-1123 label (gateway-api `Namespace`).
const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

// Doc comments on types and fields below become `description`s in the CRDs (`kubectl
// explain`): they are written for users. Implementation notes are plain comments.

/// A plugin's configuration; `config` is validated by the plugin, not by this schema.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct Plugin {
    #[schemars(schema_with = "free_form")]
    pub config: Value,
}

/// The object a policy attaches to (gateway-api `PolicyTargetReferenceWithSectionName`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    #[schemars(length(max = 253), pattern(GROUP))]
    pub group: String,
    #[schemars(length(min = 1, max = 63), pattern(KIND))]
    pub kind: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL))]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN))]
    pub section_name: Option<String>,
}

/// Filters for one section of the target (a VirtualService `http[]` route name).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SubPolicy {
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN))]
    pub section_name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filters: BTreeMap<String, Plugin>,
}

/// Plugins (`filters`) attached to `targetRef`, or per section with `subPolicies`.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "htnn.mosn.io",
    version = "v1",
    kind = "FilterPolicy",
    namespaced,
    status = "HtnnStatus",
    shortname = "fp",
    category = "htnn",
    label("gateway.networking.k8s.io/policy", "direct"),
    doc = "FilterPolicy attaches plugins (filters) to a route or gateway."
)]
#[serde(rename_all = "camelCase")]
pub struct FilterPolicySpec {
    // Optional in the schema only because embedded policies (annotations) have none; the
    // webhook requires it on FilterPolicy objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filters: BTreeMap<String, Plugin>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["sectionName"]))]
    pub sub_policies: Vec<SubPolicy>,
}

// HTNN's deprecated name of FilterPolicy: the same spec, kept as its own kind because status
// is written back to the object the user created. Same doc line as FilterPolicySpec, so
// that the two schemas are identical (a test checks it).
/// Plugins (`filters`) attached to `targetRef`, or per section with `subPolicies`.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "htnn.mosn.io",
    version = "v1",
    kind = "HTTPFilterPolicy",
    namespaced,
    status = "HtnnStatus",
    shortname = "hfp",
    category = "htnn",
    label("gateway.networking.k8s.io/policy", "direct"),
    doc = "HTTPFilterPolicy is the deprecated form of FilterPolicy."
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPFilterPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filters: BTreeMap<String, Plugin>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["sectionName"]))]
    pub sub_policies: Vec<SubPolicy>,
}

impl From<HTTPFilterPolicySpec> for FilterPolicySpec {
    fn from(s: HTTPFilterPolicySpec) -> Self {
        let HTTPFilterPolicySpec {
            target_ref,
            filters,
            sub_policies,
        } = s;
        Self {
            target_ref,
            filters,
            sub_policies,
        }
    }
}

/// The authentication plugins that recognise this client (`auth`) and plugins that run for
/// its requests only (`filters`).
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "htnn.mosn.io",
    version = "v1",
    kind = "Consumer",
    namespaced,
    status = "HtnnStatus",
    shortname = "htnnconsumer",
    category = "htnn",
    doc = "Consumer is a client identity for the authentication plugins."
)]
pub struct ConsumerSpec {
    #[schemars(extend("minProperties" = 1))]
    pub auth: BTreeMap<String, Plugin>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filters: BTreeMap<String, Plugin>,
    /// The name the data plane matches; `metadata.name` when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// The registry `type` (nacos, consul, ...) and its `config`.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "htnn.mosn.io",
    version = "v1",
    kind = "ServiceRegistry",
    namespaced,
    status = "HtnnStatus",
    shortname = "htnnsr",
    category = "htnn",
    doc = "ServiceRegistry connects a service registry such as nacos or consul."
)]
pub struct ServiceRegistrySpec {
    // Both optional in HTNN's schema; the controller reports a missing type as Invalid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub r#type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub config: Option<Value>,
}

/// The data-plane handler `type` and the `config` it receives.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "htnn.mosn.io",
    version = "v1",
    kind = "DynamicConfig",
    namespaced,
    status = "HtnnStatus",
    shortname = "htnndc",
    category = "htnn",
    doc = "DynamicConfig is configuration pushed to a data-plane handler."
)]
pub struct DynamicConfigSpec {
    pub r#type: String,
    #[schemars(schema_with = "free_form")]
    pub config: Value,
}

/// Written by htnn: the condition `Accepted` (reasons Accepted, Invalid, TargetNotFound).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
pub struct HtnnStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions")]
    pub conditions: Vec<Condition>,
}

/// A free-form object. `serde_json::Value` has no usable schema (kube's rewriter panics on it)
/// and `serde_json::Map` becomes `additionalProperties: true`, under which the apiserver
/// prunes everything nested: only preserve-unknown-fields keeps a plugin config intact.
fn free_form(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// `[]metav1.Condition` with the validation apimachinery declares for it, as a list-map keyed
/// by `type`: k8s-openapi's own schema has neither, and an atomic list would make two field
/// managers (our status writer and, say, a migrating HTNN controller) overwrite each other.
fn conditions(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {"type": "string", "format": "date-time"},
                "message": {"type": "string", "maxLength": 32768},
                "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
                "reason": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1024,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                },
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "type": {
                    "type": "string",
                    "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
                },
            },
        },
    })
}

/// The five CRDs, in a fixed order.
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        FilterPolicy::crd(),
        HTTPFilterPolicy::crd(),
        Consumer::crd(),
        ServiceRegistry::crd(),
        DynamicConfig::crd(),
    ]
    .into_iter()
    .map(like_htnn)
    .collect()
}

/// Makes `spec` optional and drops `nullable` everywhere, as in HTNN's CRDs (see module docs),
/// and adds the printer columns (the same for every kind, so set here rather than five times).
fn like_htnn(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        version.additional_printer_columns = Some(printer_columns());
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        // Going through JSON reaches every nested schema without naming each typed field.
        let mut json = serde_json::to_value(&*root).expect("JSONSchemaProps serializes");
        strip_nullable(&mut json);
        *root = serde_json::from_value(json).expect("still a JSONSchemaProps");
        if let Some(required) = root.required.as_mut() {
            required.retain(|field| field != "spec");
            if required.is_empty() {
                root.required = None;
            }
        }
    }
    crd
}

fn printer_columns() -> Vec<CustomResourceColumnDefinition> {
    let accepted = r#".status.conditions[?(@.type=="Accepted")]"#;
    let column = |name: &str, type_: &str, json_path: String| CustomResourceColumnDefinition {
        name: name.into(),
        type_: type_.into(),
        json_path,
        ..Default::default()
    };
    vec![
        column("Accepted", "string", format!("{accepted}.status")),
        column("Reason", "string", format!("{accepted}.reason")),
        column("Age", "date", ".metadata.creationTimestamp".into()),
    ]
}

fn strip_nullable(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            // Only the keyword (a bool), never a property that happens to be named so.
            if map.get("nullable").is_some_and(Value::is_boolean) {
                map.remove("nullable");
            }
            map.values_mut().for_each(strip_nullable);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nullable),
        _ => {}
    }
}

/// All CRDs as one multi-document YAML stream (what `deploy/crds.yaml` holds).
pub fn to_yaml() -> String {
    let mut out = String::from(
        "# Generated by `htnn crds`; do not edit. Regenerate with\n\
         # cargo run -p htnn-mcp-server --bin htnn -- crds > deploy/crds.yaml\n",
    );
    for (i, crd) in all().iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string(crd).expect("a CRD serializes to YAML"));
    }
    out
}

/// `htnn crds`: prints every CRD as one multi-document YAML stream.
pub fn print() -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(to_yaml().as_bytes())?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KINDS: [&str; 5] = [
        "FilterPolicy",
        "HTTPFilterPolicy",
        "Consumer",
        "ServiceRegistry",
        "DynamicConfig",
    ];

    /// Each CRD as JSON, by kind, so tests can use JSON pointers.
    fn by_kind() -> BTreeMap<String, Value> {
        all()
            .into_iter()
            .map(|crd| {
                (
                    crd.spec.names.kind.clone(),
                    serde_json::to_value(&crd).unwrap(),
                )
            })
            .collect()
    }

    fn schema(crd: &Value) -> &Value {
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    }

    #[test]
    fn deploy_crds_yaml_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds.yaml");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == to_yaml(),
            "{path} is not what `htnn crds` prints; regenerate it with \
             `cargo run -p htnn-mcp-server --bin htnn -- crds > deploy/crds.yaml`"
        );
    }

    #[test]
    fn yaml_parses_back_to_the_same_crds() {
        let docs: Vec<CustomResourceDefinition> = serde_saphyr::from_multiple(&to_yaml()).unwrap();
        assert_eq!(docs, all());
        assert_eq!(to_yaml(), to_yaml(), "deterministic");
    }

    #[test]
    fn every_kind_is_there_namespaced_v1_with_status() {
        let crds = by_kind();
        assert_eq!(crds.keys().collect::<Vec<_>>(), {
            let mut k = KINDS.to_vec();
            k.sort_unstable();
            k
        });
        for (kind, crd) in &crds {
            let plural = crd["spec"]["names"]["plural"].as_str().unwrap();
            assert_eq!(
                crd["metadata"]["name"],
                format!("{plural}.htnn.mosn.io"),
                "{kind}"
            );
            assert_eq!(crd["spec"]["group"], "htnn.mosn.io");
            assert_eq!(crd["spec"]["scope"], "Namespaced");
            assert_eq!(crd["spec"]["names"]["categories"], json!(["htnn"]));
            let versions = crd["spec"]["versions"].as_array().unwrap();
            assert_eq!(versions.len(), 1);
            let v = &versions[0];
            assert_eq!(
                (&v["name"], &v["served"], &v["storage"]),
                (&json!("v1"), &json!(true), &json!(true))
            );
            assert_eq!(v["subresources"], json!({"status": {}}), "{kind}");
        }
        for kind in ["FilterPolicy", "HTTPFilterPolicy"] {
            assert_eq!(
                crds[kind]["metadata"]["labels"],
                json!({"gateway.networking.k8s.io/policy": "direct"})
            );
        }
        for kind in ["Consumer", "ServiceRegistry", "DynamicConfig"] {
            assert!(crds[kind]["metadata"].get("labels").is_none(), "{kind}");
        }
    }

    #[test]
    fn conditions_are_a_list_map_of_metav1_conditions() {
        for (kind, crd) in by_kind() {
            let c = &schema(&crd)["properties"]["status"]["properties"]["conditions"];
            assert_eq!(c["x-kubernetes-list-type"], "map", "{kind}");
            assert_eq!(c["x-kubernetes-list-map-keys"], json!(["type"]), "{kind}");
            let item = &c["items"];
            assert_eq!(
                item["required"],
                json!(["lastTransitionTime", "message", "reason", "status", "type"])
            );
            let p = &item["properties"];
            assert_eq!(p["status"]["enum"], json!(["True", "False", "Unknown"]));
            assert_eq!(
                p["reason"]["pattern"],
                "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
            );
            assert_eq!(
                (&p["reason"]["minLength"], &p["reason"]["maxLength"]),
                (&json!(1), &json!(1024))
            );
            assert_eq!(p["message"]["maxLength"], 32768);
            assert_eq!(p["observedGeneration"]["minimum"], 0.0);
            assert_eq!(p["lastTransitionTime"]["format"], "date-time");
        }
    }

    #[test]
    fn plugin_config_preserves_unknown_fields() {
        let free = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        let crds = by_kind();
        let plugin_maps = [
            ("FilterPolicy", "/properties/spec/properties/filters"),
            (
                "FilterPolicy",
                "/properties/spec/properties/subPolicies/items/properties/filters",
            ),
            ("HTTPFilterPolicy", "/properties/spec/properties/filters"),
            (
                "HTTPFilterPolicy",
                "/properties/spec/properties/subPolicies/items/properties/filters",
            ),
            ("Consumer", "/properties/spec/properties/auth"),
            ("Consumer", "/properties/spec/properties/filters"),
        ];
        for (kind, map) in plugin_maps {
            let plugin = &schema(&crds[kind]).pointer(map).unwrap()["additionalProperties"];
            assert_eq!(plugin["properties"]["config"], free, "{kind} {map}");
            assert_eq!(plugin["required"], json!(["config"]), "{kind} {map}");
        }
        for kind in ["ServiceRegistry", "DynamicConfig"] {
            assert_eq!(
                schema(&crds[kind])["properties"]["spec"]["properties"]["config"],
                free
            );
        }
        let consumer = &schema(&crds["Consumer"])["properties"]["spec"];
        assert_eq!(consumer["required"], json!(["auth"]));
        assert_eq!(consumer["properties"]["auth"]["minProperties"], 1);
        let dc = &schema(&crds["DynamicConfig"])["properties"]["spec"];
        assert_eq!(dc["required"], json!(["config", "type"]));
        assert!(
            schema(&crds["ServiceRegistry"])["properties"]["spec"]
                .get("required")
                .is_none()
        );
    }

    #[test]
    fn policies_have_htnn_target_ref_and_keyed_sub_policies() {
        let crds = by_kind();
        assert_eq!(
            schema(&crds["FilterPolicy"])["properties"]["spec"],
            schema(&crds["HTTPFilterPolicy"])["properties"]["spec"]
        );
        let spec = &schema(&crds["FilterPolicy"])["properties"]["spec"];
        assert!(spec.get("required").is_none(), "targetRef is optional");
        let t = &spec["properties"]["targetRef"];
        assert_eq!(t["required"], json!(["group", "kind", "name"]));
        assert_eq!(t["properties"]["kind"]["pattern"], KIND);
        assert_eq!(t["properties"]["group"]["pattern"], GROUP);
        assert_eq!(t["properties"]["namespace"]["pattern"], DNS_LABEL);
        assert_eq!(t["properties"]["sectionName"]["pattern"], DNS_SUBDOMAIN);
        let sub = &spec["properties"]["subPolicies"];
        assert_eq!(sub["x-kubernetes-list-type"], "map");
        assert_eq!(sub["x-kubernetes-list-map-keys"], json!(["sectionName"]));
        assert_eq!(sub["items"]["required"], json!(["sectionName"]));
    }

    #[test]
    fn spec_is_optional_and_nothing_is_nullable() {
        // What like_htnn corrects; if kube-derive stops doing either, simplify like_htnn.
        let raw = serde_json::to_value(FilterPolicy::crd()).unwrap();
        assert_eq!(schema(&raw)["required"], json!(["spec"]));
        assert!(raw.to_string().contains("\"nullable\":true"));

        for (kind, crd) in by_kind() {
            let root = schema(&crd);
            let required = root.get("required").cloned().unwrap_or(json!([]));
            assert!(
                !required.as_array().unwrap().contains(&json!("spec")),
                "{kind}"
            );
            assert!(
                !serde_json::to_string(root)
                    .unwrap()
                    .contains("\"nullable\""),
                "{kind}"
            );
        }
    }

    #[test]
    fn printer_columns_and_short_names() {
        let columns = json!([
            {"name": "Accepted", "type": "string",
             "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].status"},
            {"name": "Reason", "type": "string",
             "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].reason"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ]);
        let short: BTreeMap<String, Value> = by_kind()
            .into_iter()
            .map(|(kind, crd)| {
                assert_eq!(
                    crd["spec"]["versions"][0]["additionalPrinterColumns"], columns,
                    "{kind}"
                );
                (kind, crd["spec"]["names"]["shortNames"].clone())
            })
            .collect();
        assert_eq!(
            json!(short),
            json!({
                "FilterPolicy": ["fp"],
                "HTTPFilterPolicy": ["hfp"],
                "Consumer": ["htnnconsumer"],
                "ServiceRegistry": ["htnnsr"],
                "DynamicConfig": ["htnndc"],
            })
        );
    }

    /// The HTNN objects of examples/config read into the typed structs and write back unchanged.
    #[test]
    fn examples_round_trip_through_the_types() {
        fn round_trip<K: serde::de::DeserializeOwned + Serialize>(doc: &Value) -> Value {
            let typed: K = serde_json::from_value(doc.clone()).unwrap();
            serde_json::to_value(typed).unwrap()
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/config");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
            for doc in docs.iter().filter(|d| d["apiVersion"] == "htnn.mosn.io/v1") {
                let back = match doc["kind"].as_str().unwrap() {
                    "FilterPolicy" => round_trip::<FilterPolicy>(doc),
                    "HTTPFilterPolicy" => round_trip::<HTTPFilterPolicy>(doc),
                    "Consumer" => round_trip::<Consumer>(doc),
                    "ServiceRegistry" => round_trip::<ServiceRegistry>(doc),
                    "DynamicConfig" => round_trip::<DynamicConfig>(doc),
                    other => panic!("unknown HTNN kind {other}"),
                };
                assert_eq!(back["spec"], doc["spec"]);
                seen += 1;
            }
        }
        assert!(seen >= 2, "examples/config holds HTNN objects");
    }
}
