//! Policies embedded in a VirtualService's annotation.

use serde_json::{Map, Value, json};

use crate::model::{Object, ObjectRef};
use crate::{EMBEDDED_ANNOTATION, ISTIO_NETWORKING, LEGACY_EMBEDDED_ANNOTATION, time};

/// Creation time of an embedded policy without `metadata.creationTimestamp`: HTNN leaves it
/// zero, so it sorts before every real object ("highest priority within its scope").
pub(crate) const EMBEDDED_CREATE_TIME: (i64, i32) = (i64::MIN, 0);

/// An embedded policy's spec (target set) and creation time, or why it is unusable.
pub(crate) type Embedded = Result<(Value, (i64, i32)), String>;

/// The policy embedded in a VirtualService, read as HTNN reads it: the
/// [`EMBEDDED_ANNOTATION`], else the legacy [`LEGACY_EMBEDDED_ANNOTATION`] (empty values
/// count as absent). `None` without annotation; otherwise the annotation's name and either
/// the policy spec with its creation time or why it is unusable.
pub(crate) fn embedded_policy(vs: &ObjectRef, obj: &Object) -> Option<(&'static str, Embedded)> {
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
pub(crate) fn parse_embedded(raw: &str, vs_name: &str) -> Embedded {
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
