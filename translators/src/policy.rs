//! FilterPolicy (and the deprecated HTTPFilterPolicy): parsing and validation.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// `targetRef` of a policy.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetRef {
    pub group: String,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub section_name: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    #[serde(default)]
    pub config: Value,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubPolicy {
    pub section_name: String,
    #[serde(default)]
    pub filters: BTreeMap<String, PluginEntry>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    #[serde(default)]
    pub target_ref: Option<TargetRef>,
    #[serde(default)]
    pub filters: BTreeMap<String, PluginEntry>,
    #[serde(default)]
    pub sub_policies: Vec<SubPolicy>,
}

/// Parses and validates a policy spec. `embedded` policies (from a VirtualService annotation)
/// have an implied target. Errors are `field: reason`.
pub fn parse(namespace: &str, spec: &Value, embedded: bool) -> Result<PolicySpec, String> {
    let spec: PolicySpec =
        serde_json::from_value(spec.clone()).map_err(|e| format!("spec: {e}"))?;
    match (&spec.target_ref, embedded) {
        (None, false) => return Err("spec.targetRef: required".into()),
        (Some(t), _) => {
            if t.namespace.as_deref().is_some_and(|ns| ns != namespace) {
                return Err(format!(
                    "spec.targetRef.namespace: {:?} differs from the policy's namespace {namespace:?}; cross-namespace targets are not allowed",
                    t.namespace.as_deref().unwrap_or_default()
                ));
            }
            if t.section_name.is_some() && !spec.sub_policies.is_empty() {
                return Err(
                    "spec.subPolicies: cannot be used together with targetRef.sectionName".into(),
                );
            }
            if !(t.group == "networking.istio.io" && t.kind == "VirtualService") {
                return Err(format!(
                    "spec.targetRef: unsupported targetRef.group or targetRef.kind ({}/{}); supported: networking.istio.io/VirtualService",
                    t.group, t.kind
                ));
            }
        }
        (None, true) => {}
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, sub) in spec.sub_policies.iter().enumerate() {
        if sub.section_name.is_empty() {
            return Err(format!("spec.subPolicies[{i}].sectionName: required"));
        }
        if sub.filters.is_empty() {
            return Err(format!(
                "spec.subPolicies[{i}].filters: at least one plugin required"
            ));
        }
        if !seen.insert(sub.section_name.as_str()) {
            return Err(format!(
                "spec.subPolicies[{i}].sectionName: duplicate {:?}",
                sub.section_name
            ));
        }
    }
    validate_filters("spec.filters", &spec.filters)?;
    for (i, sub) in spec.sub_policies.iter().enumerate() {
        validate_filters(&format!("spec.subPolicies[{i}].filters"), &sub.filters)?;
    }
    if spec.filters.is_empty() && spec.sub_policies.is_empty() {
        return Err("spec.filters: at least one plugin required".into());
    }
    Ok(spec)
}

fn validate_filters(path: &str, filters: &BTreeMap<String, PluginEntry>) -> Result<(), String> {
    for (name, entry) in filters {
        htnn_plugins::validate(name, &entry.config).map_err(|e| format!("{path}.{name}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules() {
        let ok = json!({"targetRef": {"group": "networking.istio.io", "kind": "VirtualService", "name": "vs"},
            "filters": {"demo": {"config": {"hostName": "x"}}}});
        assert!(parse("ns", &ok, false).is_ok());
        let mut bad = ok.clone();
        bad["targetRef"]["namespace"] = json!("other");
        assert!(
            parse("ns", &bad, false)
                .unwrap_err()
                .contains("cross-namespace")
        );
        let mut bad = ok.clone();
        bad["targetRef"]["kind"] = json!("HTTPRoute");
        assert!(
            parse("ns", &bad, false)
                .unwrap_err()
                .contains("unsupported targetRef")
        );
        let mut bad = ok.clone();
        bad["filters"]["nope"] = json!({"config": {}});
        assert!(
            parse("ns", &bad, false)
                .unwrap_err()
                .starts_with("spec.filters.nope")
        );
        assert!(
            parse(
                "ns",
                &json!({"filters": {"demo": {"config": {"hostName": "x"}}}}),
                false
            )
            .unwrap_err()
            .contains("targetRef")
        );
        assert!(
            parse(
                "ns",
                &json!({"filters": {"demo": {"config": {"hostName": "x"}}}}),
                true
            )
            .is_ok()
        );
    }
}
