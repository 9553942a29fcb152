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
    pub config: ConfigText,
}

/// A plugin config as compact JSON text (keys sorted, as serde_json writes them): what is
/// served, at a fraction of the memory of a JSON tree. Thousands of policies stay loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigText(std::sync::Arc<str>);

impl ConfigText {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

impl Default for ConfigText {
    fn default() -> Self {
        Self("null".into())
    }
}

impl<'de> Deserialize<'de> for ConfigText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(Value::deserialize(d)?.to_string().into()))
    }
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
        // Same decoder as plugin configs, so errors name the field (`spec.targetRef.name`).
        htnn_plugins::config::from_value(spec).map_err(|e| field_error("spec", &e))?;
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
    // A policy without any plugin is accepted and contributes nothing, as in HTNN (neither
    // its CRD nor its validation requires `filters`).
    Ok(spec)
}

fn validate_filters(path: &str, filters: &BTreeMap<String, PluginEntry>) -> Result<(), String> {
    for (name, entry) in filters {
        htnn_plugins::validate(name, &entry.config.value())
            .map_err(|e| plugin_error(path, name, e))?;
    }
    Ok(())
}

/// `prefix.path: reason` (`prefix: reason` for an error at the root).
fn field_error(prefix: &str, e: &htnn_plugins::FieldError) -> String {
    match e.path.as_str() {
        "" => format!("{prefix}: {}", e.reason),
        p if p.starts_with('[') => format!("{prefix}{p}: {}", e.reason),
        p => format!("{prefix}.{p}: {}", e.reason),
    }
}

/// Locates a plugin error in the object, e.g. `spec.filters.keyAuth.config.keys[0].name:
/// missing field` rather than the plugin crate's `plugin keyAuth: keys[0].name: ...`, so that
/// the status names the field to fix. `path` is the map holding the plugin (`spec.filters`,
/// `spec.auth`, ...). Errors about the plugin as a whole (unknown, not allowed here, a rule
/// over several fields) point at the plugin.
pub(crate) fn plugin_error(path: &str, name: &str, e: htnn_plugins::ConfigError) -> String {
    use htnn_plugins::ConfigError;
    match e {
        ConfigError::UnknownPlugin(_) => format!("{path}.{name}: unknown plugin"),
        ConfigError::Plugin { error, .. } if error.path.is_empty() => {
            format!("{path}.{name}: {}", error.reason)
        }
        ConfigError::Plugin { error, .. } => field_error(&format!("{path}.{name}.config"), &error),
        other => format!("{path}.{name}: {other}"),
    }
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
    #[test]
    fn errors_name_the_field() {
        let target =
            json!({"group": "networking.istio.io", "kind": "VirtualService", "name": "vs"});
        let err = |filters: Value| {
            parse(
                "ns",
                &json!({"targetRef": target, "filters": filters}),
                false,
            )
            .unwrap_err()
        };
        assert_eq!(
            err(json!({"nope": {"config": {}}})),
            "spec.filters.nope: unknown plugin"
        );
        assert_eq!(
            err(json!({"keyAuth": {"config": {"keys": [{"source": "HEADER"}]}}})),
            "spec.filters.keyAuth.config.keys[0].name: missing field"
        );
        assert_eq!(
            err(json!({"consumerRestriction": {"config": {}}})),
            "spec.filters.consumerRestriction: exactly one of allow, deny or denyIfNoConsumer must be set"
        );
        let sub = json!({"targetRef": target, "subPolicies": [
            {"sectionName": "a", "filters": {"limitReq": {"config": {"average": 0}}}}]});
        assert_eq!(
            parse("ns", &sub, false).unwrap_err(),
            "spec.subPolicies[0].filters.limitReq.config.average: must be greater than 0"
        );
        // Errors of the policy's own shape carry their path too.
        let no_name =
            json!({"targetRef": {"group": "networking.istio.io", "kind": "VirtualService"}});
        assert_eq!(
            parse("ns", &no_name, false).unwrap_err(),
            "spec.targetRef.name: missing field"
        );
        let no_section = json!({"targetRef": target, "subPolicies": [{"filters": {}}]});
        assert_eq!(
            parse("ns", &no_section, false).unwrap_err(),
            "spec.subPolicies[0].sectionName: missing field"
        );
    }

    #[test]
    fn empty_policy_is_accepted() {
        // HTNN requires neither `filters` nor `subPolicies`.
        let empty = json!({"targetRef": {"group": "networking.istio.io", "kind": "VirtualService", "name": "vs"}});
        let spec = parse("ns", &empty, false).unwrap();
        assert!(spec.filters.is_empty() && spec.sub_policies.is_empty());
    }
}
